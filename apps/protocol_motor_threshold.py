"""Motor threshold hunting with MEPs: adaptive maximum-likelihood threshold tracking.

In the spirit of Awiszus' (2003) ML-PEST: after every pulse, the psychometric function
P(MEP >= 50 uV | intensity) is refitted by maximum likelihood to all trials so far
(:func:`tmseeg.metrics.motor.motor_threshold_ml`) and the next pulse is given at the current ML
threshold estimate. Until the fit has both outcomes to work with, the intensity brackets the
threshold: it steps up by ``step_pct`` after a miss and down after a hit. The MEP of each pulse
comes from the session's MEP plug-in (``pulse.row["mep_ptp_uv"]``); the intensity is the one
this protocol requested (``pulse.intensity_pct``). Stops after ``n_trials``.

Run:  tmseeg demo --protocol apps/protocol_motor_threshold.py --duration 120
"""
import math

from tmseeg.closedloop import Protocol
from tmseeg.metrics.motor import motor_threshold_ml


class MotorThreshold(Protocol):
    start_pct, step_pct, criterion_uv = 45.0, 5.0, 50.0
    isi_s = 4.0               # between pulses (typical MT hunts use 4-5 s)
    n_trials = 30
    guard = {"max_intensity_pct": 90.0}
    callback_timeout_ms = 2000.0  # the ML fit in on_pulse takes ~10-100 ms; not time-critical

    def setup(self, info):
        self.trials, self.next_pct, self.waiting, self.last_s = [], self.start_pct, False, -1e9
        self.mt_pct = math.nan

    def on_block(self, state):
        if len(self.trials) >= self.n_trials:
            return None
        if self.waiting and state.newest_time_s - self.last_s < 3 * self.isi_s:
            return None  # the MEP of the last pulse is not in yet (or the pulse was lost)
        if state.newest_time_s - self.last_s < self.isi_s:
            return None
        self.waiting, self.last_s = True, state.newest_time_s
        return state.trigger(round(self.next_pct, 1), label="TMS mt-hunt", after_ms=20.0)

    def on_decision(self, decision):
        if not decision["accepted"]:
            self.waiting = False

    def on_pulse(self, pulse):
        ptp = pulse.row.get("mep_ptp_uv", math.nan)
        if pulse.trigger is None or not math.isfinite(ptp):
            return None  # not our pulse, or no MEP measured (EMG rejected)
        self.waiting = False
        self.trials.append((pulse.intensity_pct, ptp))
        hits = [p >= self.criterion_uv for _, p in self.trials]
        if len(self.trials) >= 5 and any(hits) and not all(hits):
            fit = motor_threshold_ml([i for i, _ in self.trials], [p for _, p in self.trials],
                                     criterion_uv=self.criterion_uv)
            self.mt_pct = self.next_pct = fit.mt_pct
        else:
            self.next_pct += -self.step_pct if hits[-1] else self.step_pct
        self.next_pct = min(max(self.next_pct, 20.0), 90.0)
        return None
