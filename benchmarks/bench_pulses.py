"""The data pulse detector's per-sample statistics: Cython kernel vs numpy (median / p95 / p99).

Per block, how many channels jump beyond their threshold at each sample and how large the jump
is across the channels that can vote (``tmseeg._ext.jumps.jump_stats``, what
:class:`tmseeg.pipeline.pulses.DataPulses` runs on every block), against the same statistics
in numpy (diff, scale, abs, compare, count, square, NaN-replace, sum, sqrt: its formulation
before the kernel). Cases: a live 1-ms block at 64 ch / 5 kHz and at 128 ch / 20 kHz, and an
offline 100-ms block at 64 ch / 5 kHz.

    python benchmarks/bench_pulses.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_decimate import stats  # noqa: E402  (one timing loop for the kernel benchmarks)

from tmseeg._ext.jumps import jump_stats  # noqa: E402


def numpy_stats(x: np.ndarray, rows: np.ndarray, prev: np.ndarray, scale: float,
                threshold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numpy formulation (as DataPulses computed it before the kernel)."""
    xr = x[rows]
    d = np.diff(np.concatenate([prev[:, None], xr], axis=1), axis=1) * scale
    with np.errstate(invalid="ignore"):
        count = (np.abs(d) > threshold[:, None]).sum(axis=0)
        voting = np.isfinite(threshold)
        norm = np.sqrt(np.nansum(d[voting] ** 2, axis=0))
    return count, norm


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'case':34s} {'cython median/p95/p99 (us)':>30s} {'numpy median/p95/p99 (us)':>30s}"
          f" {'speed-up':>9s}")
    for label, n_ch, sfreq, n, reps in [("64 ch, 1-ms block @ 5 kHz", 64, 5000.0, 5, 20000),
                                        ("128 ch, 1-ms block @ 20 kHz", 128, 20000.0, 20, 20000),
                                        ("64 ch, 100-ms block @ 5 kHz", 64, 5000.0, 500, 2000)]:
        x = rng.normal(0, 10, (n_ch + 4, n))  # a few non-EEG rows the detector skips
        rows = np.arange(n_ch, dtype=np.intp)
        prev = rng.normal(0, 10, n_ch)
        thr = rng.uniform(100, 300, n_ch)
        scale = sfreq / 1000.0
        count, norm = np.empty(n, np.int32), np.empty(n)
        c = stats(lambda: jump_stats(x, rows, prev, scale, thr, count, norm), reps)
        p = stats(lambda: numpy_stats(x, rows, prev, scale, thr), reps)
        want_count, want_norm = numpy_stats(x, rows, prev, scale, thr)
        assert np.array_equal(count, want_count) and np.allclose(norm, want_norm, rtol=1e-12)
        print(f"{label:34s} {c[0]:9.1f} {c[1]:9.1f} {c[2]:9.1f} {p[0]:10.1f} {p[1]:9.1f} "
              f"{p[2]:9.1f} {p[0] / c[0]:8.1f}x")


if __name__ == "__main__":
    main()
