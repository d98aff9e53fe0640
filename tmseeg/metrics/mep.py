"""Motor-evoked potentials: single-trial measures, a running tracker, motor threshold and I/O curve.

Single trials
    :func:`measure_mep` reads one EMG trace locked to the pulse: peak-to-peak amplitude in a
    post-stimulus window, onset latency, latencies of the two extrema, and the background EMG
    before the pulse (pre-innervation check). The pulse artifact on the EMG (a few ms of
    ringing from the stimulator) is never looked at: the response window must start after
    ``artifact_ms`` and the pre-window ends before the pulse.
Running
    :class:`MEPTracker` keeps one row per pulse (for ``pulses.csv``) and running summaries, in
    the accumulate-per-epoch / finalize-cheaply pattern of :class:`~tmseeg.metrics.tep.RunningTEP`.
Motor threshold, input-output curve, hotspot map
    From the rows' amplitudes, in :mod:`tmseeg.metrics.motor`; the session plug-in
    (:class:`MEPMetric`) reports them live.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from tmseeg.metrics.base import MetricContext, SessionMetric
from tmseeg.metrics.motor import (fit_recruitment_curve, hotspot_map, motor_threshold_ml,
                                  motor_threshold_relative_frequency)
from tmseeg.sections import ConfigSection
from tmseeg.stream.pulseinfo import pulse_info
from tmseeg.utils import jsonable

__all__ = ["MEPMeasure", "measure_mep", "MEPTracker", "pulse_site", "MEPMetric", "CONFIG_TOML",
           "make_metric"]


# ----------------------------------------------------------------------------------------------
# Single trial

@dataclass
class MEPMeasure:
    """What :func:`measure_mep` found in one EMG trace.

    Attributes
    ----------
    ptp_uv : float
        Peak-to-peak amplitude in the response window (NaN if the window is not finite).
    latency_ms : float
        Onset latency (see :func:`measure_mep`); NaN when no MEP is present.
    max_latency_ms, min_latency_ms : float
        Latencies of the maximum and the minimum inside the response window.
    pre_rms_uv : float
        RMS of the baseline-removed EMG in the pre-window (background activity).
    pre_ptp_uv : float
        Peak-to-peak in the pre-window.
    present : bool
        ``ptp_uv >= min_ptp_uv`` (an MEP in the sense of the motor-threshold criterion).
    preinnervated : bool
        Background EMG above the pre-innervation limit.
    rejected : bool
        True if the trial must not enter averages or threshold estimates.
    reason : str
        Why it was rejected (empty if not).
    """

    ptp_uv: float
    latency_ms: float
    max_latency_ms: float
    min_latency_ms: float
    pre_rms_uv: float
    pre_ptp_uv: float
    present: bool
    preinnervated: bool
    rejected: bool
    reason: str = ""


def _mask(times_ms: np.ndarray, win: tuple[float, float]) -> np.ndarray:
    return (times_ms >= win[0]) & (times_ms <= win[1])


def measure_mep(
    emg_uv: np.ndarray,
    times_ms: np.ndarray,
    window_ms: tuple[float, float] = (15.0, 50.0),
    pre_window_ms: tuple[float, float] = (-100.0, -5.0),
    preinnervation_rms_uv: float = 15.0,
    preinnervation_ptp_uv: float | None = None,
    min_ptp_uv: float = 50.0,
    onset_sd: float = 5.0,
    onset_min_uv: float = 10.0,
    artifact_ms: float = 10.0,
) -> MEPMeasure:
    """Measure the MEP in one pulse-locked EMG trace.

    Parameters
    ----------
    emg_uv : ndarray, shape (n_times,)
        EMG in µV (any offset: the pre-window mean is removed).
    times_ms : ndarray, shape (n_times,)
        Time of each sample relative to the pulse, increasing.
    window_ms : (float, float)
        Response window (default 15-50 ms: covers hand-muscle MEPs, onset ~20-25 ms, with room
        for taller subjects and the later, larger lobes; use e.g. 25-70 ms for leg muscles).
    pre_window_ms : (float, float)
        Background window (default -100 .. -5 ms, clear of the pulse artifact).
    preinnervation_rms_uv : float
        Pre-innervation limit on the background RMS (default 15 µV). Relaxed FDI/APB EMG has a
        few µV RMS of amplifier noise; voluntary activity raises it to tens of µV. Published
        limits range from 10 to 20 µV RMS (or 50 µV peak-to-peak), so the default sits in the
        middle. ``math.inf`` disables the test.
    preinnervation_ptp_uv : float or None
        Optional additional limit on the background peak-to-peak (e.g. 50 µV). Off by default
        because a single spike of line noise or residual artifact can exceed it.
    min_ptp_uv : float
        Amplitude that counts as an MEP (default 50 µV, the motor-threshold criterion of
        Rossini et al., 2015).
    onset_sd, onset_min_uv : float
        Onset threshold: ``max(onset_sd x SD_pre, onset_min_uv)`` on ``|emg - mean_pre|``
        (defaults 5 SD, 10 µV floor so a very quiet baseline does not make the detector fire on
        quantisation noise).
    artifact_ms : float
        End of the stimulator artifact on the EMG (default 10 ms); ``window_ms`` must not start
        before it.

    Returns
    -------
    MEPMeasure

    Notes
    -----
    **Onset latency.** The first sample in the response window whose deviation from the
    pre-window mean exceeds the onset threshold is found; the onset is then moved back to the
    last preceding sample (not before the window start) whose deviation was still within
    ``1 SD_pre`` (or ``onset_min_uv / 5``, whichever is larger) of the baseline, i.e. where the
    response visibly left the noise. Without that backtracking a threshold crossing lags the
    true onset by the rise time to the threshold, which is longer for small MEPs. The onset is
    reported only when an MEP is present (``ptp_uv >= min_ptp_uv``).

    Rejection reasons: ``"non-finite EMG ..."`` (NaN in either window) and
    ``"pre-innervation: ..."``. A trial without an MEP is *not* rejected (``present`` is False):
    it is a valid outcome for threshold estimation.
    """
    x = np.asarray(emg_uv, dtype=np.float64)
    t = np.asarray(times_ms, dtype=np.float64)
    if x.ndim != 1 or t.shape != x.shape:
        raise ValueError(f"measure_mep: emg_uv {x.shape} and times_ms {t.shape} must be 1-D of the "
                         "same length (one EMG channel of one epoch).")
    if not window_ms[0] < window_ms[1] or not pre_window_ms[0] < pre_window_ms[1]:
        raise ValueError(f"measure_mep: windows must be (start, stop) with start < stop, got "
                         f"window_ms={window_ms}, pre_window_ms={pre_window_ms}.")
    if window_ms[0] < artifact_ms:
        raise ValueError(f"measure_mep: window_ms starts at {window_ms[0]} ms, inside the pulse "
                         f"artifact (0-{artifact_ms} ms); start the window at >= artifact_ms, or "
                         "lower artifact_ms if your EMG artifact is shorter.")
    if pre_window_ms[1] > 0:
        raise ValueError(f"measure_mep: pre_window_ms={pre_window_ms} must end before the pulse "
                         "(<= 0 ms), e.g. (-100, -5).")
    win, pre = _mask(t, window_ms), _mask(t, pre_window_ms)
    if win.sum() < 3 or pre.sum() < 3:
        raise ValueError(f"measure_mep: the epoch ({t[0]:.1f} .. {t[-1]:.1f} ms) does not cover "
                         f"window_ms={window_ms} and pre_window_ms={pre_window_ms}; cut longer "
                         "epochs or move the windows.")
    xw, xp = x[win], x[pre]
    nan = math.nan
    if not (np.isfinite(xw).all() and np.isfinite(xp).all()):
        return MEPMeasure(nan, nan, nan, nan, nan, nan, False, False, True,
                          "non-finite EMG in the response or pre-window (stream gap?)")
    base = float(xp.mean())
    dp = xp - base
    sd = float(dp.std())
    pre_rms = float(np.sqrt(np.mean(dp * dp)))
    pre_ptp = float(xp.max() - xp.min())
    i_max, i_min = int(np.argmax(xw)), int(np.argmin(xw))
    ptp = float(xw[i_max] - xw[i_min])
    tw = t[win]
    present = ptp >= min_ptp_uv
    latency = nan
    if present:
        dev = np.abs(xw - base)
        thr = max(onset_sd * sd, onset_min_uv)
        above = np.flatnonzero(dev > thr)
        if above.size:
            c = int(above[0])
            quiet = max(sd, onset_min_uv / 5.0)
            below = np.flatnonzero(dev[:c] <= quiet)
            c = int(below[-1]) + 1 if below.size else 0
            latency = float(tw[min(c, dev.size - 1)])
    pre_bad = pre_rms > preinnervation_rms_uv or (
        preinnervation_ptp_uv is not None and pre_ptp > preinnervation_ptp_uv)
    reason = ""
    if pre_bad:
        reason = (f"pre-innervation: background {pre_rms:.1f} µV RMS / {pre_ptp:.0f} µV ptp in "
                  f"{pre_window_ms[0]:g}..{pre_window_ms[1]:g} ms (limit "
                  f"{preinnervation_rms_uv:g} µV RMS"
                  + (f", {preinnervation_ptp_uv:g} µV ptp" if preinnervation_ptp_uv else "") + ")")
    return MEPMeasure(ptp_uv=ptp, latency_ms=latency, max_latency_ms=float(tw[i_max]),
                      min_latency_ms=float(tw[i_min]), pre_rms_uv=pre_rms, pre_ptp_uv=pre_ptp,
                      present=bool(present), preinnervated=bool(pre_bad), rejected=bool(pre_bad),
                      reason=reason)


# ----------------------------------------------------------------------------------------------
# Running tracker

class MEPTracker:
    """One row per pulse and running MEP summaries.

    Parameters
    ----------
    channel : str or None
        EMG channel to read from an :class:`~tmseeg.pipeline.epochs.Epoch` (case-insensitive);
        ``None``: the epoch must have exactly one row, or one whose name starts with ``"EMG"``.
    **measure_kw
        Passed to :func:`measure_mep` (windows, limits).

    Notes
    -----
    Epochs for the tracker come from an :class:`~tmseeg.pipeline.epochs.Epocher` with
    ``picks="emg"`` and ``reject_uv=None``: an amplitude limit meant for EEG would reject every
    real MEP. The epocher's own ``rejected`` flag is therefore ignored except for missing data,
    which :func:`measure_mep` detects itself. Each :meth:`add` costs O(n_times); summaries are
    O(1) except the median, O(n accepted).
    """

    columns = ("pulse_index", "sample", "intensity_pct", "mep_ptp_uv", "mep_latency_ms",
               "mep_present", "mep_pre_rms_uv", "mep_preinnervated", "mep_rejected",
               "mep_reason", "mep_site")

    def __init__(self, channel: str | None = None, **measure_kw: Any) -> None:
        self.channel = channel
        self.measure_kw = dict(measure_kw)
        self.reset()

    def reset(self) -> None:
        """Forget all pulses."""
        self.rows: list[dict] = []
        self._acc: list[float] = []
        self._sum = 0.0
        self._n_present = 0

    def _pick(self, epoch) -> np.ndarray:
        names = [n.lower() for n in epoch.ch_names]
        if self.channel is not None:
            if self.channel.lower() not in names:
                raise KeyError(f"MEPTracker: EMG channel {self.channel!r} not in the epoch "
                               f"({', '.join(epoch.ch_names)}); pass channel=<name>.")
            return epoch.data_uv[names.index(self.channel.lower())]
        if epoch.data_uv.shape[0] == 1:
            return epoch.data_uv[0]
        emg = [i for i, n in enumerate(names) if n.startswith("emg")]
        if len(emg) != 1:
            raise ValueError(f"MEPTracker: cannot tell which of {', '.join(epoch.ch_names)} is the "
                             "EMG; pass channel=<name> (or cut EMG epochs with picks='emg').")
        return epoch.data_uv[emg[0]]

    def add(self, epoch=None, *, emg_uv: np.ndarray | None = None,
            times_ms: np.ndarray | None = None, intensity_pct: float | None = None,
            sample: int | None = None) -> MEPMeasure:
        """Measure one pulse and append its row.

        Parameters
        ----------
        epoch : Epoch, optional
            A pulse-locked epoch holding the EMG channel; its pulse metadata's
            ``intensity_pct`` (:mod:`tmseeg.stream.pulseinfo`) gives the intensity when ``intensity_pct`` is not passed.
        emg_uv, times_ms : ndarray, optional
            Alternatively the bare EMG trace and its time axis (ms from the pulse).
        intensity_pct : float, optional
            Stimulator output (% MSO); NaN if unknown.
        sample : int, optional
            Absolute pulse sample (taken from the epoch when given).

        Returns
        -------
        MEPMeasure
        """
        if epoch is not None:
            emg_uv = self._pick(epoch)
            times_ms = epoch.times_ms
            if intensity_pct is None:  # the pulse's metadata (table, pattern, JSON marker)
                intensity_pct = pulse_info(epoch.event).get(
                    "intensity_pct", epoch.event.extra.get("intensity_pct"))
            if sample is None:
                sample = int(epoch.sample)
        if emg_uv is None or times_ms is None:
            raise ValueError("MEPTracker.add: give an epoch, or emg_uv= and times_ms=.")
        m = measure_mep(emg_uv, times_ms, **self.measure_kw)
        inten = math.nan if intensity_pct is None else float(intensity_pct)
        site = pulse_site(pulse_info(epoch.event)) if epoch is not None else ""
        self.rows.append({
            "pulse_index": len(self.rows), "sample": -1 if sample is None else int(sample),
            "intensity_pct": inten, "mep_ptp_uv": m.ptp_uv, "mep_latency_ms": m.latency_ms,
            "mep_present": m.present, "mep_pre_rms_uv": m.pre_rms_uv,
            "mep_preinnervated": m.preinnervated, "mep_rejected": m.rejected,
            "mep_reason": m.reason, "mep_site": site})
        if not m.rejected:
            self._acc.append(m.ptp_uv)
            self._sum += m.ptp_uv
            self._n_present += int(m.present)
        return m

    @property
    def n_pulses(self) -> int:
        return len(self.rows)

    @property
    def n_accepted(self) -> int:
        return len(self._acc)

    @property
    def mean_ptp_uv(self) -> float:
        """Mean peak-to-peak of accepted trials (including those below ``min_ptp_uv``)."""
        return self._sum / len(self._acc) if self._acc else math.nan

    @property
    def median_ptp_uv(self) -> float:
        """Median peak-to-peak of accepted trials (robust to the skew of MEP amplitudes)."""
        return float(np.median(self._acc)) if self._acc else math.nan

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Intensity and amplitude of accepted trials with a known intensity (for MT / I/O fits)."""
        r = [(row["intensity_pct"], row["mep_ptp_uv"]) for row in self.rows
             if not row["mep_rejected"] and math.isfinite(row["intensity_pct"])]
        if not r:
            return np.empty(0), np.empty(0)
        a = np.array(r)
        return a[:, 0], a[:, 1]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no NaN: missing values are ``None``)."""
        lat = [r["mep_latency_ms"] for r in self.rows
               if not r["mep_rejected"] and math.isfinite(r["mep_latency_ms"])]
        out: dict[str, Any] = {
            "n_pulses": self.n_pulses,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_pulses - self.n_accepted,
            "n_preinnervated": sum(1 for r in self.rows if r["mep_preinnervated"]),
            "n_present": self._n_present,
            "mean_ptp_uv": jsonable(self.mean_ptp_uv),
            "median_ptp_uv": jsonable(self.median_ptp_uv),
            "median_latency_ms": jsonable(float(np.median(lat)) if lat else math.nan),
        }
        return out


# ----------------------------------------------------------------------------------------------
# Where a pulse was given (its site for the hotspot map)

#: pulse metadata naming the stimulated site: a label, else the coil position (mm)
SITE_KEY = "site"
COIL_POSITION_KEYS = (("coil_x_mm", "coil_y_mm", "coil_z_mm"), ("x_mm", "y_mm", "z_mm"))


def pulse_site(info: dict) -> str:
    """The site a pulse was given at, from its metadata: the ``site`` label, else its coil
    position (``coil_x_mm``, ``coil_y_mm`` [, ``coil_z_mm``], or ``x_mm`` ...) as text
    (:func:`position_sites` groups positions into sites); "" when neither is known."""
    if info.get(SITE_KEY) not in (None, ""):
        return str(info[SITE_KEY])
    for keys in COIL_POSITION_KEYS:
        xyz = [info.get(k) for k in keys]
        if all(isinstance(v, float) and math.isfinite(v) for v in xyz[:2]):
            return "@" + ",".join(repr(v) for v in xyz if isinstance(v, float)
                                  and math.isfinite(v))
    return ""


# -- session plug-in (tmseeg.metrics.base) -----------------------------------------------------

CONFIG_TOML = """\
[mep]
enabled = true
channel = ""                    # EMG channel; "" = the stream's EMG-type channel (if exactly one)
window_ms = [15.0, 50.0]        # where the MEP is measured
pre_window_ms = [-100.0, -5.0]  # background EMG (pre-innervation check)
preinnervation_rms_uv = 15.0    # background RMS above this: trial flagged pre-innervated
min_ptp_uv = 50.0               # an MEP is present when its peak-to-peak reaches this
criterion_uv = 50.0             # motor threshold criterion (Rossini et al.)
"""


@dataclass(frozen=True)
class MepConfig(ConfigSection):
    """``[mep]``: motor evoked potentials on the EMG channel (see ``CONFIG_TOML``)."""
    SECTION = "mep"

    enabled: bool
    channel: str
    window_ms: list[float]
    pre_window_ms: list[float]
    preinnervation_rms_uv: float
    min_ptp_uv: float
    criterion_uv: float

    def validate(self) -> None:
        for key in ("window_ms", "pre_window_ms"):
            self.check_window(key)


#: this plug-in's section of the configuration
CONFIG_SECTION = MepConfig


class MEPMetric(SessionMetric):
    """MEPs from the EMG channel, one row per pulse, with motor-threshold estimates.

    EMG epochs (-150..+100 ms, no amplitude rejection) are cut by an epocher of their own from
    the processed blocks (EMG passes the EEG stages untouched); each EEG epoch's row then gets
    the MEP columns of the same pulse.
    """

    name = "mep"
    columns = tuple(k for k in MEPTracker.columns if k.startswith("mep_") or k == "intensity_pct")

    def __init__(self, section: MepConfig, channel: str, sfreq: float) -> None:
        from tmseeg.pipeline.epochs import Epocher

        self.cfg = section
        self.channel = channel
        self.epocher = Epocher(tmin_ms=-150.0, tmax_ms=100.0, baseline_ms=None, reject_uv=None,
                               picks=[channel], max_delay_s=10.0)
        self.tracker = MEPTracker(channel=channel, window_ms=tuple(section.window_ms),
                                  pre_window_ms=tuple(section.pre_window_ms),
                                  preinnervation_rms_uv=section.preinnervation_rms_uv,
                                  min_ptp_uv=section.min_ptp_uv)
        self._by_sample: dict[int, dict] = {}
        self._mt_cache: tuple[int, dict] | None = None
        #: called as ``f(epoch, row)`` with each EMG epoch and its MEP row (the monitor
        #: shows them: the EMG is cut once)
        self.epoch_listeners: list = []

    def on_block(self, block) -> None:
        for epoch in self.epocher.push(block):
            self.tracker.add(epoch)
            row = self.tracker.rows[-1]
            self._by_sample[int(epoch.sample)] = row
            for listener in self.epoch_listeners:
                listener(epoch, row)

    def on_epoch(self, epoch, row: dict) -> None:
        mep = self._by_sample.pop(int(epoch.sample), None)
        for key in self.columns:
            row[key] = mep[key] if mep is not None else math.nan

    def finish(self) -> None:
        for epoch in self.epocher.flush():
            self.tracker.add(epoch)

    def summary(self) -> dict[str, Any]:
        out = self.tracker.summary()
        out["channel"] = self.channel
        n = self.tracker.n_accepted
        if self._mt_cache is None or self._mt_cache[0] != n:
            self._mt_cache = (n, self._thresholds())
        out.update(self._mt_cache[1])
        return out

    def _thresholds(self) -> dict[str, Any]:
        """Motor threshold and recruitment curve when intensities varied (a threshold hunt, an
        I/O curve); the hotspot when pulses were given at several sites (a motor map)."""
        out = self._hotspot()
        inten, ptp = self.tracker.pairs()
        if inten.size < 10 or np.unique(inten).size < 3:
            return {"motor_threshold": None, **out}
        crit = self.cfg.criterion_uv
        out: dict[str, Any] = {}
        try:
            ml = motor_threshold_ml(inten, ptp, criterion_uv=crit)
            out["motor_threshold_ml_pct"] = jsonable(ml.mt_pct)
            out["motor_threshold_ml_ci_pct"] = jsonable(ml.ci_pct)
        except ValueError as err:
            out["motor_threshold_ml_pct"] = None
            out["motor_threshold_ml_note"] = str(err)
        rf = motor_threshold_relative_frequency(inten, ptp, criterion_uv=crit)
        out["motor_threshold_rf_pct"] = jsonable(rf.mt_pct)
        out["motor_threshold_rf_warnings"] = list(rf.warnings)
        try:
            out["recruitment_curve"] = jsonable(fit_recruitment_curve(inten, ptp).to_dict())
        except (ValueError, RuntimeError) as err:  # too few levels, or no convergence
            out["recruitment_curve"] = None
            out["recruitment_curve_note"] = str(err)
        return out

    def _hotspot(self) -> dict[str, Any]:
        rows = [r for r in self.tracker.rows if not r["mep_rejected"] and r["mep_site"]]
        if len({r["mep_site"] for r in rows}) < 2:
            return {}
        try:
            hs = hotspot_map([r["mep_site"] for r in rows], [r["mep_ptp_uv"] for r in rows],
                             criterion_uv=self.cfg.criterion_uv)
        except ValueError as err:
            return {"hotspot": None, "hotspot_note": str(err)}
        return {"hotspot": jsonable(hs.to_dict())}

    def report(self, report) -> None:
        """MEP amplitudes over pulses (and against intensity when it varied)."""
        import matplotlib.pyplot as plt

        rows = [r for r in self.tracker.rows if not r["mep_rejected"]]
        if not rows:
            return
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        axes[0].plot([r["pulse_index"] for r in rows], [r["mep_ptp_uv"] for r in rows], "o",
                     ms=3)
        axes[0].set_xlabel("pulse")
        axes[0].set_ylabel("MEP peak-to-peak (µV)")
        axes[0].set_yscale("log")
        inten, ptp = self.tracker.pairs()
        if inten.size:
            axes[1].plot(inten, ptp, "o", ms=3)
            axes[1].axhline(self.cfg.criterion_uv, color="k", ls="--", lw=0.8)
            axes[1].set_yscale("log")
        axes[1].set_xlabel("intensity (% MSO)")
        fig.tight_layout()
        report.add_figure(fig, title=f"MEPs ({self.channel})", section="MEP")
        plt.close(fig)
        hs = self.summary().get("hotspot")  # cached per accepted pulse: no second bootstrap
        if hs:  # a motor map: median MEP per site, the hotspot marked
            sites = sorted(hs["sites"], key=lambda r: -r["median_ptp_uv"])[:40]
            fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(sites) + 2), 3.5))
            ax.bar(range(len(sites)), [r["median_ptp_uv"] for r in sites],
                   color=["C3" if r["site"] == hs["hotspot"] else "C0" for r in sites])
            ax.set_xticks(range(len(sites)), [r["site"] for r in sites], rotation=90, fontsize=7)
            ax.axhline(self.cfg.criterion_uv, color="k", ls="--", lw=0.8)
            ax.set_ylabel("median MEP (µV)")
            ax.set_title(f"hotspot {hs['hotspot']} (best in {100 * hs['p_best']:.0f} % of "
                         "bootstrap resamples)", fontsize=9)
            fig.tight_layout()
            report.add_figure(fig, title=f"Motor map ({self.channel})", section="MEP")
            plt.close(fig)


def make_metric(cfg: ConfigSection, context: MetricContext) -> MEPMetric | None:
    """The MEP plug-in for a session, or None when disabled or there is no EMG channel."""
    section = cfg.mep
    if not section.enabled:
        return None
    meta = context.meta
    if section.channel:
        meta.index(section.channel)  # clear error if the configured channel is missing
        return MEPMetric(section, section.channel, meta.sfreq)
    emg = [meta.ch_names[i] for i in meta.picks("emg")]
    if len(emg) != 1:
        return None  # no EMG (or several: the user must say which, via mep.channel)
    return MEPMetric(section, emg[0], meta.sfreq)
