"""Per-epoch cost of the oscillations plug-in (and per-pulse cost of the state plug-in).

64 EEG channels at 5 kHz, default ``[oscillations]`` (42 Morlet frequencies, 4-45 Hz,
decimated to 250 Hz, 276 output times). Prints median / p95 / p99 in ms of:

* ``prepare``: resample_poly decimation of the raw long epoch (3.3 s x 64 ch) + zero-phase
  band-pass/notch at 250 Hz + amplitude check;
* ``transform FFT``: the Morlet coefficients by FFT convolution (the path used);
* ``transform direct``: the plain numpy reference (np.convolve per channel and frequency);
* ``accumulate``: power and unit-phasor sums;
* ``summary``: ROI ERSP/ITC + per-channel natural frequency (finalisation, O(size));
* ``state estimate``: C3-Laplacian window -> AR phase at the pulse.

Run: ``python benchmarks/bench_oscillations.py [n_repeats]``.
"""
import sys
import time

import numpy as np

from tmseeg.metrics import oscillations as osc
from tmseeg.metrics import state as st
from tmseeg.config import load_config
from tmseeg.session import TEPSession
from tmseeg.stream.block import StreamMeta
from tmseeg.sim.config import CAPS


def stats(name, ts):
    a = np.array(ts) * 1e3
    print(f"{name:<18} median {np.median(a):8.2f} ms   p95 {np.percentile(a, 95):8.2f}   "
          f"p99 {np.percentile(a, 99):8.2f}")


def main(n=30):
    cfg = load_config(None)  # every plug-in's section is part of the defaults
    meta = StreamMeta(CAPS[64], 5000.0)
    session = TEPSession(cfg, meta, roi=["C3", "FC1", "FC5", "CP1", "CP5"])
    m = osc.OscillationMetric(cfg, session.context)
    n_raw = (m._pre_d + m._post_d) * m.q + 1
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((64, n_raw)).cumsum(axis=1) * 0.05 + rng.standard_normal((64, n_raw))
    m.reject_uv = None
    m.epocher._setup(meta)  # channel names, as the first block would
    t_prep, t_fft, t_dir, t_acc, t_sum = [], [], [], [], []
    x = None
    for _ in range(n):
        t0 = time.perf_counter()
        x = m.prepare(raw, (), meta.ch_names)
        t1 = time.perf_counter()
        c = m.transform.transform(x)
        t2 = time.perf_counter()
        m._accumulate(x) if m.tfr is None else m.tfr.add(c)
        t3 = time.perf_counter()
        m._cache = None
        m.summary()
        t4 = time.perf_counter()
        t_prep.append(t1 - t0), t_fft.append(t2 - t1), t_acc.append(t3 - t2), t_sum.append(t4 - t3)
    for _ in range(max(3, n // 10)):
        t0 = time.perf_counter()
        osc.morlet_tfr_numpy(x, m.transform.wavelets, m.transform.half,
                             m.transform.half + m.transform.n_out)
        t_dir.append(time.perf_counter() - t0)
    print(f"64 ch / 5 kHz, {m.freqs_hz.size} freqs, {m.times_ms.size} times at {m.fs:g} Hz, "
          f"raw epoch {n_raw} samples")
    stats("prepare", t_prep)
    stats("transform FFT", t_fft)
    stats("transform direct", t_dir)
    stats("accumulate", t_acc)
    stats("summary", t_sum)
    total = np.array(t_prep) + np.array(t_fft) + np.array(t_acc)
    stats("per epoch total", total)
    sm = st.make_metric(cfg, session.context)
    w = rng.standard_normal(sm.n_win + 10)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        sm.estimator.estimate(w[-sm.n_win:], delay_ms=5.0)
        ts.append(time.perf_counter() - t0)
    stats("state estimate", ts)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
