"""Plasticity across blocks: how every metric changed between parts of a session.

A session is divided into blocks by markers (``pre``, ``post``, ``iTBS``, ``post-30min`` ...):
each pulse belongs to the block whose marker came last before it. The plug-in then compares
blocks with a baseline block (the first, unless configured):

- **per-trial measures** — every numeric column of the pulse rows (early TEP, mean ROI
  amplitude in each peak window ``tep_<peak>_uv``, MEP amplitude, pre-stimulus power, ...):
  mean, SD and n per block; the difference to baseline with **Hedges' g** (Cohen's d with the
  small-sample correction J = 1 - 3 / (4 (n1 + n2) - 9)) and a **percentile bootstrap 95 % CI**
  of both the mean difference and g (resampling trials within each block; seeded);
- **block-level measures** — per-block running TEP (exact block averages): ROI peaks and GMFP
  peaks, the SNR, and PCIst of the block average; their difference to baseline with a bootstrap
  CI obtained by resampling the block's trials is not possible without keeping every epoch, so
  these come as values and differences only (documented limitation);
- **dose** — pulses per block (all pulses, kept or not, i.e. also the conditioning train if it
  was marked as a block).

Only kept epochs enter the comparisons.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmseeg.metrics.base import MetricContext, SessionMetric
from tmseeg.metrics.tep import RunningTEP
from tmseeg.sections import ConfigError, ConfigSection
from tmseeg.utils import compile_pattern

CONFIG_TOML = """\
[blocks]
pattern = ""                # regex for markers that start a block; "" = every non-pulse marker
baseline = ""               # block the others are compared with; "" = the first block
n_bootstrap = 2000          # bootstrap resamples for the 95 % CIs
seed = 0
min_trials = 5              # fewer kept trials in a block: no effect size for it
"""


@dataclass(frozen=True)
class BlocksConfig(ConfigSection):
    """``[blocks]``: blocks of pulses compared with effect sizes (see ``CONFIG_TOML``)."""
    SECTION = "blocks"

    pattern: str
    baseline: str
    n_bootstrap: int
    seed: int
    min_trials: int

    def validate(self) -> None:
        self.compiled_pattern()

    def compiled_pattern(self) -> re.Pattern | None:
        """``pattern`` compiled (None when empty)."""
        return (compile_pattern(self.pattern, "blocks.pattern", "fix it, or leave it empty "
                                "(every marker that is not a pulse starts a block)", ConfigError)
                if self.pattern else None)


#: this plug-in's section of the configuration
CONFIG_SECTION = BlocksConfig

#: label of pulses before the first block marker
BEFORE_FIRST = "(start)"

#: per-trial columns that are bookkeeping, not measures
_NOT_MEASURES = {"pulse_index", "sample", "time_s", "n_averaged", "snr_after", "n_bad_channels",
                 "intensity_pct", "max_ptp_uv"}


def hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of ``b`` minus ``a`` (pooled SD, small-sample corrected); NaN if undefined."""
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        return math.nan
    pooled = math.sqrt(((n1 - 1) * np.var(a, ddof=1) + (n2 - 1) * np.var(b, ddof=1))
                       / (n1 + n2 - 2))
    if pooled == 0:
        return math.nan
    j = 1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)
    return float(j * (np.mean(b) - np.mean(a)) / pooled)


