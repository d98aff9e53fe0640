"""Pre-stimulus brain state per pulse (mu/alpha phase and power) and state-dependency of responses.

Method
------
Causal, from data before each pulse only: the processed continuous blocks (after pulse
interpolation, decay removal, bad-channel interpolation and the average reference) are reduced
to one signal by a spatial filter (:class:`~tmseeg.dsp.spatial.SpatialFilter`; default
``"auto"`` = ``"C3 Laplacian"`` when the stream has C3, the montage of EEG-triggered motor TMS,
Zrenner et al. 2018) and kept in a small ring buffer. For each pulse at sample ``s`` the
window of ``window_ms`` (500 ms) ending ``gap_ms`` (5 ms) before the pulse — clear of the
interpolated pulse window (-2 ms) and of marker jitter — goes to the
:class:`~tmseeg.dsp.phase.ARPhaseEstimator` (band-pass, Burg AR forward prediction,
Hilbert phase; Zrenner et al. 2018), which predicts the phase and envelope **at the pulse
sample** (``delay_ms = gap_ms``). Nothing at or after the pulse is read, so the estimate is the
one a closed-loop system could have had.

Per pulse (columns of ``pulses.csv`` and of the metrics stream):

``prestim_phase_rad``     phase at the pulse, (-pi, pi], 0 = peak of the filtered signal
``prestim_amplitude_uv``  envelope at the pulse (AR analytic signal)
``prestim_power_uv2``     mean square of the band-passed window (band power)
``prestim_phase_bin``     the phase bin's name

NaN when the window holds NaN (a gap), when another pulse falls inside it (trains, bursts: the
previous response is not "state"), or before enough data arrived.

State dependency (summary): early-TEP amplitude (``early_tep_ptp_uv``) and, if present, MEP
amplitude (``mep_ptp_uv``) of kept pulses, by phase bin (4 bins by default, centred on peak 0,
falling pi/2, trough pi, rising -pi/2) and by power tertile, with counts and means; plus a
cosine regression ``y = b0 + b1 cos(phi) + b2 sin(phi)`` giving the preferred phase
``atan2(b2, b1)``, the modulation depth ``sqrt(b1^2 + b2^2) / b0`` and the F-test p-value of the
two phase terms.

Caveat (measured on the simulator, ``tests/metrics/test_state.py``): the single-trial early-TEP
peak-to-peak (15-60 ms at the ROI) contains the ongoing mu rhythm itself, whose phase at the
pulse is what the pulses are binned by; that confound can dominate its phase dependency (a
simulated preference at the trough still showed up near the peak). MEPs carry no such
confound. Read the early-TEP phase summary with that in mind.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmseeg.dsp.phase import ARPhaseEstimator
from tmseeg.dsp.spatial import SpatialFilter
from tmseeg.metrics.base import MetricContext, SessionMetric
from tmseeg.sections import ConfigError, ConfigSection
from tmseeg.stream.ringbuffer import RingBuffer

log = logging.getLogger(__name__)

__all__ = ["phase_bin_edges", "phase_bin_index", "phase_modulation", "state_dependency",
           "StateMetric", "CONFIG_TOML", "make_metric", "COLUMNS"]

COLUMNS = ("prestim_phase_rad", "prestim_amplitude_uv", "prestim_power_uv2", "prestim_phase_bin")
_NAMES4 = ("peak", "falling", "trough", "rising")


def phase_bin_edges(n_bins: int = 4) -> tuple[np.ndarray, list[str]]:
    """Bin centres (rad) and names; bin ``k`` is centred on ``2 pi k / n`` (``k=0``: peak).

    With 4 bins the names are peak (0), falling (pi/2), trough (pi), rising (-pi/2).
    """
    if int(n_bins) < 2:
        raise ValueError(f"phase_bins={n_bins}: use at least 2 bins.")
    n = int(n_bins)
    centres = np.angle(np.exp(2j * np.pi * np.arange(n) / n))
    names = list(_NAMES4) if n == 4 else [f"{np.degrees(c):+.0f}deg" for c in centres]
    return centres, names


def phase_bin_index(phase_rad: np.ndarray, n_bins: int = 4) -> np.ndarray:
    """Index of the bin (see :func:`phase_bin_edges`) of each phase; -1 for NaN."""
    p = np.asarray(phase_rad, float)
    idx = np.full(p.shape, -1, dtype=np.intp)
    ok = np.isfinite(p)
    idx[ok] = np.round(np.mod(p[ok], 2 * np.pi) / (2 * np.pi / n_bins)).astype(np.intp) % n_bins
    return idx


def phase_modulation(phase_rad: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Cosine regression ``y = b0 + b1 cos(phi) + b2 sin(phi)`` (finite pairs only).

    Returns
    -------
    dict
        ``n``, ``preferred_phase_rad`` (``atan2(b2, b1)``), ``depth`` (``sqrt(b1^2+b2^2)/b0``),
        ``mean``, ``p_value`` (F-test of b1 = b2 = 0).
    """
    from scipy import stats

    phi = np.asarray(phase_rad, float)
    y = np.asarray(y, float)
    ok = np.isfinite(phi) & np.isfinite(y)
    n = int(ok.sum())
    out = {"n": n, "preferred_phase_rad": math.nan, "depth": math.nan,
           "mean": float(np.mean(y[ok])) if n else math.nan, "p_value": math.nan}
    if n < 6:
        return out
    a = np.c_[np.ones(n), np.cos(phi[ok]), np.sin(phi[ok])]
    b, *_ = np.linalg.lstsq(a, y[ok], rcond=None)
    rss1 = float(np.sum((y[ok] - a @ b) ** 2))
    rss0 = float(np.sum((y[ok] - y[ok].mean()) ** 2))
    f = ((rss0 - rss1) / 2) / (rss1 / (n - 3)) if rss1 > 0 else math.inf
    out.update(preferred_phase_rad=float(math.atan2(b[2], b[1])),
               depth=float(math.hypot(b[1], b[2]) / b[0]) if b[0] != 0 else math.nan,
               p_value=float(stats.f.sf(f, 2, n - 3)))
    return out


