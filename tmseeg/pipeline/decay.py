"""Decay-artifact removal: the skin-electrode discharge after the pulse, fitted and subtracted.

:class:`DecayRemoval` fits a single or double exponential plus a constant to the data just
after the cut window and subtracts the exponential (``tesa_fitdoubleexp``'s idea, reimplemented
with a variable-projection fit, :class:`DecayFitter`; the Cython kernel ``lm_refine`` polishes
it), then re-interpolates the cut window (:mod:`tmseeg.pipeline.interpolation`) so no step is
left. It runs right after the pulse-window interpolation.

On a live stream it holds samples back until the fit stretch has arrived, then releases them:
given the same data and pulses the live output equals the whole-file output to rounding,
whatever the block sizes.
"""
from __future__ import annotations

import logging
import math
import warnings
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from tmseeg._ext.expfit import lm_refine
from tmseeg._ext.expmodel import add_exp_model, exp_model_moments
from tmseeg.pipeline.base import empty_block_like, ms_to_samples
from tmseeg.pipeline.interpolation import (HoldBuffer, apply_span,
                                           interp_params, plan_spans, provided_window,
                                           resolve_rows)
from tmseeg.stream.block import EVENT_PULSE, Block
from tmseeg.utils import BackgroundWork, over_rows

log = logging.getLogger(__name__)

__all__ = ["DecayRemoval", "DecayFit", "DecayFitter", "fit_decay", "decay_size_uv",
           "decay_gate", "steps_at_pulse", "FIT_ON", "FIT_REFERENCES", "DECAY_MODELS"]


@dataclass(frozen=True)
class DecayFit:
    """Result of :func:`fit_decay` for each channel.

    Attributes
    ----------
    amps_uv : ndarray, shape (n_channels, n_exp)
        Amplitude of each exponential at the first fitted sample (µV).
    tau_ms : ndarray, shape (n_channels, n_exp)
        Time constants (ms), ascending within a channel.
    offset_uv : ndarray, shape (n_channels,)
        The constant ``c`` (not subtracted: it is the EEG's own level).
    r2 : ndarray, shape (n_channels,)
        Explained variance of the whole model on the fitted data (NaN if undefined).
    snr : ndarray, shape (n_channels,)
        The decay's size (:func:`decay_size_uv`: ``|sum_k a_k|`` at the first fitted sample,
        or the extremum of a fast two-term decay whose terms cancel there) over the RMS of
        the fit residual: how clearly a decay stands out of the EEG.
    ok : ndarray of bool, shape (n_channels,)
        Whether the fit passed the quality checks (only those channels are corrected).
    no_step : ndarray of bool, shape (n_channels,), or None
        Channels whose decay passed the other gates but was not a step at the pulse
        (:func:`steps_at_pulse`; their ``ok`` is False); None where that was not judged.
    """

    amps_uv: np.ndarray
    tau_ms: np.ndarray
    offset_uv: np.ndarray
    r2: np.ndarray
    snr: np.ndarray
    ok: np.ndarray
    no_step: np.ndarray | None = None

    @property
    def n_no_step(self) -> int:
        """How many channels were turned away for want of a step at the pulse."""
        return 0 if self.no_step is None else int(self.no_step.sum())

    def model_uv(self, n_samples: int, sfreq: float, start: int = 0) -> np.ndarray:
        """The fitted exponentials (without the constant) for samples ``start .. start+n-1``
        after the first fitted sample, shape (n_channels, n_samples); zero where not ``ok``."""
        out = np.zeros((self.amps_uv.shape[0], n_samples))
        self.add_to(out, np.arange(out.shape[0]), 0, n_samples, sfreq, start, scale=1.0)
        return out

    def add_to(self, data: np.ndarray, data_rows: np.ndarray, col0: int, n: int,
               sfreq: float, start: int, scale: float) -> None:
        """``data[data_rows[ch], col0:col0 + n] += scale * model`` of samples ``start ..
        start + n - 1``, every ``ok`` channel ``ch``, in place (``scale = -1`` subtracts it);
        the values of :meth:`model_uv`, whatever ``n`` (block sizes do not change them)."""
        rows = np.flatnonzero(self.ok)
        if rows.size and n > 0:
            add_exp_model(data, np.ascontiguousarray(np.asarray(data_rows, np.intp)[rows]),
                          np.ascontiguousarray(self.amps_uv[rows], dtype=np.float64),
                          np.ascontiguousarray(self.tau_ms[rows], dtype=np.float64),
                          int(col0), int(n), int(start), 1000.0 / sfreq, float(scale))


#: a decay whose two terms have opposite signs is sized by its extremum (not its start, where
#: they cancel) when its faster term is at least this fast (ms): an electrode's discharge has
#: such a term; a slow hump in the average (blinks, drifts, the TEP) has not
HUMP_FAST_MS = 20.0


def decay_size_uv(amps_uv: np.ndarray, tau_ms: np.ndarray, window_ms: float) -> np.ndarray:
    """How large each channel's fitted decay is, for the stage's gates (µV).

    ``|sum_k a_k|``, the decay at the first fitted sample; for two terms of opposite signs
    whose faster one has ``tau <= HUMP_FAST_MS``, the larger of that and the curve's extremum
    within ``window_ms``. Such terms cancel at the start (e.g. +89 and -87 µV with 8 and 48 ms:
    2 µV there, -49 µV 17 ms later), and sized by their start a large decay was left in.

    Parameters
    ----------
    amps_uv, tau_ms : ndarray, shape (n_channels, n_exp)
        As in :class:`DecayFit` (time constants ascending within a channel).
    window_ms : float
        The fit window's length: an extremum after it does not count.
    """
    return _decay_size_at(amps_uv, tau_ms, window_ms)[0]


