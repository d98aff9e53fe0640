"""Benchmark: pulse-window interpolation kernel vs numpy, decay fit per pulse, live stage cost.

Run:  python benchmarks/bench_interp.py [--repeats 200]

Prints median / p95 / p99 wall time (time.perf_counter) of

* interpolating one pulse window (-2..+10 ms, cubic, 1 ms fit each side) for all channels,
  64 ch / 5 kHz and 128 ch / 20 kHz: the Cython kernel ``interp_span`` against two numpy
  versions — the polyfit reference used in the tests, and the fastest numpy formulation we know
  (precomputed least-squares weights, one matrix product);
* the DecayRemoval fit of one pulse (double exponential, 10..800 ms window, all channels), and
  its Levenberg-Marquardt part alone: the Cython kernel ``lm_refine`` against the numpy
  reference of ``tests/pipeline/test_artifact.py`` (same algorithm, vectorised across channels);
* subtracting the fitted model from a 100-ms block: the kernel ``add_exp_model`` against numpy's
  exponentials;
* one ``PulseInterpolation.process`` call on a 1 ms block (the live per-block cost), and one
  ``PulseInterpolation`` + ``DecayRemoval`` (defaults) chain call per 1 ms block with a pulse
  every second (the max is the block on which a decay fit runs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tmseeg._ext.expfit import lm_refine
from tmseeg._ext.interp import interp_span
from tmseeg.pipeline.interpolation import PulseInterpolation
from tmseeg.pipeline.decay import DecayFitter, DecayRemoval
from tmseeg.pipeline.base import Chain
from tmseeg.stream.block import EVENT_PULSE, Block, Event, StreamMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "pipeline"))
from test_artifact import ref_lm_refine  # noqa: E402  (the numpy reference of the kernel)


def stats_us(fn, repeats: int, setup=None) -> tuple[float, float, float]:
    times = []
    for _ in range(repeats):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    t = np.array(times) * 1e6
    return float(np.median(t)), float(np.percentile(t, 95)), float(np.percentile(t, 99))


def numpy_polyfit(data, rows, start, stop, n_left, n_right, order):
    """The tests' numpy reference (np.polynomial polyfit/polyval on the side samples)."""
    idx = np.r_[start - n_left:start, stop:stop + n_right]
    coef = np.polynomial.polynomial.polyfit((idx - start).astype(float), data[np.ix_(rows, idx)].T,
                                            order)
    data[np.ix_(rows, np.arange(start, stop))] = np.polynomial.polynomial.polyval(
        np.arange(stop - start, dtype=float), coef)


def numpy_weights(data, start, stop, n_left, n_right, order):
    """Fastest numpy: least-squares weights from a pseudo-inverse, then one matrix product."""
    idx = np.r_[start - n_left:start, stop:stop + n_right]
    v = np.vander((idx - start).astype(float), order + 1, increasing=True)
    g = np.vander(np.arange(stop - start, dtype=float), order + 1, increasing=True)
    w = g @ np.linalg.pinv(v)  # (n_gap, n_fit)
    data[:, start:stop] = data[:, idx] @ w.T