def state_dependency(phase_rad: np.ndarray, power_uv2: np.ndarray, y: np.ndarray,
                     n_bins: int = 4) -> dict[str, Any]:
    """Means and counts of a response by phase bin and by power tertile, and the cosine fit.

    Parameters
    ----------
    phase_rad, power_uv2, y : ndarray, shape (n_pulses,)
        Pre-stimulus phase and power, and the response (NaN = unknown).
    n_bins : int
        Phase bins.

    Returns
    -------
    dict
        ``by_phase`` {name: {n, centre_rad, mean, sem}}, ``by_power`` {low/mid/high: {n,
        power_min_uv2, power_max_uv2, mean, sem}}, ``phase_modulation``
        (:func:`phase_modulation`).
    """
    phase_rad, power_uv2, y = (np.asarray(v, float) for v in (phase_rad, power_uv2, y))
    centres, names = phase_bin_edges(n_bins)
    idx = phase_bin_index(phase_rad, n_bins)
    ok = np.isfinite(y)

    def stats_of(sel):
        v = y[sel & ok]
        return {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
                "sem": float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan}

    by_phase = {nm: {"centre_rad": float(c), **stats_of(idx == k)}
                for k, (c, nm) in enumerate(zip(centres, names))}
    by_power: dict[str, Any] = {}
    pw_ok = np.isfinite(power_uv2) & ok
    if pw_ok.sum() >= 3:
        edges = np.quantile(power_uv2[pw_ok], [1 / 3, 2 / 3])
        tert = np.digitize(power_uv2, edges)
        for k, nm in enumerate(("low", "mid", "high")):
            sel = pw_ok & (tert == k)
            by_power[nm] = {"power_min_uv2": float(power_uv2[sel].min()) if sel.any() else None,
                            "power_max_uv2": float(power_uv2[sel].max()) if sel.any() else None,
                            **stats_of(sel)}
    return {"by_phase": by_phase, "by_power": by_power,
            "phase_modulation": phase_modulation(phase_rad, y)}


