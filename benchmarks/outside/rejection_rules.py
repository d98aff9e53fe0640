"""Epoch-rejection rules compared on the outside benchmark, on the same epochs.

    python benchmarks/outside/run.py --data DIR --variants no_reject --seed S
    python benchmarks/outside/rejection_rules.py --data DIR --seed S

Reads the epochs ``tmseeg analyze`` kept with rejection off (``DIR/runs/no_reject``), applies
each rule to them, averages the ROI over the epochs each rule keeps and scores the early TEP
against the truth with the benchmark's own scorer. One run of the pipeline serves every rule,
so the rules differ only in which epochs they keep (the decay stage's running average saw every
epoch, so the "fixed 150 uV" row approximates the default run, it does not equal it).

The rules, per epoch, on each good EEG channel's peak-to-peak outside the pulse window (ptp):
``fixed150`` (the default: ptp <= 150 uV on every channel), ``none``, ``z5`` / ``z8`` (robust
z of ptp per channel, across epochs, <= 5 / 8), ``rel2`` (ptp <= 2 x the channel's median),
``logz3`` (robust z of log ptp <= 3), ``early100_logz3`` (ptp of 10-100 ms <= 100 uV and
``logz3``); ``fastW_L`` (the ptp of each channel minus its W-ms moving average <= L uV: blind
to blinks and drifts) and ``fastW_L_or150`` (kept by it or by ``fixed150``; per channel, that
is ``[epochs] reject_mode = "ptp_unless_slow"``), W 40..100 ms, L 90..150 uV.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.outside import score as scoring  # noqa: E402
from benchmarks.outside import tmsgen  # noqa: E402


def _robust_z(x: np.ndarray) -> np.ndarray:
    """(epochs, channels): distance from each channel's median in MAD units."""
    med = np.median(x, axis=0)
    mad = 1.4826 * np.median(np.abs(x - med), axis=0) + 1e-9
    return (x - med) / mad


def fast_ptp(x_uv: np.ndarray, mask: np.ndarray, sfreq: float, width_ms: float) -> np.ndarray:
    """(epochs, channels): peak-to-peak, over ``mask``, of each channel minus its moving
    average over ``width_ms`` (a high-pass near 0.44 / width: blinks and drifts out, muscle,
    residue of ringing and the fast decay in)."""
    from scipy.ndimage import uniform_filter1d
    w = max(1, int(round(width_ms * sfreq / 1000.0)))
    fast = x_uv - uniform_filter1d(x_uv, w, axis=-1, mode="nearest")
    return np.ptp(fast[..., mask], axis=-1)


def rules(ptp: np.ndarray, early_ptp: np.ndarray,
          fast: dict[float, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Which epochs each rule keeps (bool per epoch)."""
    logz = _robust_z(np.log(ptp)).max(axis=1)
    more = {}
    for width_ms, f in (fast or {}).items():
        for lim in (90.0, 100.0, 110.0, 125.0, 150.0):
            more[f"fast{width_ms:g}_{lim:g}"] = f.max(axis=1) <= lim
            more[f"fast{width_ms:g}_{lim:g}_or150"] = (f.max(axis=1) <= lim) \
                | (ptp.max(axis=1) <= 150.0)
    return more | {
        "fixed150": ptp.max(axis=1) <= 150.0,
        "none": np.ones(len(ptp), dtype=bool),
        "z5": _robust_z(ptp).max(axis=1) <= 5.0,
        "z8": _robust_z(ptp).max(axis=1) <= 8.0,
        "rel2": (ptp / np.median(ptp, axis=0)).max(axis=1) <= 2.0,
        "logz3": logz <= 3.0,
        "early100_logz3": (early_ptp.max(axis=1) <= 100.0) & (logz <= 3.0),
    }


def main(argv: list[str] | None = None) -> None:
    import mne

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the outside recordings' folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=None,
                    help="the no_reject run's folder (default DATA/runs/no_reject)")
    a = ap.parse_args(argv)
    runs = a.runs or a.data / "runs" / "no_reject"
    sums: dict[str, float] = {}
    for family in tmsgen.FAMILIES:
        name = f"{family}_s{a.seed}"
        meta = json.loads((a.data / f"{name}.json").read_text())
        truth = scoring.load_truth(a.data / f"{name}.truth.npz")
        epo = next((runs / name).glob("*-epo.fif"))
        epochs = mne.read_epochs(epo, verbose="error")
        eeg = [n for n in epochs.copy().pick("eeg").ch_names if n not in epochs.info["bads"]]
        x_uv = epochs.get_data(picks=eeg) * 1e6
        t = epochs.times
        outside = (t < -0.002) | (t > 0.010)
        early = (t > 0.010) & (t < 0.100)
        ptp = np.ptp(x_uv[:, :, outside], axis=2)
        early_ptp = np.ptp(x_uv[:, :, early], axis=2)
        roi = [eeg.index(c) for c in meta["roi"] if c in eeg]
        cells = []
        fast = {w: fast_ptp(x_uv, outside, epochs.info["sfreq"], w) for w in (40.0, 50.0, 60.0, 100.0)}
        for rule, keep in rules(ptp, early_ptp, fast).items():
            if keep.sum() < 5:
                cells.append(f"{rule} <5 kept")
                continue
            s = scoring.score_tep(t, x_uv[keep][:, roi].mean(axis=(0, 1)), truth, meta["roi"])
            sums[rule] = sums.get(rule, 0.0) + s["rms_rel_early"]
            cells.append(f"{rule} {int(keep.sum())}/{len(keep)} r {s['r_early']:.2f} "
                         f"RMS {s['rms_rel_early']:.2f}")
        print(f"{family}: " + "; ".join(cells), flush=True)
    print("early-TEP RMS error summed over the families: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sums.items()))


if __name__ == "__main__":
    main()
