"""The protocol runner: a protocol's callbacks on the live stream, each request through the guard.

:class:`ProtocolRunner` is the engine sink that runs a :class:`~tmseeg.closedloop.protocol.Protocol`
(the API a scientist writes against, in :mod:`tmseeg.closedloop.protocol`): it hands it every
raw block before the stages, the state (phase, power) at its ``state_every_ms``, each pulse and
its early TEP, checks what it returns, sends every request through the
:class:`~tmseeg.closedloop.guard.SafetyGuard` and every decision to the outputs, with its
latency trace. :func:`build_runner` builds one from a protocol file for the command line.
"""
from __future__ import annotations

import ctypes
import logging
import math
import re
import threading
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from tmseeg.closedloop.earlytep import EarlyTEPCutter
from tmseeg.closedloop.guard import GuardDecision, SafetyGuard, TriggerRequest
from tmseeg.dsp.phase import ARPhaseEstimator, ETPPhaseEstimator, PhaseEstimate
from tmseeg.closedloop.protocol import (
    EarlyTEP,
    MarkerInfo,
    Protocol,
    ProtocolConfigError,
    ProtocolInfo,
    ProtocolLoadError,
    ProtocolTimeout,
    PulseInfo,
    State,
    load_protocol,
)
from tmseeg.dsp.spatial import SpatialFilter
from tmseeg.closedloop.triggers import TriggerOutput, lsl_clock, message_json
from tmseeg.pipeline.pulses import DEFAULT_PULSE_PATTERN
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, EVENT_PULSE, Block, StreamMeta
from tmseeg.utils import float_or_nan

__all__ = ["ProtocolRunner", "build_runner", "circular_stats_deg", "truth_line"]

log = logging.getLogger(__name__)

#: marker labels that name a pulse (the pipeline's built-in pattern)
PULSE_LABEL = re.compile(DEFAULT_PULSE_PATTERN, re.IGNORECASE)


# -- the runner -----------------------------------------------------------------------------------
_TIGHTEN_MAX = ("min_interval_s", "refuse_if_gap_within_s", "train_break_s")
_TIGHTEN_MIN = ("max_pulses_session", "max_pulses_train", "max_intensity_pct",
                "max_data_age_ms", "max_lead_s", "past_tolerance_s")
_GUARD_DEFAULTS = dict(min_interval_s=1.0, max_rate=((10.0, 6), (60.0, 30)),
                       max_pulses_session=1500, max_pulses_train=None, train_break_s=5.0,
                       max_intensity_pct=100.0, max_data_age_ms=100.0,
                       refuse_if_gap_within_s=1.0, past_tolerance_s=0.0, max_lead_s=10.0)


def _tightened(base: Mapping[str, Any], proto: Mapping[str, Any]) -> dict:
    """Guard parameters where the protocol's settings may only make limits stricter."""
    out = dict(base)
    for k, v in dict(proto).items():
        if k in _TIGHTEN_MAX:
            out[k] = v if out.get(k) is None else max(out[k], v)
        elif k in _TIGHTEN_MIN:
            out[k] = v if out.get(k) is None else (out[k] if v is None else min(out[k], v))
        elif k == "max_rate":
            out[k] = tuple(out.get(k) or ()) + tuple(tuple(x) for x in v)
        else:
            raise ProtocolConfigError(f"protocol guard setting {k!r} is not a SafetyGuard limit; "
                                      f"use {sorted(_TIGHTEN_MAX + _TIGHTEN_MIN + ('max_rate',))}.")
    return out


class _Window:
    """Newest ``n`` samples of a 1-D or 2-D signal, contiguous reads, O(block) appends."""

    def __init__(self, n: int, n_rows: int | None) -> None:
        self.n = n
        shape = (4 * n,) if n_rows is None else (n_rows, 4 * n)
        self.buf = np.zeros(shape)
        self.pos = 0
        self.filled = 0

    def reset(self) -> None:
        self.pos = self.filled = 0

    def append(self, x: np.ndarray) -> None:
        k = x.shape[-1]
        if k >= self.n:
            self.buf[..., :self.n] = x[..., -self.n:]
            self.pos, self.filled = self.n, self.n
            return
        if self.pos + k > self.buf.shape[-1]:
            keep = min(self.filled, self.n)
            self.buf[..., :keep] = self.buf[..., self.pos - keep:self.pos]
            self.pos = keep
        self.buf[..., self.pos:self.pos + k] = x
        self.pos += k
        self.filled = min(self.filled + k, self.n)

    def latest(self) -> np.ndarray:
        out = self.buf[..., self.pos - self.filled:self.pos].copy()
        out.flags.writeable = False
        return out


@dataclass
class _Job:
    kind: str  # on_block | on_pulse | on_marker | on_decision
    payload: Any
    newest_sample: int
    newest_time_s: float
    received_s: float


