"""``report.html``: an :class:`mne.Report` with what an analyst checks first in a TMS-EEG file.

Sections: summary table; butterfly TEP with the GMFP; ROI TEP with the named peaks; early TEP
(0-80 ms) with and without decay-artifact removal; topographies at the peaks; single-trial
image of the ROI; SNR against trial count with the trials-needed estimate; rejected pulses.
"""
from __future__ import annotations

import html
import logging
import os
import pickle
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _fig():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _ylim_outside_pulse(values: np.ndarray, times_ms: np.ndarray, margin: float = 0.15,
                        window_ms: tuple[float, float] = (-2.0, 15.0),
                        view_ms: tuple[float, float] = (-100.0, 400.0)):
    """Y limits from the data outside the interpolated pulse window (whatever is left there,
    e.g. muscle residue, would otherwise set the scale and flatten the TEP)."""
    t = times_ms
    m = (t >= view_ms[0]) & (t <= view_ms[1]) & ~((t >= window_ms[0]) & (t <= window_ms[1]))
    v = np.asarray(values)[..., m]
    if not np.isfinite(v).any():
        return None
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    pad = margin * (hi - lo or 1.0)
    return lo - pad, hi + pad


def fig_butterfly(tep) -> "object":
    plt = _fig()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1]})
    t = tep.times_ms
    ax.plot(t, tep.average_uv.T, color="0.55", lw=0.6)
    ax.plot(t, tep.roi_average_uv, color="C3", lw=2, label=f"ROI ({', '.join(tep.roi)})")
    ax.axvspan(-2, 10, color="0.9", zorder=-1, label="interpolated pulse window")
    ax.set_ylabel("µV")
    ax.set_title(f"Average TEP, all channels ({tep.n} epochs)")
    ax.legend(loc="upper right", fontsize=8)
    ax2.plot(t, tep.gmfp_uv, color="k")
    ax2.set_ylabel("GMFP (µV)")
    ax2.set_xlabel("time after pulse (ms)")
    for a in (ax, ax2):
        a.axvline(0, color="k", lw=0.5)
        a.set_xlim(max(t[0], -100), min(t[-1], 400))
    for a, v in ((ax, tep.average_uv), (ax2, tep.gmfp_uv)):
        lim = _ylim_outside_pulse(v, t)
        if lim is not None:
            a.set_ylim(*lim)
    fig.tight_layout()
    return fig


def fig_roi_peaks(tep) -> "object":
    plt = _fig()
    fig, ax = plt.subplots(figsize=(9, 4))
    t = tep.times_ms
    sem = np.sqrt(np.nanmean(tep.variance_uv2[tep._roi_idx], axis=0) / max(tep.n, 1))
    r = tep.roi_average_uv
    ax.fill_between(t, r - sem, r + sem, color="C3", alpha=0.2, lw=0)
    ax.plot(t, r, color="C3", lw=1.8)
    for name, pk in tep.peaks().items():
        lo, hi = pk.get("window_ms", (np.nan, np.nan))
        ax.axvspan(lo, hi, color="C0" if name.startswith("N") else "C1", alpha=0.06)
        if pk.get("found"):
            ax.plot(pk["latency_ms"], pk["amplitude_uv"], "ko", ms=4)
            ax.annotate(f"{name}\n{pk['latency_ms']:.0f} ms\n{pk['amplitude_uv']:.1f} µV",
                        (pk["latency_ms"], pk["amplitude_uv"]), fontsize=7,
                        textcoords="offset points",
                        xytext=(0, -28 if name.startswith("N") else 8), ha="center")
    ax.axvline(0, color="k", lw=0.5)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvspan(-2, 10, color="0.9", zorder=-1)
    ax.set_xlim(max(t[0], -100), min(t[-1], 400))
    lim = _ylim_outside_pulse(np.vstack([r - sem, r + sem]), t)
    if lim is not None:
        ax.set_ylim(*lim)
    ax.set_xlabel("time after pulse (ms)")
    ax.set_ylabel("µV")
    ax.set_title("ROI TEP (mean ± SEM) with peaks (pulse window shaded; scale set outside it)")
    fig.tight_layout()
    return fig


