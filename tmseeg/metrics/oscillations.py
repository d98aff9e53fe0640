"""TMS-evoked oscillations: Morlet ERSP, inter-trial coherence and the natural frequency.

Method
------
**Wavelets.** Complex Morlet wavelets (the textbook definition with the admissibility offset,
as in Tallon-Baudry et al. 1997 and MNE's ``morlet``)::

    psi_f(t) = (exp(i 2 pi f t) - exp(-n^2 / 2)) exp(-t^2 / (2 sigma_t^2)),
    sigma_t = n / (2 pi f),   t in [-5 sigma_t, 5 sigma_t]

with ``n = max(min_cycles, cycles_per_hz * f)`` cycles (defaults 3 and 0.5: ``n = f / 2``
above 6 Hz, i.e. a constant ``sigma_t`` = 80 ms and spectral SD ``sigma_f = f / n`` = 2 Hz;
3 cycles below, sigma_t = 119 ms at 4 Hz). Each wavelet is scaled so that a sinusoid
``A cos(2 pi f t + phi)`` gives coefficients of modulus ``A`` and argument ``2 pi f t + phi``
(cosine convention, as everywhere in tmseeg): power is in µV² of oscillation amplitude.
Frequencies are linear by default (4-45 Hz in 1 Hz steps, so the natural frequency has 1 Hz
resolution) or log-spaced (``spacing = "log"``).

**Data.** The plug-in cuts its own, longer epochs from the processed continuous blocks (the
session's epochs are -500..500 ms, too short for the support of a 4 Hz wavelet around a
-600..-150 ms baseline). The pulse window is already interpolated there (the session's
``PulseInterpolation`` / ``DecayRemoval`` stages ran), so the wavelets never see the
artifact itself. Each epoch is decimated by an integer factor to about ``decimate_to_hz``
(250 Hz by default; :func:`tmseeg.dsp.resample.decimate_fir`: ``resample_poly``'s zero-phase
FIR anti-alias filter as one matrix product; the pulse sample lands exactly on a decimated
sample), then band-passed and notched forward
and backward with the session's ``[filter]`` settings (the TEP path's zero-phase filter, edges
above the new Nyquist dropped), with ``[filter] epoch_pad_ms`` of real data on both sides for
the filter transients, plus the longest wavelet's half-length for its support. Only epochs the
session kept enter (same rejection as the TEP), and an epoch is also skipped if its extended
window (outside the pulse window) exceeds the session's ``reject_uv`` peak-to-peak or holds NaN.

**Pulse window.** A wavelet coefficient at time ``t`` mixes data over ``t ± s_f`` with
``s_f = support_sigmas * sigma_t`` (default 3 sigma, where the Gaussian envelope is down to
1.1 %). The ERSP baseline of frequency ``f`` is ``baseline_ms`` (default -600..-150 ms) with its
end moved earlier to ``pulse_window[0] - s_f`` when that is earlier (e.g. -359 ms at 4 Hz,
-241 ms above 6 Hz), so the interpolated pulse window never enters any baseline. Post-pulse
time-frequency points whose support reaches into the pulse window (``[-2, 10]`` ms, the
``[interpolation] window_ms``) are *marked* (``contaminated`` mask, hatched in the report),
not dropped: with these wavelets every point up to ~250 ms touches it, and the natural
frequency is defined over 20-200 ms.

**Accumulation** (the :class:`~tmseeg.metrics.tep.RunningTEP` pattern): per kept epoch, the
coefficients' power ``|c|^2`` and unit phasors ``c / |c|`` are added to running sums
(:class:`RunningTFR`), O(channels x freqs x times) per epoch; nothing is recomputed over past
epochs. Finalising is O(size):

* ``ITC(ch, f, t) = |sum_k c_k / |c_k|| / N`` (inter-trial coherence / phase-locking factor,
  Tallon-Baudry 1996). Under the null of uniform random phases its expectation is about
  ``sqrt(pi / (4 N))`` (Rayleigh mean), shown with the maps;
* ``ERSP(ch, f, t) = 10 log10(P(ch, f, t) / mean_{t in baseline(f)} P(ch, f, t))`` dB with
  ``P`` the mean power over epochs (total power, evoked included: Makeig 1993; Rosanova 2009);
* **ROI**: ``P`` is first averaged over the ROI channels (then dB); ROI ITC is the mean of the
  ROI channels' ITC;
* **natural frequency** (Rosanova et al. 2009, J Neurosci 29:7679): the frequency of maximal
  cumulative ERSP, ``sum_{t in natural_window_ms} ERSP(f, t)`` over 20-200 ms after the pulse,
  searched in ``natural_band_hz`` (default 8-45 Hz: below 8 Hz the slow N100/P180 waves of the
  TEP itself dominate the power, which is not an oscillation); at the ROI and per channel.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import fft as sp_fft

from tmseeg.dsp.resample import decimate_fir
from tmseeg._ext.tfr import add_power_phasors
from tmseeg.metrics.base import BackgroundWork, MetricContext, SessionMetric
from tmseeg.pipeline.config import planning_cut_window
from tmseeg.pipeline.epochs import Epoch, Epocher
from tmseeg.pipeline.filters import EpochFilter
from tmseeg.sections import ConfigError, ConfigSection
from tmseeg.utils import jsonable, over_rows

log = logging.getLogger(__name__)

__all__ = ["morlet_frequencies", "morlet_n_cycles", "morlet_wavelets", "morlet_tfr_numpy",
           "MorletTransform", "RunningTFR", "natural_frequency", "rayleigh_itc_mean",
           "OscillationMetric", "CONFIG_TOML", "make_metric"]


# -- wavelets -----------------------------------------------------------------------------------

def morlet_frequencies(freq_min_hz: float = 4.0, freq_max_hz: float = 45.0, n_freqs: int = 42,
                       spacing: str = "linear") -> np.ndarray:
    """Analysis frequencies: ``n_freqs`` from ``freq_min_hz`` to ``freq_max_hz`` inclusive.

    Parameters
    ----------
    freq_min_hz, freq_max_hz : float
        Range (default 4-45 Hz).
    n_freqs : int
        Number of frequencies (default 42: 1 Hz steps from 4 to 45 Hz).
    spacing : {"linear", "log"}
        Even steps in Hz or in log frequency.

    Returns
    -------
    ndarray, shape (n_freqs,)
    """
    if spacing not in ("linear", "log"):
        raise ValueError(f"spacing={spacing!r}: use 'linear' or 'log'.")
    if not (0 < freq_min_hz < freq_max_hz) or int(n_freqs) < 2:
        raise ValueError(f"frequencies {freq_min_hz}-{freq_max_hz} Hz, n_freqs={n_freqs}: need "
                         "0 < min < max and n_freqs >= 2.")
    if spacing == "linear":
        return np.linspace(freq_min_hz, freq_max_hz, int(n_freqs))
    return np.geomspace(freq_min_hz, freq_max_hz, int(n_freqs))


def morlet_n_cycles(freqs_hz: np.ndarray, cycles_per_hz: float = 0.5,
                    min_cycles: float = 3.0) -> np.ndarray:
    """Cycles per wavelet: ``max(min_cycles, cycles_per_hz * f)`` (default ``f / 2``, min 3)."""
    if not (cycles_per_hz >= 0 and min_cycles > 0):
        raise ValueError(f"cycles_per_hz={cycles_per_hz}, min_cycles={min_cycles}: need "
                         "cycles_per_hz >= 0 and min_cycles > 0.")
    return np.maximum(float(min_cycles), float(cycles_per_hz) * np.asarray(freqs_hz, float))


def morlet_wavelets(freqs_hz: np.ndarray, n_cycles: np.ndarray, sfreq_hz: float) -> list[np.ndarray]:
    """Complex Morlet wavelets, amplitude-normalised (see the module notes).

    Parameters
    ----------
    freqs_hz, n_cycles : ndarray, shape (n_freqs,)
    sfreq_hz : float

    Returns
    -------
    list of ndarray
        One odd-length complex wavelet per frequency, centred (sample 0 in the middle),
        spanning ``±5 sigma_t``.
    """
    out = []
    for f, n in zip(np.asarray(freqs_hz, float), np.asarray(n_cycles, float)):
        if not 0 < f < sfreq_hz / 2:
            raise ValueError(f"wavelet frequency {f:g} Hz must lie between 0 and Nyquist "
                             f"({sfreq_hz / 2:g} Hz).")
        sigma_t = n / (2.0 * math.pi * f)
        h = np.arange(0.0, 5.0 * sigma_t, 1.0 / sfreq_hz)
        t = np.r_[-h[::-1], h[1:]]
        env = np.exp(-t ** 2 / (2.0 * sigma_t ** 2))
        w = (np.exp(2j * math.pi * f * t) - math.exp(-0.5 * n ** 2)) * env
        # a unit cosine at f gives |coef| = 1: sum(w * exp(-i 2 pi f t)) / 2 = 1
        w /= 0.5 * np.sum(w * np.exp(-2j * math.pi * f * t)).real
        out.append(w)
    return out


def morlet_tfr_numpy(data_uv: np.ndarray, wavelets: Sequence[np.ndarray], start: int,
                     stop: int) -> np.ndarray:
    """Plain reference: coefficients at samples ``start..stop-1`` by direct convolution.

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_times)
    wavelets : list of ndarray
        From :func:`morlet_wavelets`.
    start, stop : int
        Output samples; every wavelet's support must lie inside the data.

    Returns
    -------
    ndarray, complex, shape (n_channels, n_freqs, stop - start)
    """
    x = np.asarray(data_uv, float)
    out = np.empty((x.shape[0], len(wavelets), stop - start), complex)
    for k, w in enumerate(wavelets):
        h = (len(w) - 1) // 2
        if start - h < 0 or stop + h > x.shape[1]:
            raise ValueError("morlet_tfr_numpy: a wavelet's support leaves the data; widen the "
                             "data or narrow the output range.")
        for c in range(x.shape[0]):
            full = np.convolve(x[c, start - h:stop + h], w, mode="valid")
            out[c, k] = full
    return out


class MorletTransform:
    """Morlet coefficients of fixed-length segments by FFT convolution (the fast path).

    Parameters
    ----------
    freqs_hz, n_cycles : ndarray, shape (n_freqs,)
    sfreq_hz : float
    n_out : int
        Output samples per call.

    Notes
    -----
    Every wavelet is zero-padded to the longest one (``2 H + 1`` samples) and its spectrum
    precomputed for ``nfft = next_fast_len(n_out + 2 H)`` (circular wrap-around only touches
    the first ``2 H`` outputs, which are not returned); :meth:`transform` takes
    ``n_out + 2 H`` input samples (``H`` before the first output, ``H`` after the last) and
    returns ``valid`` convolution values, equal to :func:`morlet_tfr_numpy` to rounding.
    """

    def __init__(self, freqs_hz: np.ndarray, n_cycles: np.ndarray, sfreq_hz: float,
                 n_out: int) -> None:
        self.freqs_hz = np.asarray(freqs_hz, float)
        self.n_cycles = np.asarray(n_cycles, float)
        self.sfreq_hz = float(sfreq_hz)
        self.wavelets = morlet_wavelets(self.freqs_hz, self.n_cycles, self.sfreq_hz)
        self.half = max((len(w) - 1) // 2 for w in self.wavelets)
        self.n_out = int(n_out)
        self.n_in = self.n_out + 2 * self.half
        # circular convolution of length >= n_in is exact on the valid outputs (k >= 2H)
        self.nfft = sp_fft.next_fast_len(self.n_in)
        bank = np.zeros((len(self.wavelets), 2 * self.half + 1), complex)
        for k, w in enumerate(self.wavelets):
            h = (len(w) - 1) // 2
            bank[k, self.half - h:self.half + h + 1] = w
        self._spec = sp_fft.fft(bank, self.nfft, axis=1)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Coefficients ``(n_channels, n_freqs, n_out)`` of ``x`` ``(n_channels, n_in)``."""
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"MorletTransform: expected (n_channels, {self.n_in}) samples, got "
                             f"{x.shape}.")
        out = np.empty((x.shape[0], self.freqs_hz.size, self.n_out), complex)
        # channels split over the cores (each channel's coefficients are its own)
        over_rows(lambda a, b: self._transform_rows(x[a:b], out[a:b]), x.shape[0],
                  x.shape[0] * self.freqs_hz.size * self.nfft)
        return out

    #: most bytes of (channels x frequencies x nfft) spectra taken through the inverse FFT at
    #: once: a 64-channel epoch's whole product is ~25 MB, and its inverse as much again; a
    #: live session making them at every pulse kept its resident memory swinging by tens of
    #: MB (each channel's coefficients are its own, so chunks give the same values)
    CHUNK_BYTES = 4 * 2 ** 20

    def _transform_rows(self, x: np.ndarray, out: np.ndarray) -> None:
        per_row = self.freqs_hz.size * self.nfft * 16
        step = max(1, self.CHUNK_BYTES // per_row)
        for a in range(0, x.shape[0], step):
            self._transform_chunk(x[a:a + step], out[a:a + step])

    def _transform_chunk(self, x: np.ndarray, out: np.ndarray) -> None:
        spec = sp_fft.rfft(x, self.nfft, axis=1)
        # full complex spectrum of the real input from its half spectrum
        full = np.empty((x.shape[0], self.nfft), complex)
        nh = spec.shape[1]
        full[:, :nh] = spec
        full[:, nh:] = np.conj(spec[:, 1:self.nfft - nh + 1][:, ::-1])
        y = sp_fft.ifft(full[:, None, :] * self._spec[None], axis=2, overwrite_x=True)
        out[...] = y[:, :, 2 * self.half:2 * self.half + self.n_out]


def rayleigh_itc_mean(n_epochs: int) -> float:
    """Expected ITC of ``n_epochs`` uniformly random phases, ``~ sqrt(pi / (4 N))``."""
    return math.sqrt(math.pi / (4.0 * n_epochs)) if n_epochs > 0 else math.nan


# -- accumulator --------------------------------------------------------------------------------

class RunningTFR:
    """Running sums of Morlet power and unit phasors over epochs; ERSP/ITC in O(size).

    Parameters
    ----------
    ch_names : sequence of str
    freqs_hz : ndarray, shape (n_freqs,)
    times_ms : ndarray, shape (n_times,)
        Time of each output sample relative to the pulse.
    baseline : ndarray of bool, shape (n_freqs, n_times)
        Per-frequency ERSP baseline samples.
    """

    def __init__(self, ch_names: Sequence[str], freqs_hz: np.ndarray, times_ms: np.ndarray,
                 baseline: np.ndarray) -> None:
        self.ch_names = tuple(ch_names)
        self.freqs_hz = np.asarray(freqs_hz, float)
        self.times_ms = np.asarray(times_ms, float)
        shape = (len(self.ch_names), self.freqs_hz.size, self.times_ms.size)
        baseline = np.asarray(baseline, bool)
        if baseline.shape != shape[1:] or not baseline.any(axis=1).all():
            raise ValueError("RunningTFR: baseline must be (n_freqs, n_times) with at least one "
                             "sample per frequency.")
        self.baseline = baseline
        self.n = 0
        self.power_sum = np.zeros(shape)
        self.phasor_sum = np.zeros(shape, complex)

    def add(self, coefs: np.ndarray) -> None:
        """Accumulate one epoch's coefficients ``(n_channels, n_freqs, n_times)``."""
        if coefs.shape != self.power_sum.shape:
            raise ValueError(f"RunningTFR.add: coefficients {coefs.shape}, expected "
                             f"{self.power_sum.shape}.")
        over_rows(lambda a, b: self._add_rows(coefs[a:b], a, b), coefs.shape[0], coefs.size)
        self.n += 1

    def _add_rows(self, coefs: np.ndarray, start: int, stop: int) -> None:
        """Add the power and unit phasors of channels ``start:stop`` (their coefficients):
        one compiled pass without the GIL (a zero coefficient adds no phasor)."""
        add_power_phasors(np.ascontiguousarray(coefs, dtype=complex).view(np.float64),
                          self.power_sum[start:stop],
                          self.phasor_sum[start:stop].view(np.float64))

    def mean_power_uv2(self) -> np.ndarray:
        """Mean power over epochs, (n_channels, n_freqs, n_times)."""
        return self.power_sum / max(self.n, 1)

    def itc(self, picks: np.ndarray | None = None) -> np.ndarray:
        """ITC per channel (n_channels, n_freqs, n_times), or its mean over ``picks``."""
        if self.n == 0:
            raise ValueError("RunningTFR: no epoch accumulated yet.")
        if picks is None:
            return np.abs(self.phasor_sum) / self.n
        return (np.abs(self.phasor_sum[picks]) / self.n).mean(axis=0)

    def ersp_db(self, picks: np.ndarray | None = None) -> np.ndarray:
        """ERSP in dB per channel, or of the power averaged over ``picks`` (n_freqs, n_times)."""
        if self.n == 0:
            raise ValueError("RunningTFR: no epoch accumulated yet.")
        p = self.power_sum if picks is None else self.power_sum[picks].mean(axis=0)
        b = self.baseline
        base = np.sum(p * b, axis=-1, keepdims=True) / b.sum(axis=-1)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return 10.0 * np.log10(p / base)


def natural_frequency(ersp_db: np.ndarray, freqs_hz: np.ndarray, times_ms: np.ndarray,
                      window_ms: tuple[float, float] = (20.0, 200.0),
                      band_hz: tuple[float, float] = (8.0, 45.0)) -> tuple[float, np.ndarray]:
    """Frequency of maximal cumulative ERSP over ``window_ms`` (Rosanova et al. 2009).

    Parameters
    ----------
    ersp_db : ndarray, shape (..., n_freqs, n_times)
    freqs_hz, times_ms : ndarray
    window_ms : (float, float)
        Summation window after the pulse (default 20-200 ms).
    band_hz : (float, float)
        Frequencies searched (default 8-45 Hz).

    Returns
    -------
    freq_hz : float or ndarray
        Natural frequency (per leading index when ``ersp_db`` has more than 2 dims).
    cumulative_db : ndarray, shape (..., n_freqs)
        Sum of ERSP over the window, per frequency (NaN outside ``band_hz``).
    """
    t = np.asarray(times_ms)
    tm = (t >= window_ms[0]) & (t <= window_ms[1])
    fm = (freqs_hz >= band_hz[0]) & (freqs_hz <= band_hz[1])
    if not tm.any() or not fm.any():
        raise ValueError(f"natural_frequency: window {window_ms} ms or band {band_hz} Hz holds "
                         "no sample of the time-frequency map.")
    cum = np.sum(ersp_db[..., tm], axis=-1)
    cum = np.where(fm, cum, np.nan)
    filled = np.where(np.isfinite(cum), cum, -np.inf)
    idx = np.argmax(filled, axis=-1)
    f = np.asarray(freqs_hz)[idx]
    return (float(f) if np.ndim(f) == 0 else f), cum


# -- session plug-in (tmseeg.metrics.base) ------------------------------------------------------

CONFIG_TOML = """\
[oscillations]
# Morlet ERSP (dB vs baseline power) and inter-trial coherence, per channel and at the ROI;
# natural frequency (Rosanova et al. 2009). See tmseeg.metrics.oscillations for the method.
enabled = true
freq_min_hz = 4.0
freq_max_hz = 45.0
n_freqs = 42                # 4..45 Hz in 1 Hz steps (linear)
spacing = "linear"          # "linear" or "log"
cycles_per_hz = 0.5         # n_cycles = max(min_cycles, cycles_per_hz * f) = f / 2 ...
min_cycles = 3.0            # ... but at least 3 cycles
decimate_to_hz = 250.0      # epochs are decimated (zero-phase FIR) to about this rate first
tf_window_ms = [-600.0, 500.0]   # times of the time-frequency maps
baseline_ms = [-600.0, -150.0]   # ERSP baseline; its end moves earlier per frequency so the
                                 # wavelet support never reaches the pulse window
support_sigmas = 3.0        # a wavelet's effective half-support, in sigma_t
natural_window_ms = [20.0, 200.0]
natural_band_hz = [8.0, 45.0]
post_window_ms = [50.0, 150.0]   # ITC / ERSP at the natural frequency are summarised here
"""


@dataclass(frozen=True)
class OscillationsConfig(ConfigSection):
    """``[oscillations]``: Morlet ERSP, ITC and the natural frequency (see ``CONFIG_TOML``)."""
    SECTION = "oscillations"

    enabled: bool
    freq_min_hz: float
    freq_max_hz: float
    n_freqs: int
    spacing: str
    cycles_per_hz: float
    min_cycles: float
    decimate_to_hz: float
    tf_window_ms: list[float]
    baseline_ms: list[float]
    support_sigmas: float
    natural_window_ms: list[float]
    natural_band_hz: list[float]
    post_window_ms: list[float]

    def validate(self) -> None:
        try:  # the same checks the plug-in's wavelets make
            morlet_n_cycles(morlet_frequencies(self.freq_min_hz, self.freq_max_hz,
                                               self.n_freqs, self.spacing),
                            self.cycles_per_hz, self.min_cycles)
        except ValueError as err:
            raise ConfigError(f"[oscillations] {err}") from err


#: this plug-in's section of the configuration
CONFIG_SECTION = OscillationsConfig


class OscillationMetric(SessionMetric):
    """Session plug-in: running ERSP / ITC maps and the natural frequency.

    Parameters
    ----------
    cfg : dict
        The whole configuration (``[oscillations]``, ``[filter]``, ``[epochs]``,
        ``[interpolation]`` are read).
    context : MetricContext
        For ``meta``, ``roi()`` and the bad-channel detector.
    """

    name = "oscillations"

    def __init__(self, cfg: ConfigSection, context: MetricContext) -> None:
        c = cfg.oscillations
        self.cfg = c
        self.context = context
        meta = context.meta
        sf = float(meta.sfreq)
        self.freqs_hz = morlet_frequencies(c.freq_min_hz, c.freq_max_hz, c.n_freqs,
                                           c.spacing)
        self.n_cycles = morlet_n_cycles(self.freqs_hz, c.cycles_per_hz, c.min_cycles)
        self.q = max(1, int(sf // c.decimate_to_hz)) if c.decimate_to_hz > 0 else 1
        self.fs = sf / self.q
        if self.freqs_hz[-1] >= 0.45 * self.fs:
            raise ValueError(f"oscillations.freq_max_hz={c['freq_max_hz']} is too close to the "
                             f"Nyquist frequency of the decimated epochs ({self.fs / 2:g} Hz); "
                             "raise oscillations.decimate_to_hz.")
        for key in ("tf_window_ms", "baseline_ms", "natural_window_ms", "natural_band_hz",
                    "post_window_ms"):
            v = c[key]
            if len(v) != 2 or not v[0] < v[1]:
                raise ValueError(f"oscillations.{key}={v}: give [start, stop] with start < stop.")
        # laid out before the first pulse: the fixed or least cut window (a longer measured
        # window only moves the contaminated edge by its difference)
        self.pulse_window_ms = planning_cut_window(cfg)
        t0, t1 = c.tf_window_ms
        j0 = int(math.ceil(t0 * self.fs / 1000.0))
        j1 = int(math.floor(t1 * self.fs / 1000.0))
        self.times_ms = np.arange(j0, j1 + 1) * 1000.0 / self.fs
        self.transform = MorletTransform(self.freqs_hz, self.n_cycles, self.fs,
                                         self.times_ms.size)
        h = self.transform.half
        sigma_ms = 1000.0 * self.n_cycles / (2 * math.pi * self.freqs_hz)
        self.support_ms = c.support_sigmas * sigma_ms
        # ERSP baseline per frequency, clear of the pulse window by the wavelet's support
        lo_p, hi_p = self.pulse_window_ms
        b0, b1 = c.baseline_ms
        if b0 < t0:
            raise ValueError(f"oscillations.baseline_ms={c['baseline_ms']} starts before "
                             f"tf_window_ms={c['tf_window_ms']}; start it inside.")
        ends = np.minimum(b1, lo_p - self.support_ms)
        t = self.times_ms
        self.baseline = (t[None, :] >= b0) & (t[None, :] <= ends[:, None])
        short = self.baseline.sum(axis=1) * 1000.0 / self.fs < 50.0
        if short.any():
            raise ValueError(
                f"oscillations: the ERSP baseline at {self.freqs_hz[short][0]:g} Hz is shorter "
                f"than 50 ms once it ends {self.support_ms[short][0]:.0f} ms before the pulse "
                f"window (baseline_ms={c['baseline_ms']}); start baseline_ms and tf_window_ms "
                "earlier, or raise freq_min_hz / lower min_cycles.")
        self.baseline_end_ms = ends
        #: (n_freqs, n_times): wavelet support reaches into the pulse window
        self.contaminated = ((t[None, :] + self.support_ms[:, None] >= lo_p)
                             & (t[None, :] - self.support_ms[:, None] <= hi_p))
        # raw cut: output range + wavelet half-length + filter padding, pulse on a decimated
        # sample (resample_poly keeps input sample j*q)
        f = cfg.filter
        self.pad_ms = float(f.epoch_pad_ms)
        self._pad_d = pad_d = int(math.ceil(self.pad_ms * self.fs / 1000.0))
        self._pre_d = -j0 + h + pad_d   # decimated samples before the pulse
        self._post_d = j1 + h + pad_d
        nyq = self.fs / 2
        h_freq = f.h_freq_hz if f.h_freq_hz and f.h_freq_hz < 0.9 * nyq else None
        notch = f.notch_hz if f.notch_hz and f.notch_hz < 0.9 * nyq else None
        harm = max(1, min(int(f.notch_harmonics),
                          int(0.9 * nyq // f.notch_hz) if notch else 1))
        self.filter = EpochFilter(l_freq_hz=f.l_freq_hz or None, h_freq_hz=h_freq,
                                  order=f.order, notch_hz=notch, notch_harmonics=harm,
                                  pad_ms=0.0)
        self.reject_uv = cfg.epochs.reject_uv or None
        self.epocher = Epocher(tmin_ms=-self._pre_d * self.q * 1000.0 / sf,
                               tmax_ms=self._post_d * self.q * 1000.0 / sf,
                               baseline_ms=None, reject_uv=None,
                               pulse_window_ms=self.pulse_window_ms,
                               bads_from=context.bads_from, max_delay_s=2.0)
        self.tfr: RunningTFR | None = None
        self._verdict: dict[int, bool] = {}
        self._waiting: dict[int, np.ndarray] = {}
        self._pulse_samples: list[int] = []
        self.skipped: dict[str, int] = {}
        self.n_overlapping = 0
        self._cache: tuple[int, dict] | None = None
        #: decimation, filter and wavelets of each long epoch (a thread of its own offline)
        self._work = BackgroundWork(context.background)

    # -- hooks --------------------------------------------------------------------------------
    def on_block(self, block) -> None:
        """Cut the long epochs (their pulse verdict comes from :meth:`on_epoch`); decimating,
        filtering and transforming them runs on the plug-in's own thread in an offline
        analysis (:class:`~tmseeg.metrics.base.BackgroundWork`), in the same order."""
        for ev in block.pulses():
            self._pulse_samples.append(int(ev.sample))
        for ep in self.epocher.push(block):
            self._work.submit(self._take, ep, self._overlaps(ep))

    def on_epoch(self, epoch: Epoch, row: dict) -> None:
        """Record whether the session kept this pulse (no per-pulse columns are added)."""
        self._work.submit(self._take_verdict, int(epoch.sample),
                          bool(row.get("kept", not epoch.rejected)))

    def _take_verdict(self, s: int, kept: bool) -> None:
        x = self._waiting.pop(s, None)
        if x is None:
            self._verdict[s] = kept
        elif kept:
            self._accumulate(x)
        else:
            self._skip("rejected by the session")

    def finish(self) -> None:
        """End of the recording: epochs that never completed are dropped (counted)."""
        self._work.close()
        for ep in self.epocher.flush():
            self._skip("incomplete (end of recording)")
        for _ in self._waiting:
            self._skip("no session verdict")
        self._waiting.clear()
        self._cache = None

    # -- per epoch ----------------------------------------------------------------------------
    def _skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def _overlaps(self, ep: Epoch) -> bool:
        """Whether another pulse falls inside this long epoch (pulses seen so far)."""
        s = int(ep.sample)
        lo = s - self._pre_d * self.q
        hi = s + self._post_d * self.q
        return any(lo <= p <= hi and p != s for p in self._pulse_samples[-64:])

    def _take(self, ep: Epoch, overlapping: bool) -> None:
        s = int(ep.sample)
        if ep.rejected:
            self._verdict.pop(s, None)
            self._skip(ep.reason.split(":")[0])
            return
        x = self.prepare(ep.data_uv, ep.bads, ep.ch_names)
        if x is None:
            self._verdict.pop(s, None)
            return
        if overlapping:
            self.n_overlapping += 1
        kept = self._verdict.pop(s, None)
        if kept is None:
            self._waiting[s] = x
        elif kept:
            self._accumulate(x)
        else:
            self._skip("rejected by the session")

    def prepare(self, data_uv: np.ndarray, bads: Sequence[str] = (),
                ch_names: Sequence[str] = ()) -> np.ndarray | None:
        """Decimate, filter and check one raw long epoch; the wavelet input, or None if skipped.

        Parameters
        ----------
        data_uv : ndarray, shape (n_channels, n_raw)
            The raw cut (this metric's epocher window).
        bads : sequence of str
            Bad channels (not tested for amplitude).
        ch_names : sequence of str

        Returns
        -------
        ndarray, shape (n_channels, transform.n_in) or None
        """
        if not np.isfinite(data_uv).all():
            self._skip("NaN in data")
            return None
        xd = decimate_fir(data_uv, self.q)
        n_d = self._pre_d + self._post_d + 1
        xd = self.filter(xd[:, :n_d], self.fs)
        pad_d = self._pad_d
        x = np.ascontiguousarray(xd[:, pad_d:pad_d + self.transform.n_in])
        if self.reject_uv is not None:
            t_in = (np.arange(x.shape[1]) - (self._pre_d - pad_d)) * 1000.0 / self.fs
            test = ~((t_in >= self.pulse_window_ms[0]) & (t_in <= self.pulse_window_ms[1]))
            ptp = np.ptp(x[:, test], axis=1)
            good = np.array([n not in bads for n in ch_names], bool) if len(ch_names) \
                else np.ones(x.shape[0], bool)
            if good.any() and np.max(ptp[good]) > self.reject_uv:
                self._skip("amplitude in the extended window")
                return None
        return x

    def _accumulate(self, x: np.ndarray) -> None:
        if self.tfr is None:
            self.tfr = RunningTFR(self.epocher.ch_names, self.freqs_hz, self.times_ms,
                                  self.baseline)
        self.tfr.add(self.transform.transform(x))
        self._cache = None

    # -- read-outs ----------------------------------------------------------------------------
    def roi_picks(self) -> np.ndarray:
        """Rows of the ROI channels (session ROI; all channels if none is present)."""
        lookup = {n.lower(): i for i, n in enumerate(self.epocher.ch_names)}
        idx = [lookup[r.lower()] for r in self.context.roi() if r.lower() in lookup]
        return np.array(idx or range(len(lookup)), dtype=np.intp)

    def roi_maps(self) -> dict[str, np.ndarray]:
        """ROI ``ersp_db`` and ``itc`` maps (n_freqs, n_times), with ``freqs_hz``, ``times_ms``."""
        self._work.wait()
        picks = self.roi_picks()
        return {"ersp_db": self.tfr.ersp_db(picks), "itc": self.tfr.itc(picks),
                "freqs_hz": self.freqs_hz, "times_ms": self.times_ms}

    def summary(self) -> dict[str, Any]:
        """JSON-ready: counts, natural frequency (ROI, per channel), ITC/ERSP there, settings."""
        self._work.wait()
        if self.tfr is None or self.tfr.n == 0:
            return {"n_epochs": 0, "skipped": dict(self.skipped)}
        if self._cache is not None and self._cache[0] == self.tfr.n:
            return self._cache[1]
        c = self.cfg
        tfr = self.tfr
        picks = self.roi_picks()
        ersp = tfr.ersp_db(picks)
        itc = tfr.itc(picks)
        nw, nb = tuple(c.natural_window_ms), tuple(c.natural_band_hz)
        nat, cum = natural_frequency(ersp, self.freqs_hz, self.times_ms, nw, nb)
        ch_ersp = tfr.ersp_db()
        ch_nat, _ = natural_frequency(ch_ersp, self.freqs_hz, self.times_ms, nw, nb)
        k = int(np.argmin(np.abs(self.freqs_hz - nat)))
        t = self.times_ms
        post = (t >= c.post_window_ms[0]) & (t <= c.post_window_ms[1])
        base = self.baseline[k]
        out = {
            "n_epochs": int(tfr.n),
            "skipped": dict(self.skipped),
            "n_overlapping": int(self.n_overlapping),
            "roi": [self.epocher.ch_names[i] for i in picks],
            "freqs_hz": [float(v) for v in self.freqs_hz],
            "n_cycles": [float(v) for v in self.n_cycles],
            "rate_hz": float(self.fs),
            "baseline_end_ms": [float(v) for v in self.baseline_end_ms],
            "clean_from_ms": [float(self.pulse_window_ms[1] + s) for s in self.support_ms],
            "natural_frequency_hz": float(nat),
            "natural_window_ms": list(nw),
            "natural_band_hz": list(nb),
            "cumulative_ersp_db": jsonable(cum),
            "natural_frequency_by_channel_hz": {n: float(v) for n, v in
                                                zip(self.epocher.ch_names, ch_nat)},
            "at_natural_frequency": {
                "post_window_ms": list(c.post_window_ms),
                "itc_post_mean": float(np.mean(itc[k, post])),
                "itc_post_max": float(np.max(itc[k, post])),
                "itc_baseline_mean": float(np.mean(itc[k, base])),
                "ersp_post_mean_db": float(np.mean(ersp[k, post])),
                "ersp_post_max_db": float(np.max(ersp[k, post])),
            },
            "itc_chance": rayleigh_itc_mean(tfr.n),
        }
        self._cache = (tfr.n, out)
        return out

    def report(self, report) -> None:
        """ROI ERSP and ITC images with the natural frequency marked, and the cumulative ERSP."""
        import matplotlib.pyplot as plt

        if self.tfr is None or self.tfr.n == 0:
            return
        s = self.summary()
        m = self.roi_maps()
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2),
                                 gridspec_kw={"width_ratios": [1, 1, 0.6]})
        ext = [m["times_ms"][0], m["times_ms"][-1], self.freqs_hz[0], self.freqs_hz[-1]]
        lim = float(np.nanmax(np.abs(m["ersp_db"]))) or 1.0
        for ax, key, kw, label in ((axes[0], "ersp_db", dict(cmap="RdBu_r", vmin=-lim, vmax=lim),
                                    "ERSP (dB)"),
                                   (axes[1], "itc", dict(cmap="viridis", vmin=0, vmax=1), "ITC")):
            im = ax.imshow(m[key], aspect="auto", origin="lower", extent=ext,
                           interpolation="nearest", **kw)
            ax.contourf(m["times_ms"], self.freqs_hz, self.contaminated.astype(float),
                        levels=[0.5, 1.5], hatches=["//"], colors="none")
            ax.axhline(s["natural_frequency_hz"], color="k", ls="--", lw=1)
            ax.axvspan(*self.pulse_window_ms, color="0.5")
            ax.set_xlabel("time (ms)")
            ax.set_ylabel("frequency (Hz)")
            fig.colorbar(im, ax=ax, label=label)
        axes[0].set_title(f"ROI ERSP, natural frequency {s['natural_frequency_hz']:g} Hz")
        axes[1].set_title(f"ROI ITC (chance ~{s['itc_chance']:.2f}); hatched: wavelet "
                          "reaches the pulse window", fontsize=9)
        cum = np.array([np.nan if v is None else v for v in s["cumulative_ersp_db"]])
        axes[2].plot(self.freqs_hz, cum, "o-", ms=3)
        axes[2].axvline(s["natural_frequency_hz"], color="k", ls="--", lw=1)
        axes[2].set_xlabel("frequency (Hz)")
        axes[2].set_ylabel(f"sum of ERSP {s['natural_window_ms'][0]:g}-"
                           f"{s['natural_window_ms'][1]:g} ms (dB)")
        fig.tight_layout()
        report.add_figure(fig, title=f"TMS-evoked oscillations (ROI {', '.join(s['roi'])}; "
                          f"n = {s['n_epochs']} epochs)", section="Oscillations")
        plt.close(fig)


def make_metric(cfg: ConfigSection, context: MetricContext) -> OscillationMetric | None:
    """The oscillation plug-in, or None when ``[oscillations] enabled = false`` or no EEG."""
    c = cfg.oscillations
    if not c.enabled or not len(context.meta.picks("eeg")):
        return None
    if context.meta.sfreq < 2.25 * c.freq_max_hz:
        log.warning("oscillations: %g Hz sampling is too low for freq_max_hz=%g; skipped "
                    "(lower [oscillations] freq_max_hz)", context.meta.sfreq, c.freq_max_hz)
        return None
    return OscillationMetric(cfg, context)
