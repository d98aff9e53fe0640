"""The simulator as a real-time LSL amplifier + stimulator.

:class:`SimulatedAmplifier` runs a :class:`~tmseeg.sim.model.TMSEEGSimulator` in a background
thread, paced to the LSL clock, and publishes

* an EEG outlet (type ``"EEG"``, float32, µV, XDF channel description), where sample ``n``
  carries the exact timestamp ``t0_s + n / sfreq``;
* a marker outlet (type ``"Markers"``, strings, irregular rate): the pulse label (``"TMS"``)
  with the pulse sample's timestamp, pushed right after the chunk holding that sample, and block
  markers the same way.

It also listens (optionally) for a trigger stream (type ``"Markers"``, JSON strings) such as the
engine's ``tmseeg-triggers`` outlet, and fires a pulse for each accepted trigger.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path

import numpy as np

from tmseeg.sim.config import SimConfig
from tmseeg.sim.model import TMSEEGSimulator
from tmseeg.sim.truth import GroundTruth

log = logging.getLogger("tmseeg.sim")

_MAX_CHUNK_S = 0.1  # catch-up pushes at most this much per push call
_RESOLVE_EVERY_S = 0.2
_TRUTH_EVERY_S = 10.0


class SimulatedAmplifier:
    """Stream simulated TMS-EEG over LSL in real time.

    Parameters
    ----------
    config : SimConfig, optional
        Simulator settings (default ``SimConfig()``).
    name : str
        EEG stream name.
    source_id : str or None
        LSL source id (default ``f"{name}-{seed}"``; stable across runs so consumers can
        reconnect).
    marker_name : str or None
        Marker stream name (default ``name + "-markers"``).
    chunk_ms : float
        Push granularity (ms of data per push).
    listen_triggers : bool
        Listen for JSON triggers on ``trigger_stream_name``.
    trigger_stream_name : str
        Name of the trigger stream (type ``"Markers"``) to follow.
    truth_path : str or Path or None
        Where to write the ground truth (on stop, and every 10 s while running).

    Attributes
    ----------
    simulator : TMSEEGSimulator
    truth : GroundTruth
    t0_s : float
        LSL local-clock time of sample 0 (NaN before :meth:`start`).
    n_triggers : int
        Triggers accepted so far.

    Examples
    --------
    >>> with SimulatedAmplifier(SimConfig(n_channels=32)) as amp:  # doctest: +SKIP
    ...     time.sleep(10)
    """

    def __init__(self, config: SimConfig | None = None, name: str = "tmseeg-sim",
                 source_id: str | None = None, marker_name: str | None = None,
                 chunk_ms: float = 5.0, listen_triggers: bool = True,
                 trigger_stream_name: str = "tmseeg-triggers",
                 truth_path: str | Path | None = None) -> None:
        if not 0.1 <= chunk_ms <= 1000:
            raise ValueError(f"SimulatedAmplifier: chunk_ms={chunk_ms} must be 0.1-1000 ms.")
        if not name:
            raise ValueError("SimulatedAmplifier: give a non-empty stream name.")
        self.simulator = TMSEEGSimulator(config)
        self.config = self.simulator.config
        self.name = name
        self.source_id = source_id or f"{name}-{self.config.seed}"
        self.marker_name = marker_name or f"{name}-markers"
        self.chunk_ms = float(chunk_ms)
        self.listen_triggers = listen_triggers
        self.trigger_stream_name = trigger_stream_name
        self.truth_path = None if truth_path is None else Path(truth_path)
        self.t0_s = float("nan")
        self.n_triggers = 0
        self.n_markers_sent = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._eeg_outlet = None
        self._marker_outlet = None

    @property
    def truth(self) -> GroundTruth:
        return self.simulator.truth

    @property
    def n_sent(self) -> int:
        """Samples pushed so far."""
        return self.simulator.n_generated

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ----------------------------------------------------------------------------
    def _make_outlets(self) -> None:
        import pylsl

        meta = self.simulator.meta
        info = pylsl.StreamInfo(self.name, "EEG", meta.n_channels, meta.sfreq,
                                pylsl.cf_float32, self.source_id)
        info.set_channel_labels(list(meta.ch_names))
        info.set_channel_types([t.upper() for t in meta.ch_types])
        info.set_channel_units(["microvolts"] * meta.n_channels)
        desc = info.desc()
        desc.append_child_value("manufacturer", "tmseeg simulator")
        cap = desc.append_child("cap")
        cap.append_child_value("labelscheme", "10-05")
        cap.append_child_value("coil_site", self.config.coil_site)
        chunk = max(1, int(round(self.chunk_ms * meta.sfreq / 1000)))
        self._eeg_outlet = pylsl.StreamOutlet(info, chunk_size=chunk, max_buffered=60)
        minfo = pylsl.StreamInfo(self.marker_name, "Markers", 1, pylsl.IRREGULAR_RATE,
                                 pylsl.cf_string, self.source_id + "-markers")
        minfo.desc().append_child_value("eeg_stream", self.name)
        self._marker_outlet = pylsl.StreamOutlet(minfo)

    def start(self) -> None:
        """Create the outlets and start streaming (sample 0 is stamped with the current time)."""
        if self.running:
            raise RuntimeError("SimulatedAmplifier is already running; call stop() first.")
        if self.simulator.n_generated:
            raise RuntimeError("SimulatedAmplifier cannot restart a finished stream; make a new "
                               "SimulatedAmplifier.")
        import pylsl

        self._make_outlets()
        self._stop.clear()
        self.t0_s = pylsl.local_clock()
        self._thread = threading.Thread(target=self._run, name=f"sim-amp-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop streaming (returns within a few ms), write the truth file, close the outlets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        if self.truth_path is not None and self.simulator.n_generated:
            self.truth.save(self.truth_path)
        self._eeg_outlet = None
        self._marker_outlet = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"the simulated amplifier thread failed: {err!r}") from err

    def __enter__(self) -> "SimulatedAmplifier":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def sample_at(self, lsl_time_s: float) -> int:
        """The sample whose timestamp is nearest to an LSL local-clock time."""
        return int(round((lsl_time_s - self.t0_s) * self.simulator.sfreq))

    # -- the streaming thread -----------------------------------------------------------------
    def _run(self) -> None:
        import pylsl

        try:
            sim = self.simulator
            fs = sim.sfreq
            chunk = max(1, int(round(self.chunk_ms * fs / 1000)))
            max_chunk = max(chunk, int(_MAX_CHUNK_S * fs))
            resolver = None
            inlets: dict[str, object] = {}
            next_resolve = 0.0
            next_truth = pylsl.local_clock() + _TRUTH_EVERY_S
            if self.listen_triggers:
                resolver = pylsl.ContinuousResolver(prop="name", value=self.trigger_stream_name)
            while not self._stop.is_set():
                now = pylsl.local_clock()
                if resolver is not None:
                    if now >= next_resolve:
                        next_resolve = now + _RESOLVE_EVERY_S
                        self._connect_triggers(resolver, inlets)
                    self._poll_triggers(inlets)
                due = int(math.floor((now - self.t0_s) * fs)) + 1  # samples with time <= now
                while due - sim.n_generated >= chunk and not self._stop.is_set():
                    self._push(min(due - sim.n_generated, max_chunk))
                if self.truth_path is not None and now >= next_truth:
                    next_truth = now + _TRUTH_EVERY_S
                    self.truth.save(self.truth_path)
                wait = self.t0_s + (sim.n_generated + chunk) / fs - pylsl.local_clock()
                if wait > 0:
                    self._stop.wait(min(wait, 0.05))
        except BaseException as err:  # surfaced by stop()
            log.exception("simulated amplifier stopped by an error")
            self._error = err

    def _push(self, n: int) -> None:
        sim = self.simulator
        a = sim.n_generated
        data, events = sim.generate(n)
        stamps = self.t0_s + np.arange(a, a + n) / sim.sfreq
        self._eeg_outlet.push_chunk(np.ascontiguousarray(data.T, dtype=np.float32),
                                    stamps.tolist())
        for ev in events:
            self._marker_outlet.push_sample([ev.label], self.t0_s + ev.sample / sim.sfreq)
            self.n_markers_sent += 1

    def _connect_triggers(self, resolver, inlets: dict) -> None:
        import pylsl

        for info in resolver.results():
            if info.type() != "Markers" or info.uid() in inlets:
                continue
            if info.channel_format() != pylsl.cf_string:
                log.warning("trigger stream %r is not a string stream; ignored", info.name())
                inlets[info.uid()] = None
                continue
            inlets[info.uid()] = pylsl.StreamInlet(info, max_buflen=10, recover=True)
            log.info("listening for triggers on %r (%s)", info.name(), info.source_id())

    def _poll_triggers(self, inlets: dict) -> None:
        for inlet in inlets.values():
            if inlet is None:
                continue
            while True:
                sample, _ = inlet.pull_sample(timeout=0.0)
                if sample is None:
                    break
                self.handle_trigger(sample[0])

    def handle_trigger(self, message: str) -> int | None:
        """Act on one trigger message (JSON text); returns the pulse sample or None if ignored.

        ``{"accepted": true, "target_time_s": t, "intensity_pct": x, "label": "TMS"}`` fires a
        pulse at the sample stamped nearest ``t`` (LSL local clock), or at the next sample if
        ``t`` is null or already sent. ``"accepted": false`` is ignored; bad JSON is logged.
        """
        try:
            msg = json.loads(message)
            if not isinstance(msg, dict):
                raise ValueError("not a JSON object")
            if msg.get("accepted", True) is False:
                return None
            target = msg.get("target_time_s")
            inten = msg.get("intensity_pct")
            inten = None if inten is None else float(inten)
            label = str(msg.get("label") or "TMS")
            with self.simulator._lock:  # no sample may be generated between check and request
                sample = None
                if target is not None:
                    sample = max(self.sample_at(float(target)), self.simulator.n_generated)
                s = self.simulator.request_pulse(sample, inten, label)
        except (ValueError, TypeError) as err:
            log.warning("ignored trigger message %.200r: %s", message, err)
            return None
        self.n_triggers += 1
        return s
