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
- a label that already has a BrainVision ``Type/Description`` form (``"Stimulus/S  1"``)
  keeps its type and description;
- gaps (samples that never arrived, either a ``"gap"`` event or a jump of
  ``Block.first_sample``): ``New Segment,Gap,<pos>,<n_missing>`` at the file sample where the
  data resume. BrainVision files store no samples for a gap: the file is the samples received,
  back to back, and the marker's duration field holds the number of missing samples (MNE
  reads it as the annotation ``"New Segment/Gap"`` with duration ``n_missing / sfreq``).
"""
from __future__ import annotations

import bisect
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tmseeg.stream.block import EVENT_GAP, EVENT_PULSE, Block, Event, StreamMeta
from tmseeg.stream.io import VOLTAGE_TYPES


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

    Notes
    -----
    ``write`` is meant to be called from one thread (the sink of one stream); the ``os.fsync``
    calls run on a background thread and never block it.

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
        # guards the file descriptors between fsync (background thread / flush()) and close();
        # write() never takes it, so a slow fsync never stalls the stream being recorded
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._start_date = datetime.now(timezone.utc)
        self._write_header()
        self._eeg_fd = os.open(self.eeg_path, flags | os.O_APPEND, 0o644)
        self._vmrk_fd = os.open(self.vmrk_path, flags | os.O_APPEND, 0o644)
        stamp = self._start_date.strftime("%Y%m%d%H%M%S%f")
        os.write(
            self._vmrk_fd,
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
        for fd in (self._eeg_fd, self._vmrk_fd):
            os.fsync(fd)
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
                self.flush()

    def flush(self) -> None:
        """Force data and markers to disk now (``os.fsync``)."""
        with self._lock:
            if self._closed:
                return
            os.fsync(self._eeg_fd)
            os.fsync(self._vmrk_fd)

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
        if "/" in ev.label:
            mtype, desc = ev.label.split("/", 1)
        else:
            mtype = "Stimulus" if ev.kind == EVENT_PULSE else "Comment"
            desc = ev.label
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
        ValueError
            Channel-count mismatch, or a block that overlaps samples already written.
        RuntimeError
            The recorder is closed.
        """
        if self._closed:
            raise RuntimeError(f"BrainVisionRecorder {self.vhdr_path} is closed; open a new one.")
        if block.meta.n_channels != self.meta.n_channels:
            raise ValueError(
                f"BrainVisionRecorder {self.vhdr_path.name}: block has {block.meta.n_channels} "
                f"channels, the recording has {self.meta.n_channels}: channel-count mismatch. "
                "Start a new recording for the new channel layout."
            )
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
            payload = np.ascontiguousarray(block.data.T, dtype="<f4").tobytes()
            written = os.write(self._eeg_fd, payload)
            while written < len(payload):  # regular files complete in one call; be safe
                written += os.write(self._eeg_fd, payload[written:])
            self.n_samples_written += n
            self._next_abs = block.stop_sample
        for ev in block.events:
            lines.append(self._event_line(ev))
        if lines:
            os.write(self._vmrk_fd, "".join(lines).encode("utf-8"))
        if n or lines:
            self._dirty.set()

    def close(self) -> None:
        """Flush everything to disk and close the files (idempotent)."""
        if self._closed:
            return
        self._stop.set()
        self._syncer.join()
        with self._lock:
            for fd in (self._eeg_fd, self._vmrk_fd):
                os.fsync(fd)
                os.close(fd)
            self._closed = True

    def __enter__(self) -> "BrainVisionRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass


__all__ = ["BrainVisionRecorder"]
