"""Typed configuration sections: the base every ``[section]`` of the configuration builds on.

A section is a frozen dataclass whose fields are the section's TOML keys, one for one (a key is
the constructor argument of the same name). :func:`tmseeg.config.load_config` merges the
commented defaults with the user's file (unknown keys and wrong types refused there, by key),
builds each section from the result, and each section checks its own values in
:meth:`ConfigSection.validate` as it is built: a configuration that loads is one every stage
and plug-in accepts, so ``tmseeg config --check`` catches without data what a session would
refuse at its start.

Sections read as attributes (``cfg.decay.fit_window_ms``) and, for tools that walk them, as
read-only mappings (``cfg["decay"]["fit_window_ms"]``); :meth:`ConfigSection.to_dict` gives the
plain tables written into outputs and hashed.
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

__all__ = ["ConfigError", "ConfigSection"]


class ConfigError(ValueError):
    """The configuration file is wrong: the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class ConfigSection(Mapping):
    """Base of every configuration section (see the module docstring).

    Subclasses declare their keys as dataclass fields (a nested section as a field whose type
    is another :class:`ConfigSection`), name their table in ``SECTION`` (for messages) and
    override :meth:`validate` for their own rules.
    """

    #: the section's dotted name in the TOML file ("decay", "cleaning.ica")
    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values this section cannot run with (raise :class:`ConfigError` naming the
        key and the fix). No-op by default."""

    def check_choice(self, key: str, choices: Sequence[str]) -> None:
        """``key`` must be one of ``choices``."""
        value = self[key]
        if value not in choices:
            names = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 \
                else choices[0]
            raise ConfigError(f"{self.SECTION}.{key} must be {names}, got {value!r}")

    def check_window(self, key: str) -> None:
        """``key`` must be ``[start, stop]`` with ``start < stop``."""
        value = self[key]
        if len(value) != 2 or not value[0] < value[1]:
            raise ConfigError(f"{self.SECTION}.{key} must be [start, stop] with start < stop, "
                              f"got {value}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ConfigSection":
        """Build the section from its table (every key present: the defaults merged with the
        user's values); nested tables become their own sections."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in data]
        extra = sorted(set(data) - set(names))
        if missing or extra:  # a programming error: load_config merges onto the defaults
            raise ConfigError(f"{cls.__name__}: keys missing {missing}, unknown {extra}")
        values = {}
        for name in names:
            kind, value = hints[name], data[name]
            if isinstance(kind, type) and issubclass(kind, ConfigSection):
                value = kind.from_dict(value)
            values[name] = copy.deepcopy(value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The section as plain tables (what a TOML file holds; outputs and hashes use it)."""
        return {name: (value.to_dict() if isinstance(value, ConfigSection)
                       else copy.deepcopy(value)) for name, value in self.items()}

    # read-only mapping access, for code that walks the configuration by key
    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
