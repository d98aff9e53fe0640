"""The safety guard every closed-loop trigger passes: no protocol can fire around it.

A protocol proposes a :class:`TriggerRequest`; :meth:`SafetyGuard.check` returns a
:class:`GuardDecision` that is either accepted (the slot is reserved at once, so two threads
cannot both squeeze a pulse into the same slot) or refused with a reason. The trigger output
sends only accepted decisions and then calls :meth:`SafetyGuard.commit` (the pulse went out)
or :meth:`SafetyGuard.cancel` (it did not; the slot is released). An accepted decision that is
neither committed nor cancelled keeps counting towards every limit (fail safe).

Rules, in the order they are checked (the first that fails is the reason)
--------------------------------------------------------------------------
``bad_request``     not a :class:`TriggerRequest`, a label that is not a string, bad times.
``bad_intensity``   intensity not a finite real number in ``[0, max_intensity_pct]``.
``bad_target``      neither/both of ``target_time_s`` and ``delay_s``, or not finite.
``target_past``     target earlier than ``now - past_tolerance_s``.
``target_far``      target later than ``now + max_lead_s`` (a protocol cannot book far ahead).
``no_data_time`` /  no newest-sample time given while ``max_data_age_ms`` is set, or the newest
``stale_data``      sample is older than ``max_data_age_ms`` (or implausibly in the future).
``recent_gap``      a data gap less than ``refuse_if_gap_within_s`` ago.
``session_limit``   ``max_pulses_session`` reached.
``train_limit``     ``max_pulses_train`` reached in the current train.
``min_interval``    closer than ``min_interval_s`` to any accepted pulse (before or after).
``rate_limit``      some window of ``window_s`` containing the target would hold more than
                    ``max_pulses`` accepted pulses (exact sliding-window count).
``internal_error``  anything unexpected: refused (fail closed), never raised.

Defaults and their motivation
-----------------------------
The defaults suit single-pulse, EEG-triggered TMS (e.g. phase-triggered motor-cortex
stimulation) and are deliberately conservative; every one is a parameter.

* ``min_interval_s = 1.0``: at most 1 Hz instantaneous rate. The safety guidelines (Rossi et
  al. 2009, Clin Neurophysiol 120:2008; update Rossi et al. 2021, Clin Neurophysiol 132:269)
  treat single and paired pulses and "low-frequency" rTMS (<= 1 Hz) as the low-risk regime;
  staying at or below 1 Hz keeps a state-triggered protocol from turning into
  high-frequency rTMS by accident (a phase trigger could otherwise fire every mu cycle).
* ``max_rate = ((10.0, 6), (60.0, 30))``: on average no more than 0.6 Hz over 10 s and 0.5 Hz
  over a minute, i.e. single pulses with an ISI of ~2 s as in typical EEG-triggered protocols.
* ``max_pulses_session = 1500``: of the order of a long single-pulse / low-frequency session;
  raise it deliberately for longer studies.
* ``max_pulses_train = None`` (off): a "train" is a run of pulses each closer than
  ``train_break_s`` (5 s) to the previous one; set a limit for repetitive protocols.
* ``max_intensity_pct = 100.0``; lower it to the intensity your protocol approved.
* ``max_data_age_ms = 100.0``: decisions on EEG older than 100 ms are refused.
* ``refuse_if_gap_within_s = 1.0``: after a gap, the estimators' windows (~0.5 s) must refill.
* ``past_tolerance_s = 0.0``, ``max_lead_s = 10.0``.

These are software limits for an experiment's protocol; they do not replace the stimulator's
own interlocks or the experimenter's judgement.
"""
from __future__ import annotations

import bisect
import itertools
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from tmseeg.utils import now_s

__all__ = ["TriggerRequest", "GuardDecision", "SafetyGuard"]


_default_clock = now_s  # the LSL clock


@dataclass(frozen=True)
class TriggerRequest:
    """What a protocol asks for: one pulse at a time on the LSL clock.

    Parameters
    ----------
    target_time_s : float, optional
        When the pulse should fire, on the local LSL clock (seconds). Give this or ``delay_s``.
    delay_s : float, optional
        Fire this long after ``requested_at_s`` (or after the check time if that is None).
    intensity_pct : float
        Stimulator output in % of maximum.
    label : str
        Marker text (e.g. ``"TMS"``, ``"mu-peak"``).
    requested_at_s : float, optional
        LSL time at which the protocol made the request (for latency in the log).
    phase_rad, amplitude_uv : float, optional
        The state estimate the request was based on (logged).
    """

    target_time_s: Any = None
    delay_s: Any = None
    intensity_pct: Any = float("nan")
    label: Any = "TMS"
    requested_at_s: Any = None
    phase_rad: Any = None
    amplitude_uv: Any = None


