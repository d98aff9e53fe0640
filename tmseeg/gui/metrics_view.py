"""The plug-in summaries as an experimenter reads them: labelled numbers with units.

:func:`metric_lines` turns one plug-in's ``summary()`` (the dicts the metrics stream carries)
into short lines such as ``MEP (FDI): 18 of 20 pulses, median 640 µV, latency 22.5 ms`` —
never a dump of the structure. A plug-in this module does not know is shown by its scalar
values only, labelled by key. Pure functions: the monitor and its tests call them alike.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from tmseeg.utils import float_or_nan

__all__ = ["metric_lines", "metrics_lines"]


def _f(v: Any, spec: str = ".1f", unit: str = "") -> str:
    x = float_or_nan(v)
    if not math.isfinite(x):
        return "n/a"
    return f"{x:{spec}}{(' ' + unit) if unit else ''}"


def _mep(s: dict) -> list[str]:
    n, present = s.get("n_pulses", 0), s.get("n_present", 0)
    head = (f"MEP ({s.get('channel') or 'EMG'}): {present} of {n} pulses with an MEP, median "
            f"{_f(s.get('median_ptp_uv'), '.0f', 'µV')} peak-to-peak, latency "
            f"{_f(s.get('median_latency_ms'), '.1f', 'ms')}")
    if s.get("n_preinnervated"):
        head += f"; {s['n_preinnervated']} pre-activated (rejected)"
    lines = [head]
    if s.get("motor_threshold_ml_pct") is not None:
        ci = s.get("motor_threshold_ml_ci_pct") or [math.nan, math.nan]
        lines.append(f"  motor threshold {_f(s['motor_threshold_ml_pct'])} % MSO "
                     f"(95 % CI {_f(ci[0])}–{_f(ci[1])}); relative-frequency "
                     f"{_f(s.get('motor_threshold_rf_pct'))} %")
    elif "motor_threshold" in s:
        lines.append("  motor threshold: needs pulses at 3+ intensities (intensity_pct per "
                     "pulse)")
    curve = s.get("recruitment_curve")
    if curve:
        lines.append(f"  recruitment: max {_f(curve.get('mep_max_uv'), '.0f', 'µV')}, half-max at "
                     f"{_f(curve.get('i50_pct'))} % MSO")
    hot = s.get("hotspot")
    if hot:
        lines.append(f"  hotspot {hot.get('hotspot')} (chosen in {_f(100 * float_or_nan(hot.get('p_best')), '.0f')} "
                     f"% of resamples, {len(hot.get('sites') or [])} sites)")
    return lines


def _pcist(s: dict) -> list[str]:
    if s.get("value") is None:
        return ["PCIst: not yet (too few epochs so far)"]
    return [f"PCIst: {_f(s['value'], '.1f')} from {s.get('n_epochs')} epochs "
            f"({_f(s.get('cost_ms'), '.0f', 'ms')} to compute)"]


def _connectivity(s: dict) -> list[str]:
    n = s.get("n_epochs") or {}
    lines = [f"Connectivity: {n.get('post', 0)} epochs (post-pulse "
             f"{'..'.join(_f(v, '.0f') for v in (s.get('windows_ms') or {}).get('post', []))} ms "
             "vs pre-pulse)"]
    top = (s.get("top_pairs") or {}).get("wpli") or {}
    for band, pairs in top.items():
        if pairs:
            p = pairs[0]
            lines.append(f"  wPLI {band}: strongest rise {'–'.join(p['pair'])} "
                         f"{_f(p.get('pre'), '.2f')} → {_f(p.get('post'), '.2f')}")
    return lines


def _spread(s: dict) -> list[str]:
    onsets = {k: v for k, v in (s.get("onset_ms") or {}).items() if v is not None}
    first = min(onsets.items(), key=lambda kv: kv[1]) if onsets else None
    line = (f"Spread: {s.get('n_responding', 0)} channels respond beyond chance "
            f"({s.get('n_epochs', 0)} epochs)")
    if first:
        line += f", first {first[0]} at {_f(first[1], '.0f', 'ms')}"
    return [line]


def _oscillations(s: dict) -> list[str]:
    if not s.get("n_epochs"):
        skipped = ", ".join(f"{n} {why}" for why, n in (s.get("skipped") or {}).items())
        return [f"Oscillations: no epoch yet{f' (skipped: {skipped})' if skipped else ''}"]
    line = (f"Oscillations ({','.join(s.get('roi') or [])}): natural frequency "
            f"{_f(s.get('natural_frequency_hz'), '.1f', 'Hz')}, {s['n_epochs']} epochs")
    skipped = sum((s.get("skipped") or {}).values())
    if skipped:
        line += f" ({skipped} skipped)"
    return [line]


def _state(s: dict) -> list[str]:
    band = "–".join(_f(v, "g") for v in s.get("band_hz") or [])
    lines = [f"Pre-stimulus {band} Hz phase and power: {s.get('n_estimated', 0)} of "
             f"{s.get('n_pulses', 0)} pulses estimated"]
    for what, label in (("early_tep", "early TEP"), ("mep", "MEP")):
        mod = ((s.get(what) or {}).get("phase_modulation")) or {}
        if mod.get("n"):
            lines.append(f"  {label} by phase: modulation depth {_f(mod.get('depth'), '.2f')} "
                         f"(p = {_f(mod.get('p_value'), '.2f')}, n = {mod['n']})")
    return lines


def _plasticity(s: dict) -> list[str]:
    blocks = s.get("blocks") or []
    kept = s.get("n_kept") or {}
    lines = ["Blocks: " + ", ".join(f"{b} {kept.get(b, 0)} kept" for b in blocks)]
    base = s.get("baseline")
    for measure, label, unit in (("early_tep_ptp_uv", "early TEP", "µV"),
                                 ("mep_ptp_uv", "MEP", "µV")):
        vs = ((s.get("per_trial") or {}).get(measure) or {}).get("vs_baseline") or {}
        for block, d in vs.items():
            ci = d.get("g_ci") or [math.nan, math.nan]
            lines.append(f"  {label} {block} vs {base}: {_f(d.get('diff'), '+.1f', unit)}, "
                         f"Hedges g {_f(d.get('hedges_g'), '+.2f')} "
                         f"(95 % CI {_f(ci[0], '+.2f')} to {_f(ci[1], '+.2f')})")
    return lines


_VIEWS: dict[str, Callable[[dict], list[str]]] = {
    "mep": _mep, "pcist": _pcist, "connectivity": _connectivity, "spread": _spread,
    "oscillations": _oscillations, "state": _state, "plasticity": _plasticity,
}


def _generic(name: str, s: Any) -> list[str]:
    if not isinstance(s, dict):
        return [f"{name}: {s}"]
    scalars = [f"{k.replace('_', ' ')} {_f(v, '.3g') if isinstance(v, float) else v}"
               for k, v in s.items() if isinstance(v, (int, float, str)) and not
               isinstance(v, bool)]
    return [f"{name}: " + (", ".join(scalars[:8]) or "(no scalar values)")]


def metric_lines(name: str, summary: Any) -> list[str]:
    """One plug-in's summary as labelled lines (units included)."""
    view = _VIEWS.get(name)
    if view is None or not isinstance(summary, dict):
        return _generic(name, summary)
    try:
        return view(summary)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        # a summary of another version's shape: still readable, never a crash of the monitor
        return _generic(name, summary)


def metrics_lines(metrics: dict) -> list[str]:
    """Every plug-in's lines, in a fixed order (known plug-ins first)."""
    order = [n for n in _VIEWS if n in metrics] + sorted(n for n in metrics if n not in _VIEWS)
    return [line for name in order for line in metric_lines(name, metrics[name])]
