"""The ``tmseeg`` command: its parser and entry point in :mod:`tmseeg.cli.parser`, the live
commands in :mod:`tmseeg.cli.live`, the offline ones in :mod:`tmseeg.cli.offline`."""
from tmseeg.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
