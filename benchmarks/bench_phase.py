"""Phase estimation: compute time per estimate and phase error against the simulator's truth.

At 64 ch / 5 kHz input, each estimate includes everything a live loop does: the C3 Laplacian
over the newest 500 ms of all channels, downsampling, band-pass, the AR fit and prediction
(Cython kernel vs the numpy reference loop) or the ETP peak search. Prints median/p95/p99 in ms,
the AR prediction loop alone, and the circular mean / SD of the phase error (top 50 % by the
estimator's amplitude, and all) at 0 and 10 ms delay.

Usage: python benchmarks/bench_phase.py [n_estimates] [seed]
"""
from __future__ import annotations

import sys
import time

import numpy as np

from tmseeg._ext.arpredict import ar_predict
from tmseeg.dsp.phase import ARPhaseEstimator, ETPPhaseEstimator, ar_predict_numpy
from tmseeg.dsp.spatial import SpatialFilter
from tmseeg.sim.model import SimConfig, TMSEEGSimulator

FS = 5000.0


def pct(times_ms) -> str:
    t = np.asarray(times_ms)
    return (f"median {np.median(t):7.3f}  p95 {np.percentile(t, 95):7.3f}  "
            f"p99 {np.percentile(t, 99):7.3f} ms")


def circ(err) -> tuple[float, float]:
    z = np.mean(np.exp(1j * np.asarray(err)))
    return float(np.degrees(np.angle(z))), float(np.degrees(np.sqrt(-2 * np.log(abs(z)))))


def main(n_est: int = 500, seed: int = 3) -> int:
    sim = TMSEEGSimulator(SimConfig(n_channels=64, sfreq=FS, seed=seed, schedule="external",
                                    include_emg=False))
    data, _ = sim.generate(int(60 * FS))
    truth = sim.truth.mu_phase(0, data.shape[1])
    sf = SpatialFilter.from_spec("C3 Laplacian", sim.meta.ch_names)
    print(f"64 ch @ {FS:g} Hz, 60 s simulated, {n_est} estimates, spatial filter {sf}")
    x_all = sf.apply(data)
    etp = ETPPhaseEstimator(FS).fit(x_all[:int(20 * FS)])
    ests = {"AR (Cython)": ARPhaseEstimator(FS),
            "AR (numpy loop)": ARPhaseEstimator(FS, use_cython=False),
            "AR Yule-Walker": ARPhaseEstimator(FS, method="yule-walker"),
            "ETP": etp}
    n_win = ests["AR (Cython)"].n_samples_needed
    points = np.random.default_rng(seed).integers(int(21 * FS), int(59 * FS), n_est)
    for name, est in ests.items():
        for delay in (0.0, 10.0):
            times, ph, amp, tgt = [], [], [], []
            for t in points:
                win = data[:, t + 1 - n_win:t + 1]  # the ring buffer's newest 500 ms
                t0 = time.perf_counter()
                e = est.estimate(sf.apply(win), delay, newest_sample=int(t))
                times.append((time.perf_counter() - t0) * 1000)
                ph.append(e.phase_rad), amp.append(e.amplitude_uv), tgt.append(e.target_sample)
            err = np.angle(np.exp(1j * (np.array(ph) - truth[np.array(tgt)])))
            gate = np.array(amp) >= np.median(amp)
            m, sd = circ(err[gate])
            ma, sda = circ(err)
            print(f"{name:16s} delay {delay:4.1f} ms | {pct(times)} | phase error top-50% "
                  f"mean {m:6.1f} SD {sd:5.1f} deg, all mean {ma:6.1f} SD {sda:5.1f} deg")
    # the prediction loop alone (order 30, 186-sample history, 97 steps as with the defaults)
    rng = np.random.default_rng(0)
    a = rng.standard_normal(30) / 40
    h = rng.standard_normal(186)
    out = np.empty(97)
    for name, fn in (("ar_predict Cython", lambda: ar_predict(a, h, 97, out)),
                     ("ar_predict numpy", lambda: ar_predict_numpy(a, h, 97))):
        ts = []
        for _ in range(2000):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1000)
        print(f"{name:18s} {pct(ts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*(int(v) for v in sys.argv[1:3])))
