"""Group outputs of a batch: one long table and one HTML report across sessions.

The group table (``group_table.csv``) has one row per session x block x metric, with columns
:data:`TABLE_COLUMNS`:

- ``block = "all"``: session-level values (``n_pulses``, ``n_kept``, ``snr``, the ROI TEP
  peaks ``peak_<name>_uv`` and ``peak_<name>_latency_ms``), ``n`` = kept epochs;
- per block (the plasticity plug-in's blocks, e.g. ``pre``/``post``): every per-trial measure
  (``early_tep_ptp_uv``, ``tep_N45_uv``, ``mep_ptp_uv``, ``prestim_power_uv2`` ...) with
  ``value`` = block mean and ``n`` = kept trials; for blocks other than the baseline also
  ``baseline``, ``diff`` (block - baseline), ``g`` (Hedges' g) and the 95 % bootstrap CIs
  ``diff_ci_low/high``, ``g_ci_low/high`` (from :mod:`tmseeg.metrics.plasticity`);
- per block, block-level values of the block's average TEP: ``block_snr``,
  ``block_peak_<name>_uv``, ``block_gmfp_<name>_uv``, ``block_pcist``;
- a session that failed has one row with ``status = "failed"`` and the error in ``message``.

The group report (``group_report.html``, :class:`mne.Report`): session status table, grand
average TEP at each session's ROI (every session thin, the mean thick) and the grand-average
GMFP, distributions of the main measures by block, and pre/post effects: each session's
difference with its bootstrap CI and, across subjects, the mean difference with a percentile
bootstrap CI over subjects (:func:`group_effect`).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tmseeg.study.bids import entity_label
from tmseeg.utils import float_or_nan

#: columns of the group table, in order
TABLE_COLUMNS = ["subject", "session", "task", "run", "block", "metric", "value", "n",
                 "baseline", "diff", "g", "diff_ci_low", "diff_ci_high", "g_ci_low",
                 "g_ci_high", "status", "message"]

#: per-trial measures shown in the report's distribution and effect figures (when present)
REPORT_MEASURES = ("early_tep_ptp_uv", "tep_N45_uv", "tep_N100_uv", "tep_P180_uv",
                   "mep_ptp_uv")


def session_rows(entities: dict, summary: dict, status: str = "ok") -> list[dict]:
    """The group-table rows of one analyzed session (see the module notes).

    Parameters
    ----------
    entities : dict
        ``subject``, ``session``, ``task``, ``run``.
    summary : dict
        The session's ``summary.json``.
    status : str
        ``"ok"`` or ``"skipped"`` (analyzed by an earlier batch).

    Returns
    -------
    list of dict
    """
    base = {**{k: entities.get(k) for k in ("subject", "session", "task", "run")},
            "status": status, "message": ""}
    rows: list[dict] = []

    def add(block: str, metric: str, value: Any, n: Any = None, **extra) -> None:
        rows.append({**base, "block": block, "metric": metric, "value": float_or_nan(value),
                     "n": None if n is None else int(n), **extra})

    n_kept = summary.get("n_kept")
    add("all", "n_pulses", summary.get("n_pulses"), summary.get("n_pulses"))
    add("all", "n_kept", n_kept, n_kept)
    add("all", "snr", summary.get("snr"), n_kept)
    for name, p in (summary.get("peaks") or {}).items():
        if p.get("found"):
            add("all", f"peak_{name}_uv", p.get("amplitude_uv"), n_kept)
            add("all", f"peak_{name}_latency_ms", p.get("latency_ms"), n_kept)
    plast = (summary.get("metrics") or {}).get("plasticity") or {}
    baseline = plast.get("baseline")
    for metric, entry in (plast.get("per_trial") or {}).items():
        for block, stats in entry.get("per_block", {}).items():
            comp = entry.get("vs_baseline", {}).get(block, {})
            extra: dict[str, Any] = {}
            if block != baseline:
                extra["baseline"] = baseline
            if "diff" in comp:
                extra.update(diff=float_or_nan(comp["diff"]), g=float_or_nan(comp.get("hedges_g")),
                             diff_ci_low=float_or_nan(comp["diff_ci"][0]),
                             diff_ci_high=float_or_nan(comp["diff_ci"][1]),
                             g_ci_low=float_or_nan(comp["g_ci"][0]), g_ci_high=float_or_nan(comp["g_ci"][1]))
            elif comp.get("note"):
                extra["message"] = comp["note"]
            add(block, metric, stats.get("mean"), stats.get("n"), **extra)
    for block, lev in (plast.get("block_level") or {}).items():
        n = lev.get("n")
        add(block, "block_snr", lev.get("snr"), n)
        for name, v in (lev.get("peaks_uv") or {}).items():
            add(block, f"block_peak_{name}_uv", v, n)
        for name, v in (lev.get("gmfp_peaks_uv") or {}).items():
            add(block, f"block_gmfp_{name}_uv", v, n)
        add(block, "block_pcist", lev.get("pcist"), n)
    return rows


def build_group_table(results: Sequence) -> list[dict]:
    """Rows of the group table from a batch's :class:`~tmseeg.study.batch.JobResult` list.

    Finished sessions (``ok``/``skipped``) contribute their :func:`session_rows`; failed ones
    a single row with the error.
    """
    rows: list[dict] = []
    for res in results:
        ent = {k: res.entities.get(k) for k in ("subject", "session", "task", "run")}
        if res.status == "failed":
            rows.append({**ent, "block": "", "metric": "", "value": math.nan, "n": None,
                         "status": "failed", "message": f"{res.message} (log: {res.log_file})"})
            continue
        summary_path = Path(res.out_dir) / "summary.json"
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as exc:
            rows.append({**ent, "block": "", "metric": "", "value": math.nan, "n": None,
                         "status": "failed",
                         "message": f"summary {summary_path} unreadable: {exc}"})
            continue
        rows.extend(session_rows(ent, summary, res.status))
    return rows


def write_group_table(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the rows as CSV (:data:`TABLE_COLUMNS`; NaN and None as empty cells)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in TABLE_COLUMNS})
    return path


def _cell(v: Any) -> Any:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return repr(v)  # round trip exactly
    return v


def read_group_table(path: str | Path) -> list[dict]:
    """Read a group table back (numbers as float, ``n`` as int, empty cells as None)."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v == "":
                    row[k] = None
                elif k == "n":
                    row[k] = int(v)
                elif k in ("value", "diff", "g", "diff_ci_low", "diff_ci_high", "g_ci_low",
                           "g_ci_high"):
                    row[k] = float(v)
                else:
                    row[k] = v
            out.append(row)
    return out