# -- session plug-in (tmseeg.metrics.base) ------------------------------------------------------

CONFIG_TOML = """\
[state]
# pre-stimulus mu/alpha phase and power per pulse, estimated causally from the data before it
# (AR forward prediction, Zrenner et al. 2018), and TEP/MEP size by phase bin and power tertile
enabled = true
spatial_filter = "auto"     # "auto" (= "C3 Laplacian" if the stream has C3), "C3", "C4 Laplacian"
band_hz = [8.0, 13.0]
window_ms = 500.0           # data read per estimate ...
gap_ms = 5.0                # ... ending this long before the pulse (phase predicted to the pulse)
ar_order = 30
edge_ms = 64.0
downsample_hz = 500.0
phase_bins = 4              # 4: peak, falling, trough, rising
"""


@dataclass(frozen=True)
class StateConfig(ConfigSection):
    """``[state]``: pre-stimulus phase and power against the response (see ``CONFIG_TOML``)."""
    SECTION = "state"

    enabled: bool
    spatial_filter: str
    band_hz: list[float]
    window_ms: float
    gap_ms: float
    ar_order: int
    edge_ms: float
    downsample_hz: float
    phase_bins: int

    def validate(self) -> None:
        if not 0 <= self.gap_ms <= 100:
            raise ConfigError(f"state.gap_ms={self.gap_ms}: use 0-100 ms (the window must end "
                              "before the pulse window, usually >= 2 ms before the pulse).")
        if self.phase_bins < 2:
            raise ConfigError(f"state.phase_bins={self.phase_bins}: use at least 2 bins.")


#: this plug-in's section of the configuration
CONFIG_SECTION = StateConfig


