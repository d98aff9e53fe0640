"""The cleaning section of ``report.html``: what was removed, why, and what it looked like."""
from __future__ import annotations

import html

import numpy as np

__all__ = ["add_cleaning_section"]


def _info(ch_names):
    import mne

    from tmseeg.stream.montage import standard_montage

    info = mne.create_info(list(ch_names), 1000.0, "eeg")
    info.set_montage(standard_montage(), match_case=False, on_missing="ignore", verbose=False)
    return info


def _fig_component(info, topo, t_ms, avg, freqs, psd, title, reason):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import mne

    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    try:
        mne.viz.plot_topomap(topo, info, axes=axes[0], show=False)
    except Exception:  # too few positioned channels
        axes[0].bar(np.arange(topo.size), topo)
    axes[0].set_title(title, fontsize=9)
    m = (t_ms >= -100) & (t_ms <= 300)
    axes[1].plot(t_ms[m], avg[m], color="C3")
    axes[1].axvspan(11, 30, color="C1", alpha=0.1)
    axes[1].set_xlabel("ms after pulse")
    axes[1].set_title("epoch average", fontsize=9)
    if freqs is not None:
        f = (freqs > 0) & (freqs <= 150)
        axes[2].loglog(freqs[f], psd[f])
        axes[2].axvspan(7, 70, color="C2", alpha=0.1)
        axes[2].set_xlabel("Hz")
        axes[2].set_title("spectrum", fontsize=9)
    else:
        axes[2].axis("off")
    fig.suptitle(reason, fontsize=8)
    fig.tight_layout()
    return fig


def add_cleaning_section(report, stage, max_components: int = 20) -> None:
    """Add the ``Cleaning`` section for a fitted :class:`~.stage.ArtifactCleaning`."""
    import matplotlib.pyplot as plt

    summ = stage.summary()
    rows = [("status", summ["status"]), ("methods (in order)", " → ".join(summ["methods"])),
            ("fits", summ["n_fits"]), ("epochs fitted on", summ.get("n_epochs_fitted", "-"))]
    if "sound" in summ:
        sd = {k: v for k, v in summ["sound"]["noise_sd_uv"].items() if v is not None}
        med = np.median(list(sd.values())) if sd else np.nan
        worst = sorted(sd.items(), key=lambda kv: -kv[1])[:5]
        rows.append(("SOUND noise SD (median; largest)",
                     f"{med:.1f} µV; " + ", ".join(f"{k} {v:.1f}" for k, v in worst)
                     + f" ({summ['sound']['n_iter']} iterations, converged: "
                       f"{summ['sound']['converged']})"))
    for key in ("sspsir", "sspsir_control"):
        if key in summ:
            s = summ[key]
            rows.append((f"{key}: dimensions removed",
                         f"{s['n_components']} (explained % {np.round(s['explained_pct'], 1).tolist()}, "
                         f"early/baseline power {s['power_ratio']})"))
    if "ica" in summ:
        rem = summ["ica"]["removed"]
        rows.append(("ICA components removed", f"{len(rem)} of {summ['ica']['n_components']}"))
        rows += [(f"  IC {c['index']} ({c['label']})", c["reason"]) for c in rem]
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    report.add_html(f"<table class='table table-sm'>{body}</table>", title="Cleaning summary",
                    section="Cleaning")
    f = stage.filter
    if f is None:
        return
    info = _info(stage.ch_names)
    for key in ("sspsir", "sspsir_control"):
        r = f.results.get(key)
        if r is None or r.n_components == 0:
            continue
        for k in range(r.n_components):
            fig = _fig_component(info, r.topographies[:, k], np.asarray(stage.times_ms),
                                 np.zeros(len(stage.times_ms)), None, None,
                                 f"{key} dimension {k}", f"{key}: removed dimension {k}, "
                                 f"{r.explained_pct[k]:.1f} % of the variance")
            report.add_figure(fig, title=f"{key} artifact topography {k}", section="Cleaning")
            plt.close(fig)
    r = f.results.get("ica")
    if r is not None:
        show = [c for c in r.labels if c.removed] + [c for c in r.labels if not c.removed]
        for c in show[:max_components]:
            fig = _fig_component(info, r.mixing[:, c.index], r.times_ms,
                                 r.average_sources[c.index], r.freqs_hz, r.spectra[c.index],
                                 f"IC {c.index}: {c.label}" + (" (removed)" if c.removed else ""),
                                 c.reason)
            report.add_figure(fig, title=f"IC {c.index} ({c.label})", section="Cleaning")
            plt.close(fig)
