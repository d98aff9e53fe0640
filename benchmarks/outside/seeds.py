"""The outside benchmark over several seeds, one table: what ``run.py`` wrote, side by side.

``run.py`` scores one seed at a time; a change of an artifact stage is judged on several
seeds at once (one seed's recordings swing by ±0.1–0.5 with any change). This reads the
``results.json`` of runs made with ``run.py --variants VARIANT --seed S --out DIR`` and prints,
per family and seed, tmseeg's early-TEP r / RMS error against the truth of all pulses (against
the truth of the epochs it kept) and the MNE script's RMS error, with ✗ where tmseeg is worse
than the script against its kept epochs; the sums; and which of the issue's targets each run
misses (all epochs / kept epochs)::

    python benchmarks/outside/run.py --variants default --seed 0 --out runs/s0   # ... per seed
    python -m benchmarks.outside.seeds runs/s0 runs/s1 runs/s2 [--variant default]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.outside.run import TARGET_R, missed_targets, render_table


def _load(folder: str) -> list[dict]:
    path = Path(folder) / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: give the --out folders of run.py runs")
    return json.loads(path.read_text())


def _scores(results: list[dict], variant: str) -> tuple[dict, dict]:
    """tmseeg's scores (of ``variant``) and the MNE script's, by family."""
    ours = {r["family"]: r["scores"] for r in results if r["variant"] == variant}
    mne = {r["family"]: r["scores"] for r in results if r["variant"] == "mne"}
    return ours, mne


def _targets_cell(d: dict | None) -> str:
    """The targets one run misses, against all epochs / against the kept ones."""
    if d is None:
        return "–"
    # without the kept-epoch scores (run.py --no-kept-truth) there is nothing to miss
    kept = ", ".join(missed_targets(d, "_kept")) or "none" if "r_early_kept" in d else "–"
    return f"{', '.join(missed_targets(d)) or 'none'} / {kept}"


def seeds_table(runs: list[list[dict]], names: list[str], variant: str = "default") -> str:
    """The r / RMS table over the runs (columns named ``names``) and the targets table, as
    markdown."""
    per_run = [_scores(results, variant) for results in runs]
    families = list(per_run[0][0])
    sums = [[0.0, 0.0, 0.0] for _ in runs]
    low, worse = [0] * len(runs), [0] * len(runs)
    rows = []
    for fam in families:
        cells = []
        for i, (ours, mne) in enumerate(per_run):
            d, m = ours.get(fam), mne.get(fam)
            if d is None or m is None:
                cells.append("–")
                continue
            kept = d.get("rms_rel_early_kept", d["rms_rel_early"])
            script_worse = kept > m["rms_rel_early"]
            sums[i][0] += d["rms_rel_early"]
            sums[i][1] += kept
            sums[i][2] += m["rms_rel_early"]
            low[i] += d["r_early"] < TARGET_R
            worse[i] += script_worse
            cells.append(f"{d['r_early']:.2f} / {d['rms_rel_early']:.2f} ({kept:.2f}) · "
                         f"{m['rms_rel_early']:.2f}{' ✗' if script_worse else ''}")
        rows.append([fam, *cells])
    rows.append(["sum of RMS (kept) · script",
                 *[f"{a:.2f} ({b:.2f}) · {c:.2f}" for a, b, c in sums]])
    rows.append([f"r < {TARGET_R} / worse than the script (kept)",
                 *[f"{a} / {b}" for a, b in zip(low, worse)]])
    targets = [[fam, *[_targets_cell(ours.get(fam)) for ours, _ in per_run]]
               for fam in families]
    return (render_table(["family", *names], rows, markdown=True) + "\n\n"
            + render_table(["family", *[f"{n}: missed, all epochs / kept epochs" for n in names]],
                      targets, markdown=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="--out folders of run.py runs (one per seed)")
    ap.add_argument("--variant", default="default", help="tmseeg variant to show")
    args = ap.parse_args()
    print(seeds_table([_load(f) for f in args.runs], [Path(f).name for f in args.runs],
                      args.variant))


if __name__ == "__main__":
    main()
