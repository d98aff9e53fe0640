"""Per-epoch cost of the live connectivity accumulators vs recomputing with MNE-Connectivity.

64 channels (2016 pairs), 5 kHz epochs; each epoch's pre (-500..-10 ms) and post (15..500 ms)
windows are decimated to 250 Hz (subsampling: the session's epochs are already low-passed at
80 Hz) and added to one accumulator per window (wPLI, debiased wPLI², PLV, coherence; 4 bands;
multitaper, 4 Hz bandwidth). Compared with calling
``mne_connectivity.spectral_connectivity_epochs`` on all N epochs of one window, which is what a
live display would otherwise do after every pulse.

Run: ``python benchmarks/bench_connectivity.py`` (prints median / p95 / p99).
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from tmseeg.metrics.connectivity import DEFAULT_BANDS_HZ, ConnectivityAccumulator, decimate_window


def _stats(ms: list[float]) -> str:
    a = np.asarray(ms)
    return (f"median {np.median(a):8.3f} ms  p95 {np.percentile(a, 95):8.3f} ms  "
            f"p99 {np.percentile(a, 99):8.3f} ms  (n={a.size})")


def main() -> None:
    rng = np.random.default_rng(0)
    fs, n_ch, step = 5000.0, 64, 20
    times_ms = np.arange(-2500, 2501) / fs * 1e3
    pre = np.flatnonzero((times_ms >= -500) & (times_ms <= -10))
    post = np.flatnonzero((times_ms >= 15) & (times_ms <= 500))
    names = [f"c{i}" for i in range(n_ch)]
    accs = {}
    for w, idx in (("pre", pre), ("post", post)):
        n_t = decimate_window(np.zeros((1, idx.size)), step, True).shape[1]
        accs[w] = ConnectivityAccumulator(names, fs / step, n_t, bandwidth_hz=4.0)
    n_epochs = 200
    epochs = [rng.standard_normal((n_ch, times_ms.size)) for _ in range(20)]
    upd, fin = [], []
    for k in range(n_epochs):
        x = epochs[k % len(epochs)]
        t0 = time.perf_counter()
        for w, idx in (("pre", pre), ("post", post)):
            accs[w].add(decimate_window(x[:, idx], step, True))
        upd.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        for w in accs:
            for m in ("wpli", "wpli2_debiased", "plv", "coh"):
                for b in DEFAULT_BANDS_HZ:
                    accs[w].band(m, b)
        fin.append((time.perf_counter() - t0) * 1e3)
    print("tmseeg ConnectivityAccumulator, 64 ch / 5 kHz epoch, pre + post windows")
    print(f"  per-epoch update (decimate + spectra + sums): {_stats(upd)}")
    print(f"  finalise 4 methods x 4 bands x 2 windows:     {_stats(fin)}")
    try:
        from mne_connectivity import spectral_connectivity_epochs
    except ImportError:
        print("mne-connectivity not installed (pip install tmseeg[test]); no comparison")
        return
    fmin = [v[0] for v in DEFAULT_BANDS_HZ.values()]
    fmax = [v[1] for v in DEFAULT_BANDS_HZ.values()]
    for n in (50, 100):
        data = np.stack([decimate_window(epochs[k % len(epochs)][:, pre], step, True)
                         for k in range(n)])
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spectral_connectivity_epochs(data, method=["wpli", "wpli2_debiased", "plv",
                                                           "coh"],
                                             mode="multitaper", sfreq=fs / step, fmin=fmin,
                                             fmax=fmax, faverage=True, mt_bandwidth=4.0,
                                             verbose=False)
            ts.append((time.perf_counter() - t0) * 1e3)
        print(f"mne-connectivity recompute, N={n} epochs, one window: {_stats(ts)}")


if __name__ == "__main__":
    main()
