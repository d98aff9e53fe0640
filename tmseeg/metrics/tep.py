"""Running TMS-evoked potential: average, variance, GMFP/LMFP, named peaks, SNR, trials needed.

:class:`RunningTEP` follows the accumulate-then-finalize pattern: :meth:`RunningTEP.add` costs
O(n_channels x n_times) per epoch (Welford's update of the per-sample mean and variance), and
every accessor is computed from the running state without revisiting epochs.

Conventions
-----------
* Epochs are expected on the average reference (the default chain applies
  :class:`~tmseeg.pipeline.reference.AverageReference` before the epocher). GMFP does not depend
  on the reference; the ROI average and LMFP do.
* Peaks are read on the ROI average (mean over ROI channels of the average TEP).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from tmseeg.pipeline.epochs import Epoch

__all__ = ["RunningTEP", "DEFAULT_PEAK_WINDOWS", "find_peak", "gmfp"]

#: Default TEP component windows in ms after the pulse, with polarity given by the first letter.
#: Values follow the usual motor-cortex TMS-EEG literature (e.g. Komssi et al. 2004;
#: Bonato et al. 2006; Ferreri et al. 2011; Premoli et al. 2014; Rogasch et al. 2014):
#: N15 10-20, P30 22-38, N45 38-55, P60 55-80, N100 85-140, P180 150-250 ms.
DEFAULT_PEAK_WINDOWS: dict[str, tuple[float, float]] = {
    "N15": (10.0, 20.0),
    "P30": (22.0, 38.0),
    "N45": (38.0, 55.0),
    "P60": (55.0, 80.0),
    "N100": (85.0, 140.0),
    "P180": (150.0, 250.0),
}


def gmfp(data_uv: np.ndarray) -> np.ndarray:
    """Global mean field power (Lehmann & Skrandies, 1980).

    ``GMFP(t) = sqrt(mean_i (V_i(t) - mean_j V_j(t))^2)``: the spatial standard deviation
    across channels, i.e. the RMS of the average-referenced map (reference-free).

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_times)

    Returns
    -------
    ndarray, shape (n_times,)
    """
    return np.std(data_uv, axis=0)


def find_peak(
    trace_uv: np.ndarray, times_ms: np.ndarray, window_ms: tuple[float, float], polarity: str,
    refine_fraction: float = 0.2,
) -> dict:
    """Extremum of a trace inside a window, its latency refined on the top of the peak.

    The amplitude is the extreme sample. The latency is the vertex of a parabola fitted (least
    squares) to the samples within ``refine_fraction`` x the window length of that sample: on
    a broad, flat-topped peak (N100, P180) a little noise moves the extreme sample by 5-10 ms,
    the vertex of the fitted top by about 1 ms (``benchmarks/bench_tep_accuracy.py``). The
    vertex is used only where the parabola opens the right way and its vertex lies among the
    fitted samples; on a skewed noise-free peak it differs from the extreme sample by < 1 ms.

    Parameters
    ----------
    trace_uv : ndarray, shape (n_times,)
    times_ms : ndarray, shape (n_times,)
    window_ms : (float, float)
        Inclusive search window.
    polarity : {"N", "P", "+"}
        ``"N"``: most negative value; ``"P"``: most positive; ``"+"``: largest (for GMFP).
    refine_fraction : float
        Half-width of the latency fit as a fraction of the window length (0: the extreme
        sample's own time).

    Returns
    -------
    dict
        ``latency_ms``, ``amplitude_uv``, ``found`` and ``window_ms``. ``found`` is False if
        the extremum lies on the first or last sample of the window (the trace is still
        rising or falling there, so it is not a peak of this component but the flank of
        another) or the window holds no finite sample; latency and amplitude are still given
        (NaN if nothing finite).
    """
    sel = np.flatnonzero((times_ms >= window_ms[0]) & (times_ms <= window_ms[1]))
    res = {"latency_ms": math.nan, "amplitude_uv": math.nan, "found": False,
           "window_ms": tuple(window_ms)}
    if sel.size == 0:
        return res
    seg = trace_uv[sel]
    if not np.isfinite(seg).any():
        return res
    k = int(np.nanargmin(seg) if polarity == "N" else np.nanargmax(seg))
    res["latency_ms"] = float(times_ms[sel[k]])
    res["amplitude_uv"] = float(seg[k])
    res["found"] = bool(0 < k < sel.size - 1)
    if res["found"] and refine_fraction > 0:
        res["latency_ms"] = _vertex_ms(times_ms[sel], seg, k, refine_fraction
                                       * (window_ms[1] - window_ms[0]), polarity == "N")
    return res


def _vertex_ms(t_ms: np.ndarray, y: np.ndarray, k: int, half_width_ms: float,
               negative: bool) -> float:
    """Vertex of the parabola through ``y`` within ``half_width_ms`` of sample ``k`` (that
    sample's time when the fit does not make a peak there)."""
    near = np.abs(t_ms - t_ms[k]) <= half_width_ms
    x, v = t_ms[near] - t_ms[k], y[near]
    if x.size < 5 or not np.isfinite(v).all():
        return float(t_ms[k])
    c2, c1, _ = np.polyfit(x, v, 2)
    if (c2 >= 0) if not negative else (c2 <= 0):
        return float(t_ms[k])
    x_vertex = -c1 / (2.0 * c2)
    return float(t_ms[k] + x_vertex) if x[0] <= x_vertex <= x[-1] else float(t_ms[k])


class RunningTEP:
    """Per-sample running mean and variance of accepted epochs, with TEP read-outs.

    Parameters
    ----------
    ch_names : sequence of str
        Channel order of the epochs (``Epoch.ch_names``).
    times_ms : ndarray
        Epoch time axis (``Epoch.times_ms``).
    roi : list of str
        Region-of-interest channels (e.g. around the stimulated site, ``["C3", "FC1", "CP1"]``).
    peak_windows_ms : dict of str to (float, float)
        Component name (first letter ``N`` or ``P`` gives the polarity) to search window;
        default :data:`DEFAULT_PEAK_WINDOWS`.
    early_window_ms : (float, float)
        Window of the single-trial early response (default 15-60 ms).
    post_window_ms, pre_window_ms : (float, float)
        Windows of the SNR (default 15..250 ms and -400..-10 ms).

    Notes
    -----
    **SNR** = RMS of the ROI average over ``post_window_ms`` / RMS over ``pre_window_ms``.

    **Trials needed.** With N trials, the ROI average is ``s(t) + e_N(t)`` with noise of
    per-sample variance ``sigma^2 / N`` (the 1/sqrt(N) law for independent trials). Hence

    ``P_post(N) = S + sigma_post^2 / N`` and ``P_pre(N) = sigma_pre^2 / N``,

    where ``S`` is the mean signal power in the post window and ``sigma_pre^2``,
    ``sigma_post^2`` are the across-trial variances of the ROI trace averaged over each
    window (estimated from the running variance). The SNR of N trials is predicted as
    ``SNR(N)^2 = (S + sigma_post^2/N) / (sigma_pre^2/N) = (N S + sigma_post^2) / sigma_pre^2``,
    so a target ``T`` is reached at ``N* = (T^2 sigma_pre^2 - sigma_post^2) / S``.
    ``S`` is estimated without noise bias as ``P_post(N) - sigma_post^2 / N``. Post-window
    variance includes trial-to-trial variability of the response itself, which averaging also
    removes, so it belongs in the noise term.
    """

    def __init__(
        self,
        ch_names: Sequence[str],
        times_ms: np.ndarray,
        roi: Sequence[str],
        peak_windows_ms: Mapping[str, tuple[float, float]] = DEFAULT_PEAK_WINDOWS,
        early_window_ms: tuple[float, float] = (15.0, 60.0),
        post_window_ms: tuple[float, float] = (15.0, 250.0),
        pre_window_ms: tuple[float, float] = (-400.0, -10.0),
    ) -> None:
        self.ch_names = tuple(ch_names)
        self.times_ms = np.asarray(times_ms, dtype=np.float64)
        lookup = {n.lower(): i for i, n in enumerate(self.ch_names)}
        missing = [r for r in roi if r.lower() not in lookup]
        if missing or not roi:
            raise KeyError(f"ROI channel(s) {missing or roi} not among the epoch channels "
                           f"{', '.join(self.ch_names)}")
        self.roi = list(roi)
        self._roi_idx = np.array([lookup[r.lower()] for r in roi], dtype=np.intp)
        for name in peak_windows_ms:
            if name[:1].upper() not in ("N", "P"):
                raise ValueError(f"peak name {name!r} must start with N or P (its polarity)")
        self.peak_windows_ms = dict(peak_windows_ms)
        self.early_window_ms = early_window_ms
        t = self.times_ms
        self._early = (t >= early_window_ms[0]) & (t <= early_window_ms[1])
        self._post = (t >= post_window_ms[0]) & (t <= post_window_ms[1])
        self._pre = (t >= pre_window_ms[0]) & (t <= pre_window_ms[1])
        for nm, m in (("early", self._early), ("post", self._post), ("pre", self._pre)):
            if not m.any():
                raise ValueError(f"{nm} window contains no sample of the epoch time axis")
        self.post_window_ms = post_window_ms
        self.pre_window_ms = pre_window_ms
        self.reset()

    # -- accumulation -----------------------------------------------------------------------
    def reset(self) -> None:
        """Forget all epochs."""
        shape = (len(self.ch_names), self.times_ms.size)
        self.n = 0
        self._mean = np.zeros(shape)
        self._m2 = np.zeros(shape)
        self._count = np.zeros(shape)  # per-element number of finite samples accumulated
        self._rmean = np.zeros(self.times_ms.size)  # ROI-mean trace: mean and M2
        self._rm2 = np.zeros(self.times_ms.size)
        self._hist_n: list[int] = []
        self._hist_snr: list[float] = []
        self.n_skipped = 0

    def add(self, epoch: Epoch) -> bool:
        """Accumulate one epoch in O(n_channels x n_times).

        Rejected epochs are skipped, and so are epochs with NaN on a channel that is not in
        ``epoch.bads`` (the epocher rejects those anyway). NaN on a *bad* channel (a dead
        electrode sending NaN, not interpolated) does not cost the epoch: those elements are
        simply not accumulated (per-element counts), and the ROI trace averages the ROI
        channels that are finite at each sample (the epoch is skipped if none is).

        Returns
        -------
        bool
            True if the epoch was added.
        """
        if epoch.rejected:
            self.n_skipped += 1
            return False
        x = epoch.data_uv
        if x.shape != self._mean.shape or tuple(epoch.ch_names) != self.ch_names:
            raise ValueError(f"epoch {x.shape} on {len(epoch.ch_names)} channels does not match the "
                             f"running TEP {self._mean.shape}; build one RunningTEP per layout")
        finite = np.isfinite(x)
        if finite.all():
            self._count += 1.0
            r = x[self._roi_idx].mean(axis=0)
            d = x - self._mean
            self._mean += d / self._count
            self._m2 += d * (x - self._mean)
        else:
            row_ok = finite.all(axis=1)
            bad = np.array([n in set(epoch.bads) for n in self.ch_names])
            roi_f = finite[self._roi_idx]
            if (~row_ok & ~bad).any() or not roi_f.any(axis=0).all():
                self.n_skipped += 1
                return False
            xz = np.where(finite, x, 0.0)
            r = (np.where(roi_f, x[self._roi_idx], 0.0).sum(axis=0) / roi_f.sum(axis=0))
            self._count += finite
            d = np.where(finite, xz - self._mean, 0.0)
            self._mean += d / np.maximum(self._count, 1.0)
            self._m2 += d * np.where(finite, xz - self._mean, 0.0)
        self.n += 1
        dr = r - self._rmean
        self._rmean += dr / self.n
        self._rm2 += dr * (r - self._rmean)
        self._hist_n.append(self.n)
        self._hist_snr.append(self.snr())
        return True

    # -- accessors --------------------------------------------------------------------------
    @property
    def average_uv(self) -> np.ndarray:
        """Average TEP, shape (n_channels, n_times) (NaN where nothing was accumulated)."""
        return np.where(self._count > 0, self._mean, np.nan)

    @property
    def variance_uv2(self) -> np.ndarray:
        """Across-trial sample variance per channel and time (ddof=1; NaN below 2 epochs)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._count >= 2, self._m2 / np.maximum(self._count - 1, 1), np.nan)

    @property
    def sem_uv(self) -> np.ndarray:
        """Standard error of the average TEP."""
        return np.sqrt(self.variance_uv2 / np.maximum(self._count, 1))

    @property
    def roi_average_uv(self) -> np.ndarray:
        """Mean over the ROI channels of the average TEP, shape (n_times,)."""
        return self._rmean.copy()

    @property
    def gmfp_uv(self) -> np.ndarray:
        """Global mean field power of the average TEP, shape (n_times,); see :func:`gmfp`.

        Channels with no accumulated data (NaN throughout, e.g. dead from the start) are left out.
        """
        rows = (self._count > 0).all(axis=1)
        return gmfp(self._mean[rows]) if rows.any() else np.full(self.times_ms.size, np.nan)

    @property
    def lmfp_uv(self) -> np.ndarray:
        """Local mean field power over the ROI, shape (n_times,).

        ``LMFP(t) = sqrt(mean_{i in ROI} V_i(t)^2)`` of the average-referenced TEP (Casarotto
        et al., 2010 style): the ROI mean is *not* removed, since with a handful of neighbouring
        electrodes the local response is largely common to all of them.
        """
        v = self._mean[self._roi_idx]
        return np.sqrt(np.mean(v * v, axis=0))

    def peaks(self) -> dict[str, dict]:
        """Named TEP components on the ROI average, and GMFP maxima in the same windows.

        Returns
        -------
        dict
            ``{name: {"latency_ms", "amplitude_uv", "found", "window_ms",
            "gmfp_latency_ms", "gmfp_uv", "gmfp_found"}}``. Polarity from the name: N = most
            negative, P = most positive value in the window; see :func:`find_peak` for
            ``found``.
        """
        roi = self._rmean
        g = self.gmfp_uv
        out = {}
        for name, win in self.peak_windows_ms.items():
            pk = find_peak(roi, self.times_ms, win, name[0].upper())
            gp = find_peak(g, self.times_ms, win, "+")
            pk.update(gmfp_latency_ms=gp["latency_ms"], gmfp_uv=gp["amplitude_uv"],
                      gmfp_found=gp["found"])
            if self.n == 0:
                pk["found"] = pk["gmfp_found"] = False
            out[name] = pk
        return out

    def roi_trace_uv(self, epoch: Epoch, times: np.ndarray | slice = slice(None)) -> np.ndarray:
        """One trial's ROI-mean trace at ``times`` (a mask or slice of the time axis; all by
        default), (n_times,)."""
        return epoch.data_uv[self._roi_idx][:, times].mean(axis=0)

    def single_trial_early_uv(self, epoch: Epoch) -> float:
        """Early single-trial response: peak-to-peak of the ROI-mean trace in ``early_window_ms``.

        Peak-to-peak rather than the mean: the early TEP is multiphasic (N15-P30-N45), so a
        window mean cancels itself, whereas the peak-to-peak grows with the response
        whatever its polarity. It is biased upwards by noise (ptp of pure noise is > 0); compare
        it across trials of one session, not as an absolute size. NaN if the window is not finite.
        """
        r = self.roi_trace_uv(epoch, self._early)
        if not np.isfinite(r).all():
            return math.nan
        return float(r.max() - r.min())

    def single_trial_window_means_uv(self, epoch: Epoch) -> dict[str, float]:
        """Mean ROI amplitude of one trial in each peak window, keyed ``tep_<name>_uv``.

        The mean over the component's window (not the single-trial extremum, which noise
        biases away from zero) is the per-trial measure block comparisons use.
        """
        r = self.roi_trace_uv(epoch)
        out = {}
        for name, (lo, hi) in self.peak_windows_ms.items():
            m = (self.times_ms >= lo) & (self.times_ms <= hi)
            seg = r[m]
            out[f"tep_{name}_uv"] = float(seg.mean()) if seg.size and np.isfinite(seg).all() \
                else math.nan
        return out

    def _powers(self) -> tuple[float, float]:
        r = self._rmean
        return float(np.mean(r[self._post] ** 2)), float(np.mean(r[self._pre] ** 2))

    def snr(self) -> float:
        """RMS of the ROI average in the post window over its RMS in the pre window."""
        if self.n == 0:
            return math.nan
        p_post, p_pre = self._powers()
        return math.sqrt(p_post / p_pre) if p_pre > 0 else math.inf

    def snr_history(self) -> tuple[np.ndarray, np.ndarray]:
        """Number of epochs and SNR after each accepted epoch."""
        return np.array(self._hist_n, dtype=int), np.array(self._hist_snr)

    def noise_variances_uv2(self) -> tuple[float, float]:
        """Across-trial variance of the ROI trace, averaged over the pre and post windows."""
        if self.n < 2:
            return math.nan, math.nan
        v = self._rm2 / (self.n - 1)
        return float(v[self._pre].mean()), float(v[self._post].mean())

    def signal_power_uv2(self) -> float:
        """Noise-debiased ROI signal power in the post window: ``P_post - sigma_post^2 / N``."""
        if self.n < 2:
            return math.nan
        p_post, _ = self._powers()
        _, v_post = self.noise_variances_uv2()
        return p_post - v_post / self.n

    def predicted_snr(self, n_trials: int | np.ndarray) -> float | np.ndarray:
        """SNR expected after ``n_trials`` epochs (see the class notes for the model)."""
        s = self.signal_power_uv2()
        v_pre, v_post = self.noise_variances_uv2()
        n = np.asarray(n_trials, dtype=float)
        out = np.sqrt(np.maximum(n * max(s, 0.0) + v_post, 0.0) / v_pre)
        return float(out) if out.ndim == 0 else out

    def trials_needed(self, target_snr: float) -> float:
        """Estimated total number of epochs for the SNR to reach ``target_snr``.

        ``N* = (T^2 sigma_pre^2 - sigma_post^2) / S`` (class notes). Returns ``inf`` if no
        signal is detectable yet (``S <= 0``) and NaN with fewer than 2 epochs. A value below
        the current count means the target is already expected to be met.
        """
        if self.n < 2:
            return math.nan
        s = self.signal_power_uv2()
        v_pre, v_post = self.noise_variances_uv2()
        if not s > 0:
            return math.inf
        return max((target_snr ** 2 * v_pre - v_post) / s, 1.0)
