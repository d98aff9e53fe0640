"""Decimation with resample_poly's zero-phase FIR: one matrix product vs scipy (median / p95 /
p99).

``tmseeg.dsp.resample.decimate_fir`` against ``scipy.signal.resample_poly(x, 1, q, axis=1,
padtype="line")``, which it reproduces to rounding (the largest difference is printed too).
Cases: the oscillations plug-in's long epoch at 64 ch / 5 kHz (~3 s, decimated by 20 to
250 Hz), the same at 128 ch / 20 kHz (by 80), and a connectivity window (64 ch, 500 ms, by 20).

    python benchmarks/bench_resample.py
"""
import os
import sys

import numpy as np
from scipy.signal import resample_poly

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decimate import stats  # noqa: E402  (one timing loop for the kernel benchmarks)

from tmseeg.dsp.resample import decimate_fir  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'case':40s} {'matrix median/p95/p99 (ms)':>28s} {'scipy median/p95/p99 (ms)':>28s}"
          f" {'speed-up':>9s} {'max rel diff':>13s}")
    for label, n_ch, n, q, reps in [("long epoch 64 ch, 3 s @ 5 kHz, q=20", 64, 15001, 20, 40),
                                    ("long epoch 128 ch, 3 s @ 20 kHz, q=80", 128, 60001, 80, 10),
                                    ("window 64 ch, 500 ms @ 5 kHz, q=20", 64, 2501, 20, 200)]:
        x = rng.standard_normal((n_ch, n)).cumsum(axis=1)
        ours = decimate_fir(x, q)
        ref = resample_poly(x, 1, q, axis=1, padtype="line")
        diff = float(np.abs(ours - ref).max() / np.abs(ref).max())
        m = stats(lambda: decimate_fir(x, q), reps) / 1e3
        s = stats(lambda: resample_poly(x, 1, q, axis=1, padtype="line"), reps) / 1e3
        print(f"{label:40s} {m[0]:8.2f} {m[1]:8.2f} {m[2]:8.2f}   {s[0]:8.2f} {s[1]:8.2f} "
              f"{s[2]:8.2f} {s[0] / m[0]:8.1f}x {diff:13.1e}")


if __name__ == "__main__":
    main()
