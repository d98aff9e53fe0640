"""The whole configuration: the pipeline's sections and every metric plug-in's own.

:mod:`tmseeg.pipeline.config` holds the pipeline's sections and rules, and each plug-in module
listed in :data:`tmseeg.metrics.PLUGINS` its own ``CONFIG_TOML`` (and ``FREE_KEYS``, the tables
whose keys the user names). They meet here, above both, so that the pipeline never imports a
metric. The defaults are the documentation: ``tmseeg config`` prints them, a user's file only
needs the keys it changes, unknown keys are refused with the list of valid ones, and the
configuration and a hash of it are written into every output.

:func:`load_config` returns a :class:`Config`: one frozen, typed section per ``[table]``
(:mod:`tmseeg.sections`), the pipeline's from :data:`tmseeg.pipeline.config.PIPELINE_SECTIONS`
and each plug-in's own ``CONFIG_SECTION``; every section checks its values as it is built, so a
configuration that loads is one the stages and plug-ins accept.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import tomllib
from pathlib import Path
from typing import Any

from tmseeg.metrics import PLUGINS
from tmseeg.pipeline.config import (PIPELINE_CONFIG_TOML, PIPELINE_FREE_KEYS, PIPELINE_SECTIONS,
                                    fixed_cut_window, merge_config, planning_cut_window)
from tmseeg.sections import ConfigError, ConfigSection

__all__ = ["DEFAULT_CONFIG_TOML", "DEFAULT_CONFIG", "Config", "ConfigError", "load_config",
           "config_with", "config_hash", "input_overrides", "fixed_cut_window",
           "planning_cut_window"]

_PLUGIN_MODULES = [importlib.import_module(name) for name in PLUGINS]

#: the defaults, commented: the pipeline's sections, then each plug-in's
DEFAULT_CONFIG_TOML = "\n".join(text.rstrip("\n") + "\n" for text in
                                [PIPELINE_CONFIG_TOML] + [m.CONFIG_TOML for m in _PLUGIN_MODULES])
DEFAULT_CONFIG: dict[str, Any] = tomllib.loads(DEFAULT_CONFIG_TOML)
#: tables whose keys the user names (extra TEP peaks, channel types, connectivity bands ...)
FREE_KEYS = PIPELINE_FREE_KEYS.union(*(getattr(m, "FREE_KEYS", ()) for m in _PLUGIN_MODULES))
#: every section's class: the pipeline's, then each plug-in's (its TOML table is its only one)
SECTIONS: dict[str, type[ConfigSection]] = {
    **PIPELINE_SECTIONS,
    **{next(iter(tomllib.loads(m.CONFIG_TOML))): m.CONFIG_SECTION for m in _PLUGIN_MODULES}}

#: the whole configuration: one typed section per table (``cfg.decay.fit_window_ms``)
Config: type[ConfigSection] = dataclasses.make_dataclass(
    "Config", [(name, kind) for name, kind in SECTIONS.items()], bases=(ConfigSection,),
    frozen=True)
Config.__module__ = __name__
Config.__doc__ = ("The whole configuration, as :func:`load_config` returns it: one frozen, "
                  "typed section per TOML table (the fields are the tables' names).")
if list(SECTIONS) != list(DEFAULT_CONFIG):  # a section class for every table of the defaults
    raise ImportError(f"configuration sections {list(SECTIONS)} do not match the default "
                      f"tables {list(DEFAULT_CONFIG)}")


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> Config:
    """The defaults, updated by a TOML file and then by ``overrides`` (same structure), as a
    typed :class:`Config` (each section checked as it is built).

    Raises
    ------
    ConfigError
        A missing or unreadable file, an unknown key (with the valid ones), a wrong type, or a
        value the pipeline refuses; the message names the key and the fix.
    """
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"configuration file {path} does not exist; print the defaults "
                              "with `tmseeg config` and save them to start from")
        try:
            user = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"configuration file {path} is not valid TOML: {err}") from err
        cfg = merge_config(cfg, user, FREE_KEYS)
    if overrides:
        cfg = merge_config(cfg, overrides, FREE_KEYS)
    return Config.from_dict(cfg)


def config_with(cfg: Config, overrides: dict) -> Config:
    """``cfg`` with some keys changed (same structure as a TOML file), checked again."""
    return Config.from_dict(merge_config(cfg.to_dict(), overrides, FREE_KEYS))


def config_hash(cfg: Config | dict) -> str:
    """Short, stable hash of a configuration (key order does not matter)."""
    plain = cfg.to_dict() if isinstance(cfg, ConfigSection) else cfg
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def input_overrides(args) -> dict | None:
    """``--pulse-pattern`` / ``--pulse-source`` / ``--pulse-table`` / ``--montage`` /
    ``--channel-types`` as configuration overrides (None if none is set)."""
    from tmseeg.stream.montage import parse_channel_types

    out: dict = {}
    pulses = {k: v for k in ("pattern", "source")
              if (v := getattr(args, f"pulse_{k}", None))}
    if getattr(args, "pulse_table", None):
        pulses["table"] = str(Path(args.pulse_table).resolve())
    if pulses:
        out["pulses"] = pulses
    channels: dict = {}
    if getattr(args, "channel_types", None):
        channels["types"] = parse_channel_types(args.channel_types)
    if getattr(args, "montage", None):
        montage = args.montage
        channels["montage"] = str(Path(montage).resolve()) if Path(montage).is_file() else montage
    if channels:
        out["channels"] = channels
    return out or None
