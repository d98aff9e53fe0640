"""Real-time estimators of the instantaneous phase and amplitude of an EEG rhythm.

Both estimators read a window of one (spatially filtered, see
:mod:`tmseeg.dsp.spatial`) signal that ends at the newest sample, and estimate the phase
and amplitude **at a target time** ``newest sample + delay_ms``. ``delay_ms`` is the technical
delay the caller must compensate: data transport + decision + trigger output + stimulator
latency. Phase uses the cosine convention of the simulator's ground truth: 0 = positive peak,
±pi = trough, increasing with time.

Shared preprocessing (both estimators)
--------------------------------------
1. **Downsampling** by an integer factor ``q = round(sfreq / downsample_hz)`` (default target
   500 Hz; 5 kHz -> q = 10) by averaging consecutive blocks of ``q`` samples, aligned so the last
   block ends at the newest sample. The block mean is a zero-phase anti-alias filter whose
   response has nulls exactly at the multiples of the new rate, i.e. where the frequencies that
   would alias into the 8-13 Hz band sit; its only delay (``(q - 1) / 2`` input samples, the
   centre of the block) is added to the prediction horizon, so nothing is lost in timing.
2. **Zero-phase band-pass without edge artefacts**: a linear-phase (symmetric) FIR of
   ``2 E + 1`` taps, ``E = round(edge_ms * fs)`` (windowed sinc, Hamming, ``band_hz``), applied
   as a *valid* convolution. Output sample ``j`` is centred on input sample ``j + E``, so the
   filter has zero phase and the ``E`` samples at each end of the window whose filtered values
   would need data outside the window are simply not produced ("edges discarded"). With the
   defaults (``edge_ms`` = 64 ms) the FIR spans 128 ms, the same span as the order-128 FIR at
   1 kHz of Zrenner et al. (2018).

:class:`ARPhaseEstimator` (after Zrenner et al., 2018)
------------------------------------------------------
Zrenner C, Desideri D, Belardinelli P, Ziemann U (2018). Real-time EEG-defined excitability
states determine efficacy of TMS-induced plasticity in human motor cortex. Brain Stimulation 11,
374-389. Reimplemented from the paper's description: a 500 ms window is band-passed, the
filter edges are removed, an autoregressive model (order 30, Yule-Walker) is fitted to the
remaining band-passed segment and used to forward-predict the signal through the removed edge
and on to the target time; the phase at the target is taken from the analytic signal (Hilbert
transform) of segment + prediction. Here the prediction runs ``predict_ms`` (default 128 ms)
*beyond* the target, so that the target does not sit at the end of the Hilbert window, where the
transform has its own edge error. The AR recursion is the hot loop
(:func:`tmseeg._ext.arpredict.ar_predict`, Cython, nogil).

Deviation from the paper: the default AR fit is Burg's method, not Yule-Walker. Yule-Walker
with the (necessary, biased) autocorrelation estimate pulls the poles inward, so the
prediction of a clean oscillation decays. Measured here on a pure 10.3 Hz cosine (5 kHz input,
defaults otherwise): maximum phase error 5.4-8.1 deg and envelope 3.7-3.9 of 5 µV with
Yule-Walker, 1.5-1.9 deg and 5.0-5.2 µV with Burg (predict_ms = 128; with 64 ms: 8.9-10.6 deg
vs 2.8-3.9 deg). ``method="yule-walker"`` stays available.

The AR order (default 30) is in samples of the downsampled signal: 30 samples at 500 Hz = 60 ms,
more than half a mu cycle, enough to carry the rhythm and one or two noise resonances. The
order must stay well below the segment length (``(window_ms - 2 edge_ms) * fs`` = 186 samples
with the defaults) or the fit becomes noise; the constructor refuses order >= segment / 3.

:class:`ETPPhaseEstimator` (after Shirinpour et al., 2020)
----------------------------------------------------------
Shirinpour S, Alekseichuk I, Mantell K, Opitz A (2020). Experimental evaluation of methods for
real-time EEG phase-specific transcranial magnetic stimulation. J Neural Eng 17, 046002.
Educated temporal prediction, reimplemented from the paper's description: on resting
training data the typical cycle length is learned (median interval between successive peaks
of the band-passed signal, intervals outside ``period_bounds_ms`` ignored); online, the window
is band-passed as above, the last peak of the valid (edge-free) segment is located (sub-sample,
parabolic), and the phase at the target is ``2 pi (t_target - t_last_peak) / period``, wrapped.

Amplitude estimates (for power gating)
--------------------------------------
``amplitude_uv``: AR: envelope (modulus of the analytic signal) at the target; ETP: height of
the band-passed signal at the last peak. ``power_uv2``: mean square of the valid band-passed
segment (band power of the window).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal
from scipy.linalg import solve_toeplitz

__all__ = ["PhaseEstimate", "ARPhaseEstimator", "ETPPhaseEstimator", "ar_predict_numpy",
           "fit_ar_yule_walker", "fit_ar_burg"]

_TWO_PI = 2.0 * math.pi


def _wrap(phase_rad: float) -> float:
    """Wrap to (-pi, pi]."""
    return math.pi - (math.pi - phase_rad) % _TWO_PI


@dataclass(frozen=True)
class PhaseEstimate:
    """One phase/amplitude estimate at a target time.

    Parameters
    ----------
    phase_rad : float
        Estimated instantaneous phase at the target, in (-pi, pi] (0 = peak, ±pi = trough);
        NaN if the estimator found nothing to go on (ETP: no peak in the window).
    amplitude_uv : float
        Estimated amplitude of the rhythm (µV), see the module notes.
    power_uv2 : float
        Mean square of the band-passed, edge-free window segment (µV²).
    delay_ms : float
        Requested distance from the newest sample to the target.
    target_sample : int or None
        Absolute sample index of the target (``newest_sample + round(delay_ms * sfreq)``) when
        the caller gave ``newest_sample``.
    compute_time_ms : float
        Wall time of the estimate (preprocessing included).
    """

    phase_rad: float
    amplitude_uv: float
    power_uv2: float
    delay_ms: float
    target_sample: int | None
    compute_time_ms: float


def ar_predict_numpy(coeffs: np.ndarray, history: np.ndarray, n_ahead: int) -> np.ndarray:
    """Plain numpy reference of the Cython AR predictor (``x[n] = sum_k a[k-1] x[n-k]``).

    Parameters
    ----------
    coeffs : ndarray, shape (p,)
        AR coefficients in prediction form.
    history : ndarray, shape (>= p,)
        Past samples, newest last.
    n_ahead : int
        Steps to predict.

    Returns
    -------
    ndarray, shape (n_ahead,)
    """
    p = len(coeffs)
    buf = np.concatenate([np.asarray(history, float)[-p:], np.zeros(n_ahead)])
    rev = np.asarray(coeffs, float)[::-1]
    for j in range(n_ahead):
        buf[p + j] = np.dot(rev, buf[j:p + j])
    return buf[p:]


def fit_ar_yule_walker(x: np.ndarray, order: int) -> np.ndarray:
    """AR coefficients (prediction form) by the Yule-Walker equations (Levinson solver).

    Uses the biased autocorrelation estimate, which keeps the Toeplitz matrix positive definite
    and the fitted model stable.
    """
    n = len(x)
    nfft = sp_fft.next_fast_len(2 * n - 1)
    spec = sp_fft.rfft(x, nfft)
    r = sp_fft.irfft(spec.real ** 2 + spec.imag ** 2, nfft)[:order + 1] / n
    if not r[0] > 0:
        raise ValueError("AR fit: the band-passed segment is all zeros (flat signal?).")
    return solve_toeplitz(r[:order], r[1:order + 1])


def fit_ar_burg(x: np.ndarray, order: int) -> np.ndarray:
    """AR coefficients (prediction form) by Burg's method (forward/backward lattice).

    Burg's estimate has higher spectral resolution than Yule-Walker on short segments.
    """
    f = np.asarray(x, float).copy()
    b = f.copy()
    a = np.zeros(0)
    for m in range(order):
        ff, bb = f[m + 1:], b[m:-1]
        den = np.dot(ff, ff) + np.dot(bb, bb)
        if not den > 0:
            raise ValueError("AR fit: the band-passed segment is all zeros (flat signal?).")
        k = 2.0 * np.dot(ff, bb) / den
        a = np.concatenate([a - k * a[::-1], [k]])
        f_new = ff - k * bb
        b_new = bb - k * ff
        f[m + 1:] = f_new
        b[m + 1:] = b_new
    return a


class _BandWindow:
    """Downsample + edge-free zero-phase band-pass of the newest window (shared by estimators)."""

    def __init__(self, sfreq: float, band_hz: tuple[float, float], window_ms: float,
                 edge_ms: float, downsample_hz: float) -> None:
        sfreq = float(sfreq)
        if not (math.isfinite(sfreq) and sfreq > 0):
            raise ValueError(f"sfreq must be a positive number of Hz, got {sfreq!r}.")
        lo, hi = (float(v) for v in band_hz)
        if not 0 < lo < hi:
            raise ValueError(f"band_hz={band_hz}: give (low, high) Hz with 0 < low < high.")
        self.sfreq = sfreq
        self.q = max(1, int(round(sfreq / float(downsample_hz))))
        self.fs = sfreq / self.q
        if hi >= self.fs / 2:
            raise ValueError(f"band_hz={band_hz}: the upper edge must be below the Nyquist "
                             f"frequency of the downsampled signal ({self.fs / 2:g} Hz); raise "
                             "downsample_hz.")
        self.band_hz = (lo, hi)
        self.n_ds = int(round(window_ms / 1000.0 * self.fs))
        self.edge = int(round(edge_ms / 1000.0 * self.fs))
        if self.edge < 1:
            raise ValueError(f"edge_ms={edge_ms}: must span at least one downsampled sample.")
        self.n_valid = self.n_ds - 2 * self.edge
        if self.n_valid < 16:
            raise ValueError(f"window_ms={window_ms} with edge_ms={edge_ms}: only {self.n_valid} "
                             "samples stay after discarding both edges; lengthen the window.")
        self.n_in = self.n_ds * self.q
        self.window_ms = window_ms
        self.edge_ms = edge_ms
        # windowed-sinc band-pass, 2E+1 taps (symmetric: zero phase about its centre)
        self.taps = signal.firwin(2 * self.edge + 1, [lo, hi], pass_zero=False, fs=self.fs,
                                  window="hamming")
        #: input samples from the newest sample back to the centre of the last decimated sample
        self.decim_lag_in = (self.q - 1) / 2.0

    def band(self, window: np.ndarray, who: str) -> np.ndarray:
        """The valid band-passed segment (n_valid,) of the newest ``n_in`` samples."""
        x = np.asarray(window)
        if x.ndim != 1:
            raise ValueError(f"{who}: the window must be 1-D (one spatially filtered signal), "
                             f"got shape {x.shape}; apply a SpatialFilter first.")
        if x.shape[0] < self.n_in:
            raise ValueError(
                f"{who}: the window has {x.shape[0]} samples but {self.n_in} are needed "
                f"({self.window_ms:g} ms at {self.sfreq:g} Hz); wait until the buffer holds "
                "enough data or shorten window_ms.")
        x = x[-self.n_in:]
        if not np.isfinite(x).all():
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise ValueError(f"{who}: {bad} NaN/inf sample(s) in the window (a gap or a bad "
                             "channel?); skip this estimate until the window is clean.")
        xd = x.reshape(self.n_ds, self.q).mean(axis=1) if self.q > 1 else x.astype(float)
        return np.convolve(xd, self.taps, mode="valid")

    def steps_to_target(self, delay_ms: float) -> float:
        """Downsampled samples from the last valid band-passed sample to the target."""
        return self.edge + (self.decim_lag_in + delay_ms / 1000.0 * self.sfreq) / self.q


def _check_delay(delay_ms: float, who: str) -> float:
    d = float(delay_ms)
    if not (math.isfinite(d) and 0.0 <= d <= 1000.0):
        raise ValueError(f"{who}: delay_ms={delay_ms!r} must be a finite number of ms in "
                         "[0, 1000].")
    return d


def _target(newest_sample: int | None, delay_ms: float, sfreq: float) -> int | None:
    if newest_sample is None:
        return None
    return int(newest_sample) + int(round(delay_ms / 1000.0 * sfreq))


class _WindowedEstimator:
    """What both estimators share: a band-pass window (``self._bw``) read at the input rate."""

    _bw: _BandWindow

    @property
    def sfreq(self) -> float:
        """Input sampling rate (Hz)."""
        return self._bw.sfreq

    @property
    def n_samples_needed(self) -> int:
        """Input samples an estimate reads (the window length at the input rate)."""
        return self._bw.n_in


class ARPhaseEstimator(_WindowedEstimator):
    """Phase at a future target time by AR forward prediction (after Zrenner et al., 2018).

    Parameters
    ----------
    sfreq : float
        Sampling rate of the input window, in Hz.
    band_hz : tuple of float
        Pass band of the rhythm (default mu: 8-13 Hz).
    window_ms : float
        Length of the window read, ending at the newest sample (default 500 ms).
    ar_order : int
        AR model order in downsampled samples (default 30; see the module notes).
    edge_ms : float
        Samples discarded at each end of the band-passed window (the FIR half-length); they
        are re-predicted by the AR model (default 64 ms).
    predict_ms : float
        How far the prediction runs beyond the target, so that the target is not at the end of
        the Hilbert window (default 128 ms).
    downsample_hz : float
        Rate to downsample to first (integer factor; default 500 Hz).
    method : {"yule-walker", "burg"}
        AR fit (default Burg; the paper used Yule-Walker, see the module notes).
    use_cython : bool
        Use the Cython prediction kernel (default); False runs the numpy reference.

    Examples
    --------
    >>> est = ARPhaseEstimator(sfreq=5000)
    >>> e = est.estimate(c3_laplacian[-est.n_samples_needed:], delay_ms=10.0)  # doctest: +SKIP
    """

    def __init__(self, sfreq: float, band_hz: tuple[float, float] = (8.0, 13.0),
                 window_ms: float = 500.0, ar_order: int = 30, edge_ms: float = 64.0,
                 predict_ms: float = 128.0, downsample_hz: float = 500.0,
                 method: str = "burg", use_cython: bool = True) -> None:
        self._bw = _BandWindow(sfreq, band_hz, window_ms, edge_ms, downsample_hz)
        self.ar_order = int(ar_order)
        if not 1 <= self.ar_order < self._bw.n_valid / 3:
            raise ValueError(f"ar_order={ar_order}: must be >= 1 and below a third of the "
                             f"edge-free segment ({self._bw.n_valid} samples); lower it or "
                             "lengthen window_ms.")
        if method not in ("yule-walker", "burg"):
            raise ValueError(f"method={method!r}: use 'yule-walker' or 'burg'.")
        self.method = method
        self.predict_ms = float(predict_ms)
        if not self.predict_ms >= 0:
            raise ValueError(f"predict_ms={predict_ms}: must be >= 0.")
        self.use_cython = bool(use_cython)
        self._ar_predict = None
        if self.use_cython:
            from tmseeg._ext.arpredict import ar_predict
            self._ar_predict = ar_predict
        self._margin = int(math.ceil(self.predict_ms / 1000.0 * self._bw.fs))

    def estimate(self, window: np.ndarray, delay_ms: float = 0.0,
                 newest_sample: int | None = None) -> PhaseEstimate:
        """Estimate phase and amplitude at ``newest sample + delay_ms``.

        Parameters
        ----------
        window : ndarray, shape (n,)
            The spatially filtered signal (µV), newest sample last, ``n >= n_samples_needed``
            (only the newest ``n_samples_needed`` are read).
        delay_ms : float
            Technical delay to compensate (0-1000 ms).
        newest_sample : int, optional
            Absolute index of the newest sample, to fill ``target_sample``.

        Returns
        -------
        PhaseEstimate

        Raises
        ------
        ValueError
            Window too short, not 1-D, containing NaN/inf, or a bad ``delay_ms``.
        """
        t0 = time.perf_counter()
        d = _check_delay(delay_ms, "ARPhaseEstimator.estimate")
        bw = self._bw
        y = bw.band(window, "ARPhaseEstimator.estimate")
        y = y - y.mean()
        a = fit_ar_burg(y, self.ar_order) if self.method == "burg" else \
            fit_ar_yule_walker(y, self.ar_order)
        steps = bw.steps_to_target(d)
        i_lo = int(math.floor(steps))
        n_ahead = i_lo + 1 + self._margin + 1
        z = np.empty(len(y) + n_ahead)
        z[:len(y)] = y
        if self._ar_predict is not None:
            self._ar_predict(a, y, n_ahead, z[len(y):])
        else:
            z[len(y):] = ar_predict_numpy(a, y, n_ahead)
        an = signal.hilbert(z)
        k = len(y) - 1 + i_lo
        frac = steps - i_lo
        c = an[k] * (1.0 - frac) + an[k + 1] * frac if frac > 0 else an[k]
        # interpolate the phase along the arc (robust where the modulus dips)
        ph0 = math.atan2(an[k].imag, an[k].real)
        dph = _wrap(math.atan2(an[k + 1].imag, an[k + 1].real) - ph0)
        phase = _wrap(ph0 + frac * dph)
        amp = float(abs(c))
        power = float(np.dot(y, y) / len(y))
        return PhaseEstimate(phase, amp, power, d, _target(newest_sample, d, bw.sfreq),
                             (time.perf_counter() - t0) * 1000.0)


class ETPPhaseEstimator(_WindowedEstimator):
    """Phase at a future target time by educated temporal prediction (Shirinpour et al., 2020).

    Call :meth:`fit` once on resting data (same spatial filter, same rate), then
    :meth:`estimate` online.

    Parameters
    ----------
    sfreq : float
        Sampling rate of the input, in Hz.
    band_hz : tuple of float
        Pass band of the rhythm (default 8-13 Hz).
    window_ms : float
        Online window length (default 500 ms).
    edge_ms : float
        Samples discarded at each end of the band-passed window (FIR half-length, default 64 ms).
    downsample_hz : float
        Rate to downsample to first (default 500 Hz).
    period_bounds_ms : tuple of float, optional
        Inter-peak intervals outside these bounds are ignored in training; default
        ``(1000 / band_hz[1], 1000 / band_hz[0])`` (77-125 ms for 8-13 Hz).

    Attributes
    ----------
    period_ms : float
        Learned cycle length (NaN before :meth:`fit`).
    n_training_intervals : int
        Inter-peak intervals the period was learned from.
    """

    def __init__(self, sfreq: float, band_hz: tuple[float, float] = (8.0, 13.0),
                 window_ms: float = 500.0, edge_ms: float = 64.0, downsample_hz: float = 500.0,
                 period_bounds_ms: tuple[float, float] | None = None) -> None:
        self._bw = _BandWindow(sfreq, band_hz, window_ms, edge_ms, downsample_hz)
        lo, hi = self._bw.band_hz
        self.period_bounds_ms = (tuple(float(v) for v in period_bounds_ms)
                                 if period_bounds_ms is not None
                                 else (1000.0 / hi, 1000.0 / lo))
        if not 0 < self.period_bounds_ms[0] < self.period_bounds_ms[1]:
            raise ValueError(f"period_bounds_ms={period_bounds_ms}: give (min, max) with "
                             "0 < min < max.")
        self.period_ms = float("nan")
        self.n_training_intervals = 0

    @property
    def fitted(self) -> bool:
        """True once :meth:`fit` has learned a period."""
        return math.isfinite(self.period_ms)

    def fit(self, training: np.ndarray) -> "ETPPhaseEstimator":
        """Learn the cycle length from resting data.

        Parameters
        ----------
        training : ndarray, shape (n,)
            Spatially filtered resting signal (µV) at ``sfreq``; at least 10 s recommended.

        Returns
        -------
        ETPPhaseEstimator
            ``self``.

        Raises
        ------
        ValueError
            Not 1-D, NaN/inf, shorter than two windows, or fewer than 10 usable intervals.
        """
        bw = self._bw
        x = np.asarray(training, dtype=float)
        if x.ndim != 1:
            raise ValueError(f"ETPPhaseEstimator.fit: training data must be 1-D, got {x.shape}.")
        if x.shape[0] < 2 * bw.n_in:
            raise ValueError(f"ETPPhaseEstimator.fit: {x.shape[0]} samples; give at least "
                             f"{2 * bw.n_in} (better > 10 s of resting data).")
        if not np.isfinite(x).all():
            raise ValueError("ETPPhaseEstimator.fit: training data contain NaN/inf; drop "
                             "gaps first.")
        n_ds = x.shape[0] // bw.q
        xd = x[x.shape[0] - n_ds * bw.q:].reshape(n_ds, bw.q).mean(axis=1)
        y = np.convolve(xd, bw.taps, mode="valid")
        pk = self._peaks(y)
        iv_ms = np.diff(pk) / bw.fs * 1000.0
        lo, hi = self.period_bounds_ms
        iv_ms = iv_ms[(iv_ms >= lo) & (iv_ms <= hi)]
        if iv_ms.size < 10:
            raise ValueError(f"ETPPhaseEstimator.fit: only {iv_ms.size} inter-peak intervals "
                             f"within {lo:g}-{hi:g} ms; is the rhythm present in the training "
                             "data and band_hz right?")
        self.period_ms = float(np.median(iv_ms))
        self.n_training_intervals = int(iv_ms.size)
        return self

    @staticmethod
    def _peaks(y: np.ndarray) -> np.ndarray:
        """Sub-sample positions of positive local maxima (parabolic refinement)."""
        mid = y[1:-1]
        i = np.flatnonzero((mid > y[:-2]) & (mid >= y[2:]) & (mid > 0)) + 1
        if i.size == 0:
            return i.astype(float)
        ym, y0, yp = y[i - 1], y[i], y[i + 1]
        den = ym - 2 * y0 + yp
        off = np.where(den < 0, 0.5 * (ym - yp) / np.where(den < 0, den, 1.0), 0.0)
        return i + np.clip(off, -0.5, 0.5)

    def estimate(self, window: np.ndarray, delay_ms: float = 0.0,
                 newest_sample: int | None = None) -> PhaseEstimate:
        """Estimate phase and amplitude at ``newest sample + delay_ms``.

        Parameters
        ----------
        window : ndarray, shape (n,)
            Spatially filtered signal (µV), newest last, ``n >= n_samples_needed``.
        delay_ms : float
            Technical delay to compensate (0-1000 ms).
        newest_sample : int, optional
            Absolute index of the newest sample, to fill ``target_sample``.

        Returns
        -------
        PhaseEstimate
            ``phase_rad`` is NaN when the window holds no positive peak.

        Raises
        ------
        RuntimeError
            Before :meth:`fit`.
        ValueError
            Window too short, not 1-D, NaN/inf, or a bad ``delay_ms``.
        """
        t0 = time.perf_counter()
        if not self.fitted:
            raise RuntimeError("ETPPhaseEstimator.estimate: call fit(training_data) first to "
                               "learn the cycle length.")
        d = _check_delay(delay_ms, "ETPPhaseEstimator.estimate")
        bw = self._bw
        y = bw.band(window, "ETPPhaseEstimator.estimate")
        power = float(np.dot(y, y) / len(y))
        pk = self._peaks(y)
        if pk.size == 0:
            phase, amp = float("nan"), 0.0
        else:
            p = float(pk[-1])
            i = int(round(p))
            amp = float(y[i])
            # distance (downsampled samples) from the last peak to the target
            dist = (len(y) - 1 - p) + bw.steps_to_target(d)
            period_ds = self.period_ms / 1000.0 * bw.fs
            phase = _wrap(_TWO_PI * dist / period_ds)
        return PhaseEstimate(phase, amp, power, d, _target(newest_sample, d, bw.sfreq),
                             (time.perf_counter() - t0) * 1000.0)
