"""TEP-amplitude targeting: adjust the intensity until the early TEP reaches a target size.

Each pulse's single-trial early TEP (peak-to-peak 15-60 ms at the ROI, the session's
``early_tep_ptp_uv`` column, measured on the cleaned, re-referenced epoch) feeds a running mean
over the last ``n_average`` kept pulses. When that mean is below ``target_uv - tolerance_uv``
the intensity goes up by ``step_pct``; above ``target_uv + tolerance_uv`` it goes down; in
between it stays. Pulses are spaced ``isi_s`` apart (jittered), and the guard caps the intensity.

Run:  tmseeg demo --protocol apps/protocol_tep_target.py --duration 120
"""
import random

import numpy as np

from tmseeg.closedloop import Protocol


class TEPTarget(Protocol):
    target_uv, tolerance_uv = 60.0, 8.0
    start_pct, step_pct, min_pct, max_pct = 50.0, 3.0, 30.0, 85.0
    n_average = 4
    isi_s = (2.0, 2.5)
    guard = {"max_intensity_pct": 85.0}

    def setup(self, info):
        self.intensity, self.recent, self.next_s = self.start_pct, [], -1e9
        self.history = []  # (intensity_pct, running mean µV) after each pulse

    def on_block(self, state):
        if state.newest_time_s < self.next_s:
            return None
        self.next_s = state.newest_time_s + random.uniform(*self.isi_s)
        return state.trigger(self.intensity, label="TMS tep-target", after_ms=20.0)

    def on_pulse(self, pulse):
        early = pulse.row.get("early_tep_ptp_uv", np.nan)
        if pulse.trigger is None or not pulse.row.get("kept") or not np.isfinite(early):
            return None
        self.recent = (self.recent + [early])[-self.n_average:]
        mean = float(np.mean(self.recent))
        if len(self.recent) >= 2:
            if mean < self.target_uv - self.tolerance_uv:
                self.intensity = min(self.intensity + self.step_pct, self.max_pct)
            elif mean > self.target_uv + self.tolerance_uv:
                self.intensity = max(self.intensity - self.step_pct, self.min_pct)
        self.history.append((self.intensity, mean))
        return None
