"""Score a candidate ROI TEP against the generator's truth.

    python benchmarks/outside/score.py --out DIR     # MNE baseline on DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

BASELINE = (-0.200, -0.005)
EARLY = (0.015, 0.060)
LATE = (0.060, 0.250)
# name, window (s), polarity, search half-width around the truth latency (s)
PEAKS = [("N15", (0.010, 0.022), -1, 0.005),
         ("P30", (0.022, 0.040), +1, 0.005),
         ("N45", (0.038, 0.055), -1, 0.005),
         ("P60", (0.050, 0.075), +1, 0.008),
         ("N100", (0.080, 0.140), -1, 0.015),
         ("P180", (0.150, 0.250), +1, 0.015)]


def load_truth(truth_path) -> dict:
    z = np.load(truth_path, allow_pickle=False)
    t = {k: z[k] for k in z.files}
    for k in ("ch_names", "ch_types", "roi", "bad_channels"):
        t[k] = [str(x) for x in np.atleast_1d(t[k])]
    t["coil_channel"] = str(t["coil_channel"])
    t["sfreq"] = float(t["sfreq"])
    t["line_freq"] = int(t["line_freq"])
    return t


def _baseline(times, y):
    m = (times >= BASELINE[0]) & (times <= BASELINE[1])
    return y - y[m].mean()


def truth_roi(truth: dict, roi=None, exclude_bad: bool = True):
    roi = list(roi if roi is not None else truth["roi"])
    names, types = truth["ch_names"], truth["ch_types"]
    bad = set(truth["bad_channels"]) if exclude_bad else set()
    eeg = [i for i, (n, t) in enumerate(zip(names, types))
           if t == "eeg" and n not in bad]
    X = truth["clean_evoked_uv"].astype(np.float64)[eeg]
    X = X - X.mean(axis=0, keepdims=True)
    enames = [names[i] for i in eeg]
    sel = [enames.index(r) for r in roi if r in enames]
    y = X[sel].mean(axis=0)
    times = truth["times_s"].astype(np.float64)
    return times, _baseline(times, y)


def _pearson(a, b):
    a = a - a.mean(); b = b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


def score_tep(times_s, roi_uv, truth: dict, roi=None) -> dict:
    tt, ty = truth_roi(truth, roi)
    times_s = np.asarray(times_s, float)
    roi_uv = np.asarray(roi_uv, float)
    # candidate onto the truth axis (only where the candidate is defined)
    inside = (tt >= times_s[0]) & (tt <= times_s[-1])
    tt, ty = tt[inside], ty[inside]
    cy = np.interp(tt, times_s, roi_uv)
    ty = _baseline(tt, ty)
    cy = _baseline(tt, cy)
    out = {}
    for nm, (a, b) in (("early", EARLY), ("late", LATE)):
        m = (tt >= a) & (tt <= b)
        out[f"r_{nm}"] = _pearson(cy[m], ty[m])
        err = np.sqrt(np.mean((cy[m] - ty[m]) ** 2))
        out[f"rms_{nm}_uv"] = float(err)
        out[f"rms_rel_{nm}"] = float(err / np.sqrt(np.mean(ty[m] ** 2)))
    for name, (a, b), pol, hw in PEAKS:
        m = np.where((tt >= a) & (tt <= b))[0]
        k = m[np.argmax(pol * ty[m])]
        t_amp, t_lat = ty[k], tt[k]
        mc = np.where((tt >= t_lat - hw) & (tt <= t_lat + hw))[0]
        kc = mc[np.argmax(pol * cy[mc])]
        out[f"{name}_truth_uv"] = float(t_amp)
        out[f"{name}_truth_lat_ms"] = float(t_lat * 1000)
        out[f"{name}_amp_err_pct"] = float(100.0 * (cy[kc] - t_amp) / abs(t_amp))
        out[f"{name}_lat_err_ms"] = float((tt[kc] - t_lat) * 1000)
    return out


def score_pulses(found_samples, rec_or_truth, tol_ms: float = 1.0) -> dict:
    if isinstance(rec_or_truth, dict):
        true = np.asarray(rec_or_truth["pulse_samples"])
        fs = float(rec_or_truth["sfreq"])
    else:
        true = np.asarray(rec_or_truth.pulse_samples)
        fs = float(rec_or_truth.sfreq)
    found = np.sort(np.asarray(found_samples, float))
    tol = tol_ms / 1000 * fs
    used = np.zeros(len(found), bool)
    tp = 0
    errs = []
    for s in true:
        if len(found) == 0:
            break
        d = np.abs(found - s)
        d[used] = np.inf
        j = int(np.argmin(d))
        if d[j] <= tol:
            used[j] = True
            tp += 1
            errs.append((found[j] - s) / fs * 1000)
    return dict(n_true=int(len(true)), n_found=int(len(found)),
                true_positives=tp, false_positives=int((~used).sum()),
                missed=int(len(true) - tp),
                mean_abs_err_ms=(float(np.mean(np.abs(errs))) if errs else None))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.outside.mne_baseline import run_baseline
    rows = []
    for mp in sorted(Path(a.out).glob("*.json")):
        meta = json.loads(mp.read_text())
        if "truth_file" not in meta:
            continue
        truth = load_truth(mp.parent / meta["truth_file"])
        t, y, n = run_baseline(str(mp.parent / meta["data_file"]), meta,
                               meta["roi"])
        s = score_tep(t, y, truth, meta["roi"])
        rows.append((meta["family"], n, s))
    cols = ["r_early", "rms_early_uv", "rms_rel_early", "r_late",
            "N15_amp_err_pct", "P30_amp_err_pct", "N45_amp_err_pct",
            "P60_amp_err_pct", "N100_amp_err_pct", "P180_amp_err_pct"]
    short = ["r_e", "rmsE", "relE", "r_l", "N15%", "P30%", "N45%", "P60%",
             "N100%", "P180%"]
    print(f"{'family':22s} {'n':>4s} " + " ".join(f"{c:>8s}" for c in short))
    for fam, n, s in rows:
        print(f"{fam:22s} {n:4d} " + " ".join(f"{s[c]:8.2f}" for c in cols))
    return rows


if __name__ == "__main__":
    main()
