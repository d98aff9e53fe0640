"""Crash-safe BrainVision recorder: the ``.vhdr/.vmrk/.eeg`` triplet written as data arrive.

Layout on disk
--------------
- ``NAME.vhdr`` is written once, complete, when the recorder opens (channel names, µV
  resolution 1.0 for voltage channels, ``n/a`` unit for stim/misc channels, ``IEEE_FLOAT_32``,
  ``MULTIPLEXED``, sampling interval in µs). It carries no sample count: readers (MNE included)
  take the length from the size of the ``.eeg`` file, so the header never needs a rewrite.
- ``NAME.eeg`` grows by one ``os.write`` per block, holding the block's whole multiplexed
  float32 bytes. The write is a single system call on a file opened with ``O_APPEND``, so a
  killed process (SIGKILL included) leaves whole samples only: everything ``write`` returned
  from is in the kernel's page cache and survives the process. ``os.fsync`` runs on a
  background thread at least every ``flush_interval_s`` seconds, so an operating-system crash
  or power cut loses at most that much.
- ``NAME.vmrk`` starts with a ``New Segment`` marker carrying the start date and grows by one
  ``os.write`` per block with that block's marker lines, written after the block's data.

Events become marker lines (positions are 1-based file samples, as BrainVision wants):

- pulses: ``Stimulus,<label>`` (MNE reads the annotation ``"Stimulus/<label>"``);
- other markers: ``Comment,<label>``;
- a marker or pulse that carries metadata (a JSON marker): its description is the JSON
  ``{"label": <label>, "intensity_pct": ...}``; per-pulse metadata sent on a stream of its
  own (``"info"`` events): ``PulseInfo,{"intensity_pct": ...}``. Commas are written as
  BrainVision's ``\1``; :func:`tmseeg.io.files.read_recording` reads both back;
- a label that already has a BrainVision ``Type/Description`` form (``"Stimulus/S  1"``)
  keeps its type and description;
- gaps (samples that never arrived, either a ``"gap"`` event or a jump of
  ``Block.first_sample``): ``New Segment,Gap,<pos>,<n_missing>`` at the file sample where the
  data resume. BrainVision files store no samples for a gap: the file is the samples received,
  back to back, and the marker's duration field holds the number of missing samples (MNE
  reads it as the annotation ``"New Segment/Gap"`` with duration ``n_missing / sfreq``).

When writing fails (disk full, drive removed)
---------------------------------------------
The block being written is taken back (both files are cut to their size before it), so the
``.eeg`` ends at a whole sample and every marker points into the data; the files are closed and
stay readable as they are. :meth:`BrainVisionRecorder.write` raises :class:`RecordingError`
once, saying what was kept; later blocks are counted as not recorded
(:attr:`~BrainVisionRecorder.n_samples_dropped`) and :meth:`~BrainVisionRecorder.outcome`
sums it up.
"""
from __future__ import annotations

import bisect
import errno
import json
import logging
import os
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tmseeg.stream.pulseinfo import INFO_LABEL, pulse_info
from tmseeg.stream.block import EVENT_GAP, EVENT_INFO, EVENT_PULSE, Block, Event, StreamMeta
from tmseeg.io.files import VOLTAGE_TYPES

_log = logging.getLogger(__name__)


class RecordingError(OSError):
    """Writing a recording failed; the message says what was kept and what to do.

    An :class:`OSError` with the ``errno`` of the failure (``ENOSPC`` for a full disk).
    """

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]" prefix
        return str(self.strerror)


class AppendFile:
    """One file written by whole appends (``O_APPEND``), which can be cut back to a size.

    The recorder's file layer: every byte of the recording goes through :meth:`write`.

    Parameters
    ----------
    path : Path
        Created, or truncated if it exists.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        #: bytes in the file (the size it is cut back to after a failed write)
        self.size = 0

    def _write_some(self, data: memoryview) -> int:
        """One ``write`` system call; returns the bytes written (may be fewer on a full disk)."""
        return os.write(self.fd, data)

    def write(self, data: bytes) -> None:
        """Append all of ``data`` (raises ``OSError``, maybe after writing part of it)."""
        view = memoryview(data)
        done = 0
        while done < len(view):  # a regular file takes it in one call unless the disk fills
            done += self._write_some(view[done:])
        self.size += len(view)

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes."""
        os.ftruncate(self.fd, size)
        self.size = size

    def fsync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def _bv_escape(text: str) -> str:
    """BrainVision text fields: commas become ``\\1``; line breaks are not allowed."""
    return str(text).replace(",", r"\1").replace("\r", " ").replace("\n", " ")


