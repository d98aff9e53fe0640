"""Phase-based connectivity before and after the pulse: wPLI, debiased wPLI², PLV, coherence.

Estimators (per frequency bin ``f``, over the ``N`` epochs of one window; ``S_xy`` is one epoch's
cross-spectrum of signals ``x`` and ``y``)
-------------------------------------------------------------------------------------------
* **wPLI** (Vinck et al. 2011, NeuroImage 55:1548): ``|E[Im S_xy]| / E[|Im S_xy|]``. Zero-lag
  (instantaneous) mixing contributes only to the real part of ``S_xy``, so volume conduction
  alone does not raise it.
* **debiased wPLI²** (``"wpli2_debiased"``, Vinck et al. 2011 eq. 33): the estimator over all
  pairs of distinct epochs, ``(sum(Im)^2 - sum(Im^2)) / (sum(|Im|)^2 - sum(Im^2))``; its
  expectation is ~0 without coupling whatever ``N`` (plain wPLI is positively biased at small
  ``N``).
* **PLV** (Lachaux et al. 1999): ``|E[S_xy / |S_xy|]|``.
* **coherence**: ``|E[S_xy]| / sqrt(E[S_xx] E[S_yy])``.

A band value is the mean of the per-bin values over the bins ``lo <= f <= hi`` of the band
(``faverage=True`` in MNE-Connectivity). The conventions (taper normalisation, DPSS tapers with
``low_bias``, ``half_nbw = bandwidth * n_times / (2 sfreq)``, mean removal, Hanning window for
``mode="fourier"``) are those of :func:`mne_connectivity.spectral_connectivity_epochs`, so the
numbers agree with it to rounding on the same epochs (``tests/metrics/test_connectivity.py`` checks it).
MNE-Connectivity itself is *not* used here: it recomputes every epoch on each call, whereas this
accumulator updates running sums per epoch (``O(n_signals^2 n_freqs)``) and finalises cheaply.

Sign convention: ``S_xy = X conj(Y)``. If ``y`` lags ``x`` by ``tau`` (``y(t) = x(t - tau)``),
the phase of ``E[S_xy(f)]`` is ``+2 pi f tau`` (see :meth:`ConnectivityAccumulator.phase_lag_ms`).

Windows and evoked activity
---------------------------
The session plug-in (:class:`ConnectivityMetric`) computes a pre-pulse window (default
-500..-10 ms) and a post-pulse window (15..500 ms, clear of the interpolated pulse window and
most of the decay artifact). Post-pulse connectivity contains the *evoked* response, which is
phase-locked to the pulse on every channel and raises PLV and coherence (and wPLI where the
evoked waveforms differ in latency between channels). ``subtract_evoked = true`` removes the
running average of the previous epochs from each epoch first (induced connectivity; a live
approximation of subtracting the final average: the first epochs are corrected with a noisy
mean).

Regions
-------
``[connectivity.regions]`` names groups of channels (channels missing from the stream are
dropped; a region left empty is dropped). ``region_mode = "signal"`` averages the region's
channel *signals* into one virtual channel before the spectra (a spatial filter: it cancels
opposite-polarity activity within the region and adds the channels' noise down);
``region_mode = "pairs"`` averages the channel-pair *connectivity values* between the two
regions' members (within one region: its distinct pairs). ``coil_region = true`` adds a region
``"coil"`` = the TEP ROI (coil site and neighbours).

Decimation
----------
Bands stop at 45 Hz by default, so each window is reduced to ``decimate_to_hz`` (250 Hz) before
the spectra: by plain subsampling when the epochs are already low-passed below 0.8 x the new
Nyquist frequency (the session's zero-phase epoch filter, 100 Hz by default, against 125 Hz), else
by :func:`tmseeg.dsp.resample.decimate_fir` (``resample_poly``'s FIR anti-alias filter, applied
within the window only, so the interpolated pulse window is never smeared into a window). At
64 channels / 5 kHz this makes an epoch cost a fraction of a millisecond
(``benchmarks/bench_connectivity.py``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from tmseeg.metrics.base import MetricContext, SessionMetric
from tmseeg.sections import ConfigError, ConfigSection
from tmseeg.utils import jsonable

__all__ = ["DEFAULT_BANDS_HZ", "METHODS", "SpectralWindow", "ConnectivityAccumulator",
           "ConnectivityMetric", "CONFIG_TOML", "make_metric", "decimate_window"]

log = logging.getLogger(__name__)

#: default frequency bands (Hz, both edges included)
DEFAULT_BANDS_HZ: dict[str, tuple[float, float]] = {
    "theta": (4.0, 7.0), "alpha": (8.0, 12.0), "beta": (13.0, 30.0), "gamma": (30.0, 45.0)}
#: connectivity measures this module computes (names as in MNE-Connectivity)
METHODS = ("wpli", "wpli2_debiased", "plv", "coh")


class SpectralWindow:
    """Tapered spectra of fixed-length windows, restricted to the frequency bins in use.

    Parameters
    ----------
    n_times : int
        Samples per window.
    sfreq_hz : float
        Sampling rate of the window data.
    fmin_hz, fmax_hz : float
        Bins ``fmin_hz <= f <= fmax_hz`` are kept.
    mode : {"multitaper", "fourier"}
        DPSS tapers (weights ``sqrt(eigenvalue)``) or one symmetric Hanning window.
    bandwidth_hz : float or None
        Multitaper full bandwidth; ``None`` = MNE's default (normalised half-bandwidth 4).
    low_bias : bool
        Keep only tapers with eigenvalue > 0.9 (multitaper).

    Raises
    ------
    ValueError
        Too short a window, a bandwidth giving a half-bandwidth below 0.5, or no bin in range.
    """

    def __init__(self, n_times: int, sfreq_hz: float, fmin_hz: float, fmax_hz: float,
                 mode: str = "multitaper", bandwidth_hz: float | None = None,
                 low_bias: bool = True) -> None:
        from scipy.fft import rfftfreq

        if n_times < 8:
            raise ValueError(f"SpectralWindow: a window of {n_times} samples is too short for "
                             "a spectrum; use a longer window or a higher rate.")
        self.n_times, self.sfreq_hz, self.mode = int(n_times), float(sfreq_hz), mode
        if mode == "multitaper":
            from mne.time_frequency import dpss_windows

            half_nbw = (4.0 if bandwidth_hz is None
                        else float(bandwidth_hz) * n_times / (2.0 * sfreq_hz))
            if half_nbw < 0.5:
                raise ValueError(
                    f"SpectralWindow: bandwidth_hz={bandwidth_hz} gives a normalised "
                    f"half-bandwidth {half_nbw:.2f} < 0.5 for a {n_times / sfreq_hz * 1e3:.0f} ms "
                    f"window; use at least {sfreq_hz / n_times:.2f} Hz.")
            tapers, eig = dpss_windows(n_times, half_nbw, int(2 * half_nbw), sym=False,
                                       low_bias=low_bias)
            self.tapers = np.asarray(tapers, dtype=np.float64)
            self.weights = np.sqrt(np.asarray(eig, dtype=np.float64))
        elif mode == "fourier":
            self.tapers = np.hanning(n_times)[None, :]
            self.weights = np.ones(1)
        else:
            raise ValueError(f"SpectralWindow: mode={mode!r}; use 'multitaper' or 'fourier'.")
        f = rfftfreq(n_times, 1.0 / sfreq_hz)
        self._bins = np.flatnonzero((f >= fmin_hz) & (f <= fmax_hz))
        if self._bins.size == 0:
            raise ValueError(f"SpectralWindow: no frequency bin in {fmin_hz:g}..{fmax_hz:g} Hz "
                             f"(resolution {sfreq_hz / n_times:.2f} Hz, Nyquist "
                             f"{sfreq_hz / 2:g} Hz).")
        self.freqs_hz = f[self._bins]
        # rfft restricted to the kept bins = a small DFT matrix (n_times x n_freqs)
        k = self._bins[None, :]
        n = np.arange(n_times)[:, None]
        self._dft = np.exp(-2j * np.pi * n * k / n_times)
        # per taper: taper-weighted DFT, with the CSD normalisation 2 / sum(w^2) folded in
        scale = np.sqrt(2.0 / np.sum(self.weights ** 2))
        self._kernel = np.stack([(self.weights[i] * scale * self.tapers[i])[:, None] * self._dft
                                 for i in range(self.tapers.shape[0])])  # (K, n_times, n_f)

    @property
    def n_tapers(self) -> int:
        return int(self.tapers.shape[0])

    def spectra(self, x: np.ndarray) -> np.ndarray:
        """Scaled tapered spectra of ``x`` (n_signals, n_times): (n_freqs, n_signals, K)."""
        x = x - x.mean(axis=1, keepdims=True)
        if not hasattr(self, "_kr"):
            # (n_times, K * n_f) real and imaginary parts: two real BLAS products (numpy's
            # mixed real @ complex matmul does not use BLAS and is ~50x slower here)
            k = self._kernel.transpose(1, 0, 2).reshape(self.n_times, -1)
            self._kr, self._ki = np.ascontiguousarray(k.real), np.ascontiguousarray(k.imag)
        sp = (x @ self._kr) + 1j * (x @ self._ki)  # (n_sig, K * n_f)
        sp = sp.reshape(x.shape[0], self.n_tapers, -1)
        return np.ascontiguousarray(sp.transpose(2, 0, 1))

    def csd(self, x: np.ndarray) -> np.ndarray:
        """Cross-spectral matrices ``S[f, i, j] = sum_k w_k^2 X_ik conj(X_jk) 2 / sum w^2``."""
        sp = self.spectra(x)
        return np.matmul(sp, sp.conj().transpose(0, 2, 1))


class ConnectivityAccumulator:
    """Running cross-spectral sums of one window over epochs; connectivity finalised cheaply.

    Parameters
    ----------
    names : sequence of str
        One name per signal (row of the data given to :meth:`add`).
    sfreq_hz : float
        Rate of the data given to :meth:`add`.
    n_times : int
        Samples per window.
    bands_hz : mapping name -> (lo, hi)
        Frequency bands (default :data:`DEFAULT_BANDS_HZ`); bins with ``lo <= f <= hi``.
    mode : {"multitaper", "fourier"}
        Spectral estimate (see :class:`SpectralWindow`).
    bandwidth_hz : float or None
        Multitaper bandwidth (None: MNE's default, half-bandwidth 4 -> broad).
    low_bias : bool
        Keep DPSS tapers with eigenvalue > 0.9.

    Notes
    -----
    Per epoch the accumulator adds, for every signal pair and bin, ``Im S``, ``|Im S|``,
    ``(Im S)^2``, ``S`` and ``S/|S|`` (the full symmetric matrix: ``n_freqs x n x n``). At
    64 channels and ~20 bins this is ~5 MB of state. Every estimator is a ratio, so the
    normalisation of the spectra does not matter.
    """

    def __init__(self, names: Sequence[str], sfreq_hz: float, n_times: int,
                 bands_hz: Mapping[str, Sequence[float]] | None = None, mode: str = "multitaper",
                 bandwidth_hz: float | None = None, low_bias: bool = True) -> None:
        bands = dict(DEFAULT_BANDS_HZ if bands_hz is None else bands_hz)
        if not bands:
            raise ValueError("ConnectivityAccumulator: give at least one frequency band.")
        for b, v in bands.items():
            if len(v) != 2 or not 0 <= v[0] <= v[1]:
                raise ValueError(f"ConnectivityAccumulator: band {b!r}={list(v)} must be "
                                 "[lo_hz, hi_hz] with 0 <= lo <= hi.")
            if v[1] > sfreq_hz / 2:
                raise ValueError(f"ConnectivityAccumulator: band {b!r} reaches {v[1]} Hz, above "
                                 f"the Nyquist frequency {sfreq_hz / 2:g} Hz of the data; "
                                 "decimate less or lower the band.")
        self.names = list(names)
        self.bands_hz = {b: (float(v[0]), float(v[1])) for b, v in bands.items()}
        lo = min(v[0] for v in self.bands_hz.values())
        hi = max(v[1] for v in self.bands_hz.values())
        self.window = SpectralWindow(n_times, sfreq_hz, lo, hi, mode=mode,
                                     bandwidth_hz=bandwidth_hz, low_bias=low_bias)
        self.freqs_hz = self.window.freqs_hz
        self.band_bins: dict[str, np.ndarray] = {}
        for b, (blo, bhi) in self.bands_hz.items():
            idx = np.flatnonzero((self.freqs_hz >= blo) & (self.freqs_hz <= bhi))
            if idx.size == 0:
                raise ValueError(
                    f"ConnectivityAccumulator: band {b!r} ({blo:g}-{bhi:g} Hz) holds no frequency "
                    f"bin of a {n_times / sfreq_hz * 1e3:.0f} ms window (resolution "
                    f"{sfreq_hz / n_times:.2f} Hz); widen the band or lengthen the window.")
            self.band_bins[b] = idx
        nf, n = self.freqs_hz.size, len(self.names)
        self.n_epochs = 0
        self.n_skipped = 0
        self._im = np.zeros((nf, n, n))
        self._abs_im = np.zeros((nf, n, n))
        self._im2 = np.zeros((nf, n, n))
        self._csd = np.zeros((nf, n, n), dtype=np.complex128)
        self._phase = np.zeros((nf, n, n), dtype=np.complex128)
        self._cache: dict[tuple, np.ndarray] = {}

    @property
    def n_times(self) -> int:
        return self.window.n_times

    def add(self, data: np.ndarray) -> bool:
        """Accumulate one epoch's window.

        Parameters
        ----------
        data : ndarray, shape (n_signals, n_times)
            The window (µV; any unit).

        Returns
        -------
        bool
            False (and ``n_skipped`` counts it) if the window holds NaN/inf: it is left out.
        """
        x = np.asarray(data, dtype=np.float64)
        if x.shape != (len(self.names), self.n_times):
            raise ValueError(f"ConnectivityAccumulator.add: expected shape "
                             f"({len(self.names)}, {self.n_times}), got {x.shape}.")
        if not np.isfinite(x).all():
            self.n_skipped += 1
            return False
        s = self.window.csd(x)
        im = s.imag
        self._im += im
        self._abs_im += np.abs(im)
        self._im2 += im * im
        self._csd += s
        with np.errstate(divide="ignore", invalid="ignore"):
            u = s / np.abs(s)
        u[~np.isfinite(u)] = 0.0  # an exactly zero cross-spectrum has no phase
        self._phase += u
        self.n_epochs += 1
        self._cache.clear()
        return True

    # -- finalisation ----------------------------------------------------------------------
    def spectral(self, method: str) -> np.ndarray:
        """Per-bin connectivity, shape (n_freqs, n_signals, n_signals); NaN before any epoch.

        The diagonal is the estimator applied to a signal with itself (1 for PLV/coherence,
        0 for wPLI).
        """
        key = ("spectral", method)
        if key in self._cache:
            return self._cache[key]
        n = self.n_epochs
        if method not in METHODS:
            raise ValueError(f"unknown connectivity method {method!r}; use one of {METHODS}.")
        if n == 0:
            return np.full(self._im.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            if method == "wpli":
                den = self._abs_im
                out = np.where(den > 0, np.abs(self._im) / np.where(den > 0, den, 1.0), 0.0)
            elif method == "wpli2_debiased":
                den = self._abs_im ** 2 - self._im2
                out = np.where(den != 0, (self._im ** 2 - self._im2) / np.where(den != 0, den, 1.0),
                               0.0)
            elif method == "plv":
                out = np.abs(self._phase) / n
            else:  # coh
                psd = np.real(np.diagonal(self._csd, axis1=1, axis2=2))  # (nf, n)
                out = np.abs(self._csd) / np.sqrt(psd[:, :, None] * psd[:, None, :])
        self._cache[key] = out
        return out

    def band(self, method: str, band: str) -> np.ndarray:
        """Band value (mean over the band's bins), shape (n_signals, n_signals)."""
        if band not in self.band_bins:
            raise ValueError(f"unknown band {band!r}; configured: {list(self.band_bins)}.")
        return self.spectral(method)[self.band_bins[band]].mean(axis=0)

    def mean_csd(self) -> np.ndarray:
        """Mean cross-spectrum ``E[S_xy]`` over epochs, (n_freqs, n_signals, n_signals)."""
        if self.n_epochs == 0:
            return np.full(self._csd.shape, np.nan + 0j)
        return self._csd / self.n_epochs

    def phase_lag_ms(self, i: int, j: int, band: str) -> tuple[float, float]:
        """Phase of ``E[S_ij]`` in a band and the time lag it implies.

        Returns
        -------
        phase_rad : float
            Angle of the band-summed mean cross-spectrum (positive: ``i`` leads ``j``).
        lag_ms : float
            The slope of the bin phases against ``2 pi f`` (least squares through the origin,
            phases unwrapped across the band, weighted by ``|E[S_ij(f)]|``), in ms: the delay
            of ``j`` behind ``i`` for a pure delay.
        """
        idx = self.band_bins[band]
        c = self.mean_csd()[idx, i, j]
        phase = float(np.angle(c.sum()))
        ph = np.unwrap(np.angle(c))
        w = np.abs(c)
        x = 2 * np.pi * self.freqs_hz[idx]
        lag_s = float(np.sum(w * x * ph) / np.sum(w * x * x))
        return phase, lag_s * 1e3


def decimate_window(x: np.ndarray, step: int, lowpassed: bool) -> np.ndarray:
    """Reduce a window's rate by an integer ``step`` (see the module notes on decimation).

    Parameters
    ----------
    x : ndarray, shape (n_signals, n_times)
    step : int
        Decimation factor (1 = unchanged).
    lowpassed : bool
        True if the data are already low-passed below 0.8 x the new Nyquist frequency: plain
        subsampling. Otherwise :func:`tmseeg.dsp.resample.decimate_fir` (``resample_poly``'s
        zero-phase FIR anti-alias filter within the window, edges extended by a line).
    """
    if step <= 1:
        return x
    if lowpassed:
        return x[:, ::step]
    from tmseeg.dsp.resample import decimate_fir

    return decimate_fir(x, step)


# -- session plug-in (tmseeg.metrics.base) -----------------------------------------------------

#: tables of the section whose keys the user names (tmseeg.config)
FREE_KEYS = frozenset({("connectivity", "bands_hz"), ("connectivity", "regions")})

CONFIG_TOML = """\
[connectivity]
enabled = true
methods = ["wpli", "plv", "coh"]    # also "wpli2_debiased" (Vinck 2011, unbiased at small N)
mode = "multitaper"                 # "multitaper" (DPSS) or "fourier" (Hanning window)
bandwidth_hz = 4.0                  # multitaper full bandwidth (~0.5 s windows: 1 taper)
decimate_to_hz = 250.0              # windows are reduced to about this rate first
pre_window_ms = [-500.0, -10.0]
post_window_ms = [15.0, 500.0]      # starts after the interpolated pulse window
subtract_evoked = false             # true: remove the running average (induced connectivity)
region_mode = "signal"              # "signal": average region channels first; "pairs": average pair values
coil_region = true                  # add region "coil" = the TEP ROI
top_pairs = 10                      # channel pairs listed in the summary (largest post - pre wPLI)
every_n_epochs = 5                  # summary matrices recomputed this often
[connectivity.bands_hz]             # a table in your file replaces this whole list
theta = [4.0, 7.0]
alpha = [8.0, 12.0]
beta = [13.0, 30.0]
gamma = [30.0, 45.0]
[connectivity.regions]              # channels missing from the stream are dropped
left_sensorimotor = ["C3", "FC1", "FC5", "CP1", "CP5"]
right_sensorimotor = ["C4", "FC2", "FC6", "CP2", "CP6"]
frontal = ["Fz", "F3", "F4"]
parietal = ["Pz", "P3", "P4"]
occipital = ["O1", "Oz", "O2"]
"""


@dataclass(frozen=True)
class ConnectivityConfig(ConfigSection):
    """``[connectivity]``: wPLI, PLV, coherence before and after the pulse (see ``CONFIG_TOML``)."""
    SECTION = "connectivity"

    enabled: bool
    methods: list[str]
    mode: str
    bandwidth_hz: float
    decimate_to_hz: float
    pre_window_ms: list[float]
    post_window_ms: list[float]
    subtract_evoked: bool
    region_mode: str
    coil_region: bool
    top_pairs: int
    every_n_epochs: int
    bands_hz: dict[str, list]
    regions: dict[str, list]

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ConfigError(f"connectivity.methods {bad or '[]'}: choose from "
                              f"{list(METHODS)}.")
        self.check_choice("region_mode", ("signal", "pairs"))
        for key in ("pre_window_ms", "post_window_ms"):
            self.check_window(key)


#: this plug-in's section of the configuration
CONFIG_SECTION = ConnectivityConfig

WINDOWS = ("pre", "post")


class ConnectivityMetric(SessionMetric):
    """Session plug-in: channel-pair and region connectivity, pre vs post pulse, per band.

    Parameters
    ----------
    section : dict
        The ``[connectivity]`` configuration section.
    context : MetricContext
        For the ROI (coil region) and the epoch filter's low-pass frequency.
    """

    name = "connectivity"

    def __init__(self, section: ConnectivityConfig, context: MetricContext | None) -> None:
        self.cfg = section
        self.context = context
        self.methods = list(section.methods)
        self.bands_hz = {b: tuple(v) for b, v in section.bands_hz.items()}
        self.acc: dict[str, ConnectivityAccumulator] = {}
        self.region_acc: dict[str, ConnectivityAccumulator] = {}
        self.regions: dict[str, list[str]] = {}
        self._ready = False
        self._mean: dict[str, np.ndarray] = {}
        self._n_mean: dict[str, int] = {w: 0 for w in WINDOWS}
        self._summary: tuple[int, dict] | None = None
        self.n_rejected_skipped = 0

    # -- setup on the first epoch (time axis, ROI known) -----------------------------------
    def _setup(self, epoch) -> None:
        c = self.cfg
        sf = float(epoch.sfreq)
        self.step = max(1, int(sf // c.decimate_to_hz)) if c.decimate_to_hz > 0 else 1
        new_fs = sf / self.step
        h = self.context.cfg.filter.h_freq_hz if self.context is not None else 0.0
        self.lowpassed = self.step == 1 or (0 < h <= 0.8 * new_fs / 2)
        t = np.asarray(epoch.times_ms)
        self.ch_names = list(epoch.ch_names)
        self.masks = {}
        for w in WINDOWS:
            lo, hi = c[f"{w}_window_ms"]
            m = (t >= lo) & (t <= hi)
            if m.sum() < 8 * self.step or t[m][0] - lo > 5 or hi - t[m][-1] > 5:
                raise ValueError(f"connectivity.{w}_window_ms={[lo, hi]} is not inside the epoch "
                                 f"({t[0]:g}..{t[-1]:g} ms); lengthen the epochs or move it.")
            self.masks[w] = np.flatnonzero(m)
        roi = list(self.context.roi()) if (self.context is not None and c.coil_region) else []
        regions = {k: list(v) for k, v in c.regions.items()}
        if roi:
            regions = {"coil": roi, **regions}
        self.regions = {}
        for name, chans in regions.items():
            kept = [ch for ch in chans if ch in self.ch_names]
            if kept:
                self.regions[name] = kept
            else:
                log.info("connectivity: region %r has none of its channels in the stream; "
                         "dropped", name)
        idx = {n: i for i, n in enumerate(self.ch_names)}
        self.region_matrix = np.zeros((len(self.regions), len(self.ch_names)))
        for r, chans in enumerate(self.regions.values()):
            self.region_matrix[r, [idx[ch] for ch in chans]] = 1.0 / len(chans)
        for w in WINDOWS:
            n_t = decimate_window(np.zeros((1, self.masks[w].size)), self.step,
                                  self.lowpassed).shape[1]
            kw = dict(bands_hz=self.bands_hz, mode=c.mode,
                      bandwidth_hz=c.bandwidth_hz or None)
            self.acc[w] = ConnectivityAccumulator(self.ch_names, new_fs, n_t, **kw)
            if self.regions and c.region_mode == "signal":
                self.region_acc[w] = ConnectivityAccumulator(list(self.regions), new_fs, n_t,
                                                             **kw)
        self._ready = True

    # -- hooks -----------------------------------------------------------------------------
    def on_epoch(self, epoch, row: dict) -> None:
        """Accumulate the pre and post windows of a kept epoch."""
        if epoch.rejected:
            self.n_rejected_skipped += 1
            return
        if not self._ready:
            self._setup(epoch)
        x_all = epoch.data_uv
        for w in WINDOWS:
            x = x_all[:, self.masks[w]]
            if self.cfg.subtract_evoked:
                mean = self._mean.get(w)
                raw = x
                if mean is not None:
                    x = x - mean
                if np.isfinite(raw).all():
                    self._n_mean[w] += 1
                    self._mean[w] = (raw.copy() if mean is None
                                     else mean + (raw - mean) / self._n_mean[w])
            xd = decimate_window(x, self.step, self.lowpassed)
            self.acc[w].add(xd)
            if w in self.region_acc:
                self.region_acc[w].add(self.region_matrix @ xd)

    def finish(self) -> None:
        """End of the recording: the next summary uses every epoch."""
        self._summary = None

    def _region_values(self, method: str, band: str, w: str) -> np.ndarray:
        if w in self.region_acc:
            return self.region_acc[w].band(method, band)
        cm = self.acc[w].band(method, band)
        names = list(self.regions)
        idx = {n: i for i, n in enumerate(self.ch_names)}
        out = np.full((len(names), len(names)), np.nan)
        for a, ra in enumerate(names):
            ia = [idx[c] for c in self.regions[ra]]
            for b, rb in enumerate(names):
                ib = [idx[c] for c in self.regions[rb]]
                sub = cm[np.ix_(ia, ib)]
                if a == b:
                    off = ~np.eye(len(ia), dtype=bool)
                    out[a, b] = sub[off].mean() if off.any() else np.nan
                else:
                    out[a, b] = sub.mean()
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready: epochs used, regions, region matrices (method x band x window), top pairs."""
        if not self._ready or self.acc["pre"].n_epochs == 0:
            return {"n_epochs": 0}
        n = self.acc["post"].n_epochs
        if self._summary is not None and (n - self._summary[0] < self.cfg.every_n_epochs
                                          or n == self._summary[0]):
            return self._summary[1]
        out: dict[str, Any] = {
            "n_epochs": {w: int(self.acc[w].n_epochs) for w in WINDOWS},
            "n_skipped_nan": {w: int(self.acc[w].n_skipped) for w in WINDOWS},
            "windows_ms": {w: list(self.cfg[f"{w}_window_ms"]) for w in WINDOWS},
            "bands_hz": {b: list(v) for b, v in self.bands_hz.items()},
            "freqs_hz": {b: [float(f) for f in self.acc["post"].freqs_hz[i]]
                         for b, i in self.acc["post"].band_bins.items()},
            "rate_hz": float(self.acc["post"].window.sfreq_hz),
            "n_tapers": int(self.acc["post"].window.n_tapers),
            "region_mode": self.cfg.region_mode,
            "regions": {k: list(v) for k, v in self.regions.items()},
            "region_matrix": {}, "global_mean": {}, "top_pairs": {},
        }
        iu = np.triu_indices(len(self.ch_names), 1)
        for m in self.methods:
            out["region_matrix"][m], out["global_mean"][m], out["top_pairs"][m] = {}, {}, {}
            for b in self.bands_hz:
                out["region_matrix"][m][b] = {
                    w: jsonable(self._region_values(m, b, w)) for w in WINDOWS} \
                    if self.regions else {}
                vals = {w: self.acc[w].band(m, b)[iu] for w in WINDOWS}
                out["global_mean"][m][b] = {w: jsonable(np.nanmean(vals[w])) for w in WINDOWS}
                delta = vals["post"] - vals["pre"]
                order = np.argsort(-np.nan_to_num(delta, nan=-np.inf))[:self.cfg.top_pairs]
                out["top_pairs"][m][b] = [
                    {"pair": [self.ch_names[iu[0][k]], self.ch_names[iu[1][k]]],
                     "pre": jsonable(vals["pre"][k]), "post": jsonable(vals["post"][k]),
                     "delta": jsonable(delta[k])} for k in order]
        self._summary = (n, out)
        return out

    def report(self, report) -> None:
        """wPLI (first method) channel matrices pre vs post, one column per band."""
        import matplotlib.pyplot as plt

        if not self._ready or self.acc["post"].n_epochs == 0:
            return
        m = "wpli" if "wpli" in self.methods else self.methods[0]
        bands = list(self.bands_hz)
        fig, axes = plt.subplots(2, len(bands), figsize=(3.2 * len(bands), 6.2), squeeze=False)
        mats = {(w, b): self.acc[w].band(m, b) for w in WINDOWS for b in bands}
        vmax = max(float(np.nanmax(v - np.diag(np.diag(v)))) for v in mats.values()) or 1.0
        for j, b in enumerate(bands):
            for i, w in enumerate(WINDOWS):
                ax = axes[i, j]
                im = ax.imshow(mats[(w, b)], vmin=0, vmax=vmax, cmap="viridis")
                ax.set_title(f"{b} {self.bands_hz[b][0]:g}-{self.bands_hz[b][1]:g} Hz, {w}",
                             fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.colorbar(im, ax=axes, shrink=0.6, label=m)
        report.add_figure(fig, title=f"Connectivity ({m}): pre vs post pulse, "
                          f"n = {self.acc['post'].n_epochs} epochs", section="Connectivity")
        plt.close(fig)
        if self.regions:
            s = self.summary()
            rows = []
            for b in bands:
                pre = np.array(s["region_matrix"][m][b]["pre"], dtype=float)
                post = np.array(s["region_matrix"][m][b]["post"], dtype=float)
                rows.append(f"<h4>{b}</h4>" + _html_matrix(list(self.regions), pre, post))
            report.add_html("".join(rows), title=f"Region {m} (pre / post)",
                            section="Connectivity")


def _html_matrix(names: list[str], pre: np.ndarray, post: np.ndarray) -> str:
    head = "".join(f"<th>{n}</th>" for n in names)
    body = "".join(
        f"<tr><th>{a}</th>" + "".join(f"<td>{pre[i, j]:.2f} / {post[i, j]:.2f}</td>"
                                      for j in range(len(names))) + "</tr>"
        for i, a in enumerate(names))
    return f"<table border=1 cellpadding=3><tr><th></th>{head}</tr>{body}</table>"


def make_metric(cfg: ConfigSection, context: MetricContext) -> ConnectivityMetric | None:
    """The connectivity plug-in, or None when ``[connectivity] enabled = false``."""
    section = cfg.connectivity
    if not section.enabled:
        return None
    return ConnectivityMetric(section, context)