def fig_early(tep, comparison_tep) -> "object":
    plt = _fig()
    fig, ax = plt.subplots(figsize=(9, 4))
    t = tep.times_ms
    m = (t >= -20) & (t <= 80)
    if comparison_tep is not None:
        ax.plot(t[m], comparison_tep.roi_average_uv[m], color="0.5", lw=1.2,
                label="without decay removal")
    ax.plot(t[m], tep.roi_average_uv[m], color="C3", lw=1.8, label="cleaned (decay removed)")
    ax.axvspan(15, 60, color="C2", alpha=0.07, label="early TEP 15-60 ms")
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("time after pulse (ms)")
    ax.set_ylabel("µV")
    ax.set_title("Early TEP at the ROI: is it buried in the decay artifact?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fig_single_trials(session) -> "object":
    plt = _fig()
    tep = session.tep
    kept = [trial for trial, p in zip(session.roi_trials_uv, session.pulses) if p["kept"]]
    fig, ax = plt.subplots(figsize=(9, 4))
    if kept:
        img = np.array(kept)
        t = tep.times_ms
        lim = np.nanpercentile(np.abs(img), 98) or 1.0
        im = ax.imshow(img, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                       extent=[t[0], t[-1], len(kept), 0], interpolation="nearest")
        fig.colorbar(im, ax=ax, label="µV")
        ax.set_xlim(max(t[0], -100), min(t[-1], 400))
    ax.set_xlabel("time after pulse (ms)")
    ax.set_ylabel("accepted epoch #")
    ax.set_title("Single trials at the ROI")
    fig.tight_layout()
    return fig


def fig_snr(session) -> "object":
    plt = _fig()
    tep = session.tep
    n, snr = tep.snr_history()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(n, snr, "o-", ms=3, color="C0", label="measured SNR (post/pre RMS, ROI)")
    if tep.n >= 2:
        grid = np.arange(1, max(int(n.max()) * 2, 10))
        ax.plot(grid, tep.predicted_snr(grid), color="C1", lw=1,
                label="predicted (1/√N noise model)")
    target = session.cfg.tep.target_snr
    ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target SNR {target:g}")
    need = tep.trials_needed(target)
    if np.isfinite(need):
        ax.axvline(need, color="C1", ls=":", lw=1, label=f"trials needed ≈ {need:.0f}")
    ax.set_xlabel("accepted epochs")
    ax.set_ylabel("SNR")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _summary_html(summary: dict) -> str:
    rows = [("pulses", summary["n_pulses"]), ("kept", summary["n_kept"]),
            ("rejected", f"{summary['n_rejected']} {summary['rejection_reasons']}"),
            ("coil site (from the artifact)", summary["coil_site"]),
            *([("cut window (ms)", _cut_window_text(summary["cut_window"]))]
              if summary.get("cut_window") else []),
            ("ROI", ", ".join(summary["roi"])),
            ("SNR", f"{summary['snr']:.2f}" if summary["snr"] is not None else "n/a"),
            (f"trials needed for SNR {summary['target_snr']:g}",
             f"{summary['trials_needed']:.0f}" if summary["trials_needed"] is not None
             else "n/a (no signal yet)"),
            ("bad channels", ", ".join(f"{k} ({v})" for k, v in summary["bad_channels"].items())
             or "none"),
            ("stages", " → ".join(summary["stages"])),
            ("config hash / version", f"{summary['config_hash']} / {summary['tmseeg_version']}")]
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    peaks = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(p.get('latency_ms'))}</td>"
        f"<td>{_fmt(p.get('amplitude_uv'))}</td><td>{'yes' if p.get('found') else 'no'}</td>"
        f"<td>{_fmt(p.get('gmfp_latency_ms'))}</td><td>{_fmt(p.get('gmfp_uv'))}</td></tr>"
        for name, p in summary["peaks"].items())
    return (f"<table class='table table-sm'>{body}</table>"
            "<h5>Peaks (ROI average; GMFP maxima in the same windows)</h5>"
            "<table class='table table-sm'><tr><th>peak</th><th>latency (ms)</th>"
            "<th>amplitude (µV)</th><th>found</th><th>GMFP latency (ms)</th>"
            f"<th>GMFP (µV)</th></tr>{peaks}</table>")


def _cut_window_text(cut: dict) -> str:
    """The cut window and why (measured on the first pulses, or fixed)."""
    win = cut.get("window_ms")
    head = f"[{win[0]:g}, {win[1]:g}]" if win else "not decided (no pulse)"
    return f"{head}: {cut.get('reason', '')}"


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.1f}"


def _rejected_html(pulses: list[dict]) -> str:
    rows = [p for p in pulses if not p["kept"]]
    if not rows:
        return "<p>No pulse was rejected.</p>"
    body = "".join(f"<tr><td>{p['pulse_index']}</td><td>{p['time_s']:.3f}</td>"
                   f"<td>{html.escape(p['reason'])}</td></tr>" for p in rows)
    return ("<table class='table table-sm'><tr><th>pulse</th><th>time (s)</th><th>reason</th>"
            f"</tr>{body}</table>")


def _figure_part(make, title: str, section: str = "TEP"):
    """A report part that adds the figure ``make()`` draws (nothing when it draws none)."""
    def add(report) -> None:
        fig = make()
        if fig is not None:
            report.add_figure(fig, title=title, section=section)
            _fig().close(fig)
    return add


