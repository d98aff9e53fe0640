"""The motor threshold a recorded MEP defines, by Monte Carlo of the simulator's documented
model: the truth of the MEP tests (tests/metrics/test_mep.py) and of the closed-loop threshold
hunt (tests/closedloop/test_closedloop_mt.py)."""
from __future__ import annotations

import numpy as np
from scipy import optimize, special

#: the simulator's EMG sampling rate in those tests
SF = 5000.0


def recorded_p50_pct(criterion=50.0, noise_uv=3.0, thr=55.0, slope=4.0, mep_max=2000.0,
                     v=0.35, n_draws=20000):
    """Intensity where P(*recorded* ptp >= criterion) = 0.5, by Monte Carlo of the documented
    model: the simulator's MEP waveform (one sine cycle under a sin^2 window, 12 ms) scaled by the
    log-normal amplitude, plus the EMG's white noise (``emg_noise_uv`` = 3 µV RMS) over the wave
    and 10 ms either side; ptp = max - min. Noise raises the ptp of a ~50 µV MEP by ~7 µV (the
    extrema pick up positive noise), so a recorded 50 µV criterion is met ~0.6 % MSO earlier
    than the noise-free model says. Real recordings have the same bias; MT is defined on
    recorded amplitudes."""
    L = int(round(0.012 * SF))
    x = np.arange(L) / L
    w = np.sin(2 * np.pi * x) * np.sin(np.pi * x) ** 2
    pad = np.zeros(int(round(0.01 * SF)))
    wave = np.r_[pad, w / (w.max() - w.min()), pad]
    rng = np.random.default_rng(0)
    z = rng.standard_normal(n_draws)
    noise = noise_uv * rng.standard_normal((n_draws, wave.size))

    def excess(inten):
        amp = mep_max * special.expit((inten - thr) / slope) * np.exp(v * z)
        y = amp[:, None] * wave[None, :] + noise
        return np.mean(y.max(1) - y.min(1) >= criterion) - 0.5

    return optimize.brentq(excess, thr - 30, thr + 10, xtol=0.01)
