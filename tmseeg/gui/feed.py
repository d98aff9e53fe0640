"""What the monitor draws, produced away from the GUI thread.

The engine runs in its own thread (:class:`LiveFeed`), or in another process whose
``tmseeg-metrics`` stream this process follows (:class:`AttachedFeed`). Either way the GUI
timer only calls :meth:`snapshot`, which copies the latest state under a short lock, and reads
the raw ring buffer (which has its own lock). A slow frame therefore delays the next frame,
never the acquisition.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from tmseeg.config import Config
from tmseeg.engine import Engine, EngineStatus
from tmseeg.stream.block import StreamMeta
from tmseeg.stream.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

#: epochs kept per trial for the single-trial image (time columns, all channels, float32)
TRIAL_COLUMNS = 500
#: trials kept for the image (oldest dropped)
MAX_TRIALS = 400


@dataclass
class MonitorSnapshot:
    """A consistent copy of everything the TEP panels show (µV, ms).

    ``average_uv`` is None before the first epoch and in attach mode, where the metrics stream
    carries the ROI average and GMFP only (at ~1 kHz: ``times_ms`` is then that decimated axis).
    """

    version: int
    n_averaged: int = 0
    times_ms: np.ndarray | None = None
    ch_names: tuple[str, ...] = ()
    average_uv: np.ndarray | None = None
    roi: list[str] = field(default_factory=list)
    roi_average_uv: np.ndarray | None = None
    gmfp_uv: np.ndarray | None = None
    peaks: dict[str, dict] = field(default_factory=dict)
    last_trial_roi_uv: np.ndarray | None = None
    trial_times_ms: np.ndarray | None = None
    trial_image_uv: np.ndarray | None = None  # (n_trials, n_columns) ROI traces
    pulse_index: np.ndarray = field(default_factory=lambda: np.empty(0))
    early_ptp_uv: np.ndarray = field(default_factory=lambda: np.empty(0))
    kept: np.ndarray = field(default_factory=lambda: np.empty(0, bool))
    snr_n: np.ndarray = field(default_factory=lambda: np.empty(0))
    snr: np.ndarray = field(default_factory=lambda: np.empty(0))
    snr_predicted: np.ndarray = field(default_factory=lambda: np.empty(0))
    target_snr: float = math.nan
    trials_needed: float = math.nan
    mep_channel: str | None = None
    mep_times_ms: np.ndarray | None = None
    mep_last_uv: np.ndarray | None = None
    mep_ptp_uv: np.ndarray = field(default_factory=lambda: np.empty(0))
    metrics: dict[str, Any] = field(default_factory=dict)
    bads: dict[str, str] = field(default_factory=dict)
    note: str = ""
    reasons: list[str] = field(default_factory=list)  # per pulse: why rejected ("" if kept)
    decay_max_uv: np.ndarray = field(default_factory=lambda: np.empty(0))  # per pulse
    cut_window_ms: tuple[float, float] | None = None  # the interpolated pulse window
    n_eeg: int = 0
    # per block of the session (markers pre/post ...): its ROI-average TEP and epoch count
    block_roi_uv: dict[str, np.ndarray] = field(default_factory=dict)
    block_n: dict[str, int] = field(default_factory=dict)


class _FeedBase:
    """Engine thread, status and raw ring shared by both feeds."""

    engine: Engine
    meta: StreamMeta

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.error: BaseException | None = None
        self._status: EngineStatus | None = None
        self._thread: threading.Thread | None = None
        self._line_noise: tuple[float, tuple[float, float]] | None = None  # (when, value)

    @property
    def ring(self) -> RingBuffer:
        """The engine's raw ring buffer (µV, as acquired)."""
        return self.engine.ring

    #: seconds of raw EEG the line-noise measure looks at
    LINE_NOISE_S = 2.0

    def line_noise(self) -> tuple[float, float]:
        """Line noise of the last 2 s of raw EEG (% of 1-100 Hz power, mains Hz):
        :func:`tmseeg.gui.quality.line_noise_pct`; NaN until 2 s arrived."""
        from tmseeg.gui.quality import line_noise_pct

        now = time.monotonic()
        if self._line_noise is not None and now - self._line_noise[0] < self.LINE_NOISE_S:
            return self._line_noise[1]  # once per 2 s: an FFT of every channel is not free at 20 kHz
        n = int(self.LINE_NOISE_S * self.meta.sfreq)
        ring = self.ring
        if ring.n_written - ring.first_available < n:
            return math.nan, math.nan
        eeg = self.meta.picks("eeg")
        value = line_noise_pct(ring.latest(n)[eeg], self.meta.sfreq)
        self._line_noise = (now, value)
        return value

    def pulse_trial(self, pulse_index: int):
        """The single trial of a pulse for display: (times_ms, ROI trace µV, pulses.csv
        row), or None when it is not kept for display (attach mode, or too old)."""
        return None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def status(self) -> EngineStatus:
        """The engine status of the last second (computed in the engine thread)."""
        with self.lock:
            st = self._status
        return st if st is not None else self.engine.status()

    def _on_status(self, status: EngineStatus) -> None:
        with self.lock:
            self._status = status

    def _loop(self) -> None:
        try:
            self.engine.run(duration_s=None, status_every_s=0.5, on_status=self._on_status)
        except BaseException as err:  # keep it for the GUI to show, never kill silently
            log.exception("engine thread stopped")
            self.error = err

    def start(self) -> None:
        """Start acquisition in a background thread."""
        if self._thread is not None:
            raise RuntimeError("feed already started")
        self._thread = threading.Thread(target=self._loop, name="tmseeg-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the engine thread and wait for it (idempotent)."""
        self.engine.stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("engine thread did not stop within %.1f s", timeout_s)
        if not self.engine.drain(timeout_s):
            log.warning("processing thread did not finish within %.1f s", timeout_s)
        for close in (getattr(self.engine.source, "close", None),
                      getattr(getattr(self, "outlet", None), "close", None)):
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing %r failed", close)


class LiveFeed(_FeedBase):
    """The engine in-process: stages, epochs and running TEP on ``source``, in a thread.

    Parameters
    ----------
    source : Source
        Live LSL source (:class:`~tmseeg.stream.inlet.LSLSource`) or any block source.
    config : str or dict or None
        Pipeline configuration file, or an already loaded configuration.
    roi : list of str, optional
        ROI channels (default: coil site and neighbours).
    buffer_s : float
        Seconds of raw data kept for the display.
    publish : bool
        Also publish ``tmseeg-metrics`` (as ``tmseeg run`` does), so other monitors can attach.
    """

    def __init__(self, source, config: str | Config | None = None,
                 roi: Sequence[str] | None = None, buffer_s: float = 10.0,
                 publish: bool = False) -> None:
        super().__init__()
        from tmseeg.config import load_config
        from tmseeg.session import TEPSession

        cfg = config if isinstance(config, Config) else load_config(config)
        self.meta = source.meta
        self.session = TEPSession(cfg, source.meta, roi=list(roi) if roi else None)
        # stages, epochs and plug-ins on the engine's processing thread: the raw traces and
        # the recording never wait for a decay fit
        self.engine = Engine.for_session(source, self.session, buffer_s=buffer_s, worker=True,
                                         lock=self.lock)
        self.outlet = None
        if publish:
            from tmseeg.io.metrics_outlet import MetricsOutlet
            self.outlet = MetricsOutlet(
                source_id=f"tmseeg-metrics-{source.meta.source_id or source.meta.name}")
            self.session.listeners.append(self.outlet)
        self.session.epoch_listeners.append(self._on_epoch)
        self.session.listeners.append(self._on_update)
        self._metrics_summary: dict[str, Any] = {}
        self.display_roi: list[str] | None = None  # None = the session's ROI
        self._reset_pulse = 0  # per-pulse panels show pulses from here on
        self._trials: list[np.ndarray] = []  # (n_ch, TRIAL_COLUMNS) float32 per kept epoch
        # every pulse's epoch (kept or not), decimated, for "why?" on the monitor
        self._pulse_epochs: dict[int, tuple] = {}  # pulse -> (times, names, data, row)
        self._trial_step = 1
        self._last_epoch = None
        # the MEP plug-in's EMG epochs and MEP rows, as it makes them (EMG is cut once)
        self._emg = self.session.metric("mep")
        if self._emg is not None:
            self.mep_channel = self._emg.channel
            self._emg.epoch_listeners.append(self._take_emg)
        self._mep_last: np.ndarray | None = None
        self._mep_times: np.ndarray | None = None
        self._mep_ptp: list[tuple[int, float]] = []

    # -- engine thread -----------------------------------------------------------------------
    def _on_status(self, status: EngineStatus) -> None:
        super()._on_status(status)
        if self.outlet is not None:
            self.outlet.send_status(status)

    def _on_update(self, update: dict) -> None:  # engine thread, under self.lock
        # the session computed the plug-in summaries for this pulse already (the "metrics"
        # update after each pulse's TEP): reuse them, so the GUI never runs a (possibly
        # costly) summary while holding the lock
        if update.get("type") == "metrics":
            self._metrics_summary = update.get("metrics") or {}

    def _on_epoch(self, epoch, row: dict) -> None:  # under self.lock (inside after_stages)
        self._last_epoch = epoch
        n_t = epoch.data_uv.shape[1]
        step = max(1, int(math.ceil(n_t / TRIAL_COLUMNS)))
        small = epoch.data_uv[:, ::step].astype(np.float32)
        if row["kept"]:
            self._trial_step = step
            self._trials.append(small)
            if len(self._trials) > MAX_TRIALS:
                del self._trials[0]
        self._pulse_epochs[int(row["pulse_index"])] = (epoch.times_ms[::step],
                                                       list(epoch.ch_names), small, dict(row))
        if len(self._pulse_epochs) > MAX_TRIALS:
            del self._pulse_epochs[min(self._pulse_epochs)]
        self.version += 1

    def pulse_trial(self, pulse_index: int):
        with self.lock:
            got = self._pulse_epochs.get(int(pulse_index))
            tep = self.session.tep
            roi = list(self.display_roi or (tep.roi if tep is not None else []))
        if got is None:
            return None
        times, names, data, row = got
        ridx = [names.index(n) for n in roi if n in names]
        trace = (data[ridx].mean(axis=0, dtype=np.float64) if ridx
                 else np.full(data.shape[1], np.nan))
        return times, trace, row

    #: what the MEP panel shows of each EMG epoch (ms)
    MEP_DISPLAY_MS = (-50.0, 100.0)

    def _take_emg(self, epoch, row: dict) -> None:  # under self.lock (inside after_stages)
        show = (epoch.times_ms >= self.MEP_DISPLAY_MS[0]) & \
            (epoch.times_ms <= self.MEP_DISPLAY_MS[1])
        trace = epoch.data_uv[0, show]
        pre = epoch.times_ms[show] < -5.0  # drawn from its pre-pulse level, as MEPs are shown
        self._mep_last = trace - (np.nanmean(trace[pre]) if pre.any() else 0.0)
        self._mep_times = epoch.times_ms[show]
        self._mep_ptp.append((int(epoch.sample), float(row["mep_ptp_uv"])))
        self.version += 1

    # -- GUI thread --------------------------------------------------------------------------
    def bads(self) -> dict[str, str]:
        det = self.session.stages.bad_detector
        with self.lock:
            return dict(det.bads) if det is not None else {}

    def reset(self) -> None:
        """New coil position: forget the average and the per-pulse panels (not the raw data)."""
        with self.lock:
            if self.session.tep is not None:
                self.session.tep.reset()
            self._reset_pulse = len(self.session.pulses)
            self._trials.clear()
            self._last_epoch = None
            self._mep_last = None
            self._mep_ptp.clear()
            self.version += 1

    def set_roi(self, names: Sequence[str]) -> list[str]:
        """Show the ROI average of ``names`` (validated against the stream's channels).

        The average is recomputed from the running average of all channels, and the
        single-trial image from the kept trials. Peaks, SNR and trials-needed stay those of
        the session's ROI (its running variance is per ROI); a ``reset`` starts the session on
        the new ROI.
        """
        names = list(names)
        idx = self.meta.index(names)  # KeyError listing the channels if one is unknown
        names = [self.meta.ch_names[i] for i in idx]
        with self.lock:
            self.display_roi = names
            self.session.fixed_roi = names  # the next RunningTEP (after reset) uses it
            if self.session.tep is not None and self._reset_pulse == len(self.session.pulses):
                self.session.tep = None  # nothing averaged since reset: rebuild on the new ROI
            self.version += 1
        return names

    def snapshot(self, since_version: int = -1) -> MonitorSnapshot | None:
        """Copy of the TEP state, or None if nothing changed since ``since_version``."""
        from tmseeg.metrics.tep import find_peak

        with self.lock:
            if self.version == since_version:
                return None
            s = self.session
            snap = MonitorSnapshot(version=self.version)
            det = s.stages.bad_detector
            snap.bads = dict(det.bads) if det is not None else {}
            rows = s.pulses[self._reset_pulse:]
            snap.pulse_index = np.array([r["pulse_index"] for r in rows], dtype=float)
            snap.early_ptp_uv = np.array([r["early_tep_ptp_uv"] for r in rows], dtype=float)
            snap.kept = np.array([r["kept"] for r in rows], dtype=bool)
            snap.reasons = [str(r.get("reason") or "") for r in rows]
            snap.decay_max_uv = np.array([r.get("decay_max_uv", math.nan) for r in rows],
                                         dtype=float)
            cut = s.stages.cut_window
            snap.cut_window_ms = (tuple(cut.window_ms) if cut is not None
                                  and cut.window_ms is not None else None)
            snap.n_eeg = len(self.meta.picks("eeg"))
            snap.metrics = dict(self._metrics_summary)
            snap.target_snr = float(s.cfg.tep.target_snr)
            if self._emg is not None:
                snap.mep_channel = self.mep_channel
                snap.mep_times_ms = self._mep_times
                snap.mep_last_uv = None if self._mep_last is None else self._mep_last.copy()
                snap.mep_ptp_uv = np.array([p for _, p in self._mep_ptp], dtype=float)
            tep = s.tep
            if tep is None or tep.n == 0:
                snap.note = "waiting for the first complete epoch"
                if tep is not None:
                    snap.times_ms = tep.times_ms
                    snap.ch_names = tep.ch_names
                    snap.roi = list(self.display_roi or tep.roi)
                return snap
            snap.n_averaged = int(tep.n)
            snap.times_ms = tep.times_ms
            snap.ch_names = tep.ch_names
            snap.average_uv = tep.average_uv
            snap.gmfp_uv = tep.gmfp_uv
            roi = list(self.display_roi or tep.roi)
            snap.roi = roi
            lookup = {n: i for i, n in enumerate(tep.ch_names)}
            ridx = np.array([lookup[n] for n in roi if n in lookup], dtype=np.intp)
            same_roi = [n.lower() for n in roi] == [n.lower() for n in tep.roi]
            if same_roi:
                snap.roi_average_uv = tep.roi_average_uv
                snap.peaks = tep.peaks()
            else:
                with np.errstate(invalid="ignore"):
                    snap.roi_average_uv = np.nanmean(snap.average_uv[ridx], axis=0)
                snap.peaks = {k: find_peak(snap.roi_average_uv, tep.times_ms, tuple(w),
                                           k[0].upper())
                              for k, w in tep.peak_windows_ms.items()}
            blocks = s.metric("plasticity")
            if blocks is not None and len(blocks.teps) >= 2:
                for label in blocks.order:
                    btep = blocks.teps.get(label)
                    if btep is None or btep.n == 0:
                        continue
                    snap.block_n[label] = int(btep.n)
                    snap.block_roi_uv[label] = (
                        btep.roi_average_uv.copy() if same_roi else
                        np.nanmean(btep.average_uv[ridx], axis=0))
            n_hist, snr = tep.snr_history()
            snap.snr_n, snap.snr = n_hist.astype(float), snr
            snap.trials_needed = float(tep.trials_needed(snap.target_snr))
            if tep.n >= 2:
                grid = np.arange(1, max(int(tep.n * 2), 20) + 1)
                snap.snr_predicted = np.asarray(tep.predicted_snr(grid), dtype=float)
            last = self._last_epoch
            if last is not None and tuple(last.ch_names) == tep.ch_names:
                snap.last_trial_roi_uv = last.data_uv[ridx].mean(axis=0)
            trials = list(self._trials)
            step = self._trial_step
        if trials:
            stack = np.stack(trials)  # (n_trials, n_ch, n_cols) float32, outside the lock
            snap.trial_image_uv = stack[:, ridx, :].mean(axis=1, dtype=np.float64)
            snap.trial_times_ms = snap.times_ms[::step][:stack.shape[2]]
        return snap


class AttachedFeed(_FeedBase):
    """Follow a running ``tmseeg run``: raw EEG from its LSL stream, the rest from
    ``tmseeg-metrics``.

    The metrics stream carries per-pulse rows, TEP summaries (peaks, SNR, trials needed, bad
    channels, plug-in metrics) and the running ROI-average TEP and GMFP decimated to ~1 kHz
    (:func:`~tmseeg.io.metrics_outlet.encode_curves`), so the ROI TEP, GMFP, peak labels,
    per-pulse panels and metrics table are live. The per-channel average is not sent: the
    butterfly, scalp map, single-trial panels and "save average" stay empty in this mode.

    Parameters
    ----------
    source : Source
        The EEG stream (raw display only: no stages run here).
    metrics_source_id : str or None
        ``source_id`` of the ``tmseeg-metrics`` stream (default: any stream of type Metrics).
    timeout_s : float
        How long to wait for the metrics stream.
    """

    def __init__(self, source, metrics_source_id: str | None = None,
                 timeout_s: float = 10.0, buffer_s: float = 10.0) -> None:
        super().__init__()
        import pylsl

        from tmseeg.stream.inlet import StreamNotFoundError, resolve_stream
        from tmseeg.io.metrics_outlet import METRICS_STREAM_TYPE

        self.meta = source.meta
        self.engine = Engine(source, stages=(), buffer_s=buffer_s)
        prop, val = (("source_id", metrics_source_id) if metrics_source_id
                     else ("type", METRICS_STREAM_TYPE))
        try:
            info = (resolve_stream(stype=None, source_id=val, timeout_s=timeout_s)
                    if metrics_source_id else resolve_stream(stype=val, timeout_s=timeout_s))
        except StreamNotFoundError as err:
            raise StreamNotFoundError(
                f"no tmseeg-metrics stream ({prop}={val!r}) within {timeout_s:g} s: start "
                "`tmseeg run` first, or run the monitor without --attach") from err
        self._inlet = pylsl.StreamInlet(info)
        self._inlet.open_stream(timeout=timeout_s)
        self._rows: list[dict] = []
        self._tep: dict = {}
        self._curves: dict = {}
        self._metrics: dict = {}
        self._remote_status: dict = {}
        self._reset_pulse = 0
        self._mthread: threading.Thread | None = None
        self._mstop = threading.Event()

    def _pull_metrics(self) -> None:
        while not self._mstop.is_set():
            sample, _ = self._inlet.pull_sample(timeout=0.1)
            if sample is None:
                continue
            try:
                msg = json.loads(sample[0])
            except ValueError:
                continue
            with self.lock:
                if msg.get("type") == "pulse":  # the TEP, as soon as the epoch is in
                    self._rows.append(msg.get("pulse", {}))
                    self._tep = msg.get("tep", {})
                    self._curves = msg.get("curves") or {}
                elif msg.get("type") == "metrics":  # the plug-ins' part, right after
                    row = msg.get("pulse", {})
                    if self._rows and self._rows[-1].get("pulse_index") == row.get(
                            "pulse_index"):
                        self._rows[-1] = row  # with the plug-ins' columns
                    self._metrics = msg.get("metrics", {}) or {}
                elif msg.get("type") == "status":
                    self._remote_status = msg
                self.version += 1

    def start(self) -> None:
        super().start()
        self._mthread = threading.Thread(target=self._pull_metrics, name="tmseeg-metrics-in",
                                         daemon=True)
        self._mthread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._mstop.set()
        if self._mthread is not None:
            self._mthread.join(timeout_s)
        super().stop(timeout_s)
        self._inlet.close_stream()

    def bads(self) -> dict[str, str]:
        with self.lock:
            return dict(self._tep.get("bad_channels") or {})

    def reset(self) -> None:
        """Clear the per-pulse panels (the average lives in the engine process)."""
        with self.lock:
            self._reset_pulse = len(self._rows)
            self.version += 1

    def set_roi(self, names: Sequence[str]) -> list[str]:
        raise RuntimeError("the ROI is set in the engine process (`tmseeg run --roi ...`)")

    def snapshot(self, since_version: int = -1) -> MonitorSnapshot | None:
        with self.lock:
            if self.version == since_version:
                return None
            rows = self._rows[self._reset_pulse:]
            tep = dict(self._tep)
            curves = self._curves
            snap = MonitorSnapshot(version=self.version, metrics=dict(self._metrics))

        def col(key, dtype=float):
            return np.array([(math.nan if r.get(key) is None else r.get(key)) for r in rows],
                            dtype=dtype)
        snap.pulse_index = col("pulse_index")
        snap.early_ptp_uv = col("early_tep_ptp_uv")
        snap.kept = np.array([bool(r.get("kept")) for r in rows], dtype=bool)
        snap.reasons = [str(r.get("reason") or "") for r in rows]
        snap.decay_max_uv = col("decay_max_uv")
        snap.n_eeg = len(self.meta.picks("eeg"))
        snap.snr_n = col("n_averaged")
        snap.snr = col("snr_after")
        snap.n_averaged = int(tep.get("n_averaged") or 0)
        snap.roi = list(tep.get("roi") or [])
        snap.peaks = {k: {"latency_ms": v.get("latency_ms") or math.nan,
                          "amplitude_uv": v.get("amplitude_uv") or math.nan,
                          "found": bool(v.get("found"))}
                      for k, v in (tep.get("peaks") or {}).items()}
        snap.target_snr = float(tep.get("target_snr") or math.nan)
        snap.trials_needed = float(tep.get("trials_needed") or math.nan)
        snap.bads = dict(tep.get("bad_channels") or {})
        if curves.get("n"):
            from tmseeg.io.metrics_outlet import decode_curves
            snap.times_ms, uv = decode_curves(curves)
            snap.roi_average_uv = uv.get("roi_average_uv")
            snap.gmfp_uv = uv.get("gmfp_uv")
            snap.roi = list(curves.get("roi") or snap.roi)
            snap.note = (f"attached to tmseeg-metrics: ROI TEP and GMFP at "
                         f"{1000.0 / float(curves['step_ms']):.0f} Hz, no butterfly")
        elif snap.n_averaged:
            snap.note = "attached to tmseeg-metrics: this engine sends no TEP curves"
        else:
            snap.note = "attached to tmseeg-metrics: waiting for the first average"
        return snap
