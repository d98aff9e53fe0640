"""How much of the TEP the decay-artifact subtraction removes by itself: no noise, one pulse.

The simulator's mean TEP plus its mean decay artifact, nothing else, goes through the pulse
interpolation and the decay removal stage of the default pipeline, then the average
reference, the ROI mean and the epoch filter. What is left against the true TEP (through the
same interpolation and filter) is the bias of the method, free of noise and of trial count:

* ``stage``: the pipeline's :class:`~tmseeg.pipeline.decay.DecayRemoval` as configured
  (time constants and amplitudes fitted to the data, as on the running average);
* ``true taus``: the same subtraction with the simulator's true time constants, only the
  amplitudes fitted (the best any time-constant estimate can do): the part of the TEP that
  lies in the span of each channel's exponentials is removed with them;
* ``no decay``: the stage on the TEP alone (checks that a clean TEP is left alone).

    python benchmarks/bench_decay_bias.py [--seeds 5,6,7,8,9,10,11,12] [--channels 32]
        [--set decay.fit_window_ms=10,500 ...]

Prints the relative amplitude error of N15..P180 at the ROI per seed and variant, then the
median and worst |error| per variant. Runs in a few seconds.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tep_accuracy import _overrides  # noqa: E402  (one parser for --set)

from tmseeg.metrics.tep import find_peak  # noqa: E402
from tmseeg.pipeline.decay import DecayFitter  # noqa: E402
from tmseeg.config import load_config, planning_cut_window  # noqa: E402
from tmseeg.session import decay_stage, epoch_filter, interpolation_stage  # noqa: E402
from tmseeg.sim.accuracy import true_roi_tep  # noqa: E402
from tmseeg.sim.model import SimConfig, TMSEEGSimulator  # noqa: E402
from tmseeg.stream.block import EVENT_PULSE, Block, Event, StreamMeta  # noqa: E402

PRE_MS, POST_MS = 1000.0, 1500.0


def _through_stages(data_uv: np.ndarray, pulse: int, sfreq: float, cfg: dict) -> np.ndarray:
    names = tuple(f"E{k}" for k in range(data_uv.shape[0]))
    meta = StreamMeta(names, sfreq, ("eeg",) * len(names), name="bias")
    block = Block(data=data_uv.copy(), first_sample=0, meta=meta,
                  timestamps=np.arange(data_uv.shape[1]) / sfreq,
                  events=[Event(sample=pulse, label="TMS", kind=EVENT_PULSE)])
    interp, decay = interpolation_stage(cfg, channels=None), decay_stage(cfg, channels=None)
    out = [interp.process(block)]
    out.append(interp.flush())
    cleaned = [decay.process(b) for b in out if b is not None and b.n_samples]
    cleaned.append(decay.flush())
    return np.concatenate([b.data for b in cleaned if b is not None and b.n_samples], axis=1)


def _with_true_taus(data_uv: np.ndarray, pulse: int, sfreq: float, cfg: dict, truth) -> np.ndarray:
    """Interpolate, subtract exponentials with the true time constants, re-interpolate."""
    from tmseeg.pipeline.interpolation import interpolate_pulses

    i, d = cfg["interpolation"], cfg["decay"]
    x = interpolate_pulses(data_uv, [pulse], sfreq, planning_cut_window(cfg),
                           i["method"], i["fit_ms"])
    n0 = int(round(d["fit_window_ms"][0] * sfreq / 1000)) + 1
    n1 = int(round(d["fit_window_ms"][1] * sfreq / 1000)) + 1
    fast, slow = truth.decay_tau_fast_ms, truth.decay_tau_slow_ms
    y = x[:, pulse + n0:pulse + n1]
    for rows, taus in ((np.isfinite(slow), np.stack([fast, slow], axis=1)),  # two terms
                       (~np.isfinite(slow), fast[:, None])):  # one term
        if not rows.any():
            continue
        fitter = DecayFitter(n1 - n0, sfreq, taus.shape[1], (taus[rows].min() / 2,
                                                               taus[rows].max() * 2))
        res = fitter.fit_amplitudes(y[rows], taus[rows])
        x[rows, pulse + n0:] -= replace(res, ok=np.ones(int(rows.sum()), bool)).model_uv(
            x.shape[1] - pulse - n0, sfreq)
    return interpolate_pulses(x, [pulse], sfreq, planning_cut_window(cfg),
                           i["method"], i["fit_ms"])


def roi_tep(data_uv: np.ndarray, names: list[str], roi: list[str], sfreq: float, cfg: dict,
            pulse: int, n_times: int, first: int) -> np.ndarray:
    """Average reference, ROI mean, zero-phase epoch filter (with the pipeline's padding)."""
    x = data_uv - data_uv.mean(axis=0, keepdims=True)
    roi_mean = x[[names.index(r) for r in roi]].mean(axis=0)[None]
    filt = epoch_filter(cfg)
    pad = int(round(filt.pad_ms * sfreq / 1000))
    seg = roi_mean[:, pulse + first - pad:pulse + first + n_times + pad]
    return filt(seg, sfreq)[0, pad:pad + n_times]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="5,6,7,8,9,10,11,12")
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--sfreq", type=float, default=5000.0)
    ap.add_argument("--tep-gain", type=float, default=2.5)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = ap.parse_args()
    cfg = load_config(overrides=_overrides(args.set) or None)
    fs = args.sfreq
    ep = cfg["epochs"]
    first = int(round(ep["tmin_ms"] * fs / 1000))
    times_ms = np.arange(first, int(round(ep["tmax_ms"] * fs / 1000)) + 1) * 1000 / fs
    print(f"noise-free, one pulse: {args.channels} ch, {fs:g} Hz, tep_gain {args.tep_gain}; "
          f"decay fit window {cfg['decay']['fit_window_ms']} ms, model {cfg['decay']['model']}; "
          "relative amplitude error at the ROI")
    table: dict[str, list] = {"stage": [], "true taus": [], "no decay": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        truth = TMSEEGSimulator(SimConfig(n_channels=args.channels, sfreq=fs, seed=seed,
                                          tep_gain=args.tep_gain)).truth
        names = truth.eeg_names
        pulse = int(round(PRE_MS * fs / 1000))
        n = pulse + int(round(POST_MS * fs / 1000))
        t_ms = (np.arange(n) - pulse) * 1000 / fs
        tep = np.array([np.interp(t_ms, truth.tep_times_ms, row, left=0.0, right=0.0)
                        for row in truth.tep_template_uv]) * args.tep_gain
        decay = np.zeros_like(tep)
        decay[:, pulse:] = truth.decay_uv(n - pulse)
        # the truth helper scales by the mean per-pulse gain: one pulse at gain tep_gain
        truth.pulses = [type("P", (), {"tep_gain_effective": args.tep_gain})()]
        ref = true_roi_tep(truth, names, truth.roi, times_ms, cfg)
        variants = {"stage": _through_stages(tep + decay, pulse, fs, cfg),
                    "true taus": _with_true_taus(tep + decay, pulse, fs, cfg, truth),
                    "no decay": _through_stages(tep, pulse, fs, cfg)}
        for label, x in variants.items():
            got = roi_tep(x, names, truth.roi, fs, cfg, pulse, times_ms.size, first)
            errs = {}
            for name, win in cfg["tep"]["peak_windows_ms"].items():
                want = find_peak(ref, times_ms, win, name[0])["amplitude_uv"]
                errs[name] = 100.0 * (find_peak(got, times_ms, win, name[0])["amplitude_uv"]
                                      / want - 1.0)
            table[label].append(errs)
            print(f"seed {seed:3d} {label:9s} | " + " | ".join(f"{k} {v:+5.0f}%"
                                                              for k, v in errs.items()))
    for label, rows in table.items():
        amp = np.abs(np.array([[r[k] for k in rows[0]] for r in rows]))
        print(f"{label:9s} |error| % median: " + "  ".join(
            f"{k} {v:.0f}" for k, v in zip(rows[0], np.median(amp, 0)))
              + "   worst: " + "  ".join(f"{k} {v:.0f}" for k, v in zip(rows[0], amp.max(0))))


if __name__ == "__main__":
    main()
