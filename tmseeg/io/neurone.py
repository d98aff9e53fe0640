"""Bittium NeurOne recordings: the session folder NeurOne writes, read without a converter.

NeurOne (the most common TMS-compatible amplifier) stores a measurement as a folder::

    <session>/Protocol.xml      channels (name, input number, calibration), sampling rate
    <session>/Session.xml       start time, one ``TableSessionPhase`` per recorded phase
    <session>/<phase>/1.bin     samples, little-endian int32, interleaved by input number
                                (2.bin, 3.bin ... when a phase outgrew one file)
    <session>/<phase>/events.bin   88-byte event records
    <session>/<phase>/eventData.bin  UTF-16 text of comment events

The layout follows Bittium's "NeurOne Data Format" description as its published readers use
it (the EEGLAB import plugin, ``neurone_loader``); this module is our own reading of it.
Raw values are calibrated per channel from the protocol's ``RangeMinimum/Maximum`` and
``RangeAsCalibratedMinimum/Maximum`` into nanovolts, then stored in µV.

Events are labelled as NeurOne's own tools show them: ``"A - Stimulation"`` (a trigger on
port A, how a stimulator's TTL usually arrives), ``"B - Out"``, the code of an 8-bit trigger
(``"1"``), or the text of a comment. Several phases are joined end to end with a gap between
them, as a pause in the recording is.
"""
from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = ["NeurOneError", "NeurOneSession", "is_neurone", "read_neurone", "session_folder"]

_NS_PROTOCOL = "{http://www.megaemg.com/DataSetGeneralProtocol.xsd}"
_NS_SESSION = "{http://www.megaemg.com/DataSetGeneralSession.xsd}"

#: one events.bin record: revision, rfu, type, source port, channel, code, start, stop,
#: description length/offset, data length/offset, time stamp, main unit, rfu
_EVENT = struct.Struct("<6i6Qd2i")
assert _EVENT.size == 88

_PORTS = {0: "N/A", 1: "A", 2: "B", 3: "EightBit", 4: "Syncbox Button", 5: "SyncBox EXT",
          6: "Software"}
_TYPES = {0: "N/A", 1: "Stimulation", 2: "Video", 3: "Mute", 5: "Out",
          1001: "ClockSourceChange"}
_TYPE_TRIGGER_8BIT = 4
_TYPE_COMMENT = 6


class NeurOneError(ValueError):
    """A NeurOne folder that cannot be read; the message names the file and the problem."""


@dataclass
class NeurOneSession:
    """A NeurOne measurement in engine units.

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples)
    ch_names : list of str
        In input-number order, as the samples are stored.
    sfreq : float
    events : list of (sample, label)
        Sample 0 is the first sample of the first phase.
    gaps : list of int
        Samples where a later phase begins.
    meas_date : datetime or None
    warnings : list of str
        What reading found wrong but could read around (a phase shorter than the session
        file says).
    """

    data_uv: np.ndarray
    ch_names: list[str]
    sfreq: float
    events: list[tuple[int, str]]
    gaps: list[int]
    meas_date: datetime | None
    warnings: list[str] = field(default_factory=list)


def session_folder(path: Path) -> Path | None:
    """The session folder when ``path`` is one (holds ``Protocol.xml`` and ``Session.xml``),
    or one of those two files; else None."""
    folder = path.parent if path.is_file() and path.name.lower() in (
        "protocol.xml", "session.xml") else path
    if folder.is_dir() and (folder / "Protocol.xml").is_file() \
            and (folder / "Session.xml").is_file():
        return folder
    return None


def is_neurone(path: Path) -> bool:
    """Whether ``path`` is a NeurOne session folder or its Protocol.xml / Session.xml."""
    return session_folder(path) is not None


def _text(node, tag: str, ns: str, where: str) -> str:
    found = node.find(f"{ns}{tag}")
    if found is None or found.text is None:
        raise NeurOneError(f"{where}: no <{tag}>")
    return found.text.strip()