def _pick(req: Any, attr: str, phase: PhaseEstimate | None) -> float:
    """The request's own estimate (``phase_rad`` / ``amplitude_uv``), else the runner's."""
    v = getattr(req, attr, None) if req is not None else None
    if v is not None:
        return float_or_nan(v)
    return getattr(phase, attr) if phase is not None else math.nan


class ProtocolRunner:
    """Runs a :class:`Protocol` next to the engine, contained, with every request guarded.

    Parameters
    ----------
    protocol : Protocol or Protocol subclass
    meta : StreamMeta
        The EEG stream.
    outputs : TriggerOutput or sequence of them, optional
        Where decisions go (e.g. :class:`~tmseeg.closedloop.triggers.LSLTriggerOutput`). None:
        decisions are only logged.
    guard : SafetyGuard, optional
        Default: a ``SafetyGuard`` with its documented defaults, tightened by
        ``protocol.guard``. A guard given here is used as is.
    log_path : str or Path, optional
        Append every decision record as one JSON line.
    match_tolerance_ms : float
        A pulse within this of an accepted target is that trigger's pulse (default 20 ms).
    max_records : int
        Decision records kept in memory (newest; default 20000). Accepted ones are all kept.
    interrupt_stuck : bool
        Inject :class:`ProtocolTimeout` into a callback that overran (default True).
    clock : callable
        LSL clock (default ``pylsl.local_clock``).
    isolate : str, optional
        The protocol's file (``FILE.py`` or ``FILE.py:Class``): its callbacks then run in a
        process of their own (:mod:`tmseeg.closedloop.isolation`), which is killed at a
        callback's deadline and started again (its state starts over, ``setup`` runs again;
        after :attr:`MAX_KILLS` kills the protocol is disabled). ``tmseeg run/demo --protocol``
        do this. None: in this process, on the runner's worker thread (a callback that holds
        the interpreter then holds the engine).

    Attributes
    ----------
    records : deque of dict
        Decision records (newest last): ``decision_id, accepted, code, reason, label,
        intensity_pct, target_time_s, newest_sample, last_sample_time_s, received_s,
        decision_time_s, send_time_s, sent_s, fired_at_s, latency_ms, phase_rad,
        amplitude_uv, power_uv2, est_phase_rad, callback, protocol``. ``phase_rad`` /
        ``amplitude_uv`` are the request's (the phase the protocol aimed at), else the
        estimator's; ``est_phase_rad`` is always the estimator's phase at newest + delay_ms;
        ``latency_ms`` runs from the block's arrival (``received_s``) to ``sent_s``, when every
        output has returned.
    accepted : list of dict
        Every accepted record.
    counts : Counter
        Decisions by ``code`` (``ok``, ``min_interval``, ``bad_return``, ``warmup``, ...).
    errors : list of str
        Reports of callbacks that raised, timed out, or returned nonsense (newest 200).
    """

    def __init__(self, protocol: Protocol | type[Protocol], meta: StreamMeta,
                 outputs: TriggerOutput | Sequence[TriggerOutput] | None = None,
                 guard: SafetyGuard | None = None, log_path: str | Path | None = None,
                 match_tolerance_ms: float = 20.0, max_records: int = 20000,
                 interrupt_stuck: bool = True, clock: Callable[[], float] = lsl_clock,
                 isolate: str | None = None) -> None:
        if isinstance(protocol, type):
            if not issubclass(protocol, Protocol):
                raise ProtocolConfigError(f"{protocol.__name__} is not a tmseeg.closedloop."
                                          "Protocol subclass.")
            protocol = protocol()
        if not isinstance(protocol, Protocol):
            raise ProtocolConfigError(f"expected a Protocol instance, got "
                                      f"{type(protocol).__name__}.")
        self.protocol = protocol
        self.name = protocol.name or type(protocol).__name__
        self.meta = meta
        self.clock = clock
        self._validate_config(protocol, meta)
        self.guard = guard if guard is not None else SafetyGuard(
            **_tightened(_GUARD_DEFAULTS, protocol.guard), clock=clock)
        if outputs is None:
            outputs = []
        elif isinstance(outputs, TriggerOutput):
            outputs = [outputs]
        self.outputs: list[TriggerOutput] = list(outputs)
        for out in self.outputs:
            out.on_fired = self._on_fired
            out.on_failed = self._on_failed
        self.timeout_s = float(protocol.callback_timeout_ms) / 1000.0
        self.match_tolerance_s = match_tolerance_ms / 1000.0
        self.interrupt_stuck = interrupt_stuck
        # state fed by the acquisition thread
        fs = meta.sfreq
        n_win = int(round(protocol.window_ms * fs / 1000.0))
        if self.estimator is not None:
            n_win = max(n_win, self.estimator.n_samples_needed)
        self._win = _Window(n_win, None if self.spatial is not None else meta.n_channels)
        self._training: list[np.ndarray] | None = [] if protocol.estimator == "etp" else None
        self._t_first = math.nan
        self._newest_sample = -1
        self._newest_time = math.nan
        self._received = math.nan
        self._ref = (0, math.nan)  # (sample, LSL time) for sample -> time
        self._last_gap_time: float | None = None
        self._n_pulses = 0
        self._last_pulse_time = math.nan
        self._tep: dict = {}
        self._metrics: dict = {}
        self._session_attached = False
        self._raw_first = False  # the engine calls on_raw: on_block then skips raw data
        # worker
        self._cv = threading.Condition()
        self._block_job: _Job | None = None
        self._events: deque[_Job] = deque(maxlen=1000)
        self._busy: tuple[int, float, str] | None = None  # (generation, started, kind)
        self._gen = 0
        self._abandoned: set[int] = set()
        self._stuck_since = math.nan
        self._stop = False
        self.disabled_reason = ""
        self._setup_done = False
        # bookkeeping
        self.records: deque[dict] = deque(maxlen=max_records)
        self.accepted: list[dict] = []
        self.counts: Counter = Counter()
        self.errors: deque[str] = deque(maxlen=200)
        self.n_calls = Counter()
        self.n_skipped = 0
        self.n_timeouts = 0
        self.n_exceptions = 0
        self.n_dropped_events = 0
        self._runner_ids = 0
        self._warned_label = False
        self._pending: dict[int, tuple[GuardDecision, dict]] = {}
        self._rec_lock = threading.Lock()
        self._early_lock = threading.Lock()  # the acquisition and the output threads add pulses
        self._log_file = None
        if log_path is not None:
            self._log_file = open(Path(log_path), "a", encoding="utf-8", buffering=1)
        self.n_kills = 0
        self._process = None
        if isolate is not None:
            from tmseeg.closedloop.isolation import (
                ProtocolProcess,
                ProtocolProcessError,
            )
            try:
                self._process = ProtocolProcess(isolate)
            except ProtocolProcessError as err:
                if self._log_file is not None:
                    self._log_file.close()
                raise ProtocolLoadError(str(err)) from err
        self._thread = threading.Thread(target=self._worker, name=f"protocol-{self.name}",
                                        daemon=True)
        self._thread.start()

    #: kills of an isolated protocol (at its deadline, or it died) before it is disabled
    MAX_KILLS = 3

    # -- configuration ---------------------------------------------------------------------
    def _validate_config(self, p: Protocol, meta: StreamMeta) -> None:
        who = f"protocol {type(p).__name__}"

        def pos(attr: str, allow_zero: bool = False) -> float:
            v = getattr(p, attr)
            try:
                f = float(v)
            except (TypeError, ValueError):
                f = math.nan
            if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
                raise ProtocolConfigError(f"{who}: {attr}={v!r} must be a finite number "
                                          f"{'>= 0' if allow_zero else '> 0'}.")
            return f

        pos("window_ms")
        pos("callback_timeout_ms")
        pos("delay_ms", allow_zero=True)
        warm = pos("warmup_s", allow_zero=True)
        if p.on_error not in ("disable", "continue"):
            raise ProtocolConfigError(f"{who}: on_error={p.on_error!r}; use 'disable' or "
                                      "'continue'.")
        if not isinstance(p.guard, Mapping):
            raise ProtocolConfigError(f"{who}: guard must be a dict of SafetyGuard limits.")
        self.spatial = None
        if p.channels is not None:
            try:
                self.spatial = SpatialFilter.from_spec(p.channels, meta.ch_names)
            except (ValueError, KeyError) as err:
                raise ProtocolConfigError(f"{who}: channels={p.channels!r}: {err}") from None
        self.estimator: ARPhaseEstimator | ETPPhaseEstimator | None = None
        if p.estimator is not None:
            if p.estimator not in ("ar", "etp"):
                raise ProtocolConfigError(f"{who}: estimator={p.estimator!r}; use 'ar', 'etp' "
                                          "or None.")
            if self.spatial is None:
                raise ProtocolConfigError(f"{who}: estimator={p.estimator!r} needs a single "
                                          "signal: set channels (e.g. 'C3 Laplacian').")
            cls = ARPhaseEstimator if p.estimator == "ar" else ETPPhaseEstimator
            self.estimator = cls(meta.sfreq, band_hz=tuple(p.band_hz),
                                 window_ms=max(500.0, float(p.window_ms)))
            need = 2 * self.estimator.n_samples_needed / meta.sfreq
            if p.estimator == "etp" and warm < max(need, 10.0):
                raise ProtocolConfigError(f"{who}: estimator='etp' learns the cycle length from "
                                          f"the warm-up data; set warmup_s >= 10 (got {warm:g}).")
        self.early: EarlyTEPCutter | None = None
        if type(p).on_early_tep is not Protocol.on_early_tep:  # the fast path is asked for
            spec = p.early_tep_channels if p.early_tep_channels is not None else p.channels
            try:
                roi = SpatialFilter.from_spec(spec, meta.ch_names) if spec is not None else None
                self.early = EarlyTEPCutter(meta, spatial=roi)
            except (ValueError, KeyError) as err:
                raise ProtocolConfigError(f"{who}: on_early_tep: {err}") from None

    # -- feeding (acquisition thread) ------------------------------------------------------
    def attach(self, session) -> "ProtocolRunner":
        """Receive the session's per-pulse updates (TEP/MEP rows) for ``on_pulse``."""
        session.listeners.append(self.on_session_update)
        self._session_attached = True
        return self

    def time_of(self, sample: int) -> float:
        """LSL time of an absolute sample, from the newest block's timestamps."""
        s0, t0 = self._ref
        return t0 + (sample - s0) / self.meta.sfreq

    def on_raw(self, raw: Block) -> None:
        """Engine hook, before the stages: take the newest raw samples and hand the protocol a
        job at once (artifact removal can hold the acquisition thread 10-150 ms after a pulse;
        the estimate and the trigger decision need only raw data)."""
        self._raw_first = True
        if raw.n_samples:
            self._ingest(raw)
            self._post_block()
        self._watchdog()

    def on_block(self, raw: Block | None, processed: Block | None) -> None:
        """Engine sink: take the newest raw samples (unless :meth:`on_raw` already did) and the
        processed block's pulse and marker events; hand the protocol a job; never wait."""
        if self._raw_first:
            raw = None
        if raw is not None and raw.n_samples:
            self._ingest(raw)
        if processed is not None:
            for ev in processed.events:
                if ev.kind == EVENT_PULSE:
                    self._n_pulses += 1
                    t = ev.time_s if math.isfinite(ev.time_s) else self.time_of(ev.sample)
                    self._last_pulse_time = t
                    if not self._session_attached:
                        self._post_event("on_pulse", PulseInfo(
                            sample=ev.sample, time_s=t, newest_sample=self._newest_sample,
                            newest_time_s=self._newest_time, now_s=math.nan,
                            intensity_pct=float_or_nan(ev.extra.get("intensity_pct", math.nan))))
                elif ev.kind == EVENT_MARKER:
                    t = ev.time_s if math.isfinite(ev.time_s) else self.time_of(ev.sample)
                    self._post_event("on_marker", MarkerInfo(
                        label=ev.label, sample=ev.sample, time_s=t, extra=dict(ev.extra),
                        newest_sample=self._newest_sample, newest_time_s=self._newest_time,
                        now_s=math.nan))
        if raw is not None and raw.n_samples:
            self._post_block()
        self._watchdog()

    def _ingest(self, raw: Block) -> None:
        for ev in raw.events:
            if ev.kind == EVENT_GAP:
                self._win.reset()  # never estimate across missing samples
                self._last_gap_time = float(raw.timestamps[0])
                if self.early is not None:
                    with self._early_lock:
                        self.early.reset()
        if raw.first_sample != self._newest_sample + 1 and self._newest_sample >= 0:
            self._win.reset()
            self._last_gap_time = float(raw.timestamps[0])
        x = self.spatial.apply(raw.data) if self.spatial is not None else raw.data
        self._win.append(x)
        self._newest_sample = raw.stop_sample - 1
        self._newest_time = float(raw.timestamps[-1])
        self._received = raw.received_s if math.isfinite(raw.received_s) else self.clock()
        self._ref = (raw.first_sample, float(raw.timestamps[0]))
        if math.isnan(self._t_first):
            self._t_first = float(raw.timestamps[0])
        if self._training is not None and self.spatial is not None:
            if self._newest_time - self._t_first < self.protocol.warmup_s:
                self._training.append(np.array(x, copy=True))
        if self.early is not None:
            self._early_step(raw)

    def _early_step(self, raw: Block) -> None:
        """The fast path: note the block's pulse markers, hand the protocol every early TEP
        the block completed (a copy of the EEG rows and, per pulse, one small cut: cheap
        enough for the acquisition thread)."""
        with self._early_lock:
            for ev in raw.events:
                if ev.kind == EVENT_PULSE or (ev.kind == EVENT_MARKER
                                              and PULSE_LABEL.search(str(ev.label))):
                    self.early.add_pulse(ev.sample, "marker")
            done = self.early.process(raw, ready_s=self._received)
        for tep in done:
            self._post_event("on_early_tep", EarlyTEP(
                sample=tep.sample, time_s=self.time_of(tep.sample), tep=tep,
                newest_sample=self._newest_sample, newest_time_s=self._newest_time,
                now_s=math.nan))

    def _post_block(self) -> None:
        job = _Job("on_block", self._win.latest(), self._newest_sample, self._newest_time,
                   self._received)
        with self._cv:
            if self._stop or self.disabled_reason:
                return
            if self._busy is not None and self._busy[1] + self.timeout_s < self.clock() \
                    or not math.isnan(self._stuck_since):
                self.n_skipped += 1
                return
            self._block_job = job  # newest wins: an unprocessed older window is dropped
            self._cv.notify()

    def _post_event(self, kind: str, payload: Any) -> None:
        job = _Job(kind, payload, self._newest_sample, self._newest_time, self._received)
        with self._cv:
            if self._stop or self.disabled_reason:
                return
            if len(self._events) == self._events.maxlen:
                self.n_dropped_events += 1
            self._events.append(job)
            self._cv.notify()

    def on_session_update(self, update: dict) -> None:
        """Session listener: a pulse's epoch is complete and the plug-ins took it (the
        ``"metrics"`` update: the whole row, TEP and metric summaries)."""
        if update.get("type") != "metrics":
            return
        self._tep = update.get("tep") or {}
        self._metrics = update.get("metrics") or {}
        row = dict(update.get("pulse") or {})
        sample = int(row.get("sample", -1))
        t = self.time_of(sample)
        trig = self._match_trigger(t)
        inten = trig["intensity_pct"] if trig is not None else float_or_nan(
            row.get("intensity_pct", math.nan))
        self._post_event("on_pulse", PulseInfo(
            sample=sample, time_s=t, row=row, tep=self._tep, metrics=self._metrics,
            trigger=trig, intensity_pct=inten, newest_sample=self._newest_sample,
            newest_time_s=self._newest_time, now_s=math.nan))

    def _match_trigger(self, t: float) -> dict | None:
        with self._rec_lock:
            best = None
            for rec in reversed(self.accepted[-50:]):
                d = abs(rec["target_time_s"] - t)
                if d <= self.match_tolerance_s and (best is None or d < best[0]):
                    best = (d, rec)
            return None if best is None else best[1]

    # -- watchdog ----------------------------------------------------------------------------
    def _watchdog(self) -> None:
        if self._process is not None:  # the call itself returns at the deadline
            return
        with self._cv:
            busy = self._busy
            if busy is None or busy[0] in self._abandoned:
                return
            gen, started, kind = busy
            overrun = self.clock() - started
            if overrun <= self.timeout_s:
                return
            self._abandoned.add(gen)
            self._stuck_since = started
            self.n_timeouts += 1
        self._report(f"{kind} exceeded its {self.timeout_s * 1e3:g} ms deadline "
                     f"({overrun * 1e3:.0f} ms so far): abandoned; later calls are skipped "
                     "until it returns")
        if self.interrupt_stuck:
            try:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread.ident), ctypes.py_object(ProtocolTimeout))
            except Exception:  # pragma: no cover - CPython only
                pass

    def poll(self) -> None:
        """Run the watchdog (the sink does this on every block; call it when idle)."""
        self._watchdog()

    # -- worker -----------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            try:
                with self._cv:
                    while not self._stop and self._block_job is None and not self._events:
                        self._cv.wait()
                    if self._stop:
                        return
                    job = self._events.popleft() if self._events else self._block_job
                    if job is self._block_job:
                        self._block_job = None
                    self._gen += 1
                    gen = self._gen
                    self._busy = (gen, self.clock(), job.kind)
                try:
                    self._execute(job, gen)
                finally:
                    with self._cv:
                        self._busy = None
                        if gen in self._abandoned:
                            self._stuck_since = math.nan
            except ProtocolTimeout:
                continue  # landed outside the callback: that job is already abandoned
            except Exception:  # the runner itself must not die
                log.exception("protocol runner worker error")

    def _call(self, kind: str, arg: Any, gen: int) -> tuple[bool, Any]:
        """Call one callback; (ok, result). Exceptions are reported per the error policy."""
        self.n_calls[kind] += 1
        if self._process is not None:
            return self._call_isolated(kind, arg)
        try:
            return True, getattr(self.protocol, kind)(arg)
        except ProtocolTimeout:
            self._report(f"{kind} was interrupted after overrunning its deadline")
            return False, None
        except Exception as err:
            self._raised(kind, type(err).__name__, str(err), traceback.format_exc(limit=6))
            return False, None

    def _raised(self, kind: str, name: str, message: str, tb: str) -> None:
        """A callback raised: report it, and disable the protocol per its error policy."""
        self.n_exceptions += 1
        if self.protocol.on_error == "disable":
            self.disabled_reason = f"{kind} raised {name}: {message}"
            self._report(f"{kind} raised {name}: {message}; protocol disabled "
                         f"(on_error='disable'); acquisition continues\n{tb}")
        elif self.n_exceptions <= 5 or self.n_exceptions % 100 == 0:
            self._report(f"{kind} raised {name}: {message} (#{self.n_exceptions};"
                         f" on_error='continue')\n{tb}")

    def _call_isolated(self, kind: str, arg: Any) -> tuple[bool, Any]:
        """One callback in the protocol's process, at most its deadline; a process that
        overruns it (or died) is killed and started again, or disabled after MAX_KILLS."""
        started = self.clock()
        status, value = self._process.call(kind, arg, self.timeout_s)
        if status == "ok":
            return True, value
        if status == "raised":
            self._raised(kind, *value)
            return False, None
        self.n_kills += 1
        if status == "timeout":
            self.n_timeouts += 1
            what = (f"{kind} exceeded its {self.timeout_s * 1e3:g} ms deadline "
                    f"({(self.clock() - started) * 1e3:.0f} ms): protocol process killed")
        else:
            what = f"the protocol process died during {kind} (exit code {value})"
        if self.n_kills >= self.MAX_KILLS:
            self.disabled_reason = f"{what}; {self.n_kills} times"
            self._report(f"{what} (kill {self.n_kills} of {self.MAX_KILLS}): protocol "
                         "disabled; acquisition continues")
            self._process.kill()
            return False, None
        try:
            self._process.restart()
        except Exception as err:
            self.disabled_reason = f"{what}; it could not be started again: {err}"
            self._report(f"{self.disabled_reason}: protocol disabled; acquisition continues")
            return False, None
        self._setup_done = False  # a fresh protocol: setup runs again before the next call
        self._report(f"{what} and started again (its state starts over; setup runs again)")
        return False, None

    def _execute(self, job: _Job, gen: int) -> None:
        if self.disabled_reason:
            return
        if not self._setup_done:
            self._setup_done = True
            ok, _ = self._call("setup", ProtocolInfo(
                self.meta.ch_names, self.meta.ch_types, self.meta.sfreq, self.meta.name,
                self.spatial), gen)
            if not ok or gen in self._abandoned:
                return
        now = self.clock()
        warming = (job.newest_time_s - self._t_first) < self.protocol.warmup_s
        if job.kind == "on_block":
            phase = self._estimate(job, warming)
            ctx = State(window=job.payload, sfreq=self.meta.sfreq,
                        newest_sample=job.newest_sample, newest_time_s=job.newest_time_s,
                        received_s=job.received_s, now_s=now,
                        elapsed_s=job.newest_time_s - self._t_first, warming_up=warming,
                        phase=phase, delay_ms=float(self.protocol.delay_ms), tep=self._tep,
                        metrics=self._metrics, n_pulses=self._n_pulses,
                        last_pulse_time_s=self._last_pulse_time,
                        last_trigger_time_s=(self.accepted[-1]["target_time_s"]
                                             if self.accepted else math.nan),
                        n_accepted=len(self.accepted))
        elif job.kind == "on_decision":
            self._call("on_decision", job.payload, gen)
            return
        else:
            ctx = job.payload
            ctx.now_s = now
            ctx.delay_ms = float(self.protocol.delay_ms)
            phase = None
        ok, result = self._call(job.kind, ctx, gen)
        if not ok:
            return
        if gen in self._abandoned:
            self._report(f"{job.kind} returned after its deadline: result discarded")
            return
        if result is None:
            return
        self._decide(job, result, phase, warming)

    def _estimate(self, job: _Job, warming: bool) -> PhaseEstimate | None:
        est = self.estimator
        if est is None or job.payload.shape[-1] < est.n_samples_needed:
            return None
        if isinstance(est, ETPPhaseEstimator) and not est.fitted:
            if warming or not self._training:
                return None
            training, self._training = np.concatenate(self._training), None
            try:
                est.fit(training)
            except ValueError as err:
                self._report(f"ETP estimator could not learn the cycle length from the warm-up "
                             f"data: {err}; state.phase stays None")
                self.estimator = None
                return None
        try:
            return est.estimate(job.payload, float(self.protocol.delay_ms),
                                newest_sample=job.newest_sample)
        except ValueError as err:  # NaN in the window (a dead channel), ...
            self._report(f"phase estimate failed: {err}")
            return None

    # -- decisions ---------------------------------------------------------------------------
    def _decide(self, job: _Job, result: Any, phase: PhaseEstimate | None,
                warming: bool) -> None:
        decision: GuardDecision | None = None
        if not isinstance(result, TriggerRequest):
            code, reason = "bad_return", (f"refused: {job.kind} returned "
                                          f"{type(result).__name__} ({str(result)[:80]!r}); "
                                          "return a TriggerRequest (state.trigger(...)) or None")
            self._report(reason)
            req = None
        elif warming:
            code, reason, req = "warmup", (f"refused: warm-up ({self.protocol.warmup_s:g} s) "
                                           "not over"), result
        else:
            req = result
            decision = self.guard.check(req, now_s=self.clock(),
                                        newest_sample_time_s=job.newest_time_s,
                                        last_gap_time_s=self._last_gap_time)
            code, reason = decision.code, decision.reason
        if decision is not None:
            did = decision.decision_id
            decided, target = decision.decided_at_s, decision.target_time_s
        else:
            self._runner_ids += 1
            did = -self._runner_ids
            decided = self.clock()
            target = float_or_nan(getattr(req, "target_time_s", math.nan))
        rec = {
            "decision_id": did, "accepted": bool(decision is not None and decision.accepted),
            "code": code, "reason": reason,
            "label": str(getattr(req, "label", ""))[:200],
            "intensity_pct": float_or_nan(getattr(req, "intensity_pct", math.nan)),
            "target_time_s": target, "newest_sample": job.newest_sample,
            "last_sample_time_s": job.newest_time_s, "received_s": job.received_s,
            "decision_time_s": decided, "send_time_s": math.nan, "sent_s": math.nan,
            "fired_at_s": math.nan, "latency_ms": math.nan,
            "phase_rad": _pick(req, "phase_rad", phase),
            "amplitude_uv": _pick(req, "amplitude_uv", phase),
            "power_uv2": phase.power_uv2 if phase is not None else math.nan,
            "est_phase_rad": phase.phase_rad if phase is not None else math.nan,
            "callback": job.kind, "protocol": self.name,
        }
        if rec["accepted"]:
            with self._rec_lock:
                self._pending[did] = (decision, rec)
            if not self._warned_label and not PULSE_LABEL.search(rec["label"]):
                self._warned_label = True
                self._report(f"label {rec['label']!r} does not look like a pulse to the pipeline "
                             "(it matches 'TMS', 'pulse', ...): the pulse will be a plain "
                             "marker, without epoch or on_pulse; use e.g. 'TMS <name>'")
        n_ok = 0
        for out in self.outputs:
            msg = dict(rec)
            try:
                out.send(msg)
                n_ok += 1
                if math.isnan(rec["send_time_s"]):
                    rec["send_time_s"] = float_or_nan(msg.get("send_time_s", math.nan))
            except Exception as err:
                self._report(f"trigger output {out.name} failed on decision {did}: {err}")
        rec["sent_s"] = self.clock()
        rec["latency_ms"] = (rec["sent_s"] - job.received_s) * 1e3
        if rec["accepted"]:
            if self.outputs and n_ok == 0:
                self.guard.cancel(decision)
                rec["accepted"], rec["code"] = False, "output_failed"
                rec["reason"] = "refused: every trigger output failed; slot released"
                with self._rec_lock:
                    self._pending.pop(did, None)
            elif not self.outputs:  # no output: the decision is the result (logging only)
                self.guard.commit(decision, rec["sent_s"])
        with self._rec_lock:
            self.counts[rec["code"]] += 1
            self.records.append(rec)
            if rec["accepted"]:
                self.accepted.append(rec)
        if self._log_file is not None:
            try:
                self._log_file.write(message_json(rec) + "\n")
            except Exception as err:
                self._report(f"decision log write failed: {err}")
        if type(self.protocol).on_decision is not Protocol.on_decision:
            self._post_event("on_decision", dict(rec))

    def _on_fired(self, decision_id: int, at_s: float) -> None:
        with self._rec_lock:
            item = self._pending.pop(decision_id, None)
        if item is None:
            return
        decision, rec = item
        rec["fired_at_s"] = at_s
        self.guard.commit(decision, at_s)
        if self.early is not None and math.isfinite(at_s):  # this pulse's early TEP, too
            s0, t0 = self._ref
            if math.isfinite(t0):
                with self._early_lock:
                    self.early.add_pulse(int(round(s0 + (at_s - t0) * self.meta.sfreq)),
                                         "trigger")

    def _on_failed(self, decision_id: int, reason: str) -> None:
        with self._rec_lock:
            item = self._pending.pop(decision_id, None)
        if item is not None:
            item[1]["fire_error"] = reason
        self._report(f"decision {decision_id} was not fired: {reason}")

    def _report(self, text: str) -> None:
        self.errors.append(text)
        log.warning("protocol %s: %s", self.name, text)

    # -- results -----------------------------------------------------------------------------
    @property
    def stuck(self) -> bool:
        """True while an abandoned callback has not returned."""
        return not math.isnan(self._stuck_since)

    def summary(self) -> dict:
        """Counts, latency percentiles and the protocol's state, JSON-ready."""
        with self._rec_lock:
            lat = [r["latency_ms"] for r in self.records if math.isfinite(r["latency_ms"])]
            ph = [r["phase_rad"] for r in self.accepted if math.isfinite(r["phase_rad"])]
        out = {
            "protocol": self.name,
            "accepted": int(self.counts.get("ok", 0)),
            "rejected": int(sum(v for k, v in self.counts.items() if k != "ok")),
            "by_code": dict(self.counts),
            "calls": dict(self.n_calls), "skipped": self.n_skipped,
            "timeouts": self.n_timeouts, "exceptions": self.n_exceptions,
            "isolated": self._process is not None, "process_kills": self.n_kills,
            "disabled": self.disabled_reason or None, "stuck": self.stuck,
        }
        if lat:
            a = np.asarray(lat)
            out.update(latency_ms_p50=float(np.percentile(a, 50)),
                       latency_ms_p95=float(np.percentile(a, 95)),
                       latency_ms_p99=float(np.percentile(a, 99)))
        if ph:
            z = np.mean(np.exp(1j * np.asarray(ph)))
            out["est_phase_mean_deg"] = float(np.degrees(np.angle(z)))
            r = min(max(abs(z), 1e-12), 1.0)
            out["est_phase_sd_deg"] = abs(float(np.degrees(math.sqrt(-2 * math.log(r)))))
        return out

    def status_line(self) -> str:
        """One line for the terminal dashboard."""
        s = self.summary()
        rej = ", ".join(f"{k} {v}" for k, v in sorted(s["by_code"].items()) if k != "ok")
        parts = [f"closed loop {s['protocol']}: accepted {s['accepted']}, rejected "
                 f"{s['rejected']}" + (f" ({rej})" if rej else "")]
        if "latency_ms_p50" in s:
            parts.append(f"latency p50 {s['latency_ms_p50']:.2f} ms p99 "
                         f"{s['latency_ms_p99']:.2f} ms")
        if "est_phase_mean_deg" in s:
            parts.append(f"est. phase at triggers {s['est_phase_mean_deg']:+.0f} deg "
                         f"(SD {s['est_phase_sd_deg']:.0f})")
        if s["timeouts"] or s["exceptions"] or s["skipped"]:
            parts.append(f"timeouts {s['timeouts']} exceptions {s['exceptions']} skipped "
                         f"{s['skipped']}")
        if s["disabled"]:
            parts.append(f"DISABLED: {s['disabled']}")
        return " | ".join(parts)

    def close(self) -> None:
        """Stop the worker (an abandoned callback is left behind: daemon thread), close outputs."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if not self.stuck:
            self._thread.join(timeout=1.0)
        if self._process is not None:
            self._process.close()
        for out in self.outputs:
            try:
                out.close()
            except Exception:
                log.exception("closing trigger output %s", out.name)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def build_runner(protocol_path: str, meta: StreamMeta, trigger_output: str = "lsl",
                 session=None, amplifier=None, log_path: str | Path | None = None,
                 guard: SafetyGuard | None = None, isolate: bool = True) -> ProtocolRunner:
    """Load a protocol file and make its runner, as ``tmseeg run/demo --protocol`` do.

    Parameters
    ----------
    protocol_path : str
        ``FILE.py`` or ``FILE.py:ClassName``.
    meta : StreamMeta
    trigger_output : str
        See :func:`tmseeg.closedloop.triggers.make_output` (default ``"lsl"``).
    session : TEPSession, optional
        Attach for ``on_pulse`` rows.
    amplifier : SimulatedAmplifier, optional
        For ``trigger_output="sim"``.
    log_path : str or Path, optional
        JSON-lines decision log.
    guard : SafetyGuard, optional
    isolate : bool
        Run the protocol's callbacks in a process of their own (default; see
        :class:`ProtocolRunner`).

    Returns
    -------
    ProtocolRunner
    """
    from tmseeg.closedloop.triggers import make_output

    cls = load_protocol(protocol_path)
    output = make_output(trigger_output, amplifier=amplifier)
    spec = str(protocol_path)
    if ":" not in Path(spec).name:  # the class this process found, found there again
        spec = f"{spec}:{cls.__name__}"
    try:
        runner = ProtocolRunner(cls, meta, outputs=[output], guard=guard, log_path=log_path,
                                isolate=spec if isolate else None)
    except Exception:
        output.close()
        raise
    if session is not None:
        runner.attach(session)
    return runner


def circular_stats_deg(phases_rad: Sequence[float],
                       target_rad: float = 0.0) -> tuple[float, float]:
    """Circular mean of ``phase - target`` and circular SD ``sqrt(-2 ln R)``, in degrees."""
    a = np.asarray(phases_rad, dtype=float) - target_rad
    if a.size == 0:
        return math.nan, math.nan
    z = np.mean(np.exp(1j * a))
    r = min(max(abs(z), 1e-12), 1.0)
    return float(np.degrees(np.angle(z))), abs(float(np.degrees(math.sqrt(-2 * math.log(r)))))


def truth_line(runner: ProtocolRunner, amplifier) -> str:
    """The demo's ground-truth line: pulses the simulator fired, true mu phase there, intervals."""
    pulses = [p for p in amplifier.truth.pulses]
    if not pulses:
        return "closed loop truth: the simulator fired no pulse"
    target = getattr(runner.protocol, "target_phase_rad", None)
    mean, sd = circular_stats_deg([p.mu_phase_rad for p in pulses],
                                  0.0 if target is None else float(target))
    times = np.array([p.time_s for p in pulses])
    iv = np.diff(times)
    what = (f"error from target {math.degrees(target):.0f} deg: mean {mean:+.1f}"
            if target is not None else f"mean {mean:+.1f}")
    return (f"closed loop truth: {len(pulses)} pulses fired by the simulator; true mu phase "
            f"{what} deg, circular SD {sd:.1f} deg"
            + (f"; shortest interval {iv.min():.3f} s" if iv.size else ""))
