"""Mu-phase-triggered TMS: fire at the mu trough (or peak) of the C3 Laplacian, high power only.

After Zrenner et al. (2018): the C3 Hjorth Laplacian is band-passed 8-13 Hz and an AR model
forward-predicts it past the technical delay (``delay_ms``: transport + decision + trigger +
stimulator), so ``state.phase`` is the phase at ``newest sample + delay_ms``. Power gate: the
window's band power must exceed the median measured during the warm-up. Each estimate looks a
little further ahead too: if the target phase comes within ``lookahead_ms`` after the
estimate's time, the pulse is booked exactly then (one mu cycle advances ~20 deg per 5-ms
block, so waiting for an estimate to land on the target would lose precision).

Run:  tmseeg demo --protocol apps/protocol_mu_phase.py
      tmseeg run --protocol apps/protocol_mu_phase.py [--trigger-output serial:/dev/ttyUSB0]
"""
import dataclasses
import math
import random

import numpy as np

from tmseeg.closedloop import Protocol


class MuPhase(Protocol):
    channels = "C3 Laplacian"
    estimator = "ar"
    delay_ms = 20.0          # technical delay compensated by the AR forward prediction
    warmup_s = 10.0          # power median learned here; no pulses
    target_phase_rad = math.pi   # pi = trough (0 = peak)
    intensity_pct = 60.0
    isi_s = (2.0, 3.0)       # random inter-pulse interval (the guard still enforces >= 1 s)
    lookahead_ms = 6.0
    freq_hz = 10.5           # converts a phase difference into a time

    def setup(self, info):
        self.powers, self.threshold, self.next_ok_s = [], math.inf, -math.inf

    def on_block(self, state):
        est = state.phase
        if est is None or not math.isfinite(est.phase_rad):
            return None
        if state.warming_up:
            self.powers.append(est.power_uv2)
            return None
        if not math.isfinite(self.threshold):
            self.threshold = float(np.median(self.powers))
        if est.power_uv2 < self.threshold or state.newest_time_s < self.next_ok_s:
            return None
        # time until the target phase, counted from the estimate's target time
        dphi = (self.target_phase_rad - est.phase_rad) % (2 * math.pi)
        wait_ms = dphi / (2 * math.pi * self.freq_hz) * 1000.0
        if wait_ms > self.lookahead_ms:
            return None
        self.next_ok_s = state.newest_time_s + random.uniform(*self.isi_s)
        req = state.trigger(self.intensity_pct, label="TMS mu-phase", after_ms=self.delay_ms + wait_ms)
        return dataclasses.replace(req, phase_rad=self.target_phase_rad)  # predicted at target