def _parse_time(text: str) -> datetime | None:
    """NeurOne's ISO times have 7 fractional digits (100 ns); Python takes 6."""
    found = re.match(r"^([^.]+)(?:\.(\d+))?(.*)$", text.strip())
    try:
        head, digits, zone = found.groups()
        return datetime.fromisoformat(f"{head}.{(digits or '')[:6].ljust(6, '0')}{zone}")
    except (AttributeError, ValueError):
        return None


def _channels(protocol: Path) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    """Names (input-number order), per-channel gain and offset to nV, sampling rate."""
    try:
        root = ET.parse(protocol).getroot()
    except (ET.ParseError, OSError) as exc:
        raise NeurOneError(f"{protocol}: not readable XML ({exc})") from exc
    inputs = root.findall(f"{_NS_PROTOCOL}TableInput")
    if not inputs:
        raise NeurOneError(f"{protocol}: no channels (<TableInput>); is this a NeurOne "
                           "Protocol.xml?")
    rows = []
    for node in inputs:
        name = _text(node, "Name", _NS_PROTOCOL, str(protocol))
        number = int(_text(node, "InputNumber", _NS_PROTOCOL, f"{protocol}, {name}"))
        cal = []
        for tag in ("RangeMinimum", "RangeMaximum", "RangeAsCalibratedMinimum",
                    "RangeAsCalibratedMaximum"):
            found = node.find(f"{_NS_PROTOCOL}{tag}")
            cal.append(float(found.text) if found is not None and found.text else None)
        rows.append((number, name, cal))
    rows.sort(key=lambda r: r[0])
    gains, offsets = [], []
    for _, name, (rmin, rmax, cmin, cmax) in rows:
        if None in (rmin, rmax, cmin, cmax) or rmax == rmin:
            gains.append(1.0)  # no calibration given: the raw values are nV
            offsets.append(0.0)
        else:
            g = (cmax - cmin) / (rmax - rmin)
            gains.append(g)
            offsets.append(cmin - rmin * g)
    table = root.find(f"{_NS_PROTOCOL}TableProtocol")
    if table is None:
        raise NeurOneError(f"{protocol}: no <TableProtocol> (sampling rate)")
    rate = None
    for tag in ("ActualSamplingFrequency", "SamplingFrequency"):
        found = table.find(f"{_NS_PROTOCOL}{tag}")
        if found is not None and found.text:
            rate = float(found.text)
            break
    if not rate or rate <= 0:
        raise NeurOneError(f"{protocol}: no sampling frequency in <TableProtocol>")
    return [r[1] for r in rows], np.array(gains), np.array(offsets), rate


def _phases(session: Path) -> tuple[list[str], datetime | None, dict[str, float]]:
    """Phase folders, the session's start, and each phase's recorded length (s) when the
    session file gives its start and stop."""
    try:
        root = ET.parse(session).getroot()
    except (ET.ParseError, OSError) as exc:
        raise NeurOneError(f"{session}: not readable XML ({exc})") from exc
    folders = []
    lengths: dict[str, float] = {}
    for node in root.findall(f"{_NS_SESSION}TableSessionPhase"):
        folder = node.find(f"{_NS_SESSION}Folder")
        if folder is not None and folder.text:
            name = folder.text.replace("\\", "/").rstrip("/").split("/")[-1]
            folders.append(name)
            times = [node.find(f"{_NS_SESSION}{tag}") for tag in ("StartDateTime",
                                                                 "StopDateTime")]
            if all(t is not None and t.text for t in times):
                t0, t1 = (_parse_time(t.text) for t in times)
                if t0 is not None and t1 is not None and t1 > t0:
                    lengths[name] = (t1 - t0).total_seconds()
    start = None
    table = root.find(f"{_NS_SESSION}TableSession")
    if table is not None:
        node = table.find(f"{_NS_SESSION}StartDateTime")
        if node is not None and node.text:
            start = _parse_time(node.text.strip())
    return folders, start, lengths


