"""The outside benchmark: tmseeg on recordings it was never tuned on, beside the analyst's MNE
script, against the artifact-free truth.

    python benchmarks/outside/run.py                      # full set (generated once, ~10 min)
    python benchmarks/outside/run.py --quick              # short recordings (CI-sized)
    python benchmarks/outside/run.py --variants default,no_decay,sspsir --markdown

The recordings come from ``tmsgen.py`` (written from the literature's descriptions of TMS-EEG
artifacts; it shares no code with ``tmseeg.sim``), are written to disk in their family's format
and then read back by ``tmseeg analyze`` exactly as a user's file would be. For each family the
table shows: pulses found against the true pulses, epochs kept, the cut window chosen, the bad
channels marked against the truly faulty ones, and, per method, the early TEP (15-60 ms, ROI
average) against the truth (r and RMS error relative to the truth's RMS) and each peak's
amplitude error (%) and latency error (ms). "decay took" is the RMS of what decay
removal took out of the early ROI TEP relative to the TEP without it (and on how many of the
averaged pulses it acted), from the same run.

Variants are configuration overrides of tmseeg (``VARIANTS``); ``mne`` is the naive MNE script
(``mne_baseline.py``) run side by side. The metric plug-ins (MEP, PCIst, connectivity, spread,
oscillations, pre-stimulus state) are switched off: they do not touch the TEP path and only
cost time.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.outside import score as scoring  # noqa: E402
from benchmarks.outside import tmsgen  # noqa: E402

#: tmseeg configurations compared (overrides of the defaults)
VARIANTS: dict[str, dict] = {
    "default": {},
    "no_decay": {"decay": {"enabled": False}},
    "fixed_cut": {"interpolation": {"window_ms": [-2.0, 10.0]}},
    "sspsir": {"cleaning": {"enabled": True, "methods": ["sspsir"]}},
    # SOUND (channel-specific noise, Mutanen 2018) after decay removal: what a decay's
    # per-channel misfit leaves is channel-specific
    "sound": {"cleaning": {"enabled": True, "methods": ["sound"]}},
    "sound_l01": {"cleaning": {"enabled": True, "methods": ["sound"], "sound": {"lambda0": 0.1}}},
    # ICA (TESA's component labels, Rogasch et al. 2017): every rule, and the TMS-evoked
    # muscle rule alone (the truth averages blinks in; Atti et al. 2024: ICA takes TEP where
    # an artifact varies little from trial to trial)
    "ica": {"cleaning": {"enabled": True, "methods": ["ica"]}},
    "ica_muscle": {"cleaning": {"enabled": True, "methods": ["ica"], "ica": {"rules": {
        "blink_z": 1e9, "move_z": 1e9, "muscle_slope": 1e9, "electrode_z": 1e9}}}},
    # decay removal, side by side (the default is average_gain, 20 uV, R2 0.5)
    "decay_average": {"decay": {"method": "average", "min_decay_uv": 0.0, "min_r2": 0.05}},
    "decay_curve": {"decay": {"method": "average_curve", "min_decay_uv": 0.0, "min_r2": 0.05}},
    "decay_curve20r": {"decay": {"method": "average_curve"}},
    "decay_gain": {"decay": {"method": "average_gain", "min_decay_uv": 0.0, "min_r2": 0.05}},
    "decay_gain20": {"decay": {"method": "average_gain", "min_r2": 0.05}},
    "decay_recorded": {"decay": {"fit_reference": "recorded"}},
    # the least decay a channel must show to be corrected: 10 uV instead of 20
    "decay10": {"decay": {"min_decay_uv": 10.0}},
    # the stimulator's recharge delay as a lab sets it (the variable-decay family's: 80 ms)
    "recharge80": {"interpolation": {"recharge_delay_ms": 80.0}},
    # epoch rejection (150 uV peak-to-peak on any channel by default): off, and looser
    "no_reject": {"epochs": {"reject_uv": 0.0}},
    "reject_unless_slow": {"epochs": {"reject_mode": "ptp_unless_slow"}},
    "reject300": {"epochs": {"reject_uv": 300.0}},
    # the TEP path's filter: no line-noise notch (averaging cancels line noise that is not
    # locked to the pulses; a notch reshapes 30-60 Hz components)
    "no_notch": {"filter": {"notch_hz": 0.0}},
    # the live TEP update's wait (issue #16: 0.5 s after the epoch's end): less real data
    # after the epoch for the zero-phase filter
    "pad_after500": {"filter": {"epoch_pad_after_ms": 500.0}},  # the default until #16
    "pad_after100": {"filter": {"epoch_pad_after_ms": 100.0}},
    # a shorter decay fit window: live, samples after a pulse wait for its end
    "fit750": {"decay": {"fit_window_ms": [10.0, 750.0]}},
    "fit700": {"decay": {"fit_window_ms": [10.0, 700.0]}},
    "fit600": {"decay": {"fit_window_ms": [10.0, 600.0]}},
    # each pulse's gain from its whole fit window and the average with it (the default until
    # 2026-12-07: the live update waited 100 ms more)
    "own800": {"decay": {"own_window_end_ms": 800.0}},
    # one gain per pulse, no time scale (the default until 2026-12-07)
    "gain_only": {"decay": {"method": "average_gain"}},
    # the cut window's fill: a straight line between its edge samples instead of the cubic
    # fitted on 1 ms either side (which overshoots between steep edges)
    "interp_linear": {"interpolation": {"method": "linear"}},
}
PEAKS = ["N15", "P30", "N45", "P60", "N100", "P180"]
#: the early-TEP and peak scores kept for the truth over the kept epochs and the cut floor
_TEP_SCORES = ("r_early", "rms_rel_early",
               *[f"{pk}_{what}" for pk in PEAKS for what in ("amp_err_pct", "lat_err_ms")])
#: metric plug-ins that do not touch the TEP path: off in the benchmark (it scores the TEP)
PLUGINS_OFF = {name: {"enabled": False}
               for name in ("mep", "pcist", "connectivity", "spread", "oscillations", "state")}


def ensure_recordings(data_dir: Path, quick: bool, families: list[str], seed: int) -> list[dict]:
    """Generate the recordings that are not on disk yet; return their metadata."""
    data_dir.mkdir(parents=True, exist_ok=True)
    metas = []
    missing = []
    for fam in families:
        meta_path = data_dir / f"{fam}_s{seed}.json"
        if meta_path.is_file():
            metas.append(json.loads(meta_path.read_text()) | {"_dir": str(data_dir)})
        else:
            missing.append(fam)
    if missing:
        print(f"generating {len(missing)} recording(s) into {data_dir} ...", flush=True)
        tmsgen.generate_all(data_dir, quick=quick, families=missing, seed=seed)
        return ensure_recordings(data_dir, quick, families, seed)
    return metas


def _tmseeg_run(args: tuple[dict, str, dict, Path]) -> dict:
    """One recording through ``tmseeg analyze`` with one configuration variant."""
    meta, variant, overrides, out_root = args
    overrides = _merged(PLUGINS_OFF, overrides)
    import mne

    from tmseeg.report.analyze import analyze_file

    logging.getLogger("tmseeg").setLevel(logging.ERROR)
    data_path = Path(meta["_dir"]) / meta["data_file"]
    out = out_root / variant / meta["name"]
    t0 = time.perf_counter()
    try:
        summary = analyze_file(data_path, out, roi=list(meta["roi"]), progress=False,
                               overrides=overrides, report=False)
    except Exception as exc:  # a failure is a result of the benchmark, not a crash of it
        return {"family": meta["family"], "variant": variant, "error": repr(exc)}
    seconds = time.perf_counter() - t0
    stem = data_path.name.split(".")[0]
    ave = out / f"{stem}-ave.fif"
    result = {"family": meta["family"], "variant": variant, "seconds": seconds,
              "n_kept": summary["n_kept"], "n_epochs": summary["n_pulses"],
              "cut_window": summary.get("cut_window", {}).get("window_ms"),
              "cut_reason": summary.get("cut_window", {}).get("reason", ""),
              "bad_channels": sorted(summary.get("bad_channels", {})),
              "decay_effect": summary.get("decay_effect", {}),
              "warnings": summary.get("warnings", [])}
    with open(out / "pulses.csv") as fh:
        rows = list(csv.DictReader(fh))
    result["epoch_samples"] = [int(r["sample"]) for r in rows]
    result["kept_samples"] = [int(r["sample"]) for r in rows if r["kept"] == "True"]
    result["overrides"] = overrides
    if ave.is_file():
        evoked = mne.read_evokeds(ave, verbose="error")[0]
        roi = [c for c in meta["roi"] if c in evoked.ch_names]
        y = evoked.copy().pick(roi).data.mean(axis=0) * 1e6
        result["times_s"] = evoked.times.tolist()
        result["roi_uv"] = y.tolist()
    return result


def same_epochs_truth(meta: dict, quick: bool, seed: int, results: list[dict]) -> None:
    """Score each tmseeg result also against the truth *over the epochs it kept, through its
    own epoch filter*: the clean recording (regenerated, the generator is deterministic) cut at
    the true samples of the kept pulses, averaged, filtered as tmseeg filters an epoch,
    re-referenced and baselined like the truth. What is left is what artifact removal left;
    the difference to the plain score is what rejection and filtering cost against the truth
    of all pulses (adds each of :data:`_TEP_SCORES` as ``scores[key + "_kept"]``, and
    ``scores["floor"]``: the same scores of the clean data with the run's cut window)."""
    from tmseeg.config import load_config
    from tmseeg.pipeline.interpolation import interpolate_pulses
    from tmseeg.session import epoch_filter

    todo = [r for r in results if "kept_samples" in r and "roi_uv" in r]
    if not todo:
        return
    n = 20 if quick else None
    rec = tmsgen.make_recording(meta["family"], n_pulses=n, seed=seed)
    fs = float(rec.sfreq)
    clean = np.asarray(rec.clean_uv, dtype=np.float64)
    true = np.asarray(rec.epoch_pulse_samples, dtype=np.int64)
    names, types = list(rec.ch_names), list(rec.ch_types)
    for r in todo:
        kept = np.asarray(r["kept_samples"], dtype=np.int64)
        if kept.size == 0:
            continue
        cfg = load_config(overrides=r.get("overrides") or None)
        filt = epoch_filter(cfg)
        half = int(round(0.5 * fs))
        pad = int(round(filt.pad_ms * fs / 1000.0))  # before the epoch
        after = int(round(filt.pad_after_ms * fs / 1000.0))  # and after it
        # the true pulse of each kept epoch (tmseeg's time zero may be a sample off)
        onsets = true[np.abs(true[None, :] - kept[:, None]).argmin(axis=1)]
        onsets = onsets[(onsets - half - pad >= 0) & (onsets + half + after < clean.shape[1])]
        idx = onsets[:, None] + np.arange(-half - pad, half + after + 1)[None, :]
        raw_avg = clean[:, idx].mean(axis=1)  # (n_ch, n_times): linear, so filter the average
        avg = filt(raw_avg, fs)[:, pad:pad + 2 * half + 1]
        times = np.arange(-half, half + 1) / fs
        truth = {"clean_evoked_uv": avg, "times_s": times, "ch_names": names,
                 "ch_types": types, "bad_channels": list(rec.bad_channels)}
        kept_scores = scoring.score_tep(np.asarray(r["times_s"]), np.asarray(r["roi_uv"]),
                                        truth, list(meta["roi"]))
        scores = r.setdefault("scores", {})
        for key in _TEP_SCORES:  # what removal left, without what rejection cost
            scores[f"{key}_kept"] = kept_scores[key]
        if r.get("cut_window"):
            # the floor: the clean data with the run's cut window interpolated (the same
            # method; linear in the data, so on the average), filtered, against that truth —
            # what a perfect removal of every artifact would score when it must cut there
            cut = interpolate_pulses(raw_avg, [half + pad], fs, window_ms=tuple(r["cut_window"]),
                                     method=cfg.interpolation.method,
                                     fit_ms=cfg.interpolation.fit_ms)
            cut = filt(cut, fs)[:, pad:pad + 2 * half + 1]
            t_roi, y_roi = scoring.truth_roi(dict(truth, clean_evoked_uv=cut), list(meta["roi"]))
            floor = scoring.score_tep(t_roi, y_roi, truth, list(meta["roi"]))
            scores["floor"] = {key: floor[key] for key in _TEP_SCORES}


def _same_epochs_job(args) -> list[dict]:
    meta, quick, seed, results = args
    same_epochs_truth(meta, quick, seed, results)
    return results


def _merged(base: dict, extra: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def _mne_run(meta: dict) -> dict:
    from benchmarks.outside.mne_baseline import run_baseline

    data_path = Path(meta["_dir"]) / meta["data_file"]
    t0 = time.perf_counter()
    try:
        t, y, n = run_baseline(str(data_path), meta, list(meta["roi"]))
    except Exception as exc:
        return {"family": meta["family"], "variant": "mne", "error": repr(exc)}
    return {"family": meta["family"], "variant": "mne", "seconds": time.perf_counter() - t0,
            "n_kept": int(n), "times_s": np.asarray(t).tolist(),
            "roi_uv": np.asarray(y).tolist()}


def score_result(result: dict, meta: dict) -> dict:
    """Add the scores against the truth to one run's result."""
    truth = scoring.load_truth(Path(meta["_dir"]) / meta["truth_file"])
    if "roi_uv" in result:
        result["scores"] = scoring.score_tep(np.asarray(result["times_s"]),
                                             np.asarray(result["roi_uv"]), truth, meta["roi"])
    if "epoch_samples" in result:
        epoch_truth = dict(truth, pulse_samples=truth["epoch_pulse_samples"])
        result["pulses"] = scoring.score_pulses(result["epoch_samples"], epoch_truth, tol_ms=1.0)
    result["true_bads"] = list(truth["bad_channels"])
    return result


def _fmt(x, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def _peak_cell(scores: dict, peak: str, suffix: str = "") -> str:
    """Amplitude error in % and latency error in ms: ``+12/-0.4`` (``suffix="_kept"``: against
    the truth over the kept epochs)."""
    amp = scores.get(f"{peak}_amp_err_pct{suffix}")
    lat = scores.get(f"{peak}_lat_err_ms{suffix}")
    if amp is None:
        return "—"
    return f"{_fmt(amp, '+.0f')}/{_fmt(lat, '+.1f')}"


# issue #14's accuracy targets: early-TEP r; amplitude error (%) of N15, P30; amplitude (%)
# and latency (ms) error of the later peaks
TARGET_R = 0.9
TARGET_EARLY_PEAK_PCT = 30.0
TARGET_LATE_PEAK_PCT, TARGET_LATE_PEAK_MS = 15.0, 2.0


def missed_targets(scores: dict, suffix: str = "") -> list[str]:
    """The accuracy targets one result misses (``suffix="_kept"``: against the truth over the
    epochs it kept), e.g. ``["r", "P30", "N100 ms"]``."""
    r = scores.get("r_early" + suffix)
    out = [] if r is not None and r >= TARGET_R else ["r"]
    for pk in PEAKS:
        amp = scores.get(f"{pk}_amp_err_pct{suffix}")
        lat = scores.get(f"{pk}_lat_err_ms{suffix}")
        if amp is None or lat is None:
            out.append(pk)
            continue
        early = pk in ("N15", "P30")
        if abs(amp) > (TARGET_EARLY_PEAK_PCT if early else TARGET_LATE_PEAK_PCT):
            out.append(pk)
        if not early and abs(lat) > TARGET_LATE_PEAK_MS:
            out.append(f"{pk} ms")
    return out


def kept_table(results: list[dict], markdown: bool) -> str:
    """Against the truth over the epochs each run kept (what artifact removal left, without
    what rejection cost): r, RMS, the peaks, and the targets missed (all epochs / kept). The
    MNE script keeps every epoch: its kept scores are its plain ones. "cut floor": the N15 and
    P30 errors of the clean data with the run's cut window interpolated (what removing every
    artifact perfectly would still miss there)."""
    head = ["family", "method", "r / RMS kept", *[f"{p} kept" for p in PEAKS],
            "cut floor N15 / P30 %", "targets missed (all epochs)", "targets missed (kept)"]
    rows = []
    for r in results:
        s = r.get("scores", {})
        suffix = "_kept" if "r_early_kept" in s else ("" if r["variant"] == "mne" else None)
        if "error" in r or suffix is None or not s:
            continue
        rows.append([r["family"], r["variant"],
                     f"{_fmt(s.get('r_early' + suffix), '.2f')} / "
                     f"{_fmt(s.get('rms_rel_early' + suffix), '.2f')}",
                     *[_peak_cell(s, pk, suffix) for pk in PEAKS],
                     (f"{_fmt(s['floor']['N15_amp_err_pct'], '+.0f')} / "
                      f"{_fmt(s['floor']['P30_amp_err_pct'], '+.0f')}" if "floor" in s else ""),
                     ", ".join(missed_targets(s)) or "none",
                     ", ".join(missed_targets(s, suffix)) or "none"])
    return render_table(head, rows, markdown)


def render_table(head: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table as markdown, or as aligned columns of text."""
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{w}s}}" for w in widths)
    return "\n".join([fmt.format(*head)] + [fmt.format(*row) for row in rows])


def table(results: list[dict], markdown: bool) -> str:
    """The benchmark table: one row per family and method."""
    head = ["family", "method", "pulses found/true", "kept", "cut ms", "bads (true)",
            "decay took", "r 15-60", "RMS err", "r / RMS kept", *[f"{p} %/ms" for p in PEAKS]]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["family"], r["variant"], "ERROR: " + r["error"][:60]] +
                        [""] * (len(head) - 3))
            continue
        s = r.get("scores", {})
        p = r.get("pulses")
        pulses = (f"{p['true_positives']}/{p['n_true']}"
                  + (f" +{p['false_positives']}" if p["false_positives"] else "")
                  if p else "")
        cut = r.get("cut_window")
        bads = ""
        if "bad_channels" in r:
            bads = (",".join(r["bad_channels"]) or "none") + \
                   f" ({','.join(r['true_bads']) or 'none'})"
        eff = r.get("decay_effect") or {}
        took = ""
        if eff.get("early_removed_rel") is not None:
            took = (f"{100 * eff['early_removed_rel']:.0f}% "
                    f"({eff['pulses_corrected']}/{eff['pulses_averaged']})")
        rows.append([r["family"], r["variant"], pulses, str(r.get("n_kept", "")),
                     f"{cut[0]:g}..{cut[1]:g}" if cut else "",
                     bads, took, _fmt(s.get("r_early"), ".2f"), _fmt(s.get("rms_rel_early"), ".2f"),
                     (f"{_fmt(s.get('r_early_kept'), '.2f')} / "
                      f"{_fmt(s.get('rms_rel_early_kept'), '.2f')}"
                      if "r_early_kept" in s else ""),
                     *[_peak_cell(s, pk) for pk in PEAKS]])
    return render_table(head, rows, markdown)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None,
                    help="where the recordings are (generated if missing); default "
                         "~/.cache/tmseeg-outside/{full,quick}")
    ap.add_argument("--out", type=Path, default=None, help="analysis outputs (default: a "
                    "folder 'runs' next to the data)")
    ap.add_argument("--quick", action="store_true", help="short recordings (~20 pulses)")
    ap.add_argument("--families", default="", help="comma-separated (default: all)")
    ap.add_argument("--variants", default="default,no_decay,fixed_cut,sspsir",
                    help=f"tmseeg variants among {', '.join(VARIANTS)} (the MNE script always "
                         "runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--no-kept-truth", action="store_true",
                    help="skip the score against the truth over the kept epochs (it "
                         "regenerates each family's clean data, ~20 s each)")
    a = ap.parse_args(argv)
    families = [f for f in a.families.split(",") if f] or list(tmsgen.FAMILIES)
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose among {list(VARIANTS)}")
    data = a.data or Path.home() / ".cache" / "tmseeg-outside" / ("quick" if a.quick else "full")
    out = a.out or data / "runs"
    metas = ensure_recordings(data, a.quick, families, a.seed)
    by_family = {m["family"]: m for m in metas}
    jobs = [(m, v, VARIANTS[v], out) for m in metas for v in variants]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.jobs) as pool:
        results = list(pool.map(_tmseeg_run, jobs))
        results += list(pool.map(_mne_run, metas))
    results = [score_result(r, by_family[r["family"]]) for r in results]
    if not a.no_kept_truth:  # the truth over the kept epochs (regenerates the clean data)
        per_family = [(by_family[f], a.quick, a.seed,
                       [r for r in results if r["family"] == f and r["variant"] != "mne"])
                      for f in by_family]
        with ProcessPoolExecutor(max_workers=a.jobs) as pool:
            for (_, _, _, mine), scored in zip(per_family,
                                               pool.map(_same_epochs_job, per_family)):
                for old_r, new_r in zip(mine, scored):  # back from the worker processes
                    old_r["scores"] = new_r.get("scores", old_r.get("scores", {}))
    order = {f: i for i, f in enumerate(families)}
    vorder = {v: i for i, v in enumerate(variants + ["mne"])}
    results.sort(key=lambda r: (order[r["family"]], vorder[r["variant"]]))
    print(table(results, a.markdown))
    if not a.no_kept_truth:
        print("\nAgainst the truth over the epochs each run kept:\n")
        print(kept_table(results, a.markdown))
    print(f"\n{len(metas)} recordings x {len(variants)} tmseeg variant(s) + MNE script in "
          f"{time.perf_counter() - t0:.0f} s; details in {out / 'results.json'}")
    out.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items()
             if k not in ("times_s", "roi_uv", "epoch_samples", "kept_samples")}
            for r in results]
    (out / "results.json").write_text(json.dumps(slim, indent=1, default=str))
    return results


if __name__ == "__main__":
    main()
