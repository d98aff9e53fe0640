"""File replay: any recording becomes live LSL streams (the test fixture for everything downstream).

A :class:`Player` opens two LSL outlets for a recording read by
:func:`~tmseeg.io.files.read_recording`:

- an EEG outlet (type ``EEG``, ``float32``, nominal rate = the file's rate) whose ``desc``
  follows the XDF meta-data convention: ``desc/channels/channel/{label,type,unit}``, with
  unit ``microvolts`` for voltage channels and ``n/a`` for stim/misc channels (sent unscaled);
- a marker outlet (type ``Markers``, one ``string`` channel) carrying the file's events (a
  marker with metadata as the JSON marker it came as);
- when the recording holds per-pulse metadata sent apart from the pulses (``PulseInfo``
  markers, a pulse-info stream of an XDF), an outlet ``<name>-pulseinfo`` (type
  ``PulseInfo``) sending each as a JSON object at its sample's time stamp.

Timing
------
``t0_s`` is the LSL time (:func:`pylsl.local_clock`) at which :meth:`Player.start` began;
sample ``n`` of the replay (counting across loops) is stamped exactly
``t0_s + n / sfreq`` and every marker carries the timestamp of its sample, so a consumer that
maps timestamps to samples recovers the file's alignment exactly.

Samples are pushed in chunks of ``chunk_ms``; a chunk goes out once the wall clock reaches
the replay time of its last sample, ``t0_s + n_last / (sfreq * speed)``.

- ``speed == 1``: real time; timestamps track the local clock.
- ``speed > 1``: the chunks are pushed ``speed`` times faster, but the timestamps keep the
  *nominal* spacing ``1 / sfreq``, so consumers see an ordinary stream at the declared rate and
  marker-to-sample alignment stays exact. The price: timestamps run ahead of ``local_clock()``
  (by ``(speed - 1)`` x the time played), so a consumer that judges latency or staleness
  against its own clock will see data "from the future" (speed < 1: from the past).
- ``speed == 0`` or ``inf``: as fast as possible, still chunk by chunk (the outlet buffers up to
  the whole file, so a slow consumer loses nothing).

With ``loop=True`` the file repeats without a gap: the sample counter and the timestamps keep
increasing, and each pass re-emits the file's markers at their shifted samples.

Outlets exist from construction on, so consumers can connect before :meth:`Player.start`
(an LSL consumer receives only samples pushed after it connected).
"""
from __future__ import annotations

import argparse
import math
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

from tmseeg.stream.pulseinfo import INFO_LABEL, pulse_info
from tmseeg.stream.block import EVENT_INFO, EVENT_PULSE
from tmseeg.io.files import (
    DEFAULT_PULSE_PATTERN,
    VOLTAGE_TYPES,
    Recording,
    RecordingError,
    read_recording,
)