def _decay_size_at(amps_uv: np.ndarray, tau_ms: np.ndarray, window_ms: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decay_size_uv`, and where the decay has that size (ms after the first fitted
    sample)."""
    amps = np.asarray(amps_uv, dtype=np.float64)
    size = np.abs(amps.sum(axis=1))
    at_ms = np.zeros(size.shape)
    if amps.shape[1] != 2:
        return size, at_ms
    tau = np.asarray(tau_ms, dtype=np.float64)
    a1, a2, t1, t2 = amps[:, 0], amps[:, 1], tau[:, 0], tau[:, 1]
    hump = (a1 * a2 < 0) & (t1 <= HUMP_FAST_MS) & (t2 > t1)
    if not hump.any():
        return size, at_ms
    a1, a2, t1, t2 = a1[hump], a2[hump], t1[hump], t2[hump]
    with np.errstate(all="ignore"):
        # f'(t) = 0 where (a1 / t1) exp(-t / t1) = -(a2 / t2) exp(-t / t2)
        t_ext = np.log(-(a1 * t2) / (a2 * t1)) / (1.0 / t1 - 1.0 / t2)
    t_ext = np.clip(np.nan_to_num(t_ext, nan=0.0), 0.0, window_ms)
    extremum = np.abs(a1 * np.exp(-t_ext / t1) + a2 * np.exp(-t_ext / t2))
    larger = extremum > size[hump]
    size[hump] = np.where(larger, extremum, size[hump])
    at_ms[hump] = np.where(larger, t_ext, 0.0)
    return size, at_ms


def decay_gate(fit: DecayFit, window_ms: float, min_r2: float, min_snr: float,
               min_decay_uv: float) -> np.ndarray:
    """Channels whose fitted decay stands out: a stable fit explaining at least ``min_r2`` of
    the window, its size (:func:`decay_size_uv`) at least ``min_snr`` residual RMS and
    ``min_decay_uv``; what :class:`DecayRemoval` corrects."""
    size = decay_size_uv(fit.amps_uv, fit.tau_ms, window_ms)
    return fit.ok & (fit.r2 >= min_r2) & (fit.snr >= min_snr) & (size >= min_decay_uv)


#: a channel's decay in the running average must show as a step at the pulse: the averaged
#: data where the fitted decay is largest must have left the pre-pulse level by at least this
#: share of the decay (a blink or a drift is continuous across the pulse; fitted from a few
#: windows it can look like a slow decay of tens to hundreds of µV)
MIN_STEP_SHARE = 0.5
#: ... while the running average holds fewer windows than this: from then on one window's
#: blink or drift of up to 400 µV moves the average by less than the pipeline's
#: ``min_decay_uv`` (20 µV). On the outside benchmark the gate on every average (not only
#: young ones) cost accuracy on full-length recordings: it also turned away decays whose
#: slow term trades off against the EEG's level in an 800-ms window (summed early-TEP RMS
#: error over seeds 0-4 23.07 -> 23.78; young only: 23.14; the quick seeds 48.63 -> 45.45)
STEP_GATE_WINDOWS = 20
#: the pre-pulse level: the mean of this stretch before the cut window (ms)
PRE_LEVEL_MS = 10.0


def steps_at_pulse(fit: DecayFit, y_uv: np.ndarray, pre_uv: np.ndarray, sfreq: float,
                   share: float = MIN_STEP_SHARE) -> np.ndarray:
    """Channels whose fitted decay is a departure from the level before the pulse.

    A decay artifact starts at the pulse: the data right after the cut have left the level
    they had before it by about the decay's size. A slow wave that crosses the pulse (a
    blink, a drift, an alpha burst in a young average) is continuous there, yet a fit of the
    window alone can call it a decay. Per channel, where :func:`decay_size_uv` sizes the
    fitted decay (its first sample, or the extremum of a fast two-term curve whose terms
    cancel at the start), the data's mean over 1 ms less the mean of ``pre_uv`` must be at
    least ``share`` of the model there, with its sign.

    Parameters
    ----------
    fit : DecayFit
        The fit of ``y_uv`` (its ``ok`` is ignored: every channel is judged).
    y_uv : ndarray, shape (n_channels, n_samples)
        The fitted window (from the first fitted sample on).
    pre_uv : ndarray, shape (n_channels, n_pre)
        The same channels just before the cut window (NaN where unknown: such a channel
        passes).
    sfreq : float
        Sampling rate (Hz).
    share : float
        Least share of the model the step must reach.
    """
    n = y_uv.shape[1]
    _, at_ms = _decay_size_at(fit.amps_uv, fit.tau_ms, n * 1000.0 / sfreq)
    with np.errstate(all="ignore"):
        model = (fit.amps_uv * np.exp(-at_ms[:, None] / fit.tau_ms)).sum(axis=1)
    width = max(1, int(round(sfreq / 1000.0)))
    at = np.rint(at_ms * sfreq / 1000.0).astype(np.intp)
    lo = np.clip(at - width // 2, 0, max(0, n - width))
    idx = lo[:, None] + np.arange(width)[None, :]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmean(pre_uv, axis=1)
        step = y_uv[np.arange(y_uv.shape[0])[:, None], idx].mean(axis=1) - level
    unknown = ~np.isfinite(level) | ~np.isfinite(step)
    return unknown | (step * model >= share * model * model)


class DecayFitter:
    """Variable-projection fit of ``sum_k a_k exp(-t / tau_k) + c`` to many channels at once.

    The fit runs on box means of ``m`` consecutive samples (at most ``max_points`` boxes):
    the mean of an exponential over a box is exactly the exponential at the box start times a
    factor that depends only on tau, so the time constants are unbiased and the amplitudes are
    corrected by that factor; noise is averaged, not aliased.

    1. Grid search: for every tau (``"exp"``) or tau pair with ``tau2 / tau1 >= min_ratio``
       (``"double_exp"``) on a log grid within ``tau_ms``, the amplitudes and ``c`` are a linear
       least-squares problem; the residual of all channels for all grid points is one matrix
       product with precomputed orthonormal bases.
    2. Levenberg-Marquardt on (amplitudes, c, log tau) from the best grid point, channel by
       channel in the Cython kernel :func:`tmseeg._ext.expfit.lm_refine`, taus kept inside the
       bounds and apart by ``min_ratio``.

    Parameters
    ----------
    n_samples : int
        Length of the fit window in samples.
    sfreq : float
        Sampling rate in Hz.
    n_exp : int
        1 or 2 exponentials.
    tau_ms : (float, float)
        Bounds of the time constants in ms.
    n_grid : int
        Log-spaced grid taus.
    max_points : int
        Upper bound on fitted box means.
    min_ratio : float
        Least ratio of the two time constants (keeps the two exponentials apart).
    n_iter : int
        Levenberg-Marquardt iterations.
    """

    def __init__(self, n_samples: int, sfreq: float, n_exp: int = 2,
                 tau_ms: tuple[float, float] = (2.0, 500.0), n_grid: int = 20,
                 max_points: int = 300, min_ratio: float = 2.0, n_iter: int = 12) -> None:
        if n_exp not in (1, 2):
            raise ValueError(f"n_exp must be 1 or 2, got {n_exp}")
        if not 0 < tau_ms[0] < tau_ms[1]:
            raise ValueError(f"tau_ms must be (low, high) with 0 < low < high, got {tau_ms}")
        self.n_samples = int(n_samples)
        self.sfreq = float(sfreq)
        self.n_exp = n_exp
        self.m = max(1, self.n_samples // max_points)
        self.n_boxes = self.n_samples // self.m
        if self.n_boxes < 2 * n_exp + 2:
            raise ValueError(f"a fit window of {n_samples} samples is too short for {n_exp} "
                             "exponential(s)")
        self.t_ms = np.arange(self.n_boxes) * (self.m * 1000.0 / self.sfreq)
        self.log_lo, self.log_hi = math.log(tau_ms[0]), math.log(tau_ms[1])
        self.min_ratio = float(min_ratio)
        self.n_iter = int(n_iter)
        taus = np.geomspace(tau_ms[0], tau_ms[1], n_grid)
        if n_exp == 1:
            combos = taus[:, None]
        else:
            combos = np.array([(a, b) for i, a in enumerate(taus) for b in taus[i + 1:]
                               if b / a >= min_ratio * (1 - 1e-9)])
        self.grid_tau_ms = combos
        basis = np.concatenate(
            [np.exp(-self.t_ms[None, :, None] / combos[:, None, :]),
             np.ones((len(combos), self.n_boxes, 1))], axis=2)
        q, _ = np.linalg.qr(basis)
        n_g, n_b, k = q.shape
        self._qt = np.ascontiguousarray(q.transpose(0, 2, 1).reshape(n_g * k, n_b))
        self._k = k

    def _boxes(self, y: np.ndarray) -> np.ndarray:
        m, nb = self.m, self.n_boxes
        if m == 1:
            return y[:, :nb]
        return y[:, :nb * m].reshape(y.shape[0], nb, m).mean(axis=2)

    def fit(self, y_uv: np.ndarray, max_gain: float = 20.0) -> DecayFit:
        """Fit every row of ``y_uv`` (n_channels, n_samples); see :class:`DecayFit`.

        A channel's fit is marked not ok when it has non-finite data, or an amplitude larger
        than ``max_gain`` times the data range (two exponentials cancelling each other).
        """
        y = np.asarray(y_uv, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.n_samples:
            raise ValueError(f"expected (n_channels, {self.n_samples}) data, got {y.shape}")
        n_ch, K = y.shape[0], self.n_exp
        finite = np.isfinite(y).all(axis=1)
        yb = self._boxes(np.where(finite[:, None], y, 0.0))
        # 1. grid: projection energy of every channel on every grid basis
        proj = (self._qt @ yb.T).reshape(-1, self._k, n_ch)
        best = np.einsum("gkc,gkc->gc", proj, proj).argmax(axis=0)
        log_tau = np.ascontiguousarray(np.log(self.grid_tau_ms[best]))
        # 2. Levenberg-Marquardt on all parameters, channel by channel (Cython, no GIL)
        coef = np.empty((n_ch, K + 1))
        cost = np.empty(n_ch)
        yb = np.ascontiguousarray(yb)
        log_ratio = math.log(self.min_ratio)

        def refine(a: int, b: int) -> None:  # channels are independent: split over the cores
            lm_refine(yb[a:b], self.t_ms, log_tau[a:b], coef[a:b], self.log_lo, self.log_hi,
                      log_ratio, self.n_iter, cost[a:b])

        # the work grows with channels x points x iterations, not with the array's size
        over_rows(refine, n_ch, n_ch * self.n_boxes * self.n_iter * 8)
        return self._finish(yb, finite, np.exp(log_tau), coef, cost, max_gain)

    def fit_amplitudes(self, y_uv: np.ndarray, tau_ms: np.ndarray,
                       max_gain: float = 20.0) -> DecayFit:
        """Fit only the amplitudes and the constant, with given time constants (linear).

        Parameters
        ----------
        y_uv : ndarray, shape (n_channels, n_samples)
            Data of the fit window.
        tau_ms : ndarray, shape (n_channels, n_exp)
            Time constants per channel (e.g. from a fit of the average).
        max_gain : float
            As in :meth:`fit`.
        """
        y = np.asarray(y_uv, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] != self.n_samples:
            raise ValueError(f"expected (n_channels, {self.n_samples}) data, got {y.shape}")
        tau = np.asarray(tau_ms, dtype=np.float64).reshape(y.shape[0], self.n_exp)
        finite = np.isfinite(y).all(axis=1) & np.all(np.isfinite(tau) & (tau > 0), axis=1)
        yb = self._boxes(np.where(finite[:, None], y, 0.0))
        tau = np.where(finite[:, None], tau, 1.0)
        n_ch, K = y.shape[0], self.n_exp
        e = np.exp(-self.t_ms[None, :, None] / tau[:, None, :])
        a = np.concatenate([e, np.ones((n_ch, self.n_boxes, 1))], axis=2)
        at = a.transpose(0, 2, 1)
        ata = at @ a
        ata += 1e-12 * np.trace(ata, axis1=1, axis2=2)[:, None, None] * np.eye(K + 1)
        coef = np.linalg.solve(ata, at @ yb[..., None])[..., 0]
        res = yb - (a @ coef[..., None])[..., 0]
        return self._finish(yb, finite, tau, coef, np.einsum("ct,ct->c", res, res), max_gain)

    def _finish(self, yb, finite, tau, coef, cost, max_gain) -> DecayFit:
        K = self.n_exp
        # box means of exp(-t/tau) are exp(-t0/tau) * gain(tau): undo the gain
        q = np.exp(-1000.0 / (self.sfreq * tau))
        gain = (1.0 - q ** self.m) / (self.m * (1.0 - q)) if self.m > 1 else np.ones_like(tau)
        amps = coef[:, :K] / gain
        dev = yb - yb.mean(1, keepdims=True)
        ss_tot = np.einsum("ct,ct->c", dev, dev)
        with np.errstate(all="ignore"):
            r2 = np.where(ss_tot > 0, 1.0 - cost / ss_tot, np.nan)
            span = np.ptp(yb, axis=1)
            snr = (decay_size_uv(amps, tau, self.n_boxes * self.m * 1000.0 / self.sfreq)
                   / np.sqrt(cost / self.n_boxes))
        ok = finite & np.isfinite(r2) & np.all(np.isfinite(amps), axis=1) \
            & np.all(np.abs(amps) <= max_gain * np.maximum(span, 1e-12)[:, None], axis=1)
        return DecayFit(amps_uv=amps, tau_ms=tau, offset_uv=coef[:, K], r2=r2,
                        snr=np.nan_to_num(snr, nan=0.0, posinf=np.inf), ok=ok)


def fit_decay(
    y_uv: np.ndarray,
    sfreq: float,
    model: str = "double_exp",
    tau_ms: tuple[float, float] = (2.0, 500.0),
) -> DecayFit:
    """Fit a (double) exponential plus a constant to each row of ``y_uv``.

    Parameters
    ----------
    y_uv : ndarray, shape (n_channels, n_samples)
        Data of the fit window; time 0 is its first sample.
    sfreq : float
        Sampling rate in Hz.
    model : {"exp", "double_exp"}
        One or two exponentials.
    tau_ms : (float, float)
        Bounds of the time constants.

    Returns
    -------
    DecayFit
    """
    n_exp = _MODELS.get(model)
    if n_exp is None:
        raise ValueError(f"model must be 'exp' or 'double_exp', got {model!r}")
    return DecayFitter(y_uv.shape[1], sfreq, n_exp, tau_ms).fit(y_uv)


_MODELS = {"exp": 1, "double_exp": 2}
DECAY_MODELS = tuple(_MODELS)  # the models fit_decay knows
#: ``"average_gain_scale"``: the time scales tried for each pulse (the outside benchmark's
#: variable decays scale their time constants by 0.75-1.33 from trial to trial)
_TIME_SCALES = np.exp(np.linspace(-0.36, 0.36, 13))  # 0.70 .. 1.43, 1 in the middle
#: how a pulse's decay is estimated (see :class:`DecayRemoval`)
FIT_ON = ("trial", "average", "average_curve", "average_gain", "average_gain_scale")
#: those a configuration may choose (``"trial"`` is the stage's own fallback for clipped windows)
CONFIG_FIT_ON = tuple(m for m in FIT_ON if m != "trial")
FIT_REFERENCES = ("median", "recorded")


def _against_median(y: np.ndarray) -> np.ndarray:
    """Each channel minus the median of all channels at each sample.

    What is common to all channels, the reference electrode's own decay above all (it sits on
    the skin too), is not a decay of any one channel: the average reference removes it. Left
    in, it enters every channel's fit and gate; removed with the decays of the channels that
    pass the gates but not from the others, its remainder comes back into every channel
    through the average reference (on the outside benchmark's biphasic family: ~+15 uV at
    10-20 ms in the ROI). The median, not the mean: the large decays near the coil and a bad
    channel do not move it, as long as they are a minority."""
    if np.isfinite(y).all():  # the same values; nanmedian's masked path is ~2x slower
        return y - np.median(y, axis=0)[None, :]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN sample: median NaN
        common = np.nanmedian(y, axis=0)
    return y - np.where(np.isfinite(common), common, 0.0)[None, :]


class DecayRemoval:
    """Fit and subtract the slow decay artifact that follows each TMS pulse (live or offline).

    Per pulse and channel, ``a exp(-t/tau) + c`` (``"exp"``) or
    ``a exp(-t/tau1) + b exp(-t/tau2) + c`` (``"double_exp"``) is fitted to the fit window,
    which starts right after the cut window; the exponentials (not ``c``, the EEG's own level)
    are subtracted from the first fitted sample on, and beyond the fit window for as long as
    they exceed ``tail_uv`` (they decay to zero, so no step is made). Then the cut window is
    interpolated again (same rules as :class:`~tmseeg.pipeline.interpolation.PulseInterpolation`) so that it joins the
    corrected data without a step.

    The TEP lies inside the fit window, and whatever part of it looks like an exponential is
    removed with the artifact. A long window lets the late data pin the slow exponential down;
    the default ``(10, 800)`` ms with two exponentials and time constants taken from the running
    average (``fit_on="average"``) is what kept the early TEP best on the simulator (see
    ``tests/pipeline/test_artifact.py``), at the cost of 800 ms of hold-back. A channel's
    fit is not used (the channel is left as it is, and the reason logged) when the decay does
    not stand out — its size (:func:`decay_size_uv`: at the fit start, or at its extremum
    when a fast term and a slower one of the other sign cancel there) is below ``min_snr``
    times the residual RMS or ``min_decay_uv``, or the model explains less than ``min_r2`` of
    the variance: then there is no decay to remove, and fitting would only eat EEG. While the
    running average is young (fewer than ``STEP_GATE_WINDOWS`` windows), a channel's decay
    must also be a step at the pulse (:func:`steps_at_pulse`: the data after the cut have left
    their level of the 10 ms before it by at least half the decay): a blink or a drift in
    one of a few windows is continuous across the pulse, yet fits an exponential of tens to
    hundreds of µV.

    Pulses close together: a fit window ends where the next pulse's cut window begins, and so
    does the subtraction of that fit; the next pulse's fit sees what is left of the earlier
    decay together with its own (decays of one channel share its time constants, so their sum
    is again of the fitted form) and removes both. When the clipped window is shorter than
    ``min_fit_ms`` (paired pulses, 50 Hz bursts) the pulse is not fitted on its own at all.

    Parameters
    ----------
    fit_window_ms : (float, float)
        Fit window in ms after the pulse; the first fitted sample is the one right after
        ``fit_window_ms[0]`` (so the default start is the end of the default cut window).
    model : {"double_exp", "exp"}
        Two exponentials (fast electrode/amplifier decay plus a slow one) or one.
    channels : "eeg" | list of str | None
        Channels to correct.
    tau_ms : (float, float)
        Bounds of the time constants, in ms.
    min_snr : float
        Least size of the fitted decay at the fit start, in residual RMS units (box means).
    min_r2 : float
        Least explained variance of a channel's fit for it to be subtracted.
    min_fit_ms : float
        Least fit window (after clipping at the next pulse) worth fitting.
    cut_window_ms : (float, float) or None
        Window re-interpolated after the subtraction (None: do not re-interpolate).
    interp_method, interp_fit_ms
        As ``method`` and ``fit_ms`` of :class:`~tmseeg.pipeline.interpolation.PulseInterpolation`.
    tail_uv : float
        The subtraction continues after the fit window until every channel's model is below
        this (µV), at most ``4 x`` the fit window.
    max_delay_ms : float
        How late a pulse event may arrive (see :class:`~tmseeg.pipeline.interpolation.PulseInterpolation`).
    fit_on : {"average_gain_scale", "average_gain", "average_curve", "average", "trial"}
        How a pulse's decay is estimated. All but ``"trial"`` start from a fit of the running
        average of all full-length fit windows so far (this one included, unless
        ``own_window_end_ms`` is shorter; causal, so live and offline agree; the average pins
        an electrode's decay down far better than one noisy trial, and the TEP's
        trial-to-trial noise does not enter it):

        * ``"average_gain_scale"`` (the pipeline's default since 2026-12-07, chosen on the
          outside benchmark): as ``"average_gain"``, and every time constant of the pulse's
          curves multiplied by *one* time scale common to all channels, the best of 13 from
          0.70 to 1.43 (the electrodes' discharge constants change with their impedance from
          pulse to pulse; also a pulse whose decay falls off faster or slower than the
          average's). Two numbers per pulse;
        * ``"average_gain"`` (the default before): the
          average's fitted curves on the channels that pass the gates, all scaled by *one*
          gain fitted to this pulse (a pulse's decay is larger or smaller on every electrode
          at once; one number cannot take the TEP's shape the way free per-channel amplitudes
          do), clipped to 0..3;
        * ``"average_curve"``: the average's curve itself, the same for every pulse (TESA's
          practice, Rogasch et al. 2017): unbiased for the average TEP, but a pulse whose
          decay is larger than average keeps the difference (more epochs rejected);
        * ``"average"``: time constants from the average, amplitudes per pulse and channel
          (linear; the default before the outside benchmark: free per-channel amplitudes
          absorb the part of the TEP that looks like an exponential);
        * ``"trial"``: every pulse gets its own full fit (also used for fit windows clipped by
          a following pulse).

        It assumes the decays do not change shape during the recording (same site, intensity,
        electrodes).
    min_decay_uv : float
        Least size of a channel's decay (:func:`decay_size_uv`) for it to be removed (the
        pipeline's default 20 µV: a TEP near the coil can reach ~10 µV early, decay artifacts
        are tens to thousands).
    fit_reference : {"median", "recorded"}
        What each channel's decay is fitted against. ``"median"``: when a first fit finds a
        decay of their own on fewer than half of the channels, every channel is fitted again
        against the median of all channels at each sample, so that what they all share (the
        reference electrode's own decay) enters no fit and no gate; it is left to the average
        reference, which removes it from every channel alike (subtracted from the channels
        near the coil only, its remainder came back into all of them). ``"recorded"``: the
        recording's reference, always. Chosen on the outside benchmark (see the README).

    own_window_end_ms : float, optional
        How far into the fit window a pulse's *own* data are used (its gain, or its
        amplitudes with ``"average"``), in ms after the pulse; default (and at most) the fit
        window's end. The running average still takes full fit windows, those of the pulses
        before this one (and this one's own once its window is complete, for the pulses after
        it); the first pulses, while fewer than ``MIN_AVERAGED`` (10) windows are averaged,
        wait for their own full window. Live, a pulse's corrected data leave the stage at
        this point instead of the fit window's end: the TEP
        update waits for ``max(own_window_end_ms, epoch end + filter padding)``, not for
        ``fit_window_ms[1]``. (A value below the epoch's end plus the padding buys nothing:
        the data from there to the fit window's end stay held until the average takes them.)
    window_from : object with ``window_ms`` and ``min_window_ms``, optional
        Usually the session's :class:`~tmseeg.pipeline.cutwindow.CutWindow`: its window replaces
        ``cut_window_ms``, and the fit starts at the later of ``fit_window_ms[0]`` and the
        window's end (a longer cut means the data before its end are not decay to fit).

    Attributes
    ----------
    fits : list of dict
        One record per pulse: ``sample``, ``fit`` (:class:`DecayFit` or None), ``reason``
        (the latest ``KEEP_FITS // 2`` to ``KEEP_FITS`` pulses; older ones keep only their
        :meth:`pulse_columns`: a live session's memory stays flat).
    """

    name = "decay"
    #: full fit records kept (the latest; older pulses keep their pulses.csv columns only,
    #: the latest ``20 * KEEP_FITS`` of them)
    KEEP_FITS = 300
    #: with ``own_window_end_ms`` shorter than the fit window, pulses wait for their own full
    #: window (and enter the average before their fit, as with the full window) until the
    #: average holds this many: an average of a few pulses without this one is too noisy
    MIN_AVERAGED = 10

    def __init__(
        self,
        fit_window_ms: tuple[float, float] = (10.0, 800.0),
        model: str = "double_exp",
        channels: str | Sequence[str] | None = "eeg",
        tau_ms: tuple[float, float] = (2.0, 500.0),
        min_snr: float = 3.0,
        min_r2: float = 0.05,
        min_fit_ms: float = 30.0,
        cut_window_ms: tuple[float, float] | None = (-2.0, 10.0),
        interp_method: str = "cubic",
        interp_fit_ms: float = 1.0,
        tail_uv: float = 0.05,
        max_delay_ms: float = 0.0,
        fit_on: str = "average",
        window_from=None,
        min_decay_uv: float = 0.0,
        fit_reference: str = "median",
        own_window_end_ms: float | None = None,
    ) -> None:
        self.window_from = window_from
        if fit_reference not in FIT_REFERENCES:
            raise ValueError(f"fit_reference must be one of {', '.join(FIT_REFERENCES)}, "
                             f"got {fit_reference!r}")
        self.fit_reference = fit_reference
        if fit_on not in FIT_ON:
            raise ValueError(f"fit_on must be one of {', '.join(FIT_ON)}, got {fit_on!r}")
        self.fit_on = fit_on
        self.min_decay_uv = float(min_decay_uv)
        self.max_gain = 3.0  # average_gain: a pulse's decay at most 3x the average's
        if model not in _MODELS:
            raise ValueError(f"model must be 'exp' or 'double_exp', got {model!r}")
        if not fit_window_ms[1] > fit_window_ms[0]:
            raise ValueError(f"fit_window_ms {fit_window_ms}: the end must follow the start")
        self.fit_window_ms = (float(fit_window_ms[0]), float(fit_window_ms[1]))
        if own_window_end_ms is not None and not own_window_end_ms > fit_window_ms[0]:
            raise ValueError(f"own_window_end_ms={own_window_end_ms} must come after the fit "
                             f"window's start ({fit_window_ms[0]} ms)")
        # beyond the fit window's end it is the fit window's end
        self.own_window_end_ms = (self.fit_window_ms[1] if own_window_end_ms is None
                                  else min(float(own_window_end_ms), self.fit_window_ms[1]))
        self.model = model
        self.channels = channels
        self.tau_ms = (float(tau_ms[0]), float(tau_ms[1]))
        self.min_r2 = float(min_r2)
        self.min_snr = float(min_snr)
        self.min_fit_ms = float(min_fit_ms)
        self.cut_window_ms = None if cut_window_ms is None else (float(cut_window_ms[0]),
                                                                 float(cut_window_ms[1]))
        self.interp_method = interp_method
        self.interp_fit_ms = float(interp_fit_ms)
        self.tail_uv = float(tail_uv)
        self.max_delay_ms = float(max_delay_ms)
        # the running average's fits, on a thread of their own
        self._fit_work = BackgroundWork(True, name="tmseeg-decay-fit")
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        self._buf = HoldBuffer()
        self._pending: list[int] = []
        self._done: list[int] = []  # processed pulses still near the buffer (for span merging)
        self._active: list[list] = []  # [fit_start, applied_until, end, DecayFit]
        self._rows: np.ndarray | None = None
        self._fitters: dict[int, DecayFitter] = {}
        self._lo: int | None = None
        self.fits: list[dict] = []
        self._by_sample: dict[int, dict] = {}
        self._avg_sum: np.ndarray | None = None
        self._avg_n: np.ndarray | None = None
        # the running average's fit and whether it was against the median (None: no full
        # window averaged yet), or the fit still running (:meth:`_average_fit`)
        self._avg_fit: tuple[DecayFit, bool] | Future | None = None
        self._n_averaged = 0
        # pulses whose full fit window is still to enter the average -> their own window's
        # data as it was before their own model was subtracted (None: not fitted yet)
        self._to_average: dict[int, np.ndarray | None] = {}
        # first pulses fitted once their own full window is in the average (none before them)
        self._postponed: set[int] = set()
        # the pre-pulse stretch of pulses whose window is still to enter the average, and the
        # running sums of those stretches (for :func:`steps_at_pulse`)
        self._pre: dict[int, np.ndarray] = {}
        self._pre_sum: np.ndarray | None = None
        self._pre_n: np.ndarray | None = None

    def _setup(self, block: Block) -> None:
        fs = block.meta.sfreq
        self._fs = fs
        self._rows = resolve_rows(block.meta, self.channels)
        self._delay = ms_to_samples(self.max_delay_ms, fs)
        self._min_fit = max(2 * _MODELS[self.model] + 2, ms_to_samples(self.min_fit_ms, fs))
        self._sync_window()
        self._lo = block.first_sample

    def _sync_window(self) -> None:
        """Cut window and fit start, from ``window_from`` once it is decided."""
        fs = self._fs
        fit_start_ms = self.fit_window_ms[0]
        if self.window_from is not None:
            win = provided_window(self.window_from)
            if self.cut_window_ms is not None:
                self.cut_window_ms = win
            fit_start_ms = max(fit_start_ms, win[1])
        n0 = ms_to_samples(fit_start_ms, fs) + 1
        if getattr(self, "_n0", n0) != n0 and (self._pending or self._active):
            raise RuntimeError("decay: the cut window changed while pulses were pending")
        self._n0 = n0
        self._n1 = ms_to_samples(self.fit_window_ms[1], fs) + 1  # exclusive
        # a pulse's own fit (its gain) uses its data up to here; the average, full windows
        self._ng = (self._n1 if self.fit_on == "trial" else
                    min(self._n1, max(n0 + 1, ms_to_samples(self.own_window_end_ms, fs) + 1)))
        if self.cut_window_ms is not None:
            self._interp = interp_params(self.cut_window_ms, self.interp_method,
                                          self.interp_fit_ms, fs)
        else:
            self._interp = None
        # the pre-pulse level: the _n_pre samples before the cut window's start (_cut0,
        # relative to the pulse)
        self._n_pre = max(1, ms_to_samples(PRE_LEVEL_MS, fs))
        self._cut0 = min(self._interp[0], 0) if self._interp is not None else 0

    # -- pieces ------------------------------------------------------------------------------
    def _fitter(self, n: int) -> DecayFitter:
        f = self._fitters.get(n)
        if f is None:
            if len(self._fitters) > 16:
                self._fitters.clear()
            f = self._fitters[n] = DecayFitter(n, self._fs, _MODELS[self.model], self.tau_ms)
        return f

    def _apply_active(self) -> None:
        """Subtract every active model from the buffered samples it has not touched yet."""
        buf = self._buf
        keep = []
        for item in self._active:
            start, done, end, fit = item
            a, b = max(done, buf.start), min(end, buf.stop)
            if b > a:
                fit.add_to(buf.data, self._rows, a - buf.start, b - a, self._fs,
                           start=a - start, scale=-1.0)
                item[1] = b
            if item[1] < end:
                keep.append(item)
        self._active = keep

    def _tail_end(self, fit: DecayFit, start: int, n_fit: int) -> int:
        rows = np.flatnonzero(fit.ok)
        if rows.size == 0:
            return start
        amp = np.abs(fit.amps_uv[rows]) * fit.amps_uv.shape[1]
        with np.errstate(divide="ignore"):
            t_ms = np.where(amp > self.tail_uv,
                            fit.tau_ms[rows] * np.log(np.maximum(amp, 1e-300) / self.tail_uv),
                            0.0)
        n = int(math.ceil(t_ms.max() * self._fs / 1000.0)) + 1
        return start + min(max(n, n_fit), 4 * (self._n1 - self._n0))

    def _reinterp(self, p: int) -> None:
        if self._interp is None:
            return
        w0, w1, n_fit, order = self._interp
        near = sorted(set(self._done) | set(self._pending) | {p})
        buf = self._buf
        for span in plan_spans(near, w0, w1, n_fit, order, self._lo, buf.stop):
            if span.start <= p + w1 and span.stop > p + w0:
                if span.start - span.n_left < buf.start:
                    log.warning("decay: cut window of pulse %d starts before the held data; "
                                "not re-interpolated", p)
                    return
                apply_span(buf.arr, buf.arr_start, self._rows, span)
                return

    def _fit_pulse(self, p: int, horizon: int) -> None:
        fs_, fe_ = p + self._n0, p + self._ng
        clip = self._clip_at(p, fe_)
        clipped = clip is not None
        if clipped:
            fe_ = clip
        fe_ = min(fe_, horizon)
        record = {"sample": p, "fit": None, "reason": ""}
        n = fe_ - fs_
        if fs_ < self._buf.start:
            record["reason"] = "fit window already released (pulse arrived late)"
        elif n < self._min_fit:
            record["reason"] = f"fit window {n} samples < min_fit_ms (next pulse or end too close)"
        else:
            y = self._buf.data[self._rows, fs_ - self._buf.start:fe_ - self._buf.start]
            n_nan = int((~np.isfinite(y).all(axis=1)).sum())
            if n_nan:  # a dropout: those channels stay out of the running average
                record["nan"] = (f"{n_nan} channel(s) with NaN in the fit window, left out of "
                                 "the running average")
            if p in self._to_average:  # its full window enters the average later: keep it
                self._to_average[p] = y.copy()
                if self._judging_steps():
                    self._pre[p] = self._pre_stretch(p)
            if (self.fit_on != "trial" and n == self._ng - self._n0
                    and self._average_fit() is not None):
                fit, median = self._fit_from_average(y)
            else:
                fit, median = self._fit_with_reference(y, self._fitter(n))
            record["against"] = "median" if median else "recorded"
            good = self._decaying(fit)
            fit = replace(fit, ok=good)
            record["fit"] = fit
            n_bad = int((~good).sum())
            if n_bad:
                flat = (f"; {fit.n_no_step} of them for want of a step at the pulse (a blink "
                        "or a drift, not a decay)") if fit.n_no_step else ""
                record["reason"] = (f"{n_bad}/{good.size} channels not corrected (decay below "
                                    f"{self.min_snr} x residual RMS, R2 < {self.min_r2}, no "
                                    f"step at the pulse, or an unstable fit{flat})")
                log.info("decay: pulse %d: %s", p, record["reason"])
            if good.any():
                # clipped by the next pulse: stop there, the next fit sees (and removes) what is
                # left of this decay — a sum of exponentials with the channel's own taus
                end = fe_ if clipped else self._tail_end(fit, fs_, n)
                self._active.append([fs_, fs_, end, fit])
                record["span"] = (fs_, end)
                self._apply_active()
        if record["fit"] is None:
            log.info("decay: pulse %d not fitted: %s", p, record["reason"])
        self.fits.append(record)
        self._by_sample[int(p)] = record
        if len(self.fits) > self.KEEP_FITS:
            # a full record is ~4 kB (the fit's per-channel arrays); removed_uv needs only the
            # last few seconds' and pulses.csv a pulse's columns, written soon after its fit:
            # older pulses keep their columns only, so a live hour holds ~1 MB, not 4
            drop = self.fits[:self.KEEP_FITS // 2]
            del self.fits[:self.KEEP_FITS // 2]
            for old in drop:
                self._by_sample[int(old["sample"])] = {
                    "sample": old["sample"], "columns": self._columns(old)}
            while len(self._by_sample) > 20 * self.KEEP_FITS:
                self._by_sample.pop(next(iter(self._by_sample)))

    @property
    def rows(self) -> np.ndarray | None:
        """Stream rows this stage corrects (None before the first block)."""
        return self._rows

    def removed_uv(self, first: int, n: int) -> np.ndarray | None:
        """What this stage subtracted from samples ``first .. first + n - 1`` (every pulse's
        model that reaches them), shape (n_rows, n) over this stage's channels (None: no pulse
        seen yet)."""
        if self._rows is None:
            return None
        out = np.zeros((len(self._rows), n))
        reach = 4 * (self._n1 - self._n0) + self._n1  # the longest a model is subtracted
        pulses = []
        for rec in reversed(self.fits):
            if rec["sample"] + reach < first:
                break
            pulses.append(rec["sample"])
            span = rec.get("span")
            if span is None:
                continue
            a, b = max(first, span[0]), min(first + n, span[1])
            if b > a:
                rec["fit"].add_to(out, np.arange(out.shape[0]), a - first, b - a,
                                  self._fs, start=a - span[0], scale=1.0)
        if self._interp is not None and pulses:
            # the cut window was re-interpolated after the subtraction: interpolation is
            # linear, so what it changed there is the interpolation of the model itself
            w0, w1, n_fit, order = self._interp
            rows = np.arange(out.shape[0], dtype=np.intp)
            for span in plan_spans(pulses, w0, w1, n_fit, order, first, first + n):
                apply_span(out, first, rows, span)
        return out

    def pulse_columns(self, sample: int) -> dict:
        """What was done to the pulse at ``sample``, for ``pulses.csv``: the method (and what
        the channels were fitted against: the median of all channels or the recording's
        reference, see ``fit_reference``), how many
        channels were corrected (0: no decay stood out, the data were left alone), the largest
        corrected decay at the fit start (µV) and the median R² of those fits."""
        rec = self._by_sample.get(int(sample))
        if rec is None:
            return {"decay_method": "", "decay_channels": 0, "decay_max_uv": math.nan,
                    "decay_r2": math.nan}
        return rec["columns"] if "columns" in rec else self._columns(rec)

    def _columns(self, rec: dict) -> dict:
        fit = rec["fit"]
        nan = f"; {rec['nan']}" if rec.get("nan") else ""
        if fit is None or not fit.ok.any():
            return {"decay_method": f"none ({rec['reason'] or 'no decay stands out'}){nan}",
                    "decay_channels": 0, "decay_max_uv": math.nan, "decay_r2": math.nan}
        ok = fit.ok
        flat = (f"; {fit.n_no_step} channel(s) left for want of a step at the pulse"
                if fit.n_no_step else "")
        return {"decay_method": (f"{self.fit_on} {self.model} vs "
                                 f"{rec.get('against', 'recorded')}{flat}{nan}"),
                "decay_channels": int(ok.sum()),
                "decay_max_uv": float(np.abs(fit.amps_uv[ok].sum(axis=1)).max()),
                "decay_r2": float(np.median(fit.r2[ok]))}

    def _fit_with_reference(self, y: np.ndarray, fitter: DecayFitter
                            ) -> tuple[DecayFit, bool]:
        """Fit ``y``, again against the median of its channels when ``fit_reference`` says
        so (:meth:`_use_median`); also return whether it was."""
        fit = fitter.fit(y)
        if self._use_median(fit):
            return fitter.fit(_against_median(y)), True
        return fit, False

    def _average_in(self, p: int, horizon: int) -> None:
        """Add pulse ``p``'s full fit window to the running average and fit the average again
        (a window clipped by a later pulse, or by the end of the data, stays out)."""
        saved = self._to_average.pop(p)
        pre = self._pre.pop(p, None)
        fs_, fe_ = p + self._n0, p + self._n1
        if self._clip_at(p, fe_) is not None:
            return
        buf = self._buf
        if fe_ > horizon or (fs_ if saved is None else p + self._ng) < buf.start:
            return
        if saved is None:  # not fitted yet: the window as it is
            y = buf.data[self._rows, fs_ - buf.start:fe_ - buf.start]
            if self._judging_steps():
                pre = self._pre_stretch(p)
        else:  # the rest of the window, with this pulse's own model added back
            a = p + self._ng
            rest = buf.data[self._rows, a - buf.start:fe_ - buf.start].copy()
            rec = self._by_sample.get(int(p), {})
            span = rec.get("span")
            if span is not None and min(fe_, span[1]) > a:
                rec["fit"].add_to(rest, np.arange(rest.shape[0]), 0, min(fe_, span[1]) - a,
                                  self._fs, start=a - span[0], scale=1.0)
            y = np.concatenate([saved, rest], axis=1)
        if self._avg_sum is None:
            self._avg_sum = np.zeros(y.shape)
            self._avg_n = np.zeros((y.shape[0], 1))
            self._pre_sum = np.zeros((y.shape[0], self._n_pre))
            self._pre_n = np.zeros((y.shape[0], 1))
        good = np.isfinite(y).all(axis=1)
        self._avg_sum[good] += y[good]
        self._avg_n[good] += 1
        if pre is not None:
            good &= np.isfinite(pre).all(axis=1)
            self._pre_sum[good] += pre[good]
            self._pre_n[good] += 1
        self._n_averaged += 1
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = self._avg_sum / self._avg_n
            avg_pre = (self._pre_sum / self._pre_n if self._n_averaged < STEP_GATE_WINDOWS
                       else None)
        # fitted on a thread of its own: the next pulse needs it only at its own window's
        # end (a pulse interval later), and the stages go on with the blocks in between
        # (1.4 s of a 10-minute 241-pulse analysis; live, off the processing thread)
        self._avg_fit = self._fit_work.submit(self._fit_average, avg, avg_pre,
                                              self._fitter(y.shape[1]), self._n_averaged)

    def _judging_steps(self) -> bool:
        """Whether the next window to enter the running average is still judged by
        :func:`steps_at_pulse` (``STEP_GATE_WINDOWS``): only then are pre-pulse stretches
        taken and held (the average only grows, so none is needed once this is False)."""
        return self._n_averaged + 1 < STEP_GATE_WINDOWS

    def _pre_stretch_start(self, p: int) -> int:
        """Where pulse ``p``'s pre-pulse stretch starts: before its cut window, and before the
        cut window of an earlier pulse that reaches into it (paired pulses, bursts)."""
        end = p + self._cut0
        for q in sorted(set(self._done) | set(self._pending), reverse=True):
            if q < p and q + self._n0 > end - self._n_pre:
                end = min(end, q + self._cut0)
        return end - self._n_pre

    def _pre_stretch(self, p: int) -> np.ndarray:
        """Pulse ``p``'s stretch before its cut window (:meth:`_pre_stretch_start`); NaN where
        not held (the data's start)."""
        a = self._pre_stretch_start(p)
        buf = self._buf
        if buf.data is None or a < buf.start or a + self._n_pre > buf.stop:
            return np.full((len(self._rows), self._n_pre), np.nan)
        return buf.data[self._rows, a - buf.start:a - buf.start + self._n_pre].copy()

    def _fit_average(self, avg: np.ndarray, avg_pre: np.ndarray | None, fitter: DecayFitter,
                     n_windows: int) -> tuple[DecayFit, bool]:
        """The running average's fit of ``n_windows`` windows, and whether it was against the
        median; while the average is young (``STEP_GATE_WINDOWS``), its channels without a
        step at the pulse (:func:`steps_at_pulse`, against the averaged pre-pulse stretches
        ``avg_pre``; None once it is not young) are not ``ok``."""
        fit, median = self._fit_with_reference(avg, fitter)
        if n_windows >= STEP_GATE_WINDOWS:
            return fit, median
        if median:
            avg, avg_pre = _against_median(avg), _against_median(avg_pre)
        no_step = self._decaying(fit) & ~steps_at_pulse(fit, avg, avg_pre, self._fs)
        return replace(fit, ok=fit.ok & ~no_step, no_step=no_step), median

    def _average_fit(self) -> tuple[DecayFit, bool] | None:
        """The running average's fit (waiting for it if it is still running)."""
        if isinstance(self._avg_fit, Future):
            self._avg_fit = self._avg_fit.result()
        return self._avg_fit

    def _fit_from_average(self, y: np.ndarray) -> tuple[DecayFit, bool]:
        """This pulse's decay from the running average's fit (taus, curves) and its own
        window ``y``; and whether the channels were fitted against their median."""
        avg_fit, median = self._average_fit()
        if median:  # what all channels share is not any one's decay: this pulse alike
            y = _against_median(y)
        if self.fit_on == "average_curve":  # TESA: the average's curve, the same every trial
            return avg_fit, median
        if self.fit_on == "average_gain":
            return self._scaled_to_trial(avg_fit, y), median
        if self.fit_on == "average_gain_scale":
            return self._scaled_to_trial(avg_fit, y, scales=_TIME_SCALES), median
        fit = self._fitter(y.shape[1]).fit_amplitudes(y, avg_fit.tau_ms)
        return replace(fit, ok=fit.ok & avg_fit.ok), median

    def _use_median(self, fit: DecayFit) -> bool:
        """``fit_reference = "median"``: fit again against the median of all channels when a
        first fit (in the recorded reference) finds a decay of their own on fewer than half
        of the channels. Then the median is what they share (the reference electrode's decay);
        when most channels decay, it would be a mixture of their decays instead."""
        if self.fit_reference != "median":
            return False
        n_decaying = int(self._decaying(fit).sum())
        return 0 < n_decaying < fit.ok.size / 2.0

    def _decaying(self, fit: DecayFit) -> np.ndarray:
        """Channels whose fitted decay passes the stage's gates (:func:`decay_gate`)."""
        return decay_gate(fit, (self._n1 - self._n0) * 1000.0 / self._fs, self.min_r2,
                          self.min_snr, self.min_decay_uv)

    def _scaled_to_trial(self, avg_fit: DecayFit, y: np.ndarray,
                         scales: np.ndarray | None = None) -> DecayFit:
        """The average's decay curves, all scaled by one gain fitted to this pulse (the
        pulse's decay is larger or smaller on every electrode at once; one number per pulse
        cannot take the TEP's shape the way free per-channel amplitudes do). With ``scales``,
        also one time scale common to all channels (every time constant times ``s``, the
        best of the grid): the discharge's RC constants change with the electrodes'
        impedance from pulse to pulse."""
        decaying = self._decaying(avg_fit)
        rows = np.flatnonzero(decaying)
        if rows.size == 0:
            return avg_fit
        yy = y[rows]
        if not np.isfinite(yy).all():
            return avg_fit
        yy = np.ascontiguousarray(yy - yy.mean(axis=1, keepdims=True))  # own level: not decay
        scales = np.array([1.0]) if scales is None else np.asarray(scales, dtype=np.float64)
        # the gated channels' model against this pulse, per scale, in one compiled pass
        # each: the least-squares gain is sum(y m) / sum(m_c^2) with m_c the model less its
        # mean, and the residual sum of squares less sum(y^2) is g^2 sum(m_c^2) - 2 g sum(y m)
        sum_ym, sum_mm = np.empty(scales.size), np.empty(scales.size)
        exp_model_moments(yy, np.ascontiguousarray(avg_fit.amps_uv[rows], dtype=np.float64),
                          np.ascontiguousarray(avg_fit.tau_ms[rows], dtype=np.float64),
                          1000.0 / self._fs, scales, sum_ym, sum_mm)
        best = None
        for s, ym, mm in zip(scales, sum_ym, sum_mm):
            gain = ym / mm if mm > 0 else 1.0
            gain = min(max(gain, 0.0), self.max_gain)
            cost = gain * gain * mm - 2.0 * gain * ym
            if best is None or cost < best[0]:
                best = (cost, s, gain)
        _, s, gain = best
        fit = avg_fit if s == 1.0 else replace(avg_fit, tau_ms=avg_fit.tau_ms * s)
        return replace(fit, amps_uv=fit.amps_uv * gain)

    def _step(self, at_end: bool) -> int:
        """Process every pulse whose fit window is complete; return the release point."""
        buf = self._buf
        horizon = buf.stop
        self._apply_active()
        while True:
            # in the order of the samples they wait for (whatever the block sizes): a full
            # window entering the average before a fit that waits for the same sample
            events = [(q + self._n1, 0, q) for q in self._to_average]
            events += [(q + (self._n1 if q in self._postponed else self._ng), 1, q)
                       for q in self._pending]
            if not events:
                break
            at, kind, p = min(events)
            if not at_end and horizon < at + self._delay:
                break
            if kind == 0:
                self._average_in(p, horizon)
                continue
            if (not at_end and self._n_averaged < self.MIN_AVERAGED and p in self._to_average
                    and p not in self._postponed and self._clip_at(p, p + self._ng) is None):
                self._postponed.add(p)  # few averaged yet: its own full window first
                continue
            self._pending.remove(p)
            self._postponed.discard(p)
            self._fit_pulse(p, horizon)
            self._done.append(p)
            self._reinterp(p)
        if at_end:
            return horizon
        # what unknown and pending pulses may still touch
        back = 0
        if self._interp is not None:
            w0, _, n_fit, _ = self._interp
            back = -min(w0, 0) + n_fit
        if self._judging_steps():  # and the stretch before the cut (the pre-pulse level)
            back = max(back, self._n_pre - self._cut0)
        release = horizon - self._delay - back
        if self._pending:
            near = sorted(set(self._done) | set(self._pending))
            first = self._pending[0]
            if self._interp is not None:
                w0, w1, n_fit, order = self._interp
                for span in plan_spans(near, w0, w1, n_fit, order, self._lo, horizon + 10**9):
                    if span.stop > first + w0:
                        release = min(release, span.start - span.n_left)
                        break
            release = min(release, first + self._n0)
            if self._judging_steps():  # their pre-pulse stretches (whatever the block sizes)
                release = min([release] + [self._pre_stretch_start(q) for q in self._pending])
        for q, saved in self._to_average.items():
            if saved is not None:  # fitted; the rest of its window still to be averaged
                release = min(release, q + self._ng)
        # forget processed pulses the release has moved well past
        self._done = [q for q in self._done if q + self._n1 >= release - 10 * (back + 1)]
        return max(buf.start, min(release, horizon))

    # -- Stage API ---------------------------------------------------------------------------
    def process(self, block: Block) -> Block:
        """Take the next block; return the cleaned samples that can no longer change."""
        if self._rows is None:
            self._setup(block)
        elif self.window_from is not None and not self._pending and not self._active:
            self._sync_window()
        if self._buf.data is not None and block.first_sample != self._buf.stop:
            log.warning("decay: samples %d..%d missing; pending fits are cut short",
                        self._buf.stop, block.first_sample)
            out = self.flush()
            self._buf = HoldBuffer()
            self._lo = block.first_sample
            self._active = []
            self._done = []
            self._buf.append(block)
            self._take_pulses(block)
            return out if out is not None else empty_block_like(block)
        self._buf.append(block)
        self._take_pulses(block)
        return self._buf.release(self._step(at_end=False))

    def _take_pulses(self, block: Block) -> None:
        for ev in block.events:
            if ev.kind == EVENT_PULSE:
                s = int(ev.sample)
                if s not in self._pending and s not in self._done:
                    self._pending.append(s)
                    if self.fit_on != "trial":
                        self._to_average[s] = None
        self._pending.sort()

    def _clip_at(self, p: int, end: int) -> int | None:
        """Where the earliest later pulse's cut window begins, if before sample ``end`` of
        pulse ``p``'s fit window (None: nothing cuts into it)."""
        c0 = min(self._interp[0], 0) if self._interp is not None else 0
        starts = [q + c0 for q in self._pending + self._done if q > p]
        return min(starts) if starts and min(starts) < end else None

    def flush(self) -> Block | None:
        """End of stream: finish every pending pulse and release everything held."""
        if self._buf.data is None:
            return None
        release = self._step(at_end=True)
        out = self._buf.release(release)
        self._pending = []
        self._to_average = {}
        self._postponed = set()
        self._fit_work.close()  # no pulse is left to need a fit: end its thread
        return out
