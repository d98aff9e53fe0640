"""Keep liblsl on this machine: a config file that limits stream discovery to loopback.

liblsl reads its configuration once, at first use, from the file named by ``LSLAPICFG``.
Tests, benchmarks and the demo call :func:`use_loopback_only` before importing pylsl so that
they neither announce streams to the network nor pick up someone else's amplifier.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

LOOPBACK_CONFIG = """\
; written by tmseeg: discover and serve LSL streams on this machine only
[ports]
IPv6 = disable
; liblsl's default range is 32 ports, shared by every outlet on the machine; a resolver only
; asks those ports, so the 33rd outlet alive at once (a long test run, several amplifiers,
; players and engines) takes a random port and is invisible
PortRange = 256
[multicast]
ResolveScope = machine
[lab]
KnownPeers = {127.0.0.1}
[log]
level = -3
"""


def use_loopback_only(force: bool = False) -> Path:
    """Point liblsl at a loopback-only configuration; returns the config file's path.

    An ``LSLAPICFG`` the user already set is respected unless ``force`` is true.
    Must run before pylsl creates its first stream object.
    """
    if os.environ.get("LSLAPICFG") and not force:
        return Path(os.environ["LSLAPICFG"])
    path = Path(tempfile.gettempdir()) / "tmseeg-lsl-loopback.cfg"
    if not path.exists() or path.read_text() != LOOPBACK_CONFIG:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(LOOPBACK_CONFIG)
        os.replace(tmp, path)
    os.environ["LSLAPICFG"] = str(path)
    return path
