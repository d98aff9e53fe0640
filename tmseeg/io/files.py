"""Read any EEG recording into the engine's units: one entry point, :func:`read_recording`.

Supported formats (chosen by file name):

==================  ==========================================================
``.fif``, ``.fif.gz``  MNE FIF raw files
``.vhdr``           BrainVision (header; ``.vmrk`` markers and ``.eeg`` data beside it)
``.edf``, ``.bdf``  European / BioSemi Data Format
``.set``            EEGLAB (continuous data, not epoched files)
``.xdf``            Extensible Data Format (LabRecorder), read with :mod:`pyxdf`
``.cnt``            ANT Neuro eego (read with MNE and :mod:`antio`); a ``.cnt`` that is not
                    ANT's RIFF container is read as Neuroscan
``.mff``            EGI / Magstim EGI (folder), read with MNE
NeurOne folder      Bittium NeurOne session folder (or its ``Protocol.xml``), read by
                    :mod:`tmseeg.io.neurone`
==================  ==========================================================

Whatever the format, a :class:`Recording` holds ``(n_channels, n_samples)`` float64 data with
voltage channels (EEG, EOG, EMG, ...) in microvolts and every other channel (stim, misc)
unscaled, a :class:`~tmseeg.stream.block.StreamMeta`, and a list of
:class:`~tmseeg.stream.block.Event` built from the file's annotations, markers and stim channel.
A marker whose label matches the pulse pattern (:data:`DEFAULT_PULSE_PATTERN`, overridable)
becomes a ``"pulse"`` event; every other marker a ``"marker"`` event. EEG channels labelled
with an ``EEG`` prefix or a reference suffix (``"EEG Fp1-REF"``, ``"C3-A1"``) are renamed to
their 10-05 label (:func:`~tmseeg.stream.montage.tidy_channel_names`; the file's labels stay
in ``meta.original_names``).

Anything that cannot be read raises :class:`RecordingError`, whose message names the file,
what is wrong with it, and what to do.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from tmseeg.stream.montage import tidy_meta
from tmseeg.stream.pulseinfo import INFO_LABEL, info_event, pulse_info_message
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, EVENT_PULSE, Event, StreamMeta
from tmseeg.stream.inlet import UNIT_SCALE_TO_UV, parse_marker

log = logging.getLogger(__name__)

#: Regular expression (matched case-insensitively with :func:`re.search`) that decides which
#: marker labels are TMS pulses. It covers what labs commonly write:
#:
#: - any label containing ``TMS`` as a word or word prefix (``"TMS"``, ``"tms_pulse"``,
#:   ``"Stimulus/TMS"``),
#: - any label containing ``pulse`` (``"pulse"``, ``"TMS pulse"``, ``"Pulse 80%"``),
#: - the BrainVision stimulus code 1, ``"Stimulus/S  1"`` or a bare ``"S  1"``
#:   (how a trigger on input bit 1 of a BrainAmp appears), any number of spaces.
#:
#: Labs whose stimulator writes another code pass their own pattern, e.g.
#: ``read_recording(path, pulse_pattern=r"^Stimulus/S\s*128$")``, or ``r"^1$"`` for a stim
#: channel whose pulse code is 1 (stim-channel events are labelled with their integer code).
DEFAULT_PULSE_PATTERN = r"(?:\btms)|(?:pulse)|(?:^(?:stimulus/)?s\s*1$)"

#: MNE channel types whose data are voltages: stored in microvolts inside the engine.
VOLTAGE_TYPES = frozenset({"eeg", "eog", "emg", "ecg", "seeg", "ecog", "dbs", "bio"})

#: Label (BrainVision ``type/description``) the recorder writes for a gap in the data.
GAP_LABEL = "New Segment/Gap"

_SUPPORTED = (".fif, .fif.gz, .vhdr, .edf, .bdf, .set, .xdf, .cnt (ANT eego, Neuroscan), "
              ".mff (EGI), a NeurOne session folder")


class RecordingError(ValueError):
    """A recording cannot be read: the message says which file, what is wrong, and what to do."""


class FileSamples:
    """The samples of a sample-major binary data file (BrainVision's multiplexed ``.eeg``), in
    engine units, read on demand: ``x[rows, a:b]`` reads samples ``a..b-1`` from the file and
    scales them; ``np.asarray(x)`` reads all. Slicing returns new float64 arrays (writing into
    them changes nothing in the file).

    A whole 10-min 64-channel recording never sits in memory as float64 when it is read block
    by block (``tmseeg analyze``: 1.5 GB less). Files are read with ``pread``, not a memory
    map, so the page cache is not counted in the process's memory.

    Parameters
    ----------
    path : Path
    dtype : numpy dtype
        Of one value in the file.
    n_channels, n_samples : int
    gain : ndarray, shape (n_channels,)
        Per channel factor from the file's values to engine units.
    offset : int
        Bytes before the first sample.
    """

    ndim = 2
    dtype = np.dtype(np.float64)

    def __init__(self, path: Path, dtype, n_channels: int, n_samples: int, gain: np.ndarray,
                 offset: int = 0) -> None:
        self.path = Path(path)
        self.file_dtype = np.dtype(dtype)
        self.shape = (int(n_channels), int(n_samples))
        self.gain = np.asarray(gain, float).reshape(-1, 1)
        self.offset = int(offset)
        self._frame = self.file_dtype.itemsize * self.shape[0]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start..stop-1`` of every channel, (n_channels, stop - start) float64."""
        n_ch, n = self.shape
        start, stop = max(0, int(start)), min(n, int(stop))
        out = np.empty((n_ch, max(0, stop - start)))
        # pieces of ~256 kB: the sample-major -> channel-major transpose stays in the cache
        step = max(1, (256 * 1024) // self._frame)
        with open(self.path, "rb", buffering=0) as f:
            for a in range(start, stop, step):
                b = min(a + step, stop)
                raw = os.pread(f.fileno(), (b - a) * self._frame, self.offset + a * self._frame)
                if len(raw) < (b - a) * self._frame:
                    raise RecordingError(f"{self.path}: ends at sample "
                                         f"{a + len(raw) // self._frame} of {n} (changed while "
                                         "it was being read?)")
                values = np.frombuffer(raw, self.file_dtype).reshape(b - a, n_ch)
                np.multiply(values.T, self.gain, out=out[:, a - start:b - start])
        return out

    def __getitem__(self, key):
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(cols, slice) or cols.step not in (None, 1):
            return np.asarray(self)[rows, cols]
        a, b, _ = cols.indices(self.shape[1])
        return self.read(a, max(a, b))[rows]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        x = self.read(0, self.shape[1])
        return x if dtype is None else x.astype(dtype, copy=False)

    @property
    def T(self) -> np.ndarray:  # noqa: N802 (numpy's name)
        return np.asarray(self).T


@dataclass
class Recording:
    """A whole recording in engine units.

    Parameters
    ----------
    data_uv : ndarray or FileSamples, shape (n_channels, n_samples)
        float64; voltage channels (see :data:`VOLTAGE_TYPES`) in microvolts, other channels
        (stim, misc) unscaled. A :class:`FileSamples` (``read_recording(preload=False)``) reads
        what is sliced from the file.
    meta : StreamMeta
        Channel names, MNE channel types, sampling rate; ``name`` is the file name.
    events : list of Event
        Pulses, markers and gaps, sorted by sample (sample 0 = first sample of ``data_uv``).
    meas_date : datetime or None
        Wall-clock start of the recording (UTC) when the file records it.
    t0_s : float
        Time of sample 0 on the file's own clock, in seconds: ``raw.first_time`` for MNE
        formats (0 unless the file starts later than its measurement origin), the LSL
        timestamp of the first EEG sample for XDF.
    path : Path or None
        Where the recording was read from (None when built in memory).
    warnings : list of str
        What reading found wrong but could read around (markers after the last sample of a
        truncated file ...); ``tmseeg analyze`` puts them into ``summary.json``.
    """

    data_uv: np.ndarray
    meta: StreamMeta
    events: list[Event] = field(default_factory=list)
    meas_date: datetime | None = None
    t0_s: float = 0.0
    path: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.data_uv, FileSamples):  # those are read when sliced
            self.data_uv = np.asarray(self.data_uv, dtype=np.float64)
        if self.data_uv.ndim != 2 or self.data_uv.shape[0] != self.meta.n_channels:
            raise ValueError(
                f"Recording data has shape {self.data_uv.shape} but meta declares "
                f"{self.meta.n_channels} channels: channel-count mismatch."
            )
        self.events = sorted(self.events, key=lambda e: e.sample)

    @property
    def n_samples(self) -> int:
        """Number of samples per channel."""
        return int(self.data_uv.shape[1])

    @property
    def duration_s(self) -> float:
        """Length of the recording in seconds."""
        return self.n_samples / self.meta.sfreq

    def to_raw(self):
        """The recording as an :class:`mne.io.RawArray` (voltages back in volts).

        Events become annotations at ``sample / sfreq`` seconds with the event label as
        description (gaps keep their duration).

        Returns
        -------
        raw : mne.io.RawArray
        """
        import mne

        scale = _volt_scale(self.meta.ch_types)
        info = mne.create_info(list(self.meta.ch_names), self.meta.sfreq, list(self.meta.ch_types))
        raw = mne.io.RawArray(np.asarray(self.data_uv) * scale[:, None], info, verbose="error")
        if self.meas_date is not None:
            raw.set_meas_date(self.meas_date)
        if self.events:
            onsets = [e.sample / self.meta.sfreq for e in self.events]
            durations = [e.duration / self.meta.sfreq for e in self.events]
            labels = [e.label for e in self.events]
            raw.set_annotations(
                mne.Annotations(onsets, durations, labels, orig_time=raw.info["meas_date"])
            )
        return raw


def _volt_scale(ch_types: Sequence[str]) -> np.ndarray:
    """Per channel factor from engine units to MNE units (1e-6 for voltages, else 1)."""
    return np.array([1e-6 if t in VOLTAGE_TYPES else 1.0 for t in ch_types])


def _format_of(path: Path) -> str:
    from tmseeg.io.neurone import is_neurone

    name = path.name.lower()
    if is_neurone(path):
        return "neurone"
    for suffix, fmt in (
        (".fif.gz", "fif"),
        (".fif", "fif"),
        (".vhdr", "brainvision"),
        (".edf", "edf"),
        (".bdf", "bdf"),
        (".set", "eeglab"),
        (".xdf", "xdf"),
        (".xdfz", "xdf"),
        (".cnt", "cnt"),
        (".mff", "egi"),
    ):
        if name.endswith(suffix):
            return fmt
    hint = ""
    if name.endswith((".eeg", ".vmrk")):
        hint = f" For BrainVision, pass the header file {path.with_suffix('.vhdr').name!r}."
    elif name.endswith(".fdt"):
        hint = f" For EEGLAB, pass the .set file {path.with_suffix('.set').name!r}."
    elif path.is_dir():
        hint = (" A folder is read when it is an EGI .mff or a NeurOne session (with "
                "Protocol.xml and Session.xml); otherwise pass the recording file inside it.")
    raise RecordingError(
        f"{path}: unknown recording format {''.join(path.suffixes) or '(no extension)'!r}. "
        f"Supported: {_SUPPORTED}.{hint}"
    )


def read_recording(
    path: str | Path,
    pulse_pattern: str = DEFAULT_PULSE_PATTERN,
    preload: bool = True,
    stream_name: str | None = None,
) -> Recording:
    """Read a FIF, BrainVision, EDF/BDF, EEGLAB, XDF, ANT/Neuroscan, EGI or NeurOne recording.

    Parameters
    ----------
    path : str or Path
        The recording (for BrainVision the ``.vhdr`` header; for EEGLAB the ``.set`` file;
        for EGI the ``.mff`` folder; for NeurOne the session folder or its ``Protocol.xml``).
    pulse_pattern : str
        Regular expression, matched case-insensitively anywhere in a marker label, that
        marks TMS pulses (default :data:`DEFAULT_PULSE_PATTERN`).
    preload : bool
        False: a BrainVision binary data file is read block by block when sliced
        (``data_uv`` a :class:`FileSamples`), never whole (``tmseeg analyze``); other formats
        are always loaded.
    stream_name : str or None
        XDF only: the name of the EEG stream to use when the file holds several; by default
        the stream of type ``EEG`` (the only numeric stream if none is typed ``EEG``).

    Returns
    -------
    Recording
        EEG channel names tidied to 10-05 labels where that is unambiguous (see
        :func:`~tmseeg.stream.montage.tidy_channel_names`); ``meta.original_names`` and
        ``meta.renamed`` say what changed.

    Raises
    ------
    RecordingError
        Missing, empty, truncated or unreadable file, unknown extension, no EEG stream.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file. Check the path (cwd is {Path.cwd()}).")
    if path.is_dir() and fmt not in ("egi", "neurone"):
        raise RecordingError(f"{path}: is a directory; pass the recording file inside it.")
    if path.is_file() and path.stat().st_size == 0:
        raise RecordingError(
            f"{path}: the file is empty (0 bytes); it was not written or was truncated. "
            "Use another copy of the recording."
        )
    try:
        pattern = re.compile(pulse_pattern, re.IGNORECASE)
    except re.error as exc:
        raise RecordingError(f"pulse_pattern {pulse_pattern!r} is not a valid regex: {exc}") from exc
    if fmt == "xdf":
        rec = _read_xdf(path, pattern, stream_name)
    elif fmt == "neurone":
        rec = _read_neurone(path, pattern)
    else:
        rec = _read_mne(path, fmt, pattern, preload)
    return checked_recording(rec, path)


def checked_recording(rec: Recording, path: Path) -> Recording:
    """What every reader does last: refuse a recording without samples, and tidy the channel
    names (:func:`~tmseeg.stream.montage.tidy_meta`)."""
    if rec.n_samples == 0:
        raise RecordingError(
            f"{path}: the recording holds no samples (header only?). Use a recording with data."
        )
    rec.meta = tidy_meta(rec.meta)
    return rec


# --------------------------------------------------------------------------------------------
# MNE formats
# --------------------------------------------------------------------------------------------

def _cnt_reader(path: Path):
    """ANT Neuro's eego ``.cnt`` is a RIFF container (``RIFF``/``RF64``); Neuroscan's is not.
    ANT's reader needs :mod:`antio` (its libeep)."""
    import mne

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic not in (b"RIFF", b"RF64"):
        return mne.io.read_raw_cnt
    try:
        import antio  # noqa: F401
    except ImportError as exc:
        raise RecordingError(f"{path}: an ANT Neuro eego .cnt file; reading it needs the "
                             "'antio' package: pip install antio") from exc
    return mne.io.read_raw_ant


def _read_mne(path: Path, fmt: str, pattern: re.Pattern, preload: bool = True) -> Recording:
    import mne

    reader = _cnt_reader(path) if fmt == "cnt" else {
        "fif": mne.io.read_raw_fif,
        "brainvision": mne.io.read_raw_brainvision,
        "edf": mne.io.read_raw_edf,
        "bdf": mne.io.read_raw_bdf,
        "eeglab": mne.io.read_raw_eeglab,
        "egi": mne.io.read_raw_egi,
    }[fmt]
    # each loader gives (raw, what reading found wrong but read around, or "")
    load = {"eeglab": _read_eeglab, "fif": _read_fif,
            "brainvision": _read_brainvision}.get(fmt, _read_whole)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw, salvaged = load(path, reader)
    except Exception as exc:  # MNE raises many types; all mean "this file is not readable"
        hint = {
            "brainvision": "check that the .vmrk and .eeg files named in the header sit "
            "beside it",
            "eeglab": "epoched .set files are not recordings; its .fdt data file (if any) "
            "must sit beside it",
            "fif": "it may be truncated or not a raw file (epochs/evoked FIF are not "
            "recordings)",
            "egi": "pass the whole .mff folder as Net Station wrote it (info.xml, "
            "signal1.bin, Events*.xml)",
        }.get(fmt, "it may be truncated or written by a broken exporter")
        raise RecordingError(
            f"{path}: cannot read it as {fmt.upper()} ({type(exc).__name__}: {exc}). "
            f"Hint: {hint}."
        ) from exc
    # EGI: each event code is also a stim channel; the annotations already hold them
    rec = _from_raw(raw, pattern, path, _markers_after_end(raw, fmt, path),
                    stim_events=fmt != "egi", preload=preload)
    if salvaged:
        log.warning("%s: %s", path.name, salvaged)
        rec.warnings.append(salvaged)
    short = (_edf_truncation(path, fmt) if fmt in ("edf", "bdf")
             else _brainvision_partial_sample(path) if fmt == "brainvision" else "")
    if short:
        log.warning("%s: %s", path.name, short)
        rec.warnings.append(short)
    return rec


def _brainvision_partial_sample(path: Path) -> str:
    """The warning for a BrainVision data file that ends inside a sample (cut while being
    copied or written; its header states no length, so this and markers after the end are
    what shows a cut), else ""."""
    try:
        text = path.read_text(encoding="latin-1")
        n_ch = int(re.search(r"^NumberOfChannels=(\d+)", text, re.MULTILINE).group(1))
        fmt = re.search(r"^BinaryFormat=(\w+)", text, re.MULTILINE).group(1).upper()
        found = re.search(r"^DataFile=(.+?)\s*$", text, re.MULTILINE)
        eeg = path.parent / found.group(1) if found else path.with_suffix(".eeg")
        size = eeg.stat().st_size
    except (AttributeError, OSError, ValueError):
        return ""
    frame = n_ch * {"INT_16": 2, "UINT_16": 2, "INT_32": 4, "IEEE_FLOAT_32": 4}.get(fmt, 0)
    if not frame or size % frame == 0:
        return ""
    return (f"the data file {eeg.name} ends inside a sample ({size % frame} bytes of "
            f"{frame}): it was cut while being copied or written; the whole samples before "
            "the cut are analysed")


def _read_whole(path: Path, reader):
    """A file MNE reads whole, (raw, "")."""
    return reader(path, preload=True, verbose="error"), ""


def _read_brainvision(path: Path, reader):
    """A BrainVision recording, (raw, ""): header and markers by MNE; a binary multiplexed
    data file is left unread, for :func:`_brainvision_uv` to read straight into µV."""
    raw = reader(path, preload=False, verbose="error")
    if _brainvision_layout(raw) is None:
        raw.load_data(verbose="error")
    return raw, ""


#: BrainVision binary formats as MNE names them, and their little-endian dtypes
_BRAINVISION_DTYPES = {"short": "<i2", "int": "<i4", "single": "<f4"}


def _brainvision_layout(raw) -> tuple[Path, np.dtype, int, int] | None:
    """(data file, dtype, channels in the file, samples) of a BrainVision Raw whose data
    :func:`_brainvision_uv` can read (binary, multiplexed, every channel kept), else None."""
    extras = (getattr(raw, "_raw_extras", None) or [{}])[0]
    dtype = _BRAINVISION_DTYPES.get(extras.get("fmt")) if isinstance(extras.get("fmt"), str) \
        else None
    files = getattr(raw, "filenames", None) or []
    if dtype is None or extras.get("order") != "F" or len(files) != 1 or files[0] is None \
            or extras.get("orig_nchan") != len(raw.ch_names) or raw.first_samp != 0:
        return None
    return Path(files[0]), np.dtype(dtype), int(extras["orig_nchan"]), int(raw.n_times)


def _brainvision_samples(raw, scale: np.ndarray) -> FileSamples | None:
    """The data file of an unread BrainVision Raw (:func:`_read_brainvision`) as
    :class:`FileSamples`: MNE's calibration times ``scale``; None if its layout is not one
    :func:`_brainvision_layout` accepts.

    MNE transposes the sample-major file in 8 MB blocks, larger than a core's cache, so every
    channel re-reads the block from memory (2-6 s for 64 ch x 3 M samples); :class:`FileSamples`
    transposes ~256 kB at a time (under 1 s)."""
    layout = _brainvision_layout(raw)
    if layout is None:
        return None
    data_file, dtype, n_ch, n_samples = layout
    # MNE's per-channel unit -> volts, then engine units
    return FileSamples(data_file, dtype, n_ch, n_samples, np.asarray(raw._cals, float) * scale)


def _read_fif(path: Path, reader):
    """A FIF file, (raw, warning): one cut short is read as far as it goes
    (:func:`_read_truncated_fif`); any other failure is MNE's own error."""
    try:
        return _read_whole(path, reader)
    except Exception as original:
        try:
            return _read_truncated_fif(path, reader)
        except Exception:
            raise original from None


def _read_eeglab(path: Path, reader):
    """An EEGLAB recording, (raw, warning): a separate ``.fdt`` data file holding fewer
    samples than the ``.set`` header declares (copied before it was written out) is read as
    far as it goes, with the expected and the found length in the warning."""
    raw = reader(path, preload=False, verbose="error")
    files = getattr(raw, "filenames", None) or []
    data_file = Path(files[0]) if files and files[0] else None
    if data_file is None or data_file.suffix.lower() != ".fdt" or not data_file.is_file():
        raw.load_data(verbose="error")
        return raw, ""
    n_ch = len(raw.ch_names)
    found = data_file.stat().st_size // (4 * n_ch)  # float32, multiplexed
    if found >= raw.n_times:
        raw.load_data(verbose="error")
        return raw, ""
    if found < 1:
        raise ValueError(f"{data_file.name} holds no whole sample")
    sfreq = raw.info["sfreq"]
    declared = raw.n_times
    raw.crop(tmax=(found - 1) / sfreq, include_tmax=True, verbose="error")
    raw.load_data(verbose="error")
    return raw, (f"the .set header declares {declared} samples ({declared / sfreq:.1f} s) but "
                 f"{data_file.name} holds {found} ({found / sfreq:.1f} s): it is truncated "
                 "(copied before it was written out?); markers in the missing part are lost "
                 "with it; what is there is analysed")


#: FIF tag kinds used to close a file cut short (see :func:`_read_truncated_fif`)
_FIFF_DIR_POINTER, _FIFF_BLOCK_START, _FIFF_BLOCK_END, _FIFF_DATA_BUFFER = 101, 104, 105, 300


def _read_truncated_fif(path: Path, reader):
    """A FIF file cut short (copied before it was closed): its complete tags, the blocks left
    open closed, read by MNE from a temporary copy; (raw, warning). Raises when the file is
    not a FIF cut short."""
    import struct
    import tempfile

    data = path.read_bytes()
    pos, stack, ok, ok_stack, n_buffers, n_ok_buffers = 0, [], 0, [], 0, 0
    while pos + 16 <= len(data):
        kind, _type, size, _next = struct.unpack(">iiii", data[pos:pos + 16])
        end = pos + 16 + size
        if size < 0 or end > len(data):
            break
        if kind == _FIFF_BLOCK_START and size >= 4:
            stack.append(struct.unpack(">i", data[pos + 16:pos + 20])[0])
        elif kind == _FIFF_BLOCK_END and stack:
            stack.pop()
        elif kind == _FIFF_DATA_BUFFER:
            n_buffers += 1
        pos = end
        ok, ok_stack, n_ok_buffers = pos, list(stack), n_buffers
    if ok == len(data) or not n_ok_buffers:
        raise ValueError("not a FIF file cut short")
    head = bytearray(data[:ok])
    # the directory the file points to lies in the part that is missing: scan the tags instead
    first = struct.unpack(">iiii", head[16 + 20:16 + 20 + 16]) if len(head) >= 56 else None
    if first is not None and first[0] == _FIFF_DIR_POINTER:
        head[52:56] = struct.pack(">i", -1)
    for block in reversed(ok_stack):
        head += struct.pack(">iiiii", _FIFF_BLOCK_END, 3, 4, 0, block)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "salvaged_raw.fif"
        copy.write_bytes(bytes(head))
        raw = reader(copy, preload=True, verbose="error")
    missing = len(data) - ok
    return raw, (f"the file is cut short ({missing} bytes of an unfinished tag at its end, "
                 f"{n_ok_buffers} complete data buffers, {raw.n_times / raw.info['sfreq']:.1f} s"
                 "): it was copied before it was closed?; what is there is analysed")


def _edf_truncation(path: Path, fmt: str) -> str:
    """The warning for an EDF/BDF file that holds fewer data records than its header
    declares (MNE reads what is there and says nothing; EDF+ annotations in the missing
    records are lost with them), else ""."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
            n_signals = int(head[252:256].decode("ascii").strip())
            f.seek(256 + n_signals * 216)
            per_record = [int(f.read(8).decode("ascii").strip() or 0) for _ in range(n_signals)]
        header_bytes = int(head[184:192].decode("ascii").strip())
        declared = int(head[236:244].decode("ascii").strip())
        record_s = float(head[244:252].decode("ascii").strip())
    except (OSError, ValueError):
        return ""
    record_bytes = sum(per_record) * (3 if fmt == "bdf" else 2)
    if declared <= 0 or record_bytes <= 0:
        return ""
    found = (path.stat().st_size - header_bytes) // record_bytes
    if found >= declared:
        return ""
    return (f"the header declares {declared} data records ({declared * record_s:.1f} s) but "
            f"the file holds {found} ({found * record_s:.1f} s): it is truncated (copied or "
            "exported before the recording was closed?); markers in the missing part are lost "
            "with it; what is there is analysed")


def _read_neurone(path: Path, pattern: re.Pattern) -> Recording:
    from tmseeg.io.neurone import NeurOneError, read_neurone

    try:
        session = read_neurone(path)
    except NeurOneError as exc:
        raise RecordingError(f"{exc}. Hint: pass the session folder as NeurOne wrote it "
                             "(Protocol.xml, Session.xml and the phase folders).") from exc
    names = session.ch_names
    types = _fix_types(names, ["eeg"] * len(names), explicit=False)
    events = [_make_event(s, label, pattern, 0) for s, label in session.events]
    events += [Event(sample=s, label=GAP_LABEL, kind=EVENT_GAP) for s in session.gaps]
    date = session.meas_date
    if date is not None:
        date = (date.replace(tzinfo=timezone.utc) if date.tzinfo is None
                else date.astimezone(timezone.utc))
    folder = path if path.is_dir() else path.parent
    for text in session.warnings:
        log.warning("%s: %s", folder.name, text)
    return Recording(data_uv=session.data_uv,
                     meta=StreamMeta(ch_names=tuple(names), sfreq=session.sfreq,
                                     ch_types=tuple(types), name=folder.name),
                     events=events, meas_date=date, path=path, warnings=list(session.warnings))


def _past_end_warning(past_end: Sequence[tuple[str, float]], end_s: float, cause: str) -> str:
    """The warning for markers (description, s from the first sample) after the data end."""
    labels = sorted(set(d for d, _ in past_end))
    return (f"{len(past_end)} marker(s) lie after the last sample ({', '.join(labels[:5])}"
            f"{' ...' if len(labels) > 5 else ''}; the data end at {end_s:.1f} s, the last "
            f"marker is at {max(t for _, t in past_end):.1f} s): {cause}; what is there is "
            "analysed")


def _markers_after_end(raw, fmt: str, path: Path) -> list[tuple[str, float]]:
    """Markers a BrainVision marker file holds after the data's last sample (MNE drops them
    when it reads the recording): the sign of a data file cut short."""
    if fmt != "brainvision":
        return []
    import mne

    try:
        text = path.read_text(encoding="latin-1")
        found = re.search(r"^MarkerFile=(.+?)\s*$", text, re.MULTILINE)
        vmrk = path.parent / found.group(1) if found else path.with_suffix(".vmrk")
        with warnings.catch_warnings(), mne.utils.use_log_level("error"):
            warnings.simplefilter("ignore")
            ann = mne.read_annotations(vmrk, sfreq=raw.info["sfreq"])
    except Exception:  # the recording was read; this check only adds a warning
        return []
    end_s = raw.n_times / raw.info["sfreq"]
    return [(str(d), float(t)) for d, t in zip(ann.description, ann.onset) if t >= end_s]


#: channel names that say what a channel is when the file does not (BrainVision and EDF store
#: no channel types): muscles recorded for MEPs, eye, heart and other polygraphic channels
_TYPE_BY_NAME = [
    (re.compile(r"^(?:emg|fdi|apb|adm|ecr|fcr|edc|ta|bb|abd|mep)(?:[\s_\-]?\w{0,6})?$",
                re.IGNORECASE), "emg"),
    (re.compile(r"^(?:eog|heog|veog|leog|reog)(?:[\s_\-]?\w{0,6})?$", re.IGNORECASE), "eog"),
    (re.compile(r"^(?:ecg|ekg)(?:[\s_\-]?\w{0,6})?$", re.IGNORECASE), "ecg"),
    (re.compile(r"^(?:resp|gsr|eda|temp|pulse ?ox|spo2|photic|audio)\w{0,6}$", re.IGNORECASE),
     "misc"),
]


def _fix_types(names: Sequence[str], types: Sequence[str], explicit: bool) -> list[str]:
    """Channels typed ``eeg``/``misc`` (what a file without channel types gives) whose name
    says otherwise (``EMG*``, ``FDI``, ``APB``, ``EOG``, ``ECG``, ``Resp``, ``Status`` ...)
    get that type; a name that is an electrode of the 10-05 system stays EEG."""
    from tmseeg.stream.montage import montage_positions

    positions = montage_positions()
    out = list(types)
    for i, (n, t) in enumerate(zip(names, types)):
        if t not in ("eeg", "misc") or (explicit and t == "eeg"):
            continue
        if n.lower() in positions:
            continue
        for pattern, kind in _TYPE_BY_NAME:
            if pattern.match(n.strip()):
                out[i] = kind
                break
    return out


def _from_raw(raw, pattern: re.Pattern, path: Path | None,
              past_end: Sequence[tuple[str, float]] = (), stim_events: bool = True,
              preload: bool = True) -> Recording:
    """Convert an MNE Raw (volts) into a :class:`Recording` (µV); ``past_end`` are the
    markers (description, time in s) the file has after its last sample; ``stim_events``
    False when the stim channels repeat the annotations; ``preload`` False keeps an unread
    BrainVision data file on disk (:class:`FileSamples`)."""
    import mne

    names = list(raw.ch_names)
    types = _fix_types(names, raw.get_channel_types(), explicit=False)
    sfreq = float(raw.info["sfreq"])
    scale = 1.0 / _volt_scale(types)
    data = getattr(raw, "_data", None)  # a preloaded Raw's own array: scaled in place
    if isinstance(data, np.ndarray) and data.dtype == np.float64 and data.flags.c_contiguous \
            and data.shape == (len(names), raw.n_times):
        # no copy of a recording that may be gigabytes (the Raw is ours and dropped after)
        data *= scale[:, None]
        data_uv = data
    else:
        data_uv = None if raw.preload else _brainvision_samples(raw, scale)
        if data_uv is not None and preload:
            data_uv = np.asarray(data_uv)
        elif data_uv is None:
            data_uv = np.ascontiguousarray(raw.get_data() * scale[:, None], dtype=np.float64)
    events: list[Event] = []
    warnings_found: list[str] = []
    ann = raw.annotations
    if len(ann):
        samples = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)
        for s, dur, desc in zip(samples, ann.duration, ann.description):
            if not 0 <= s < raw.n_times:
                continue
            events.append(_annotation_event(int(s), str(desc), pattern,
                                            int(round(dur * sfreq))))
    if past_end:
        warnings_found.append(_past_end_warning(
            past_end, raw.n_times / sfreq, "the data file is probably truncated (copied or "
            "exported before the recording was closed)"))
    stim_picks = [i for i, t in enumerate(types) if t == "stim"] if stim_events else []
    for i in stim_picks:
        # BioSemi's Status: the trigger is the low 16 bits, the bits above are the
        # amplifier's flags (CMS in range, battery, new epoch), which change on their own
        biosemi = names[i].lower() == "status" and path is not None \
            and path.suffix.lower() == ".bdf"
        found = mne.find_events(
            raw, stim_channel=names[i], shortest_event=1, consecutive=True, verbose="error",
            **({"mask": 0xFFFF, "mask_type": "and"} if biosemi else {}))
        for s, _, code in found:
            events.append(_make_event(int(s - raw.first_samp), str(int(code)), pattern, 0))
    name = path.name if path is not None else "recording"
    meta = StreamMeta(ch_names=tuple(names), sfreq=sfreq, ch_types=tuple(types), name=name)
    meas_date = raw.info["meas_date"]
    for text in warnings_found:
        log.warning("%s: %s", name, text)
    return Recording(
        data_uv=data_uv,
        meta=meta,
        events=events,
        meas_date=meas_date,
        t0_s=float(raw.first_time),
        path=path,
        warnings=warnings_found,
    )


def _annotation_event(sample: int, desc: str, pattern: re.Pattern, duration: int) -> Event:
    """An annotation as an event; one whose description (after a BrainVision ``Type/``) is a
    JSON object carries pulse metadata: ``PulseInfo/{...}`` is an ``"info"`` event,
    ``Stimulus/{"label": "TMS", ...}`` the marker ``Stimulus/TMS`` with that metadata (what
    :class:`~tmseeg.io.recorder.BrainVisionRecorder` writes)."""
    mtype, slash, rest = desc.partition("/")
    text = rest if slash and rest.startswith("{") else desc
    if not text.startswith("{"):
        return _make_event(sample, desc, pattern, duration)
    if slash and mtype == INFO_LABEL:  # never a pulse, though its name says "pulse"
        info = pulse_info_message(text)
        if info is None:
            return Event(sample=sample, label=desc, kind=EVENT_MARKER)
        return info_event(sample, info)
    label, extra = parse_marker(text)
    event = _make_event(sample, f"{mtype}/{label}" if text is rest else label, pattern,
                        duration)
    return replace(event, extra=extra) if extra else event


def _make_event(sample: int, label: str, pattern: re.Pattern, duration: int,
                time_s: float = float("nan")) -> Event:
    if label == GAP_LABEL or label.lower() == "gap":
        kind = EVENT_GAP
    elif pattern.search(label):
        kind = EVENT_PULSE
        duration = 0
    else:
        kind = EVENT_MARKER
    return Event(sample=sample, label=label, kind=kind, time_s=time_s, duration=max(duration, 0))


# --------------------------------------------------------------------------------------------
# XDF
# --------------------------------------------------------------------------------------------

_XDF_TYPES = {
    "eeg": "eeg", "emg": "emg", "eog": "eog", "ecg": "ecg", "stim": "stim",
    "trigger": "stim", "trig": "stim", "misc": "misc", "aux": "misc",
}


#: XDF stream types whose regularly sampled channels join the EEG stream's as extra channels
_XDF_AUX_TYPES = ("emg", "eog", "ecg", "exg", "aux", "misc", "bipolar")


def _first(d: dict, key: str, default=None):
    v = d.get(key) if isinstance(d, dict) else None
    if isinstance(v, list):
        v = v[0] if v else None
    return default if v is None else v


def _read_xdf(path: Path, pattern: re.Pattern, stream_name: str | None) -> Recording:
    import pyxdf

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"XDF:" and not path.name.lower().endswith(".xdfz"):
        raise RecordingError(
            f"{path}: not an XDF file (it does not start with 'XDF:'). "
            "Check that it was written by LabRecorder or another XDF writer."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            streams, header = pyxdf.load_xdf(str(path), dejitter_timestamps=True)
    except Exception as exc:
        raise RecordingError(
            f"{path}: cannot parse it as XDF ({type(exc).__name__}: {exc}). The file may be "
            "truncated; pyxdf reads files cut mid-chunk only if the cut falls between chunks."
        ) from exc

    def info(s, key, default=""):
        return str(_first(s["info"], key, default) or default)

    numeric = [
        s for s in streams
        if info(s, "channel_format").lower() != "string" and len(s["time_stamps"]) > 0
    ]
    described = ", ".join(
        f"{info(s, 'name')!r} (type {info(s, 'type')!r}, {len(s['time_stamps'])} samples)"
        for s in streams
    ) or "none"
    if stream_name is not None:
        chosen = [s for s in numeric if info(s, "name") == stream_name]
        if not chosen:
            raise RecordingError(
                f"{path}: no numeric stream named {stream_name!r} with samples. "
                f"Streams in the file: {described}."
            )
    else:
        chosen = [s for s in numeric if info(s, "type").lower() == "eeg"] or (
            numeric if len(numeric) == 1 else []
        )
        if len(chosen) != 1:
            raise RecordingError(
                f"{path}: cannot pick the EEG stream ({len(chosen)} candidates). "
                f"Streams in the file: {described}. Pass stream_name=... to choose one."
            )
    eeg = chosen[0]
    sfreq = float(info(eeg, "nominal_srate", "0") or 0)
    if not sfreq > 0:
        raise RecordingError(
            f"{path}: stream {info(eeg, 'name')!r} has an irregular rate (nominal_srate 0); "
            "the engine needs a regularly sampled EEG stream."
        )
    x = np.asarray(eeg["time_series"], dtype=np.float64).T  # (n_channels, n_samples)
    ts = np.asarray(eeg["time_stamps"], dtype=np.float64)
    names, types, scales, explicit = _xdf_channels(eeg, path)
    types = _fix_types(names, types, explicit=explicit)
    data_uv = x * np.asarray(scales)[:, None]
    merged = []
    for s in numeric:  # a separate EMG amplifier (or EOG/ECG/aux box) on its own stream
        if s is eeg or info(s, "type").lower() not in _XDF_AUX_TYPES:
            continue
        rate = float(info(s, "nominal_srate", "0") or 0)
        if not rate > 0:
            continue
        a_names, a_types, a_scales, a_explicit = _xdf_channels(s, path)
        a_types = _fix_types(a_names, [t if t != "eeg" else "misc" for t in a_types],
                             explicit=a_explicit)
        a_names = [n if n not in names else f"{info(s, 'name')}:{n}" for n in a_names]
        values = (np.asarray(s["time_series"], dtype=np.float64).T
                  * np.asarray(a_scales)[:, None])
        data_uv = np.vstack([data_uv, _on_grid(values, np.asarray(s["time_stamps"], float),
                                               rate, ts, sfreq, info(s, "name"), path)])
        names += a_names
        types += a_types
        merged.append(info(s, "name"))
    if merged:
        log.info("%s: stream(s) %s added to %r as channels, resampled onto its samples by "
                 "their time stamps", path.name, merged, info(eeg, "name"))

    events: list[Event] = []
    past_end: list[tuple[str, float]] = []
    half = 0.5 / sfreq
    for s in streams:
        if s is eeg or len(s["time_stamps"]) == 0:
            continue
        is_marker = info(s, "type").lower() == "markers" or info(s, "channel_format").lower() == "string"
        if not is_marker:
            continue
        for t, value in zip(np.asarray(s["time_stamps"], dtype=float), s["time_series"]):
            if t < ts[0] - half or t > ts[-1] + half:  # outside the EEG: it has no sample
                if t > ts[-1] + half:
                    label = value[0] if isinstance(value, (list, tuple, np.ndarray)) else value
                    past_end.append((parse_marker(str(label))[0], float(t - ts[0])))
                continue
            sample = int(np.clip(np.round((t - ts[0]) * sfreq), 0, len(ts) - 1))
            # nearest actual timestamp (robust to a clock that is not exactly nominal)
            j = int(np.searchsorted(ts, t))
            cands = [k for k in (j - 1, j) if 0 <= k < len(ts)]
            sample = min(cands, key=lambda k: abs(ts[k] - t)) if cands else sample
            label = value[0] if isinstance(value, (list, tuple, np.ndarray)) else value
            if info(s, "type").lower() == INFO_LABEL.lower():  # a pulse-info stream
                found_info = pulse_info_message(str(label))
                if found_info is not None:
                    events.append(info_event(int(sample), found_info, float(t)))
                continue
            text, extra = parse_marker(str(label))  # JSON markers carry pulse metadata
            event = _make_event(int(sample), text, pattern, 0, time_s=float(t))
            events.append(replace(event, extra=extra) if extra else event)
    meta = StreamMeta(
        ch_names=tuple(names), sfreq=sfreq, ch_types=tuple(types), name=path.name,
        source_id=info(eeg, "source_id"),
    )
    meas_date = _xdf_date(header)
    found = []
    if past_end:  # the EEG stream stopped (amplifier lost) while the markers went on
        found.append(_past_end_warning(past_end, float(ts[-1] - ts[0] + 1.0 / sfreq),
                                       f"the EEG stream {info(eeg, 'name')!r} stopped before "
                                       "the markers did"))
        log.warning("%s: %s", path.name, found[-1])
    return Recording(
        data_uv=np.ascontiguousarray(data_uv), meta=meta, events=events,
        meas_date=meas_date, t0_s=float(ts[0]), path=path, warnings=found,
    )


def _xdf_channels(stream: dict, path: Path) -> tuple[list[str], list[str], list[float], bool]:
    """Names, MNE types and to-µV scales of an XDF stream's channels (from its description),
    and whether every channel had a type."""
    n_ch = len(stream["time_series"][0]) if len(stream["time_series"]) else 0
    desc = _first(stream["info"], "desc") or {}
    chans = _first(desc, "channels") or {}
    ch_list = chans.get("channel", []) if isinstance(chans, dict) else []
    names, types, scales, explicit = [], [], [], True
    for i in range(n_ch):
        ch = ch_list[i] if i < len(ch_list) else {}
        names.append(str(_first(ch, "label", f"Ch{i + 1}") or f"Ch{i + 1}"))
        t = str(_first(ch, "type", "") or "").lower()
        if not t:
            explicit = False
        mne_type = _XDF_TYPES.get(t, "misc" if t else "eeg")
        types.append(mne_type)
        unit = str(_first(ch, "unit", "") or "").strip().lower()
        if mne_type in VOLTAGE_TYPES:
            # LSL's convention for EEG is microvolts; a missing unit is taken to be µV.
            if unit and unit not in UNIT_SCALE_TO_UV:
                raise RecordingError(
                    f"{path}: channel {names[-1]!r} has unknown unit {unit!r}. Expected one of "
                    "microvolts, millivolts, volts."
                )
            scales.append(UNIT_SCALE_TO_UV.get(unit, 1.0))
        else:
            scales.append(1.0)
    return names, types, scales, explicit


def _on_grid(values: np.ndarray, times_s: np.ndarray, rate_hz: float, grid_s: np.ndarray,
             grid_rate_hz: float, name: str, path: Path) -> np.ndarray:
    """Another stream's samples at the EEG's sample times (both on the recording's common
    clock, as pyxdf gives them): low-passed at 0.45 x the EEG rate first when it is faster
    (no aliasing), then interpolated linearly. Outside the stream's own span its first or
    last value is held, with a warning."""
    from scipy import signal

    order = np.argsort(times_s, kind="stable")
    times_s, values = times_s[order], values[:, order]
    if rate_hz > 1.1 * grid_rate_hz and values.shape[1] > 30:
        sos = signal.butter(4, 0.45 * grid_rate_hz, fs=rate_hz, output="sos")
        values = signal.sosfiltfilt(sos, values, axis=1)
    covered = (grid_s >= times_s[0] - 0.5 / rate_hz) & (grid_s <= times_s[-1] + 0.5 / rate_hz)
    if not covered.all():
        log.warning("%s: stream %r covers %.0f %% of the EEG recording; its first/last value is "
                    "held outside", path.name, name, 100.0 * covered.mean())
    return np.vstack([np.interp(grid_s, times_s, row) for row in values])


def _xdf_date(header) -> datetime | None:
    try:
        text = str(_first(header["info"], "datetime"))
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except Exception:
        return None


__all__ = [
    "DEFAULT_PULSE_PATTERN",
    "GAP_LABEL",
    "VOLTAGE_TYPES",
    "Recording",
    "RecordingError",
    "read_recording",
]