class StateMetric(SessionMetric):
    """Session plug-in: pre-stimulus phase/power per pulse and the state-dependency summary.

    Parameters
    ----------
    section : dict
        The ``[state]`` configuration section.
    spatial : SpatialFilter
        Reduces the stream to the one signal whose state is estimated.
    sfreq : float
        Stream rate (Hz).
    """

    name = "state"
    columns = ("prestim_phase_rad", "prestim_phase_bin", "prestim_amplitude_uv",
               "prestim_power_uv2")
    after = ("mep",)  # reads mep_ptp_uv

    def __init__(self, section: StateConfig, spatial: SpatialFilter, sfreq: float) -> None:
        self.cfg = section
        self.spatial = spatial
        self.sfreq = float(sfreq)
        g = float(section.gap_ms)  # 0-100 ms: StateConfig checked it
        self.estimator = ARPhaseEstimator(self.sfreq, band_hz=tuple(section.band_hz),
                                          window_ms=float(section.window_ms),
                                          ar_order=int(section.ar_order),
                                          edge_ms=float(section.edge_ms),
                                          downsample_hz=float(section.downsample_hz))
        self.gap = int(round(g * self.sfreq / 1000.0))
        self.n_win = self.estimator.n_samples_needed
        self.cap = self.n_win + self.gap + int(10 * self.sfreq)
        self._buf = RingBuffer(1, self.cap)  # the spatially filtered signal
        self._pending: list[int] = []
        self._seen: set[int] = set()
        self._pulses: list[int] = []
        self._est: dict[int, dict] = {}
        self.n_bins = int(section.phase_bins)
        self.centres, self.bin_names = phase_bin_edges(self.n_bins)
        self._rows: list[tuple[float, float, float, float, float]] = []
        self.n_not_estimated: dict[str, int] = {}
        self._cache: tuple[int, dict] | None = None

    @property
    def _written(self) -> int:
        """Absolute samples written (the next sample's index)."""
        return self._buf.n_written

    def _write(self, first: int, y: np.ndarray) -> None:
        """Append ``y`` starting at absolute sample ``first`` (gap: NaN; overlap: dropped)."""
        self._buf.write_gap(first - self._written)
        if first < self._written:
            y = y[self._written - first:]
        self._buf.write(y[None, :])

    # -- hooks --------------------------------------------------------------------------------
    def on_block(self, block) -> None:
        """Filter and buffer the block; estimate the state of pulses whose window is complete."""
        if block.n_samples:
            self._write(block.first_sample, self.spatial.apply(block.data))
        for ev in block.pulses():
            s = int(ev.sample)
            if s not in self._seen:
                self._seen.add(s)
                self._pending.append(s)
                self._pulses.append(s)
        keep = []
        for s in sorted(self._pending):
            if s - self.gap <= self._written:
                self._est[s] = self._estimate(s)
            else:
                keep.append(s)
        self._pending = keep

    def _nan(self, why: str) -> dict:
        self.n_not_estimated[why] = self.n_not_estimated.get(why, 0) + 1
        return {"prestim_phase_rad": math.nan, "prestim_amplitude_uv": math.nan,
                "prestim_power_uv2": math.nan, "prestim_phase_bin": ""}

    def _estimate(self, s: int) -> dict:
        end = s - self.gap  # one past the newest sample read
        start = end - self.n_win
        if start < 0:
            return self._nan("not enough data before the pulse")
        if start < self._buf.first_available:
            return self._nan("pulse event arrived too late (window overwritten)")
        if any(start - self.gap <= p < s for p in self._pulses[-16:]):
            return self._nan("another pulse inside the window")
        w = self._buf.read(start, end)[0]
        if not np.isfinite(w).all():
            return self._nan("NaN in the window (gap)")
        e = self.estimator.estimate(w, delay_ms=(s - (end - 1)) * 1000.0 / self.sfreq)
        k = int(phase_bin_index(np.array([e.phase_rad]), self.n_bins)[0])
        return {"prestim_phase_rad": float(e.phase_rad), "prestim_amplitude_uv": float(e.amplitude_uv),
                "prestim_power_uv2": float(e.power_uv2),
                "prestim_phase_bin": self.bin_names[k] if k >= 0 else ""}

    def on_epoch(self, epoch, row: dict) -> None:
        """Add the pulse's state columns to its row; remember it for the summary."""
        s = int(epoch.sample)
        est = self._est.pop(s, None)
        if est is None:  # the epoch came before the window was complete: cannot happen live
            est = self._estimate(s) if s - self.gap <= self._written else self._nan("no data")
        row.update(est)
        mep = row.get("mep_ptp_uv", math.nan)
        self._rows.append((est["prestim_phase_rad"], est["prestim_power_uv2"],
                           float(row.get("early_tep_ptp_uv", math.nan)) if row.get("kept")
                           else math.nan,
                           float(mep) if mep is not None else math.nan,
                           est["prestim_amplitude_uv"]))
        self._cache = None

    def arrays(self) -> dict[str, np.ndarray]:
        """Per pulse so far: ``phase_rad``, ``power_uv2``, ``early_tep_ptp_uv`` (NaN when
        rejected), ``mep_ptp_uv``, ``amplitude_uv``."""
        a = np.array(self._rows, float).reshape(-1, 5)
        return {"phase_rad": a[:, 0], "power_uv2": a[:, 1], "early_tep_ptp_uv": a[:, 2],
                "mep_ptp_uv": a[:, 3], "amplitude_uv": a[:, 4]}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: spatial filter, counts, state dependency of the early TEP (and MEP)."""
        n = len(self._rows)
        if self._cache is not None and self._cache[0] == n:
            return self._cache[1]
        a = self.arrays()
        out: dict[str, Any] = {
            "spatial_filter": {k: float(v) for k, v in self.spatial.weights.items()},
            "band_hz": list(self.cfg.band_hz), "n_pulses": n,
            "n_estimated": int(np.isfinite(a["phase_rad"]).sum()),
            "not_estimated": dict(self.n_not_estimated),
            "early_tep": state_dependency(a["phase_rad"], a["power_uv2"],
                                          a["early_tep_ptp_uv"], self.n_bins),
        }
        if np.isfinite(a["mep_ptp_uv"]).any():
            out["mep"] = state_dependency(a["phase_rad"], a["power_uv2"], a["mep_ptp_uv"],
                                          self.n_bins)
        self._cache = (n, out)
        return out

    def report(self, report) -> None:
        """Polar bars of the mean early TEP by phase bin, and bars by power tertile."""
        import matplotlib.pyplot as plt

        s = self.summary()
        if not s["n_estimated"]:
            return
        keys = ["early_tep"] + (["mep"] if "mep" in s else [])
        fig = plt.figure(figsize=(5.5 * len(keys), 8))
        for j, key in enumerate(keys):
            dep = s[key]
            ax = fig.add_subplot(2, len(keys), 1 + j, projection="polar")
            cs = [v["centre_rad"] for v in dep["by_phase"].values()]
            ms = [v["mean"] for v in dep["by_phase"].values()]
            ax.bar(cs, np.nan_to_num(ms), width=2 * np.pi / self.n_bins * 0.9, alpha=0.7)
            for c, (nm, v) in zip(cs, dep["by_phase"].items()):
                ax.text(c, np.nanmax(ms) * 1.1 if np.isfinite(ms).any() else 1,
                        f"{nm}\nn={v['n']}", ha="center", fontsize=8)
            pm = dep["phase_modulation"]
            ax.set_title(f"{key} by pre-stimulus phase\npreferred "
                         f"{np.degrees(pm['preferred_phase_rad']):.0f} deg, depth "
                         f"{pm['depth']:.2f}, p={pm['p_value']:.2g}", fontsize=9)
            ax2 = fig.add_subplot(2, len(keys), 1 + len(keys) + j)
            bp = dep["by_power"]
            ax2.bar(list(bp), [np.nan_to_num(v["mean"]) for v in bp.values()],
                    yerr=[np.nan_to_num(v["sem"]) for v in bp.values()])
            ax2.set_xlabel("pre-stimulus band power tertile")
            ax2.set_ylabel(f"mean {key} (µV)")
        fig.tight_layout()
        report.add_figure(fig, title=f"Pre-stimulus state ({self.spatial!r}, "
                          f"{s['band_hz'][0]:g}-{s['band_hz'][1]:g} Hz)", section="State")
        plt.close(fig)


def make_metric(cfg: ConfigSection, context: MetricContext) -> StateMetric | None:
    """The state plug-in; None when disabled, or when ``"auto"`` finds no C3 Laplacian."""
    section = cfg.state
    if not section.enabled:
        return None
    meta = context.meta
    spec = section.spatial_filter
    if spec == "auto":
        if "c3" not in {n.lower() for n in meta.ch_names}:
            log.info("state: no C3 in the stream; set [state] spatial_filter to use it")
            return None
        try:
            spatial = SpatialFilter.from_spec("C3 Laplacian", meta.ch_names)
        except ValueError as err:
            log.info("state: no C3 Laplacian (%s); set [state] spatial_filter", err)
            return None
    else:
        try:
            spatial = SpatialFilter.from_spec(spec, meta.ch_names)
        except ValueError as err:
            raise ValueError(f"[state] spatial_filter = {spec!r}: {err} Fix the setting, or "
                             "set [state] enabled = false.") from err
    return StateMetric(section, spatial, meta.sfreq)