class BrainVisionRecorder:
    """Write a stream to BrainVision files incrementally, so a crash loses (almost) nothing.

    Parameters
    ----------
    path : str or Path
        ``NAME.vhdr`` (the ``.vmrk`` and ``.eeg`` files go beside it), or a directory (created
        if missing; any path without a suffix counts as one), in which case the files are
        ``directory/<meta.name>.vhdr`` -- with ``-2``, ``-3``, ... appended when that name is
        already taken, so recording twice into one folder never fails and never overwrites.
    meta : StreamMeta
        Channels and rate of the stream to record; every block must carry the same channels.
    flush_interval_s : float
        Longest time between ``os.fsync`` calls of the data and marker files.
    overwrite : bool
        Replace an existing recording of the same name. By default an existing ``.vhdr``,
        ``.vmrk`` or ``.eeg`` of that name is an error (for an explicit ``.vhdr`` path), so
        nothing recorded is lost.

    Attributes
    ----------
    n_samples_written : int
        Samples per channel written to the ``.eeg`` file so far.
    n_markers_written : int
        Marker lines written after the initial ``New Segment``.
    vhdr_path, vmrk_path, eeg_path : Path
        The three files.
    error : OSError or None
        The write (or ``fsync``) failure that stopped the recording, if one did.
    n_samples_dropped : int
        Samples per channel given to :meth:`write` but not recorded because of that failure.

    Notes
    -----
    ``write`` is meant to be called from one thread (the sink of one stream); the ``os.fsync``
    calls run on a background thread and never block it.

    A failed write (disk full, drive removed) stops the recording cleanly: the block is taken
    back, the files are closed at a whole sample with every marker inside the data, and
    :class:`RecordingError` is raised once; later blocks are counted as not recorded.

    Examples
    --------
    >>> with BrainVisionRecorder("session.vhdr", block.meta) as rec:  # doctest: +SKIP
    ...     for block in source:
    ...         rec.write(block)
    """

    def __init__(
        self,
        path: str | Path,
        meta: StreamMeta,
        flush_interval_s: float = 0.5,
        overwrite: bool = False,
    ) -> None:
        path = Path(path)
        if path.suffix.lower() != ".vhdr":
            if path.suffix and not path.is_dir():
                raise ValueError(
                    f"BrainVisionRecorder: {path} must end in .vhdr (or name a directory); "
                    f"e.g. {path.with_suffix('.vhdr')}"
                )
            path.mkdir(parents=True, exist_ok=True)
            path = self._fresh_name(path, meta.name, overwrite)
        if not path.parent.is_dir():
            raise FileNotFoundError(
                f"BrainVisionRecorder: folder {path.parent} does not exist; create it first."
            )
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s!r}")
        self.meta = meta
        self.flush_interval_s = float(flush_interval_s)
        self.vhdr_path = path
        self.vmrk_path = path.with_suffix(".vmrk")
        self.eeg_path = path.with_suffix(".eeg")
        existing = [p for p in (self.vhdr_path, self.vmrk_path, self.eeg_path) if p.exists()]
        if existing and not overwrite:
            raise FileExistsError(
                f"BrainVisionRecorder: {', '.join(str(p) for p in existing)} already exist(s); "
                "refusing to overwrite a recording. Choose another name, or pass "
                "overwrite=True to replace it."
            )
        self.n_samples_written = 0
        self.n_markers_written = 0
        self._next_abs: int | None = None  # absolute sample expected next
        # segment map: absolute sample where each contiguous run starts -> its file position
        self._seg_abs: list[int] = []
        self._seg_file: list[int] = []
        self._mk_number = 1
        self._closed = False
        self.error: OSError | None = None
        self.n_samples_dropped = 0
        self._n_synced = 0  # samples known to be on disk (last successful fsync)
        self._sync_error: OSError | None = None
        # guards the file descriptors between fsync (background thread / flush()) and close();
        # write() never takes it, so a slow fsync never stalls the stream being recorded
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._start_date = datetime.now(timezone.utc)
        self._write_header()
        self._eeg = self._open_append(self.eeg_path)
        self._vmrk = self._open_append(self.vmrk_path)
        stamp = self._start_date.strftime("%Y%m%d%H%M%S%f")
        self._vmrk.write(
            (
                "Brain Vision Data Exchange Marker File, Version 1.0\n"
                "; written incrementally by tmseeg\n\n"
                "[Common Infos]\n"
                "Codepage=UTF-8\n"
                f"DataFile={self.eeg_path.name}\n\n"
                "[Marker Infos]\n"
                "; Each entry: Mk<Marker number>=<Type>,<Description>,<Position in data "
                "points>,\n; <Size in data points>, <Channel number (0 = marker is related to "
                "all channels)>\n"
                f"Mk1=New Segment,,1,1,0,{stamp}\n"
            ).encode("utf-8"),
        )
        for f in (self._eeg, self._vmrk):
            f.fsync()
        self._fsync_dir()
        self._syncer = threading.Thread(target=self._sync_loop, name="bv-fsync", daemon=True)
        self._syncer.start()

    @staticmethod
    def _fresh_name(folder: Path, stream_name: str, overwrite: bool) -> Path:
        """``folder/<stream name>.vhdr``; ``-2``, ``-3``, ... appended if that is taken."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stream_name or "") or "recording"
        candidate = folder / f"{stem}.vhdr"
        k = 1
        while not overwrite and any(
            candidate.with_suffix(ext).exists() for ext in (".vhdr", ".vmrk", ".eeg")
        ):
            k += 1
            candidate = folder / f"{stem}-{k}.vhdr"
        return candidate

    @property
    def path(self) -> Path:
        """The ``.vhdr`` header file of this recording."""
        return self.vhdr_path

    @property
    def failed(self) -> bool:
        """True when a write or sync failure stopped the recording."""
        return self.error is not None

    def _open_append(self, path: Path) -> AppendFile:
        """The file layer of the ``.eeg`` and ``.vmrk`` files."""
        return AppendFile(path)

    def _seconds(self, n_samples: int) -> str:
        return f"{n_samples} samples ({n_samples / self.meta.sfreq:.1f} s)"

    def outcome(self) -> str:
        """One line on what the recording holds, and, after a failure, what it lacks."""
        kept = (f"{self._seconds(self.n_samples_written)}, {self.n_markers_written} markers "
                f"in {self.vhdr_path}")
        if self.error is None:
            return f"recorded {kept}"
        total = self.n_samples_written + self.n_samples_dropped
        share = f", {100 * self.n_samples_dropped / total:.0f} % of the session" if total else ""
        return (f"recording FAILED ({_describe_error(self.error)}): kept {kept}; NOT recorded: "
                f"{self._seconds(self.n_samples_dropped)} that arrived after the failure{share}")

    # ---------------------------------------------------------------------------------------
    def _write_header(self) -> None:
        m = self.meta
        lines = [
            "Brain Vision Data Exchange Header File Version 1.0",
            "; written incrementally by tmseeg (crash-safe recorder)",
            "",
            "[Common Infos]",
            "Codepage=UTF-8",
            f"DataFile={self.eeg_path.name}",
            f"MarkerFile={self.vmrk_path.name}",
            "DataFormat=BINARY",
            "; Data orientation: MULTIPLEXED=ch1,pt1, ch2,pt1 ...",
            "DataOrientation=MULTIPLEXED",
            f"NumberOfChannels={m.n_channels}",
            "; Sampling interval in microseconds",
            f"SamplingInterval={1e6 / m.sfreq:.10g}",
            "",
            "[Binary Infos]",
            "BinaryFormat=IEEE_FLOAT_32",
            "",
            "[Channel Infos]",
            "; Each entry: Ch<Channel number>=<Name>,<Reference channel name>,",
            "; <Resolution in \"Unit\">,<Unit>, Future extensions..",
        ]
        for i, (name, kind) in enumerate(zip(m.ch_names, m.ch_types), start=1):
            unit = "µV" if kind in VOLTAGE_TYPES else "n/a"
            lines.append(f"Ch{i}={_bv_escape(name)},,1,{unit}")
        lines += [
            "",
            "[Comment]",
            f"Stream: {m.name} (source_id {m.source_id or '-'})",
            "Channel types: " + ", ".join(f"{n}={t}" for n, t in zip(m.ch_names, m.ch_types)),
            "",
        ]
        text = "\n".join(lines).encode("utf-8")
        tmp = self.vhdr_path.with_name(self.vhdr_path.name + f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.vhdr_path)

    def _fsync_dir(self) -> None:
        try:
            dfd = os.open(self.vhdr_path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            if self._dirty.is_set():
                self._dirty.clear()
                try:
                    self.flush()
                except OSError as err:  # the next write() reports it and stops the recording
                    self._sync_error = err
                    return

    def flush(self) -> None:
        """Force data and markers to disk now (``os.fsync``)."""
        with self._lock:
            if self._closed:
                return
            n = self.n_samples_written
            self._eeg.fsync()
            self._vmrk.fsync()
            self._n_synced = n

    # ---------------------------------------------------------------------------------------
    def _file_pos(self, abs_sample: int) -> int:
        """0-based file sample of an absolute sample index (clamped into the recorded runs)."""
        if not self._seg_abs:
            return 0
        k = bisect.bisect_right(self._seg_abs, abs_sample) - 1
        if k < 0:
            return 0
        return self._seg_file[k] + (abs_sample - self._seg_abs[k])

    def _marker_line(self, mtype: str, desc: str, pos0: int, size: int) -> str:
        self._mk_number += 1
        self.n_markers_written += 1
        return f"Mk{self._mk_number}={mtype},{_bv_escape(desc)},{pos0 + 1},{size},0\n"

    def _event_line(self, ev: Event) -> str:
        pos = self._file_pos(ev.sample)
        if ev.kind == EVENT_GAP:
            return self._marker_line("New Segment", "Gap", pos, max(int(ev.duration), 0))
        info = pulse_info(ev)
        if ev.kind == EVENT_INFO:
            return self._marker_line(INFO_LABEL, json.dumps(info), pos, 1)
        if "/" in ev.label:
            mtype, desc = ev.label.split("/", 1)
        else:
            mtype = "Stimulus" if ev.kind == EVENT_PULSE else "Comment"
            desc = ev.label
        if info:  # a JSON marker's metadata stays with it: {"label": ..., "intensity_pct": ...}
            desc = json.dumps({"label": desc, **info})
        return self._marker_line(_bv_escape(mtype), desc, pos, 1)

    def write(self, block: Block) -> None:
        """Append one block: its samples to ``.eeg``, its events to ``.vmrk``.

        Parameters
        ----------
        block : Block
            Consecutive with what was written before; a later ``first_sample`` is a gap (a
            ``New Segment,Gap`` marker records it), an earlier one is an error.

        Raises
        ------
        RecordingError
            Writing failed (disk full, drive removed): the block is taken back, the files are
            closed at a whole sample, and the message says what was kept. Raised once; later
            blocks are counted in :attr:`n_samples_dropped`.
        ValueError
            Channel-count mismatch, or a block that overlaps samples already written.
        RuntimeError
            The recorder is closed.
        """
        if self.error is not None:  # already said once, by the RecordingError
            self.n_samples_dropped += block.n_samples
            return
        if self._closed:
            raise RuntimeError(f"BrainVisionRecorder {self.vhdr_path} is closed; open a new one.")
        if self._sync_error is not None:
            self._fail(self._sync_error, block.n_samples, synced=True)
        if block.meta.n_channels != self.meta.n_channels:
            raise ValueError(
                f"BrainVisionRecorder {self.vhdr_path.name}: block has {block.meta.n_channels} "
                f"channels, the recording has {self.meta.n_channels}: channel-count mismatch. "
                "Start a new recording for the new channel layout."
            )
        n = block.n_samples
        # what a failed write rolls back to
        before = (self.n_samples_written, self.n_markers_written, self._mk_number,
                  len(self._seg_abs), self._next_abs, self._eeg.size, self._vmrk.size)
        try:
            self._append(block)
        except OSError as err:
            self._rollback(before)
            self._fail(err, n)

    def _append(self, block: Block) -> None:
        n = block.n_samples
        lines: list[str] = []
        if n:
            if self._next_abs is None:
                self._seg_abs.append(block.first_sample)
                self._seg_file.append(0)
            elif block.first_sample < self._next_abs:
                raise ValueError(
                    f"BrainVisionRecorder {self.vhdr_path.name}: block starts at sample "
                    f"{block.first_sample} but samples up to {self._next_abs - 1} are already "
                    "written: blocks overlap. Feed blocks in order, each once."
                )
            elif block.first_sample > self._next_abs:
                missing = block.first_sample - self._next_abs
                self._seg_abs.append(block.first_sample)
                self._seg_file.append(self.n_samples_written)
                if not any(e.kind == EVENT_GAP for e in block.events):
                    lines.append(
                        self._marker_line("New Segment", "Gap", self.n_samples_written, missing)
                    )
            self._eeg.write(np.ascontiguousarray(block.data.T, dtype="<f4").tobytes())
            self.n_samples_written += n
            self._next_abs = block.stop_sample
        for ev in block.events:
            lines.append(self._event_line(ev))
        if lines:
            self._vmrk.write("".join(lines).encode("utf-8"))
        if n or lines:
            self._dirty.set()

    def _rollback(self, before: tuple) -> None:
        """Take back a block whose write failed: counters, segment map and file sizes."""
        (self.n_samples_written, self.n_markers_written, self._mk_number, n_seg,
         self._next_abs, eeg_size, vmrk_size) = before
        del self._seg_abs[n_seg:], self._seg_file[n_seg:]
        for f, size in ((self._eeg, eeg_size), (self._vmrk, vmrk_size)):
            try:  # shrinking frees space: it works on a full disk
                f.truncate(size)
            except OSError:  # a removed drive: nothing more can be done to the file
                pass

    def _fail(self, err: OSError, n_block: int, synced: bool = False) -> None:
        """Stop the recording after a write or sync failure and raise it, said once."""
        self.error = err
        self.n_samples_dropped += n_block
        self._stop.set()
        if self._syncer is not threading.current_thread():
            self._syncer.join()
        with self._lock:
            for f in (self._eeg, self._vmrk):
                for op in (f.fsync, f.close):
                    try:
                        op()
                    except OSError:
                        pass
            self._closed = True
        where = self.vhdr_path.parent
        if synced:
            lost = (f" (the last {self._seconds(self.n_samples_written - self._n_synced)} may "
                    "not have reached the disk)" if self.n_samples_written > self._n_synced
                    else "")
        else:
            lost = ""
        raise RecordingError(
            err.errno or errno.EIO,
            f"recording stopped: writing to {where} failed ({_describe_error(err)}). Kept "
            f"{self._seconds(self.n_samples_written)} and {self.n_markers_written} markers in "
            f"{self.vhdr_path}{lost}, readable as they are (whole samples, markers inside the "
            f"data); the data from sample {self.n_samples_written} of the file on are NOT "
            f"recorded. Free space on that drive (or reconnect it), or record to another "
            "folder, and start a new recording.",
        ) from err

    def close(self) -> None:
        """Flush everything to disk and close the files (idempotent).

        Raises
        ------
        RecordingError
            The final ``fsync`` failed (the files are closed all the same).
        """
        if self._closed:
            return
        self._stop.set()
        self._syncer.join()
        failure = None
        with self._lock:
            for f in (self._eeg, self._vmrk):
                try:
                    f.fsync()
                except OSError as err:
                    failure = failure or err
                try:
                    f.close()
                except OSError as err:
                    failure = failure or err
            self._closed = True
        failure = failure or self._sync_error
        if failure is not None and self.error is None:
            self.error = failure
            raise RecordingError(
                failure.errno or errno.EIO,
                f"recording {self.vhdr_path}: flushing to disk failed at close "
                f"({_describe_error(failure)}); up to {self._seconds(self.n_samples_written)} "
                "were written, those since the last successful sync may be missing.",
            ) from failure

    def __enter__(self) -> "BrainVisionRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


def _describe_error(err: OSError) -> str:
    """``No space left on device (ENOSPC)``: the cause in words and its errno name."""
    name = errno.errorcode.get(err.errno, "") if err.errno else ""
    text = err.strerror or str(err)
    return f"{text} ({name})" if name else text


def free_space_note(folder: str | Path, meta: StreamMeta) -> tuple[str, bool]:
    """How long a recording of ``meta`` fits in the free space of ``folder``.

    Returns
    -------
    (text, short) : (str, bool)
        e.g. ``"12.3 GB free: room for ~5.2 h at 640 kB/s"``; ``short`` when that is less
        than 30 minutes.
    """
    rate_bps = meta.n_channels * 4 * meta.sfreq
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown", False
    seconds = free / max(rate_bps, 1.0)
    room = (f"{seconds / 3600:.1f} h" if seconds >= 3600 else
            f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s")
    size = (f"{free / 1e9:.1f} GB" if free >= 1e9 else f"{free / 1e6:.1f} MB")
    return f"{size} free: room for ~{room} at {rate_bps / 1e3:.0f} kB/s", seconds < 1800


class RawRecorderSink:
    """Engine sink that records every raw block (as acquired) to a recorder.

    A write failure (disk full) is said once, as an error; the recorder has stopped at a whole
    sample and counts what it could not record, and the engine goes on processing.
    """

    def __init__(self, recorder: BrainVisionRecorder) -> None:
        self.recorder = recorder

    def on_raw(self, raw) -> None:
        """On the acquisition thread, as each block arrives (never behind processing)."""
        try:
            self.recorder.write(raw)
        except RecordingError as err:
            _log.error("%s The analysis goes on without recording.", err)

    def on_block(self, raw, processed) -> None:
        """Nothing: the raw block was written by :meth:`on_raw`."""


__all__ = ["AppendFile", "BrainVisionRecorder", "RawRecorderSink", "RecordingError",
           "free_space_note"]