def _phase_samples(folder: Path, n_channels: int) -> np.ndarray:
    """(n_samples, n_channels) int32 of one phase: its numbered .bin files in order."""
    files = sorted((p for p in folder.glob("*.bin") if p.stem.isdigit()),
                   key=lambda p: int(p.stem))
    if not files:
        raise NeurOneError(f"{folder}: no data file (1.bin); copy the whole session folder")
    parts = []
    for f in files:
        raw = np.fromfile(f, dtype="<i4")
        if raw.size % n_channels or f.stat().st_size % 4:
            raise NeurOneError(
                f"{f}: {f.stat().st_size} bytes is not a whole number of samples of "
                f"{n_channels} int32 channels: the file is truncated or belongs to another protocol")
        parts.append(raw.reshape(-1, n_channels))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _phase_events(folder: Path) -> list[tuple[int, str]]:
    path = folder / "events.bin"
    if not path.is_file():
        return []
    blob = path.read_bytes()
    comments = folder / "eventData.bin"
    text = comments.read_bytes() if comments.is_file() else b""
    out = []
    for k in range(len(blob) // _EVENT.size):
        (_rev, _rfu, kind, port, _chan, code, start, _stop, _dlen, _doff, data_len,
         data_off, _ts, _unit, _rfu2) = _EVENT.unpack_from(blob, k * _EVENT.size)
        if kind == _TYPE_TRIGGER_8BIT:
            label = str(code)
        elif kind == _TYPE_COMMENT:
            label = text[data_off:data_off + data_len].decode("utf-16-le", "replace").strip()
            label = label or "Comment"
        else:
            label = f"{_PORTS.get(port, 'Unknown')} - {_TYPES.get(kind, 'Unknown')}"
        out.append((int(start), label))
    return out


def read_neurone(path: Path) -> NeurOneSession:
    """Read a NeurOne session folder (or its Protocol.xml / Session.xml).

    Raises
    ------
    NeurOneError
        Missing or unreadable protocol/session files, no data, data that do not fit the
        protocol's channel count.
    """
    folder = session_folder(path)
    if folder is None:
        raise NeurOneError(f"{path}: not a NeurOne session folder (it holds Protocol.xml, "
                           "Session.xml and one folder per phase: 1/, 2/ ...)")
    names, gain, offset, rate = _channels(folder / "Protocol.xml")
    phases, start, lengths = _phases(folder / "Session.xml")
    if not phases:  # a session file without phases: take the numbered folders present
        phases = sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                        key=int)
    if not phases:
        raise NeurOneError(f"{folder}: no recorded phase (no folder 1/ with 1.bin)")
    blocks, events, gaps, n = [], [], [], 0
    warnings: list[str] = []
    for phase in phases:
        sub = folder / phase
        samples = _phase_samples(sub, len(names))
        expected_s = lengths.get(phase, 0.0)
        if expected_s - len(samples) / rate > 1.0:  # NeurOne's times: better than a second
            warnings.append(f"phase {phase}: the session file says it lasted "
                            f"{expected_s:.1f} s but its data hold {len(samples) / rate:.1f} s: "
                            "the data file is truncated (copied before the recording was "
                            "closed?); what is there is analysed")
        if n:
            gaps.append(n)
        events += [(n + s, label) for s, label in _phase_events(sub) if 0 <= s < len(samples)]
        blocks.append(samples)
        n += len(samples)
    counts = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    data_uv = (counts.T.astype(np.float64) * gain[:, None] + offset[:, None]) * 1e-3
    return NeurOneSession(data_uv=np.ascontiguousarray(data_uv), ch_names=names, sfreq=rate,
                          events=events, gaps=gaps, meas_date=start, warnings=warnings)
