"""Min/max decimation for the raw display: Cython kernel vs numpy (median / p95 / p99).

Cases: a whole 5-s screen at 64 ch / 5 kHz (25000 samples -> 1000 buckets; a full redraw)
and one 60-Hz frame's new samples (85 samples; the incremental path the monitor uses).

    python benchmarks/bench_decimate.py
"""
import time

import numpy as np

from tmseeg._ext.decimate import minmax_decimate
from tmseeg.gui.decimate import minmax_decimate_numpy


def stats(f, n):
    """Median, p95 and p99 of `n` calls of `f`, in microseconds."""
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        t.append((time.perf_counter() - t0) * 1e6)
    return np.percentile(t, [50, 95, 99])


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'case':38s} {'cython median/p95/p99 (us)':>30s} {'numpy median/p95/p99 (us)':>30s}"
          f" {'speed-up':>9s}")
    for label, n_ch, n, bucket, reps in [("64 ch, 5 s @ 5 kHz, 1000 buckets", 64, 25000, 25, 200),
                                         ("64 ch, one 60-Hz frame (75 samples)", 64, 75, 25, 5000),
                                         ("128 ch, 5 s @ 20 kHz, 1000 buckets", 128, 100000, 100,
                                          50)]:
        x = rng.standard_normal((n_ch, n))
        out = np.empty((n_ch, 2 * (n // bucket)))
        c = stats(lambda: minmax_decimate(x, bucket, out), reps)
        p = stats(lambda: minmax_decimate_numpy(x, bucket), reps)
        print(f"{label:38s} {c[0]:9.1f} {c[1]:9.1f} {c[2]:9.1f} {p[0]:10.1f} {p[1]:9.1f} "
              f"{p[2]:9.1f} {p[0] / c[0]:8.1f}x")


if __name__ == "__main__":
    main()