def group_effect(rows: Sequence[dict], metric: str, block: str | None = None,
                 n_boot: int = 5000, seed: int = 0) -> dict[str, Any]:
    """Across-subject effect of a block vs baseline: mean of the per-subject differences.

    Each subject's difference is the mean of its sessions' ``diff`` for ``metric`` (and
    ``block``; default: the first non-baseline block found); the CI is a percentile bootstrap
    over subjects.

    Parameters
    ----------
    rows : sequence of dict
        Group-table rows.
    metric : str
        Per-trial measure, e.g. ``"early_tep_ptp_uv"``.
    block : str, optional
        Compared block (e.g. ``"post"``).
    n_boot : int
        Bootstrap resamples.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``block``, ``per_subject`` {subject: diff}, ``mean_diff``, ``ci`` [low, high]
        (NaN with fewer than 2 subjects), ``n_subjects``.
    """
    sel = [r for r in rows if r.get("metric") == metric and r.get("diff") is not None
           and r.get("status") in ("ok", "skipped") and _finite(r.get("diff"))]
    if block is None and sel:
        block = sel[0]["block"]
    sel = [r for r in sel if r["block"] == block]
    per_subject: dict[str, list[float]] = {}
    for r in sel:
        per_subject.setdefault(str(r["subject"]), []).append(float(r["diff"]))
    diffs = {s: float(np.mean(v)) for s, v in per_subject.items()}
    x = np.array(list(diffs.values()))
    ci = [math.nan, math.nan]
    if x.size >= 2:
        rng = np.random.default_rng(seed)
        boots = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
        ci = [float(v) for v in np.percentile(boots, [2.5, 97.5])]
    return {"metric": metric, "block": block, "per_subject": diffs,
            "mean_diff": float(x.mean()) if x.size else math.nan, "ci": ci,
            "n_subjects": int(x.size)}


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(float(v))


