"""Motor threshold, input-output curve and hotspot map from per-pulse MEP amplitudes.

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

The amplitudes come from :mod:`tmseeg.metrics.mep` (one row per pulse), whose session plug-in
reports these estimates live; a closed-loop threshold hunt calls them directly.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import optimize, special, stats


__all__ = [
    "RelativeFrequencyMT", "motor_threshold_relative_frequency",
    "PsychometricMT", "motor_threshold_ml",
    "RecruitmentCurve", "fit_recruitment_curve",
    "position_sites", "HotspotMap", "hotspot_map",
]


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

def position_sites(sites: Sequence[str], spacing_mm: float = 5.0) -> list[str]:
    """Coil positions (``"@x,y[,z]"`` from :func:`~tmseeg.metrics.mep.pulse_site`) grouped into sites.

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
        The site of each accepted trial: a label, or a coil position from :func:`~tmseeg.metrics.mep.pulse_site`
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