class Player:
    """Replay a recording as LSL EEG and marker streams.

    Parameters
    ----------
    source : str, Path or Recording
        A file :func:`~tmseeg.io.files.read_recording` reads, or a recording in memory.
    name : str or None
        EEG stream name (default: the file name, e.g. ``"sub01.vhdr"``).
    source_id : str or None
        LSL source id of the EEG stream (default ``"tmseeg-replay-<name>"``); the marker
        stream uses ``"<source_id>-markers"``.
    speed : float
        Playback speed (1 = real time; 0 or ``inf`` = as fast as possible). See module notes.
    chunk_ms : float
        Duration of each pushed chunk in milliseconds (at least one sample).
    loop : bool
        Repeat the file forever (until :meth:`stop`).
    marker_name : str or None
        Marker stream name (default ``name + "-markers"``).
    pulse_pattern : str
        Passed to :func:`~tmseeg.io.files.read_recording` when ``source`` is a path.

    Attributes
    ----------
    recording : Recording
        What is replayed.
    t0_s : float
        LSL time of sample 0 (NaN before :meth:`start`).
    n_pushed : int
        Samples pushed so far (across loops).
    finished : threading.Event
        Set when playback ended (the end of a non-looping file, or :meth:`stop`).
    chunk_size : int
        Samples per chunk.

    Examples
    --------
    >>> with Player("sub01.vhdr", speed=2.0) as player:  # doctest: +SKIP
    ...     player.finished.wait()
    """

    def __init__(
        self,
        source: str | Path | Recording,
        name: str | None = None,
        source_id: str | None = None,
        speed: float = 1.0,
        chunk_ms: float = 5.0,
        loop: bool = False,
        marker_name: str | None = None,
        pulse_pattern: str = DEFAULT_PULSE_PATTERN,
    ) -> None:
        import pylsl

        self._pylsl = pylsl
        if isinstance(source, Recording):
            self.recording = source
        else:
            self.recording = read_recording(source, pulse_pattern=pulse_pattern)
        rec = self.recording
        speed = float(speed)
        if speed < 0 or math.isnan(speed):
            raise ValueError(f"Player: speed must be >= 0 (0 or inf = as fast as possible), got {speed}")
        if not chunk_ms > 0:
            raise ValueError(f"Player: chunk_ms must be > 0, got {chunk_ms}")
        self.speed = speed
        self.loop = bool(loop)
        self.sfreq = float(rec.meta.sfreq)
        self.chunk_size = max(1, int(round(chunk_ms * self.sfreq / 1000.0)))
        self.name = name or rec.meta.name or "tmseeg-replay"
        self.source_id = source_id or f"tmseeg-replay-{self.name}"
        self.marker_name = marker_name or f"{self.name}-markers"
        #: the per-pulse metadata stream, when the recording has metadata sent apart from the
        #: pulses ("info" events): one JSON object per message, type ``PulseInfo``
        self.info_name = (f"{self.name}-pulseinfo"
                          if any(e.kind == EVENT_INFO for e in rec.events) else None)
        self.t0_s = float("nan")
        self.n_pushed = 0
        self.n_markers_pushed = 0
        self.finished = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # data as the outlet sends it: (n_samples, n_channels) float32, C order
        self._send = np.ascontiguousarray(rec.data_uv.T, dtype=np.float32)
        self._events = sorted(
            [e for e in rec.events if 0 <= e.sample < rec.n_samples], key=lambda e: e.sample
        )
        self._event_samples = np.array([e.sample for e in self._events], dtype=np.int64)
        self._eeg_outlet, self._marker_outlet, self._info_outlet = self._make_outlets()

    # ---------------------------------------------------------------------------------------
    def _make_outlets(self):
        lsl = self._pylsl
        meta = self.recording.meta
        info = lsl.StreamInfo(
            self.name, "EEG", meta.n_channels, self.sfreq, "float32", self.source_id
        )
        chans = info.desc().append_child("channels")
        for label, kind in zip(meta.ch_names, meta.ch_types):
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("type", kind.upper())
            ch.append_child_value("unit", "microvolts" if kind in VOLTAGE_TYPES else "n/a")
        acq = info.desc().append_child("acquisition")
        acq.append_child_value("manufacturer", "tmseeg")
        acq.append_child_value("model", "file replay")
        path = self.recording.path
        acq.append_child_value("source_file", str(path) if path is not None else "")
        duration_s = self.recording.duration_s
        fast = self.speed == 0 or math.isinf(self.speed)
        # buffer (seconds of data) per consumer: when pushing as fast as possible, the whole file
        max_buffered = int(max(360.0, duration_s + 10.0)) if fast else 360
        eeg = lsl.StreamOutlet(info, chunk_size=0, max_buffered=max_buffered)
        minfo = lsl.StreamInfo(
            self.marker_name, "Markers", 1, lsl.IRREGULAR_RATE, "string",
            f"{self.source_id}-markers",
        )
        minfo.desc().append_child_value("eeg_stream", self.name)
        markers = lsl.StreamOutlet(minfo, chunk_size=0, max_buffered=max_buffered)
        infos = None
        if self.info_name is not None:
            iinfo = lsl.StreamInfo(self.info_name, INFO_LABEL, 1, lsl.IRREGULAR_RATE, "string",
                                   f"{self.source_id}-pulseinfo")
            iinfo.desc().append_child_value("eeg_stream", self.name)
            infos = lsl.StreamOutlet(iinfo, chunk_size=0, max_buffered=max_buffered)
        return eeg, markers, infos

    def wait_for_consumers(self, timeout_s: float = 5.0) -> bool:
        """Wait until something has connected to the EEG outlet; False on timeout."""
        return bool(self._eeg_outlet.wait_for_consumers(timeout_s))

    def start(self) -> "Player":
        """Start pushing samples (in a background thread); returns the player."""
        if self._thread is not None:
            raise RuntimeError(f"Player {self.name!r} was already started; make a new Player.")
        if self._eeg_outlet is None:
            raise RuntimeError(f"Player {self.name!r} is stopped; make a new Player.")
        self.t0_s = self._pylsl.local_clock()
        self._thread = threading.Thread(target=self._run, name=f"replay-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop pushing, wait for the pushing thread and close both outlets (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._eeg_outlet = None  # pylsl destroys the outlet when the object goes away
        self._marker_outlet = None
        self._info_outlet = None
        self.finished.set()

    @property
    def running(self) -> bool:
        """True while samples are being pushed."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Player":
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._push_loop()
        except BaseException as exc:  # reported, never silently lost
            self.error = exc
        finally:
            self.finished.set()

    def _push_loop(self) -> None:
        n = self.recording.n_samples
        sfreq = self.sfreq
        fast = self.speed == 0 or math.isinf(self.speed)
        rate = sfreq * self.speed
        t0 = self.t0_s
        clock = self._pylsl.local_clock
        eeg, markers, infos = self._eeg_outlet, self._marker_outlet, self._info_outlet
        offset = 0  # absolute sample of file sample 0 in the current pass
        ev_samples = self._event_samples
        while not self._stop.is_set():
            for start in range(0, n, self.chunk_size):
                if self._stop.is_set():
                    return
                stop = min(start + self.chunk_size, n)
                abs_last = offset + stop - 1
                if fast:
                    time.sleep(0)  # let other threads run between chunks
                else:
                    delay = t0 + abs_last / rate - clock()
                    if delay > 0 and self._stop.wait(delay):
                        return
                stamps = t0 + np.arange(offset + start, offset + stop) / sfreq
                eeg.push_chunk(self._send[start:stop], stamps.tolist())
                self.n_pushed = offset + stop
                lo, hi = np.searchsorted(ev_samples, [start, stop])
                for k in range(lo, hi):
                    ev = self._events[k]
                    stamp = t0 + (offset + ev.sample) / sfreq
                    info = pulse_info(ev)
                    if ev.kind == EVENT_INFO:
                        infos.push_sample([json.dumps(info)], stamp)
                        continue
                    # a marker's metadata goes with it, as the JSON marker it came as
                    text = json.dumps({"label": ev.label, **info}) if info else ev.label
                    markers.push_sample([text], stamp)
                    self.n_markers_pushed += 1
            offset += n
            if not self.loop:
                return


# ------------------------------------------------------------------------------------------
# command line: tmseeg replay FILE
# ------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``tmseeg replay`` arguments to a parser."""
    parser.add_argument("file", help="recording to replay (.fif, .vhdr, .edf, .bdf, .set, .xdf)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="playback speed; 1 = real time, 0 = as fast as possible")
    parser.add_argument("--loop", action="store_true", help="repeat the file until Ctrl-C")
    parser.add_argument("--name", default=None, help="EEG stream name (default: file name)")
    parser.add_argument("--source-id", default=None, help="LSL source id of the EEG stream")
    parser.add_argument("--marker-name", default=None,
                        help="marker stream name (default: NAME-markers)")
    parser.add_argument("--chunk-ms", type=float, default=5.0,
                        help="milliseconds of data per pushed chunk (default 5)")
    parser.add_argument("--pulse-pattern", default=DEFAULT_PULSE_PATTERN,
                        help="regex (case-insensitive) of marker labels that are TMS pulses")


def run(args: argparse.Namespace) -> int:
    """Run ``tmseeg replay``: play the file until it ends (or Ctrl-C with ``--loop``).

    Returns
    -------
    int
        0 on success, 2 when the file cannot be read or an argument is invalid, 1 when
        pushing failed.
    """
    try:
        player = Player(
            args.file, name=args.name, source_id=args.source_id, speed=args.speed,
            chunk_ms=args.chunk_ms, loop=args.loop, marker_name=args.marker_name,
            pulse_pattern=args.pulse_pattern,
        )
    except (RecordingError, ValueError) as exc:
        print(f"tmseeg replay: {exc}", file=sys.stderr)
        return 2
    rec = player.recording
    n_pulses = sum(e.kind == EVENT_PULSE for e in rec.events)
    print(
        f"replaying {rec.path or player.name}: {rec.meta.n_channels} ch x {rec.n_samples} samples "
        f"@ {player.sfreq:g} Hz ({rec.duration_s:.1f} s), {len(rec.events)} events "
        f"({n_pulses} pulses) as LSL {player.name!r} + {player.marker_name!r}, "
        f"speed {args.speed:g}{', looping' if args.loop else ''}. Ctrl-C stops.",
        flush=True,
    )
    try:
        player.start()
        while not player.finished.wait(0.2):
            pass
        time.sleep(0.5)  # let connected consumers drain the last chunks before the outlet closes
    except KeyboardInterrupt:
        print("\nstopped.", file=sys.stderr)
    finally:
        player.stop()
    if player.error is not None:
        print(f"tmseeg replay: pushing failed: {player.error!r}", file=sys.stderr)
        return 1
    print(f"pushed {player.n_pushed} samples, {player.n_markers_pushed} markers.", flush=True)
    return 0


__all__ = ["Player", "add_arguments", "run"]