def report_parts(session, summary: dict, comparison=None) -> list:
    """The report's sections in order, each a callable that adds its content to an
    :class:`mne.Report` (so that they can be drawn apart, :func:`write_report`)."""
    parts = [lambda r: r.add_html(_summary_html(summary), title="Summary", section="Summary")]
    tep = session.tep
    if tep is not None and tep.n > 0:
        comparison_tep = comparison.tep if comparison is not None else None
        parts += [
            _figure_part(lambda: fig_butterfly(tep), "Butterfly TEP and GMFP"),
            _figure_part(lambda: fig_roi_peaks(tep), "ROI TEP and peaks"),
            _figure_part(lambda: fig_early(tep, comparison_tep),
                         "Early TEP and the decay artifact"),
            _figure_part(lambda: fig_single_trials(session), "Single trials"),
            _figure_part(lambda: fig_snr(session), "SNR against trial count"),
            _figure_part(lambda: _fig_topomaps(session, summary),
                         "Topographies at the peaks"),
        ]
    # plug-ins add their own sections (tmseeg.metrics.base)
    parts += [metric.report for metric in session.metrics]
    cleaning = getattr(session.stages, "cleaning", None)
    if cleaning is not None:  # SOUND / SSP-SIR / ICA
        from tmseeg.pipeline.cleaning.report import add_cleaning_section
        parts.append(lambda r: add_cleaning_section(r, cleaning))
    parts.append(lambda r: r.add_html(_rejected_html(session.pulses), title="Rejected pulses",
                                      section="Pulses"))
    return parts


def write_report(session, summary: dict, path: Path, comparison=None,
                 processes: int = 2) -> None:
    """Build and save the HTML report of an analyzed session.

    Drawing the figures is most of the work (~0.1-0.6 s a section, matplotlib holding the
    interpreter lock); with ``processes=2`` a forked copy of this process draws sections
    beside this one (each takes the next one not yet taken), and the sections are put
    together in their order: the same file as one process writes. Where ``os.fork`` is
    missing this process draws everything; what a failed copy took is drawn here.
    """
    import mne

    title = f"tmseeg: {Path(summary['input']['file']).name}"
    parts = report_parts(session, summary, comparison)
    report = mne.Report(title=title, verbose="error")
    if processes > 1 and len(parts) > 1 and hasattr(os, "fork"):
        for content in _draw_in_two_processes(parts, title):
            report._content.extend(content)  # each section's elements, in order
    else:
        for part in parts:
            part(report)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.save(path, overwrite=True, open_browser=False, verbose="error")


def _draw(part, title: str) -> list:
    """One section, drawn into a report of its own: its content elements."""
    import mne

    report = mne.Report(title=title, verbose="error")
    part(report)
    return report._content


def _draw_in_two_processes(parts: list, title: str) -> list:
    """Every section's content elements, drawn by this process and a forked copy of it, each
    taking the next section not yet taken (the plug-ins' sections, the slowest, first); the
    copy's sections are redrawn here when it fails."""
    import multiprocessing

    _fig()  # matplotlib imported once, before the copy is made
    next_part = multiprocessing.Value("i", 0)  # shared with the copy
    order = list(range(len(parts)))[::-1]

    def draw_taken() -> dict:
        drawn = {}
        while True:
            with next_part.get_lock():
                k = next_part.value
                next_part.value = k + 1
            if k >= len(order):
                return drawn
            drawn[order[k]] = _draw(parts[order[k]], title)

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the copy: draw, send, leave without running the parent's exit handlers
        status = 1
        try:
            os.close(read_fd)
            with os.fdopen(write_fd, "wb") as pipe:
                pickle.dump(draw_taken(), pipe, protocol=pickle.HIGHEST_PROTOCOL)
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    pipe = os.fdopen(read_fd, "rb")
    status = -1
    try:
        ours = draw_taken()
        try:
            theirs = pickle.load(pipe)
        except Exception as err:  # the copy died before sending (out of memory, a crash)
            log.warning("report: the second drawing process failed (%s); drawing its "
                        "sections here", err)
            theirs = None
    finally:  # also when this process's own drawing failed: the copy is not left waiting
        pipe.close()
        _, status = os.waitpid(pid, 0)
    if theirs is None or status != 0:
        theirs = {}
    ours.update(theirs)
    for i in range(len(parts)):  # what the copy took and did not send
        if i not in ours:
            ours[i] = _draw(parts[i], title)
    return [ours[i] for i in range(len(parts))]


def _fig_topomaps(session, summary) -> "object | None":
    """Scalp maps of the average TEP at each found peak latency (needs known positions)."""
    import mne

    from tmseeg.report.analyze import evoked_to_mne

    try:
        evoked = evoked_to_mne(session, session.meta)
    except Exception:
        return None
    latencies = [(name, p["latency_ms"]) for name, p in summary["peaks"].items()
                 if p.get("found") and p.get("latency_ms") is not None]
    if not latencies or not any(np.isfinite(ch["loc"][:3]).all() and np.any(ch["loc"][:3])
                                for ch in evoked.info["chs"]):
        return None
    picks = [ch["ch_name"] for ch in evoked.info["chs"] if np.any(ch["loc"][:3])]
    evoked = evoked.copy().pick(picks)
    try:
        with mne.utils.use_log_level("error"):
            fig = evoked.plot_topomap(times=[lat / 1e3 for _, lat in latencies], ch_type="eeg",
                                      show=False, colorbar=True, time_unit="ms")
    except Exception:  # too few positioned channels for a map
        return None
    for ax, (name, _) in zip(fig.axes, latencies):
        ax.set_title(f"{name}\n{ax.get_title()}", fontsize=8)
    return fig