@dataclass(frozen=True)
class GuardDecision:
    """The guard's answer to one request.

    Parameters
    ----------
    accepted : bool
    reason : str
        Human-readable; names the rule and the numbers.
    code : str
        Stable short key of the rule (``"ok"``, ``"min_interval"``, ... see the module doc).
    decision_id : int
        Unique within the guard; pass the decision back to ``commit``/``cancel``.
    decided_at_s : float
        Clock time of the decision.
    target_time_s : float
        Resolved target time (NaN if it could not be resolved).
    intensity_pct : float
        The request's intensity (NaN if not a number).
    label : str
    """

    accepted: bool
    reason: str
    code: str
    decision_id: int
    decided_at_s: float
    target_time_s: float = float("nan")
    intensity_pct: float = float("nan")
    label: str = ""
    request: Any = field(default=None, repr=False, compare=False)


class _Refuse(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _real(x: Any) -> float | None:
    """A finite float from a real number (bools refused), else None."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return None
    try:
        v = float(x)
    except Exception:
        return None
    return v if math.isfinite(v) else None


def _num_or_nan(x: Any) -> float:
    v = _real(x)
    return float("nan") if v is None else v


class SafetyGuard:
    """Checks every trigger request against timing, rate, count, data and intensity limits.

    Parameters
    ----------
    min_interval_s : float
        Minimum time between any two accepted pulses (default 1.0 s).
    max_rate : sequence of (window_s, max_pulses)
        At most ``max_pulses`` accepted pulses in any window of ``window_s`` seconds
        (default ``((10.0, 6), (60.0, 30))``).
    max_pulses_session : int or None
        Accepted pulses in this guard's lifetime (default 1500; None = no limit).
    max_pulses_train : int or None
        Accepted pulses per train (default None = no limit).
    train_break_s : float
        A pause longer than this starts a new train (default 5.0 s).
    max_intensity_pct : float
        Highest intensity accepted (default 100.0 %).
    max_data_age_ms : float or None
        Refuse when the newest EEG sample is older than this (default 100 ms; None = off).
    refuse_if_gap_within_s : float or None
        Refuse within this time after a data gap (default 1.0 s; None = off).
    past_tolerance_s : float
        How far in the past a target may lie and still be accepted (default 0.0 s).
    max_lead_s : float
        How far in the future a target may lie (default 10.0 s).
    clock : callable, optional
        Returns "now" in seconds on the LSL clock (default ``pylsl.local_clock``); used when
        ``check`` is not given ``now_s``.

    Notes
    -----
    Thread-safe: ``check``, ``commit`` and ``cancel`` share one lock, and an accepted check
    reserves its slot before the lock is released. ``check`` never raises; anything it cannot
    make sense of is refused with a reason. Every decision, commit and cancel is appended to
    :attr:`log`.
    """

    def __init__(self, min_interval_s: float = 1.0,
                 max_rate: Sequence[tuple[float, int]] = ((10.0, 6), (60.0, 30)),
                 max_pulses_session: int | None = 1500, max_pulses_train: int | None = None,
                 train_break_s: float = 5.0, max_intensity_pct: float = 100.0,
                 max_data_age_ms: float | None = 100.0,
                 refuse_if_gap_within_s: float | None = 1.0, past_tolerance_s: float = 0.0,
                 max_lead_s: float = 10.0, clock: Callable[[], float] | None = None) -> None:
        def nonneg(name: str, v: Any, allow_none: bool = False) -> float | None:
            if v is None and allow_none:
                return None
            f = _real(v)
            if f is None or f < 0:
                raise ValueError(f"SafetyGuard: {name}={v!r} must be a finite number >= 0"
                                 + (" or None." if allow_none else "."))
            return f

        self.min_interval_s = nonneg("min_interval_s", min_interval_s)
        rates = []
        for item in max_rate:
            try:
                w, n = item
            except Exception:
                raise ValueError(f"SafetyGuard: max_rate entries are (window_s, max_pulses), "
                                 f"got {item!r}.") from None
            wf = _real(w)
            if wf is None or wf <= 0 or isinstance(n, bool) or not isinstance(n, numbers.Integral) \
                    or n < 1:
                raise ValueError(f"SafetyGuard: max_rate entry {item!r}: window_s must be > 0 "
                                 "and max_pulses an integer >= 1.")
            rates.append((wf, int(n)))
        self.max_rate: tuple[tuple[float, int], ...] = tuple(rates)
        for name, v in (("max_pulses_session", max_pulses_session),
                        ("max_pulses_train", max_pulses_train)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                  or v < 0):
                raise ValueError(f"SafetyGuard: {name}={v!r} must be an integer >= 0 or None.")
        self.max_pulses_session = max_pulses_session
        self.max_pulses_train = max_pulses_train
        self.train_break_s = nonneg("train_break_s", train_break_s)
        self.max_intensity_pct = nonneg("max_intensity_pct", max_intensity_pct)
        self.max_data_age_ms = nonneg("max_data_age_ms", max_data_age_ms, True)
        self.refuse_if_gap_within_s = nonneg("refuse_if_gap_within_s", refuse_if_gap_within_s,
                                             True)
        self.past_tolerance_s = nonneg("past_tolerance_s", past_tolerance_s)
        self.max_lead_s = nonneg("max_lead_s", max_lead_s)
        self.clock = clock if clock is not None else _default_clock
        if not callable(self.clock):
            raise ValueError("SafetyGuard: clock must be a callable returning seconds.")
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._times: list[float] = []  # sorted target times of accepted (reserved) pulses
        self._reserved: dict[int, float] = {}  # decision id -> target, accepted & not cancelled
        self._train_of: dict[int, int] = {}  # decision id -> train number
        self._committed: set[int] = set()
        self._n_session = 0
        self._train_count = 0
        self._train_no = 0
        self._train_last_s = -math.inf
        #: every decision / commit / cancel, as dicts (times in s, latencies in ms)
        self.log: list[dict] = []

    # -- public ---------------------------------------------------------------------------------
    @property
    def n_accepted(self) -> int:
        """Accepted (reserved) pulses that were not cancelled."""
        with self._lock:
            return len(self._reserved)

    @property
    def n_committed(self) -> int:
        """Pulses confirmed as sent."""
        with self._lock:
            return len(self._committed)

    def accepted_times(self) -> list[float]:
        """Target times (s) of the accepted, not cancelled pulses, sorted."""
        with self._lock:
            return list(self._times)

    def check(self, request: Any, now_s: Any = None, newest_sample_time_s: Any = None,
              last_gap_time_s: Any = None) -> GuardDecision:
        """Decide on one request; an accepted decision reserves its slot immediately.

        Parameters
        ----------
        request : TriggerRequest
        now_s : float, optional
            Current LSL time (default: ``clock()``).
        newest_sample_time_s : float, optional
            LSL time of the newest EEG sample the decision was based on.
        last_gap_time_s : float, optional
            LSL time of the most recent data gap (None: no gap seen).

        Returns
        -------
        GuardDecision
            Never raises: invalid input gives a refused decision with the reason.
        """
        t_start = time.perf_counter()
        with self._lock:
            did = next(self._ids)
            target = float("nan")
            now = float("nan")
            try:
                now_v = self._now(now_s)
                now = now_v
                target, inten, label = self._validate(request, now_v)
                self._check_data(now_v, newest_sample_time_s, last_gap_time_s)
                self._check_limits(target)
            except _Refuse as r:
                dec = self._decision(False, r.reason, r.code, did, now, target, request)
            except Exception as exc:  # fail closed on anything unforeseen
                dec = self._decision(False, f"refused: internal error while checking "
                                     f"({type(exc).__name__})", "internal_error", did,
                                     now, target, request)
            else:
                self._reserve(did, target)
                dec = self._decision(True, f"accepted: pulse at {target:.4f} s, "
                                     f"{inten:g} %", "ok", did, now, target, request)
            self._log(dec, request, (time.perf_counter() - t_start) * 1000.0)
            return dec

    def commit(self, decision: GuardDecision, sent_at_s: float | None = None) -> bool:
        """Record that the accepted pulse of ``decision`` was sent.

        Returns
        -------
        bool
            True if recorded; False for a refused, unknown, cancelled or already committed
            decision (nothing changes then).
        """
        with self._lock:
            did = getattr(decision, "decision_id", None)
            ok = (isinstance(decision, GuardDecision) and decision.accepted
                  and did in self._reserved and did not in self._committed)
            if ok:
                self._committed.add(did)
            self.log.append({"event": "commit", "decision_id": did, "ok": ok,
                             "sent_at_s": _num_or_nan(sent_at_s), "time_s": self._safe_now()})
            return ok

    def cancel(self, decision: GuardDecision) -> bool:
        """Release the slot of an accepted decision whose pulse was not sent.

        Returns False (and changes nothing) if the decision was refused, unknown, already
        committed or already cancelled.
        """
        with self._lock:
            did = getattr(decision, "decision_id", None)
            ok = (isinstance(decision, GuardDecision) and did in self._reserved
                  and did not in self._committed)
            if ok:
                t = self._reserved.pop(did)
                i = bisect.bisect_left(self._times, t)
                if i < len(self._times) and self._times[i] == t:
                    del self._times[i]
                self._n_session -= 1
                if self._train_of.pop(did, -1) == self._train_no and self._train_count > 0:
                    self._train_count -= 1
            self.log.append({"event": "cancel", "decision_id": did, "ok": ok,
                             "time_s": self._safe_now()})
            return ok

    # -- internals ------------------------------------------------------------------------------
    def _safe_now(self) -> float:
        try:
            return _num_or_nan(self.clock())
        except Exception:
            return float("nan")

    def _now(self, now_s: Any) -> float:
        if now_s is None:
            try:
                now_s = self.clock()
            except Exception as exc:
                raise _Refuse("bad_request", f"refused: the clock failed ({exc})") from None
        v = _real(now_s)
        if v is None:
            raise _Refuse("bad_request", f"refused: now_s={now_s!r} is not a finite time")
        return v

    def _validate(self, req: Any, now: float) -> tuple[float, float, str]:
        if not isinstance(req, TriggerRequest):
            raise _Refuse("bad_request", f"refused: expected a TriggerRequest, got "
                          f"{type(req).__name__}")
        if not isinstance(req.label, str) or len(req.label) > 200:
            raise _Refuse("bad_request", "refused: label must be a string of at most 200 "
                          "characters")
        inten = _real(req.intensity_pct)
        if inten is None or not 0.0 <= inten <= self.max_intensity_pct:
            raise _Refuse("bad_intensity", f"refused: intensity_pct={req.intensity_pct!r} must "
                          f"be a finite number in [0, {self.max_intensity_pct:g}] %")
        if (req.target_time_s is None) == (req.delay_s is None):
            raise _Refuse("bad_target", "refused: give exactly one of target_time_s and delay_s")
        if req.target_time_s is not None:
            target = _real(req.target_time_s)
            if target is None:
                raise _Refuse("bad_target", f"refused: target_time_s={req.target_time_s!r} is "
                              "not a finite time")
        else:
            delay = _real(req.delay_s)
            if delay is None or delay < 0:
                raise _Refuse("bad_target", f"refused: delay_s={req.delay_s!r} must be a "
                              "finite number >= 0")
            base = now
            if req.requested_at_s is not None:
                b = _real(req.requested_at_s)
                if b is None:
                    raise _Refuse("bad_request", f"refused: requested_at_s="
                                  f"{req.requested_at_s!r} is not a finite time")
                base = b
            target = base + delay
        if target < now - self.past_tolerance_s:
            raise _Refuse("target_past", f"refused: target {target:.4f} s is "
                          f"{(now - target) * 1000:.1f} ms in the past")
        if target > now + self.max_lead_s:
            raise _Refuse("target_far", f"refused: target is {target - now:.2f} s ahead, more "
                          f"than max_lead_s={self.max_lead_s:g} s")
        return target, inten, req.label

    def _check_data(self, now: float, newest: Any, gap: Any) -> None:
        if self.max_data_age_ms is not None:
            if newest is None:
                raise _Refuse("no_data_time", "refused: no newest-sample time given, the "
                              "stale-data check cannot run")
            t = _real(newest)
            if t is None:
                raise _Refuse("stale_data", f"refused: newest_sample_time_s={newest!r} is not a "
                              "finite time")
            age_ms = (now - t) * 1000.0
            if age_ms > self.max_data_age_ms or age_ms < -self.max_data_age_ms:
                raise _Refuse("stale_data", f"refused: newest sample is {age_ms:.1f} ms old "
                              f"(limit {self.max_data_age_ms:g} ms)")
        if self.refuse_if_gap_within_s is not None and gap is not None:
            g = _real(gap)
            if g is None:
                raise _Refuse("recent_gap", f"refused: last_gap_time_s={gap!r} is not a finite "
                              "time")
            if now - g < self.refuse_if_gap_within_s:
                raise _Refuse("recent_gap", f"refused: data gap {now - g:.3f} s ago (wait "
                              f"{self.refuse_if_gap_within_s:g} s after a gap)")

    def _check_limits(self, t: float) -> None:
        if self.max_pulses_session is not None and self._n_session >= self.max_pulses_session:
            raise _Refuse("session_limit", f"refused: session limit of "
                          f"{self.max_pulses_session} pulses reached")
        if self.max_pulses_train is not None:
            in_train = t - self._train_last_s <= self.train_break_s
            if in_train and self._train_count >= self.max_pulses_train:
                raise _Refuse("train_limit", f"refused: train limit of "
                              f"{self.max_pulses_train} pulses reached (pause > "
                              f"{self.train_break_s:g} s to start a new train)")
        times = self._times
        if self.min_interval_s > 0 and times:
            i = bisect.bisect_left(times, t)
            near = [times[j] for j in (i - 1, i) if 0 <= j < len(times)]
            closest = min(abs(t - s) for s in near)
            if closest < self.min_interval_s:
                raise _Refuse("min_interval", f"refused: {closest * 1000:.1f} ms from another "
                              f"accepted pulse (minimum {self.min_interval_s:g} s)")
        for window, limit in self.max_rate:
            lo = bisect.bisect_right(times, t - window)
            hi = bisect.bisect_left(times, t + window)
            nb = sorted(times[lo:hi] + [t])
            # windows [a, a + window) containing t, left edge at a pulse <= t (exact maximum)
            worst = 0
            for k, a in enumerate(nb):
                if a > t:
                    break
                worst = max(worst, bisect.bisect_left(nb, a + window) - k)
            if worst > limit:
                raise _Refuse("rate_limit", f"refused: would be {worst} pulses within "
                              f"{window:g} s (limit {limit})")

    def _reserve(self, did: int, t: float) -> None:
        bisect.insort(self._times, t)
        self._reserved[did] = t
        self._n_session += 1
        if t - self._train_last_s > self.train_break_s:
            self._train_count = 0
            self._train_no += 1
        self._train_count += 1
        self._train_of[did] = self._train_no
        self._train_last_s = max(self._train_last_s, t)

    def _decision(self, ok: bool, reason: str, code: str, did: int, now: float, target: float,
                  req: Any) -> GuardDecision:
        label = getattr(req, "label", "") if isinstance(req, TriggerRequest) else ""
        inten = getattr(req, "intensity_pct", None) if isinstance(req, TriggerRequest) else None
        if not isinstance(label, str):
            label = f"<{type(label).__name__}>"
        return GuardDecision(ok, reason, code, did, now, target, _num_or_nan(inten),
                             label[:200], req)

    def _log(self, dec: GuardDecision, req: Any, check_ms: float) -> None:
        is_req = isinstance(req, TriggerRequest)
        req_at = _num_or_nan(req.requested_at_s) if is_req else float("nan")
        self.log.append({
            "event": "decision", "decision_id": dec.decision_id, "time_s": dec.decided_at_s,
            "target_time_s": dec.target_time_s, "accepted": dec.accepted, "code": dec.code,
            "reason": dec.reason, "label": dec.label, "intensity_pct": dec.intensity_pct,
            "requested_at_s": req_at,
            "request_latency_ms": (dec.decided_at_s - req_at) * 1000.0,
            "check_ms": check_ms,
            "phase_rad": _num_or_nan(req.phase_rad) if is_req else float("nan"),
            "amplitude_uv": _num_or_nan(req.amplitude_uv) if is_req else float("nan"),
        })