def roi_tep(out_dir: str | Path, roi: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times (ms), ROI-average TEP (µV) and GMFP (µV) of a session's ``-ave.fif``."""
    import mne

    files = sorted(Path(out_dir).glob("*-ave.fif"))
    if not files:
        raise FileNotFoundError(f"no -ave.fif in {out_dir}")
    ev = mne.read_evokeds(files[0], verbose="error")[0]
    data = ev.data * 1e6
    picks = [ev.ch_names.index(c) for c in roi if c in ev.ch_names]
    roi_uv = data[picks].mean(axis=0) if picks else np.full(data.shape[1], np.nan)
    gmfp = data.std(axis=0)
    return ev.times * 1e3, roi_uv, gmfp


def write_group_report(results: Sequence, rows: Sequence[dict], path: str | Path) -> Path:
    """The group report (see the module notes).

    Parameters
    ----------
    results : sequence of JobResult
        From the batch.
    rows : sequence of dict
        The group table.
    path : path
        ``group_report.html``.

    Returns
    -------
    Path
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mne

    path = Path(path)
    report = mne.Report(title="tmseeg group report", verbose="error")
    status_rows = "".join(
        f"<tr><td>{entity_label(r.entities)}</td><td>{r.status}</td><td>{_esc(r.message)}</td>"
        f"<td>{r.elapsed_s:.1f}</td></tr>" for r in results)
    report.add_html(f"<table class='table table-sm'><tr><th>session</th><th>status</th>"
                    f"<th>message</th><th>time s</th></tr>{status_rows}</table>",
                    title="Sessions", section="Overview")
    # grand average TEP at each session's ROI
    curves = []
    for r in results:
        if r.status == "failed":
            continue
        try:
            summary = json.loads((Path(r.out_dir) / "summary.json").read_text())
            t, roi_uv, gmfp = roi_tep(r.out_dir, summary.get("roi") or [])
        except (OSError, ValueError, FileNotFoundError):
            continue
        curves.append((entity_label(r.entities), t, roi_uv, gmfp))
    if curves:
        n_t = min(c[1].size for c in curves)
        t = curves[0][1][:n_t]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        for lab, _, roi_uv, gmfp in curves:
            axes[0].plot(t, roi_uv[:n_t], lw=0.7, alpha=0.6, label=lab)
            axes[1].plot(t, gmfp[:n_t], lw=0.7, alpha=0.6)
        axes[0].plot(t, np.nanmean([c[2][:n_t] for c in curves], axis=0), "k", lw=2,
                     label="grand average")
        axes[1].plot(t, np.nanmean([c[3][:n_t] for c in curves], axis=0), "k", lw=2)
        for ax, title in zip(axes, ("TEP at each session's ROI (µV)", "GMFP (µV)")):
            ax.axvline(0, color="r", lw=0.8)
            ax.set_xlim(-100, 350)
            ax.set_xlabel("time (ms)")
            ax.set_title(title, fontsize=9)
        axes[0].legend(fontsize=6)
        fig.tight_layout()
        report.add_figure(fig, title=f"Grand average TEP ({len(curves)} sessions)",
                          section="TEP")
        plt.close(fig)
    # distributions by block
    measures = [m for m in REPORT_MEASURES if any(r.get("metric") == m for r in rows)]
    if measures:
        fig, axes = plt.subplots(1, len(measures), figsize=(3.0 * len(measures), 3.2),
                                 squeeze=False)
        for ax, m in zip(axes[0], measures):
            sel = [r for r in rows if r.get("metric") == m and _finite(r.get("value"))]
            blocks = list(dict.fromkeys(r["block"] for r in sel))
            for j, b in enumerate(blocks):
                v = [r["value"] for r in sel if r["block"] == b]
                ax.scatter(np.full(len(v), j) + np.linspace(-0.1, 0.1, len(v)), v, s=12)
                ax.hlines(np.mean(v), j - 0.25, j + 0.25, color="k")
            ax.set_xticks(range(len(blocks)), blocks, fontsize=7)
            ax.set_title(m, fontsize=8)
        fig.tight_layout()
        report.add_figure(fig, title="Session means by block", section="Metrics")
        plt.close(fig)
    # pre/post effects
    effects = [group_effect(rows, m) for m in measures]
    effects = [e for e in effects if e["n_subjects"]]
    if effects:
        fig, axes = plt.subplots(1, len(effects), figsize=(3.2 * len(effects), 3.4),
                                 squeeze=False)
        for ax, e in zip(axes[0], effects):
            sel = [r for r in rows if r.get("metric") == e["metric"] and r.get("block")
                   == e["block"] and _finite(r.get("diff"))]
            for j, r in enumerate(sel):
                ax.errorbar(r["diff"], j, xerr=[[r["diff"] - r["diff_ci_low"]],
                                                [r["diff_ci_high"] - r["diff"]]], fmt="o",
                            ms=4)
            ax.errorbar(e["mean_diff"], len(sel) + 0.5,
                        xerr=None if not _finite(e["ci"][0]) else
                        [[e["mean_diff"] - e["ci"][0]], [e["ci"][1] - e["mean_diff"]]],
                        fmt="D", color="k", ms=6)
            ax.set_yticks(list(range(len(sel))) + [len(sel) + 0.5],
                          [f"sub-{r['subject']} ses-{r['session']}" for r in sel] + ["group"],
                          fontsize=7)
            ax.axvline(0, color="grey", lw=0.8)
            ax.set_title(f"{e['metric']}: {e['block']} - baseline", fontsize=8)
        fig.tight_layout()
        report.add_figure(fig, title="Block effects (session CIs: trial bootstrap; group CI: "
                          "subject bootstrap)", section="Effects")
        plt.close(fig)
        table = "".join(
            f"<tr><td>{e['metric']}</td><td>{e['block']}</td><td>{e['n_subjects']}</td>"
            f"<td>{e['mean_diff']:.3g}</td><td>[{e['ci'][0]:.3g}, {e['ci'][1]:.3g}]</td></tr>"
            for e in effects)
        report.add_html("<table class='table table-sm'><tr><th>measure</th><th>block</th>"
                        "<th>subjects</th><th>mean diff</th><th>95 % CI</th></tr>"
                        f"{table}</table>", title="Group effects", section="Effects")
    report.save(path, overwrite=True, open_browser=False, verbose="error")
    return path




def _esc(text: str) -> str:
    import html
    return html.escape(str(text))
