"""The whole configuration: the pipeline's sections and every metric plug-in's own.

:mod:`tmseeg.pipeline.config` holds the pipeline's sections and rules, and each plug-in module
listed in :data:`tmseeg.metrics.PLUGINS` its own ``CONFIG_TOML`` (and ``FREE_KEYS``, the tables
whose keys the user names). They meet here, above both, so that the pipeline never imports a
metric. The defaults are the documentation: ``tmseeg config`` prints them, a user's file only
needs the keys it changes, unknown keys are refused with the list of valid ones, and the
configuration and a hash of it are written into every output.
"""
from __future__ import annotations

import copy
import hashlib
import importlib
import json
import tomllib
from pathlib import Path
from typing import Any

from tmseeg.metrics import PLUGINS
from tmseeg.pipeline.config import (PIPELINE_CONFIG_TOML, PIPELINE_FREE_KEYS, ConfigError,
                                    fixed_cut_window, merge_config, planning_cut_window,
                                    validate_pipeline)

__all__ = ["DEFAULT_CONFIG_TOML", "DEFAULT_CONFIG", "ConfigError", "load_config", "config_hash",
           "input_overrides", "fixed_cut_window", "planning_cut_window"]

_PLUGIN_MODULES = [importlib.import_module(name) for name in PLUGINS]

#: the defaults, commented: the pipeline's sections, then each plug-in's
DEFAULT_CONFIG_TOML = "\n".join(text.rstrip("\n") + "\n" for text in
                                [PIPELINE_CONFIG_TOML] + [m.CONFIG_TOML for m in _PLUGIN_MODULES])
DEFAULT_CONFIG: dict[str, Any] = tomllib.loads(DEFAULT_CONFIG_TOML)
#: tables whose keys the user names (extra TEP peaks, channel types, connectivity bands ...)
FREE_KEYS = PIPELINE_FREE_KEYS.union(*(getattr(m, "FREE_KEYS", ()) for m in _PLUGIN_MODULES))


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> dict:
    """The defaults, updated by a TOML file and then by ``overrides`` (same structure).

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
    validate_pipeline(cfg)
    return cfg


def config_hash(cfg: dict) -> str:
    """Short, stable hash of a configuration (key order does not matter)."""
    text = json.dumps(cfg, sort_keys=True, separators=(",", ":"))
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