def bootstrap_ci(a: np.ndarray, b: np.ndarray, n_boot: int, rng: np.random.Generator,
                 level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap CIs of ``mean(b) - mean(a)`` and of Hedges' g (trials resampled
    with replacement within each group), vectorised over resamples."""
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    ra, rb = a[ia], b[ib]
    diff = rb.mean(axis=1) - ra.mean(axis=1)
    n1, n2 = len(a), len(b)
    pooled = np.sqrt(((n1 - 1) * ra.var(axis=1, ddof=1) + (n2 - 1) * rb.var(axis=1, ddof=1))
                     / (n1 + n2 - 2))
    j = 1.0 - 3.0 / (4.0 * (n1 + n2) - 9.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = j * diff / pooled
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"diff_ci": [float(x) for x in np.nanpercentile(diff, q)],
            "g_ci": [float(x) for x in np.nanpercentile(g[np.isfinite(g)], q)]
            if np.isfinite(g).any() else [math.nan, math.nan]}


class PlasticityMetric(SessionMetric):
    """Assign pulses to blocks and compare blocks (see the module notes)."""

    name = "plasticity"
    columns = ("block",)
    after = ("*",)  # compares every measure column by block

    def __init__(self, section: BlocksConfig, context: MetricContext) -> None:
        self.cfg = section
        self.context = context
        self._re = section.compiled_pattern()
        self.block_starts: list[tuple[int, str]] = []
        self.rows_by_block: dict[str, list[dict]] = {}
        self.dose: dict[str, int] = {}
        self.teps: dict[str, RunningTEP] = {}
        self.order: list[str] = []
        self._cache: tuple[int, dict] | None = None
        self._finished = False

    def _is_block_marker(self, label: str) -> bool:
        return self._re.search(label) is not None if self._re else True

    def on_block(self, block) -> None:
        new = [(ev.sample, ev.label) for ev in block.events
               if ev.kind == "marker" and self._is_block_marker(ev.label)]
        if new:  # markers are rare: keep the per-block cost O(block events)
            self.block_starts.extend(new)
            self.block_starts.sort()

    def block_of(self, sample: int) -> str:
        """The block a sample belongs to: the last block marker at or before it."""
        label = BEFORE_FIRST
        for s, lab in self.block_starts:
            if s <= sample:
                label = lab
            else:
                break
        return label

    def on_epoch(self, epoch, row: dict) -> None:
        block = self.block_of(int(epoch.sample))
        row["block"] = block
        if block not in self.dose:
            self.dose[block] = 0
            self.order.append(block)
            self.rows_by_block[block] = []
        self.dose[block] += 1
        if not row["kept"]:
            return
        self.rows_by_block[block].append(row)
        tep = self.context.tep()
        if tep is not None:
            if block not in self.teps:
                self.teps[block] = RunningTEP(tep.ch_names, tep.times_ms, tep.roi,
                                              peak_windows_ms=tep.peak_windows_ms,
                                              early_window_ms=tep.early_window_ms,
                                              post_window_ms=tep.post_window_ms,
                                              pre_window_ms=tep.pre_window_ms)
            self.teps[block].add(epoch)

    #: live, the bootstrap comparison (O(trials x resamples)) is redone at most this often
    LIVE_EVERY_N_PULSES = 10

    def summary(self) -> dict[str, Any]:
        """Block comparisons; live they lag by < LIVE_EVERY_N_PULSES pulses, after finish() they
        are exact (the session summary asks once per epoch: recomputing every bootstrap each
        time would make a long session's per-epoch cost grow with its length)."""
        n = sum(self.dose.values())
        stale = self._cache is None or (self._cache[0] != n and (
            self._finished or n - self._cache[0] >= self.LIVE_EVERY_N_PULSES))
        if stale:
            self._cache = (n, self._compare())
        return self._cache[1]

    def finish(self) -> None:
        self._finished = True

    def _measures(self) -> list[str]:
        keys: list[str] = []
        for rows in self.rows_by_block.values():
            for r in rows:
                for k, v in r.items():
                    if (k not in keys and k not in _NOT_MEASURES and isinstance(v, (int, float))
                            and not isinstance(v, bool)):
                        keys.append(k)
        return keys

    def _compare(self) -> dict[str, Any]:
        blocks = list(self.order)
        out: dict[str, Any] = {"blocks": blocks, "dose": dict(self.dose),
                               "n_kept": {b: len(self.rows_by_block[b]) for b in blocks}}
        if not blocks:
            return out
        base = self.cfg.baseline or blocks[0]
        out["baseline"] = base
        rng = np.random.default_rng(self.cfg.seed)
        per_trial: dict[str, Any] = {}
        for key in self._measures():
            values = {b: np.array([r[key] for r in self.rows_by_block[b]
                                   if isinstance(r.get(key), (int, float))
                                   and math.isfinite(r[key])]) for b in blocks}
            entry: dict[str, Any] = {"per_block": {
                b: {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
                    "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan}
                for b, v in values.items()}}
            a = values.get(base, np.empty(0))
            comps = {}
            for b in blocks:
                if b == base:
                    continue
                v = values[b]
                if a.size < self.cfg.min_trials or v.size < self.cfg.min_trials:
                    comps[b] = {"note": f"fewer than {self.cfg['min_trials']} trials"}
                    continue
                comp = {"diff": float(v.mean() - a.mean()), "hedges_g": hedges_g(a, v),
                        "ratio": float(v.mean() / a.mean()) if a.mean() != 0 else math.nan}
                comp.update(bootstrap_ci(a, v, self.cfg.n_bootstrap, rng))
                comps[b] = comp
            entry["vs_baseline"] = comps
            per_trial[key] = entry
        out["per_trial"] = per_trial
        out["block_level"] = self._block_level(blocks, base)
        return out

    def _block_level(self, blocks: list[str], base: str) -> dict[str, Any]:
        level: dict[str, Any] = {}
        for b in blocks:
            tep = self.teps.get(b)
            if tep is None or tep.n == 0:
                continue
            peaks = tep.peaks()
            level[b] = {"n": int(tep.n), "snr": float(tep.snr()),
                        "peaks_uv": {k: p["amplitude_uv"] for k, p in peaks.items()},
                        "peak_latencies_ms": {k: p["latency_ms"] for k, p in peaks.items()},
                        "gmfp_peaks_uv": {k: p["gmfp_uv"] for k, p in peaks.items()}}
            level[b]["pcist"] = self._pcist(tep)
        if base in level:
            for b, v in level.items():
                if b != base:
                    v["gmfp_ratio_vs_baseline"] = {
                        k: (x / level[base]["gmfp_peaks_uv"][k]
                            if level[base]["gmfp_peaks_uv"][k] else math.nan)
                        for k, x in v["gmfp_peaks_uv"].items()}
        return level

    def _pcist(self, tep: RunningTEP) -> float:
        """PCIst of the block average (decimated to ~1 kHz), NaN when not computable."""
        from tmseeg.metrics.pcist import pcist
        if tep.n < 10:
            return math.nan
        sfreq_hz = 1000.0 / float(np.median(np.diff(tep.times_ms)))
        step = max(1, int(round(sfreq_hz / 1000.0)))
        try:
            return float(pcist(tep.average_uv[:, ::step], tep.times_ms[::step]).value)
        except ValueError:
            return math.nan

    def report(self, report) -> None:
        """Per-trial measures by block with the baseline comparison."""
        import matplotlib.pyplot as plt

        s = self.summary()
        if len(s.get("blocks", [])) < 2:
            return
        keys = [k for k in ("early_tep_ptp_uv", "tep_N45_uv", "tep_N100_uv", "tep_P180_uv",
                            "mep_ptp_uv", "prestim_power_uv2") if k in s["per_trial"]]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
        for ax, key in zip(axes[0], keys):
            per = s["per_trial"][key]["per_block"]
            means = [per[b]["mean"] for b in s["blocks"]]
            sds = [per[b]["sd"] for b in s["blocks"]]
            ns = [max(per[b]["n"], 1) for b in s["blocks"]]
            ax.errorbar(range(len(means)), means, yerr=np.array(sds) / np.sqrt(ns), fmt="o-")
            ax.set_xticks(range(len(means)), s["blocks"], rotation=30, fontsize=7)
            ax.set_title(key, fontsize=8)
        fig.tight_layout()
        report.add_figure(fig, title="Blocks: per-trial measures (mean ± SEM)",
                          section="Plasticity")
        plt.close(fig)
        rows = []
        for key, entry in s["per_trial"].items():
            for b, c in entry["vs_baseline"].items():
                if "hedges_g" in c:
                    rows.append(f"<tr><td>{key}</td><td>{b} vs {s['baseline']}</td>"
                                f"<td>{c['diff']:.3g} [{c['diff_ci'][0]:.3g}, "
                                f"{c['diff_ci'][1]:.3g}]</td><td>{c['hedges_g']:.2f} "
                                f"[{c['g_ci'][0]:.2f}, {c['g_ci'][1]:.2f}]</td></tr>")
        dose = ", ".join(f"{b}: {n}" for b, n in s["dose"].items())
        report.add_html("<p>Pulses per block (dose): " + dose + "</p>"
                        "<table class='table table-sm'><tr><th>measure</th><th>comparison</th>"
                        "<th>difference [95% CI]</th><th>Hedges g [95% CI]</th></tr>"
                        + "".join(rows) + "</table>", title="Blocks: effect sizes",
                        section="Plasticity")


def make_metric(cfg: ConfigSection, context: MetricContext) -> PlasticityMetric:
    """The block-comparison plug-in (always on: with one block it only counts pulses)."""
    return PlasticityMetric(cfg.blocks, context)
