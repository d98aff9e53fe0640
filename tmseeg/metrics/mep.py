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
Motor threshold
    * :func:`motor_threshold_relative_frequency` — the relative-frequency method of Rossini et
      al. (1994) as restated by Rossini et al. (2015, Clin Neurophysiol 126:1071): the lowest
      intensity at which at least 5 of 10 trials (50 %) evoke an MEP of >= 50 µV peak-to-peak.
    * :func:`motor_threshold_ml` — maximum-likelihood fit of a psychometric function (cumulative
      Gaussian or logistic) to the yes/no outcome "MEP >= 50 µV" at every trial (the model behind
      adaptive threshold hunting, Awiszus 2003); MT is the intensity where p = 0.5, with a Wald
      confidence interval from the Fisher information.
Input-output curve
    :func:`fit_recruitment_curve` — least-squares Boltzmann sigmoid
    ``MEP(I) = MEPmax / (1 + exp((I50 - I) / k))`` (Devanne et al., 1997), returning I50, the
    slope parameter k and MEPmax, with standard errors.
Hotspot map
    :func:`hotspot_map` — a motor-mapping session (the coil moved over a grid of sites at one
    intensity, each pulse's site from the navigation log): per site the median MEP and the
    probability of an MEP, the hotspot (the site of the largest median MEP) and how sure that
    is (the share of bootstrap resamples of each site's trials in which it is still the best).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import optimize, special, stats

from tmseeg.metrics.base import SessionMetric
from tmseeg.stream.pulseinfo import pulse_info
from tmseeg.utils import jsonable

__all__ = [
    "MEPMeasure", "measure_mep", "MEPTracker",
    "RelativeFrequencyMT", "motor_threshold_relative_frequency",
    "PsychometricMT", "motor_threshold_ml",
    "RecruitmentCurve", "fit_recruitment_curve",
]


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
# Motor threshold: relative frequency

@dataclass
class RelativeFrequencyMT:
    """Result of :func:`motor_threshold_relative_frequency`.

    Attributes
    ----------
    mt_pct : float
        Motor threshold (% MSO), NaN if no intensity met the criterion.
    reliable : bool
        The threshold intensity had at least ``trials_per_intensity`` trials, and the next tested
        intensity below it had enough trials and failed the criterion (so the threshold is
        bracketed); False otherwise (see ``warnings``).
    table : list of dict
        Per tested intensity: ``intensity_pct``, ``n_trials``, ``n_meps``, ``fraction``,
        ``meets`` (criterion met) and ``enough_trials``.
    warnings : list of str
        What makes the estimate uncertain.
    """

    mt_pct: float
    reliable: bool
    table: list[dict]
    warnings: list[str] = field(default_factory=list)


def _as_pairs(intensity_pct, ptp_uv) -> tuple[np.ndarray, np.ndarray]:
    i = np.asarray(intensity_pct, dtype=float).ravel()
    a = np.asarray(ptp_uv, dtype=float).ravel()
    if i.shape != a.shape:
        raise ValueError(f"intensity_pct ({i.size}) and ptp_uv ({a.size}) must pair up one to one.")
    ok = np.isfinite(i) & np.isfinite(a)
    return i[ok], a[ok]


def motor_threshold_relative_frequency(
    intensity_pct: Sequence[float] | np.ndarray,
    ptp_uv: Sequence[float] | np.ndarray,
    criterion_uv: float = 50.0,
    fraction: float = 0.5,
    trials_per_intensity: int = 10,
    resolution_pct: float = 1.0,
) -> RelativeFrequencyMT:
    """Relative-frequency motor threshold (Rossini et al. 1994; 2015).

    MT is the lowest intensity at which at least ``fraction`` of the trials (5 of 10) evoke an
    MEP of at least ``criterion_uv``.

    Parameters
    ----------
    intensity_pct, ptp_uv : array-like
        One intensity (% MSO) and one peak-to-peak amplitude (µV) per accepted trial.
    criterion_uv : float
        MEP size criterion (default 50 µV at rest).
    fraction : float
        Fraction of trials that must reach the criterion (default 0.5).
    trials_per_intensity : int
        Trials the method asks for at each intensity (default 10); intensities with fewer are
        still used but flagged.
    resolution_pct : float
        Intensities are grouped after rounding to this step (stimulator output resolution,
        default 1 % MSO).

    Returns
    -------
    RelativeFrequencyMT

    Notes
    -----
    With trials at arbitrary intensities (e.g. a recruitment curve), this is evaluated on what
    exists. To avoid a single lucky intensity below a run of failures defining the threshold,
    the criterion must also hold at every tested intensity above the one chosen (monotonic
    recruitment): MT is the lowest intensity from which upward every tested intensity meets it.
    """
    i, a = _as_pairs(intensity_pct, ptp_uv)
    if i.size == 0:
        raise ValueError("motor_threshold_relative_frequency: no trial with a finite intensity and "
                         "amplitude; record intensity_pct with each pulse.")
    if resolution_pct <= 0:
        raise ValueError("resolution_pct must be > 0 (e.g. 1 % MSO).")
    levels = np.round(i / resolution_pct) * resolution_pct
    table = []
    for lev in np.unique(levels):
        sel = levels == lev
        n, k = int(sel.sum()), int((a[sel] >= criterion_uv).sum())
        table.append({"intensity_pct": float(lev), "n_trials": n, "n_meps": k,
                      "fraction": k / n, "meets": bool(k / n >= fraction),
                      "enough_trials": n >= trials_per_intensity})
    warn: list[str] = []
    few = [r["intensity_pct"] for r in table if not r["enough_trials"]]
    if few:
        warn.append(f"fewer than {trials_per_intensity} trials at {len(few)} intensity(ies) "
                    f"({', '.join(f'{x:g}' for x in few[:8])}{' ...' if len(few) > 8 else ''} "
                    "% MSO): the 5-of-10 rule is then a coarse estimate")
    meets = np.array([r["meets"] for r in table])
    # lowest index from which every higher tested intensity meets the criterion
    idx = None
    for j in range(len(table) - 1, -1, -1):
        if meets[j]:
            idx = j
        else:
            break
    if idx is None:
        warn.append("no tested intensity reached the criterion: MT is above the highest "
                    f"intensity ({table[-1]['intensity_pct']:g} % MSO)")
        return RelativeFrequencyMT(math.nan, False, table, warn)
    reliable = table[idx]["enough_trials"]
    if idx == 0:
        warn.append("the lowest tested intensity already met the criterion: MT may be lower; "
                    "test lower intensities")
        reliable = False
    else:
        below = table[idx - 1]
        if not below["enough_trials"]:
            reliable = False
        if below["intensity_pct"] < table[idx]["intensity_pct"] - 1.5 * resolution_pct:
            warn.append(f"the next lower tested intensity is {below['intensity_pct']:g} % MSO: MT "
                        "lies somewhere in between; test the intensities in between")
            reliable = False
    return RelativeFrequencyMT(float(table[idx]["intensity_pct"]), bool(reliable), table, warn)


# ----------------------------------------------------------------------------------------------
# Motor threshold: maximum-likelihood psychometric fit

@dataclass
class PsychometricMT:
    """Result of :func:`motor_threshold_ml`.

    Attributes
    ----------
    mt_pct : float
        Intensity at which P(MEP >= criterion) = 0.5.
    spread_pct : float
        Scale of the psychometric function: SD of the cumulative Gaussian, or the logistic
        scale ``s`` in ``1 / (1 + exp(-(I - MT) / s))``.
    ci_pct : (float, float)
        Confidence interval of ``mt_pct`` (Wald, from the expected Fisher information).
    se_pct : float
        Standard error of ``mt_pct``.
    model : str
        ``"gaussian"`` or ``"logistic"``.
    n_trials : int
    converged : bool
    warnings : list of str
    """

    mt_pct: float
    spread_pct: float
    ci_pct: tuple[float, float]
    se_pct: float
    model: str
    n_trials: int
    converged: bool
    warnings: list[str] = field(default_factory=list)

    def probability(self, intensity_pct: np.ndarray | float) -> np.ndarray | float:
        """Fitted P(MEP >= criterion) at an intensity."""
        z = (np.asarray(intensity_pct, dtype=float) - self.mt_pct) / self.spread_pct
        return special.ndtr(z) if self.model == "gaussian" else special.expit(z)


def motor_threshold_ml(
    intensity_pct: Sequence[float] | np.ndarray,
    ptp_uv: Sequence[float] | np.ndarray,
    criterion_uv: float = 50.0,
    model: str = "gaussian",
    confidence: float = 0.95,
    spread_bounds_pct: tuple[float, float] = (0.2, 30.0),
) -> PsychometricMT:
    """Maximum-likelihood motor threshold from yes/no MEP outcomes.

    Each trial is a Bernoulli outcome ``y = ptp >= criterion_uv`` with
    ``P(y = 1 | I) = F((I - MT) / s)``, F the standard normal CDF (``model="gaussian"``, as in
    Awiszus' 2003 threshold-hunting model) or the logistic function. ``MT`` and ``s`` are found
    by bounded L-BFGS-B on the negative log-likelihood (``s`` within ``spread_bounds_pct``,
    ``MT`` within 20 % MSO of the tested range).

    Parameters
    ----------
    intensity_pct, ptp_uv : array-like
        One pair per accepted trial.
    criterion_uv : float
        MEP criterion (default 50 µV).
    model : {"gaussian", "logistic"}
    confidence : float
        Level of the Wald interval (default 0.95).
    spread_bounds_pct : (float, float)
        Bounds of the scale ``s``; the lower bound keeps the fit finite when the data are
        perfectly separated (every trial below some intensity fails, every one above succeeds).

    Returns
    -------
    PsychometricMT

    Notes
    -----
    The standard error comes from the expected Fisher information of the two parameters,
    ``I = sum_i f(z_i)^2 / (p_i (1 - p_i)) g_i g_i^T`` with ``z_i = (I_i - MT) / s``, ``f = F'``
    and ``g_i = (-1/s, -z_i/s)``; ``se(MT) = sqrt((I^-1)_00)``. Wald intervals are fine with a
    few dozen trials spanning the threshold; with perfect separation the spread sits at its
    lower bound and the interval is too narrow (a warning says so).
    """
    if model not in ("gaussian", "logistic"):
        raise ValueError(f"motor_threshold_ml: model must be 'gaussian' or 'logistic', got {model!r}.")
    i, a = _as_pairs(intensity_pct, ptp_uv)
    if i.size < 5:
        raise ValueError(f"motor_threshold_ml: {i.size} usable trials; at least 5 (better > 20, "
                         "spanning the threshold) are needed.")
    y = (a >= criterion_uv).astype(float)
    warn: list[str] = []
    if y.all() or not y.any():
        raise ValueError("motor_threshold_ml: every trial was " + ("an MEP" if y.all() else
                         "without MEP") + f" (criterion {criterion_uv:g} µV): the threshold is "
                         "outside the tested range; test " + ("lower" if y.all() else "higher")
                         + " intensities.")
    if model == "gaussian":
        cdf, logcdf = special.ndtr, special.log_ndtr
        pdf = stats.norm.pdf

        def hazard(z):  # f(z) / F(z), stable in both tails
            return np.exp(-0.5 * z * z - 0.5 * math.log(2 * math.pi) - special.log_ndtr(z))
    else:
        cdf = special.expit

        def logcdf(z):
            return -np.logaddexp(0.0, -z)

        def pdf(z):
            p = special.expit(z)
            return p * (1 - p)

        def hazard(z):
            return special.expit(-z)

    def nll(theta):
        mt, log_s = theta
        s = math.exp(log_s)
        z = (i - mt) / s
        val = -float(np.sum(y * logcdf(z) + (1 - y) * logcdf(-z)))
        r = y * hazard(z) - (1 - y) * hazard(-z)  # d loglik / dz per trial
        return val, np.array([float(np.sum(r)) / s, float(np.sum(r * z))])

    lo, hi = float(i.min()) - 20.0, float(i.max()) + 20.0
    bounds = [(lo, hi), (math.log(spread_bounds_pct[0]), math.log(spread_bounds_pct[1]))]
    # start: midpoint between the highest failure and the lowest success, spread from the range
    mt0 = float(np.clip(0.5 * (i[y == 0].max() + i[y == 1].min()), lo, hi))
    s0 = float(np.clip(max(np.std(i) / 3, 1.0), *spread_bounds_pct))
    best = None
    for start in ((mt0, math.log(s0)), (float(np.median(i)), math.log(s0)),
                  (mt0, math.log(max(spread_bounds_pct[0] * 2, 0.5)))):
        res = optimize.minimize(nll, np.array(start), method="L-BFGS-B", jac=True,
                               bounds=bounds)
        if best is None or res.fun < best.fun:
            best = res
    mt, s = float(best.x[0]), float(math.exp(best.x[1]))
    z = (i - mt) / s
    p = np.clip(cdf(z), 1e-12, 1 - 1e-12)
    w = pdf(z) ** 2 / (p * (1 - p))
    g = np.stack([np.full_like(z, -1.0 / s), -z / s])
    info = (g * w) @ g.T
    try:
        cov = np.linalg.inv(info)
        se = float(math.sqrt(max(cov[0, 0], 0.0)))
    except np.linalg.LinAlgError:
        se = math.inf
    if s <= spread_bounds_pct[0] * 1.01:
        warn.append("the data are (nearly) perfectly separated: the spread is at its lower bound "
                    "and the confidence interval is too narrow; add trials around the threshold")
    if not lo + 1 < mt < hi - 1:
        warn.append("MT at the edge of the search range: test intensities around the threshold")
    zq = float(stats.norm.ppf(0.5 + confidence / 2))
    return PsychometricMT(mt_pct=mt, spread_pct=s, ci_pct=(mt - zq * se, mt + zq * se), se_pct=se,
                          model=model, n_trials=int(i.size), converged=bool(best.success),
                          warnings=warn)


# ----------------------------------------------------------------------------------------------
# Input-output (recruitment) curve

@dataclass
class RecruitmentCurve:
    """Boltzmann fit ``MEP(I) = mep_max_uv / (1 + exp((i50_pct - I) / slope_pct))``.

    Attributes
    ----------
    mep_max_uv, i50_pct, slope_pct : float
        Plateau, intensity of half-maximal response, slope parameter k (% MSO; the curve rises
        from 27 % to 73 % of the plateau over ``i50 ± k``). The maximal slope is
        ``mep_max_uv / (4 slope_pct)`` µV per % MSO.
    se : dict of str to float
        Standard errors (from the least-squares covariance).
    n_trials : int
    warnings : list of str
    """

    mep_max_uv: float
    i50_pct: float
    slope_pct: float
    se: dict[str, float]
    n_trials: int
    warnings: list[str] = field(default_factory=list)

    def predict(self, intensity_pct: np.ndarray | float) -> np.ndarray | float:
        """Fitted amplitude (µV) at an intensity."""
        return self.mep_max_uv * special.expit(
            (np.asarray(intensity_pct, dtype=float) - self.i50_pct) / self.slope_pct)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def _boltzmann(i, mmax, i50, k):
    return mmax * special.expit((i - i50) / k)


def fit_recruitment_curve(
    intensity_pct: Sequence[float] | np.ndarray,
    ptp_uv: Sequence[float] | np.ndarray,
) -> RecruitmentCurve:
    """Least-squares Boltzmann fit of single-trial MEP amplitudes against intensity.

    Parameters
    ----------
    intensity_pct, ptp_uv : array-like
        One pair per accepted trial (trials without an MEP included, with their small ptp).

    Returns
    -------
    RecruitmentCurve

    Notes
    -----
    Fitted on raw amplitudes (not logs), so ``mep_max_uv`` estimates the *mean* plateau; with
    log-normal trial-to-trial variability of SD ``v`` this is ``exp(v^2 / 2)`` times the median
    plateau. Bounds: plateau 0 .. 10x the largest amplitude, I50 within 50 % MSO of the tested
    range, ``k`` 0.1 .. 50 % MSO. A plateau at the top of its bounds, or I50 beyond the highest
    intensity, means the curve did not saturate in the tested range (warning).
    """
    i, a = _as_pairs(intensity_pct, ptp_uv)
    if i.size < 4 or np.unique(i).size < 3:
        raise ValueError(f"fit_recruitment_curve: {i.size} trials at {np.unique(i).size} "
                         "intensities; need >= 3 distinct intensities spanning threshold to "
                         "plateau.")
    amax = float(a.max())
    if not amax > 0:
        raise ValueError("fit_recruitment_curve: all amplitudes are <= 0.")
    lo, hi = float(i.min()), float(i.max())
    p0 = [amax, 0.5 * (lo + hi), max((hi - lo) / 8, 1.0)]
    bounds = ([0.0, lo - 50, 0.1], [10 * amax, hi + 50, 50.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        popt, pcov = optimize.curve_fit(_boltzmann, i, a, p0=p0, bounds=bounds, maxfev=20000)
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else \
        np.full(3, math.inf)
    warn = []
    if popt[1] > hi or popt[0] > 5 * amax:
        warn.append("the curve does not saturate in the tested range: plateau and I50 are "
                    "extrapolated; test higher intensities")
    return RecruitmentCurve(mep_max_uv=float(popt[0]), i50_pct=float(popt[1]),
                            slope_pct=float(popt[2]),
                            se={"mep_max_uv": float(se[0]), "i50_pct": float(se[1]),
                                "slope_pct": float(se[2])},
                            n_trials=int(i.size), warnings=warn)


# ----------------------------------------------------------------------------------------------
# Hotspot map

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


def position_sites(sites: Sequence[str], spacing_mm: float = 5.0) -> list[str]:
    """Coil positions (``"@x,y[,z]"`` from :func:`pulse_site`) grouped into sites.

    A navigation log gives each pulse's measured position, scattered by a millimetre or two
    around the intended grid point. In the order given, a position joins the site whose mean
    position is nearest if that lies within 0.6 x the grid ``spacing_mm``, else it starts a
    site; sites whose means are that close merge into the larger; then every position goes to
    the nearest final mean (twice, so that early, less certain means do not decide). Each site is named by its mean position in whole mm.
    Labels pass through unchanged."""
    out = list(sites)
    at = [i for i, t in enumerate(sites) if t.startswith("@")]
    if not at:
        return out
    rows = [[float(v) for v in sites[i][1:].split(",")] for i in at]
    dims = min(len(r) for r in rows)
    xyz = np.array([r[:dims] for r in rows])
    radius = 0.6 * spacing_mm
    sums: list[np.ndarray] = []
    counts: list[int] = []
    for x in xyz:  # leader clustering on running means
        if sums:
            d = np.linalg.norm(np.array(sums) / np.array(counts)[:, None] - x, axis=1)
            j = int(d.argmin())
            if d[j] <= radius:
                sums[j] = sums[j] + x
                counts[j] += 1
                continue
        sums.append(x.copy())
        counts.append(1)
    centres = np.array(sums) / np.array(counts)[:, None]
    keep: list[int] = []  # a stray early position's own site merges into a nearby larger one
    for j in np.argsort(counts, kind="stable")[::-1]:
        if all(np.linalg.norm(centres[j] - centres[k]) > radius for k in keep):
            keep.append(int(j))
    centres = centres[keep]
    for _ in range(2):  # each position to the nearest final mean
        label = np.linalg.norm(xyz[:, None, :] - centres[None], axis=2).argmin(axis=1)
        centres = np.array([xyz[label == j].mean(axis=0) for j in np.unique(label)])
    label = np.linalg.norm(xyz[:, None, :] - centres[None], axis=2).argmin(axis=1)
    for i, j in zip(at, label):
        out[i] = ",".join(f"{v:.0f}" for v in centres[j])
    return out


@dataclass
class HotspotMap:
    """Result of :func:`hotspot_map`.

    Attributes
    ----------
    sites : list of dict
        Per site: ``site``, ``n_trials``, ``median_ptp_uv``, ``mean_ptp_uv``,
        ``mep_probability`` (share of trials with an MEP >= the criterion) and
        ``p_best`` (share of bootstrap resamples in which it has the largest median).
    hotspot : str
        The site with the largest median MEP.
    p_best : float
        ``p_best`` of the hotspot: how sure the choice is (low: map more densely there or
        give more pulses per site).
    warnings : list of str
    """

    sites: list[dict]
    hotspot: str
    p_best: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def hotspot_map(sites: Sequence[str], ptp_uv: Sequence[float] | np.ndarray,
                criterion_uv: float = 50.0, n_boot: int = 2000, seed: int = 0,
                min_trials: int = 3) -> HotspotMap:
    """The motor hotspot from trials given at several sites (one intensity).

    Parameters
    ----------
    sites : sequence of str
        The site of each accepted trial: a label, or a coil position from :func:`pulse_site`
        (grouped by :func:`position_sites`).
    ptp_uv : array-like
        Its MEP peak-to-peak amplitude (trials without an MEP included).
    criterion_uv : float
        An MEP is a response of at least this (for the probability).
    n_boot : int
        Bootstrap resamples (each site's trials resampled with replacement) for ``p_best``.
    seed : int
        Of the bootstrap (the result is reproducible).
    min_trials : int
        Sites with fewer trials are listed but cannot be the hotspot (warning).

    Raises
    ------
    ValueError
        Fewer than two sites with ``min_trials`` trials.
    """
    a = np.asarray(ptp_uv, dtype=float)
    labels = position_sites([str(x) for x in sites])
    if len(labels) != a.size:
        raise ValueError(f"hotspot_map: {len(labels)} sites and {a.size} amplitudes must pair up "
                         "one to one.")
    keep = np.isfinite(a) & np.array([bool(x) for x in labels])
    groups: dict[str, np.ndarray] = {}
    for lab in dict.fromkeys(np.array(labels, dtype=object)[keep]):
        groups[lab] = a[keep & (np.array(labels, dtype=object) == lab)]
    usable = [k for k, v in groups.items() if v.size >= min_trials]
    if len(usable) < 2:
        raise ValueError(f"hotspot_map: {len(usable)} site(s) with >= {min_trials} trials; a map "
                         "needs at least two (give each pulse its site or coil position).")
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(usable)))
    for j, k in enumerate(usable):
        v = groups[k]
        boot[:, j] = np.median(v[rng.integers(0, v.size, (n_boot, v.size))], axis=1)
    wins = np.bincount(boot.argmax(axis=1), minlength=len(usable)) / n_boot
    table = []
    for k, v in groups.items():
        j = usable.index(k) if k in usable else None
        table.append({"site": k, "n_trials": int(v.size), "median_ptp_uv": float(np.median(v)),
                      "mean_ptp_uv": float(np.mean(v)),
                      "mep_probability": float(np.mean(v >= criterion_uv)),
                      "p_best": float(wins[j]) if j is not None else 0.0})
    best = max((r for r in table if r["site"] in usable), key=lambda r: r["median_ptp_uv"])
    warn = []
    few = [k for k in groups if k not in usable]
    if few:
        warn.append(f"{len(few)} site(s) with fewer than {min_trials} trials cannot be the "
                    f"hotspot: {few[:5]}")
    if best["p_best"] < 0.8:
        warn.append(f"the hotspot {best['site']!r} is the best site in only "
                    f"{100 * best['p_best']:.0f} % of bootstrap resamples: give more pulses "
                    "per site or map more densely around it")
    return HotspotMap(sites=table, hotspot=str(best["site"]), p_best=float(best["p_best"]),
                      warnings=warn)


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


class MEPMetric(SessionMetric):
    """MEPs from the EMG channel, one row per pulse, with motor-threshold estimates.

    EMG epochs (-150..+100 ms, no amplitude rejection) are cut by an epocher of their own from
    the processed blocks (EMG passes the EEG stages untouched); each EEG epoch's row then gets
    the MEP columns of the same pulse.
    """

    name = "mep"
    columns = tuple(k for k in MEPTracker.columns if k.startswith("mep_") or k == "intensity_pct")

    def __init__(self, section: dict, channel: str, sfreq: float) -> None:
        from tmseeg.pipeline.epochs import Epocher

        self.cfg = section
        self.channel = channel
        self.epocher = Epocher(tmin_ms=-150.0, tmax_ms=100.0, baseline_ms=None, reject_uv=None,
                               picks=[channel], max_delay_s=10.0)
        self.tracker = MEPTracker(channel=channel, window_ms=tuple(section["window_ms"]),
                                  pre_window_ms=tuple(section["pre_window_ms"]),
                                  preinnervation_rms_uv=section["preinnervation_rms_uv"],
                                  min_ptp_uv=section["min_ptp_uv"])
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
        crit = self.cfg["criterion_uv"]
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
                             criterion_uv=self.cfg["criterion_uv"])
        except ValueError as err:
            return {"hotspot": None, "hotspot_note": str(err)}
        return {"hotspot": jsonable(hs.to_dict())}

    def report(self, report, session) -> None:
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
            axes[1].axhline(self.cfg["criterion_uv"], color="k", ls="--", lw=0.8)
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
            ax.axhline(self.cfg["criterion_uv"], color="k", ls="--", lw=0.8)
            ax.set_ylabel("median MEP (µV)")
            ax.set_title(f"hotspot {hs['hotspot']} (best in {100 * hs['p_best']:.0f} % of "
                         "bootstrap resamples)", fontsize=9)
            fig.tight_layout()
            report.add_figure(fig, title=f"Motor map ({self.channel})", section="MEP")
            plt.close(fig)


def make_metric(cfg: dict, session) -> MEPMetric | None:
    """The MEP plug-in for a session, or None when disabled or there is no EMG channel."""
    section = cfg["mep"]
    if not section["enabled"]:
        return None
    meta = session.meta
    if section["channel"]:
        meta.index(section["channel"])  # clear error if the configured channel is missing
        return MEPMetric(section, section["channel"], meta.sfreq)
    emg = [meta.ch_names[i] for i in meta.picks("emg")]
    if len(emg) != 1:
        return None  # no EMG (or several: the user must say which, via mep.channel)
    return MEPMetric(section, emg[0], meta.sfreq)