def line(name: str, s: tuple[float, float, float], unit: str = "us") -> None:
    print(f"  {name:<44s} median {s[0]:9.1f} {unit}   p95 {s[1]:9.1f}   p99 {s[2]:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    n_rep = max(200, args.repeats)
    rng = np.random.default_rng(0)

    for n_ch, fs in [(64, 5000.0), (128, 20000.0)]:
        print(f"\n{n_ch} ch / {fs / 1000:g} kHz")
        w0, w1 = int(round(-2 * fs / 1000)), int(round(10 * fs / 1000))
        n_fit = max(2, int(round(1.0 * fs / 1000)))
        n = int(0.1 * fs)
        base = rng.standard_normal((n_ch, n)) * 20
        p = n // 2
        start, stop = p + w0, p + w1 + 1
        rows = np.arange(n_ch, dtype=np.intp)
        work = base.copy()

        def reset():
            work[:, start - n_fit:stop + n_fit] = base[:, start - n_fit:stop + n_fit]

        print(f"  one window: {stop - start} samples replaced, {n_fit} fit samples each side")
        line("Cython interp_span (cubic)",
             stats_us(lambda: interp_span(work, rows, start, stop, n_fit, n_fit, 3), n_rep, reset))
        line("numpy polyfit reference (tests)",
             stats_us(lambda: numpy_polyfit(work, rows, start, stop, n_fit, n_fit, 3), n_rep,
                      reset))
        line("numpy precomputed weights + matmul",
             stats_us(lambda: numpy_weights(work, start, stop, n_fit, n_fit, 3), n_rep, reset))

        # decay fit of one pulse, double exponential, 10..800 ms
        n0 = int(round(10 * fs / 1000)) + 1
        n_t = int(round(800 * fs / 1000)) + 1 - n0
        t = np.arange(n_t) / fs * 1000
        taus_f = rng.uniform(5, 40, n_ch)[:, None]
        taus_s = rng.uniform(60, 150, n_ch)[:, None]
        y = 300 * np.exp(-t / taus_f) + 100 * np.exp(-t / taus_s) \
            + 10 * rng.standard_normal((n_ch, n_t))
        t0 = time.perf_counter()
        fitter = DecayFitter(n_t, fs, 2)
        setup_ms = (time.perf_counter() - t0) * 1e3
        print(f"  decay fit: {n_t} samples -> {fitter.n_boxes} box means of {fitter.m}; "
              f"fitter set-up (once per window length) {setup_ms:.1f} ms")
        line("DecayFitter.fit, double exp, all channels",
             tuple(x / 1000 for x in stats_us(lambda: fitter.fit(y), n_rep)), unit="ms")
        yb = np.ascontiguousarray(fitter._boxes(y))
        start = np.log(np.column_stack([taus_f[:, 0] * 1.3, taus_s[:, 0] * 0.8]))
        lo, hi, rat = fitter.log_lo, fitter.log_hi, np.log(fitter.min_ratio)
        lt = np.empty_like(start)
        coef = np.empty((n_ch, 3))
        cost = np.empty(n_ch)

        def kernel():
            lt[:] = start
            lm_refine(yb, fitter.t_ms, lt, coef, lo, hi, rat, fitter.n_iter, cost)

        line("  LM part: Cython lm_refine",
             tuple(x / 1000 for x in stats_us(kernel, n_rep)), unit="ms")
        line("  LM part: numpy reference (tests)",
             tuple(x / 1000 for x in stats_us(
                 lambda: ref_lm_refine(yb, fitter.t_ms, start, lo, hi, rat, fitter.n_iter),
                 n_rep)), unit="ms")

        # subtracting a fitted model from a 100-ms block (what the stage does per block and
        # pulse while a model lasts): the C kernel against numpy's exponentials
        fit = fitter.fit(y)
        n_blk = int(0.1 * fs)
        held = rng.standard_normal((n_ch, n_blk))
        stage_rows = np.arange(n_ch)
        ok = np.flatnonzero(fit.ok)

        def numpy_model():
            t_ms = np.arange(1000, 1000 + n_blk) * (1000.0 / fs)
            values = np.zeros((ok.size, n_blk))
            for k in range(fit.amps_uv.shape[1]):
                values += fit.amps_uv[ok, k, None] * np.exp(-t_ms[None, :]
                                                            / fit.tau_ms[ok, k, None])
            held[stage_rows[ok]] -= values

        print(f"  decay model on a 100-ms block, {ok.size} channels:")
        line("  C kernel add_exp_model (DecayFit.add_to)",
             stats_us(lambda: fit.add_to(held, stage_rows, 0, n_blk, fs, 1000, -1.0), n_rep))
        line("  numpy exponentials (before)", stats_us(numpy_model, n_rep))

        # live per-block cost (1 ms blocks, a pulse every 200 ms)
        meta = StreamMeta([f"E{i}" for i in range(n_ch)], fs)
        blk_n = int(fs / 1000)
        stage = PulseInterpolation()
        data = rng.standard_normal((n_ch, blk_n)) * 20
        state = {"s": 0}

        def one_block():
            s = state["s"]
            ev = [Event(s, "TMS", EVENT_PULSE)] if s % int(0.2 * fs) == 0 else []
            stage.process(Block(data, s, np.arange(s, s + blk_n) / fs, meta, ev))
            state["s"] = s + blk_n

        for _ in range(400):
            one_block()
        line("PulseInterpolation.process, 1 ms block", stats_us(one_block, max(n_rep, 2000)))

        chain = Chain([PulseInterpolation(), DecayRemoval()])
        times = []
        for i in range(6000):  # 6 s, pulses at 1, 2, ... s
            s = i * blk_n
            ev = [Event(s, "TMS", EVENT_PULSE)] if s % int(fs) == 0 and s > 0 else []
            blk = Block(data, s, np.arange(s, s + blk_n) / fs, meta, ev)
            t0 = time.perf_counter()
            chain.process(blk)
            times.append(time.perf_counter() - t0)
        t = np.array(times[1000:]) * 1e6
        line("Interp + DecayRemoval chain, 1 ms block",
             (float(np.median(t)), float(np.percentile(t, 95)), float(np.percentile(t, 99))))
        print(f"  {'':44s} max {t.max() / 1000:.1f} ms (a block on which a decay fit runs)")


if __name__ == "__main__":
    main()
