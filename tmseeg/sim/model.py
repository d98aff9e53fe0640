"""Signal model of the simulated TMS-EEG amplifier + stimulator, and its ground truth.

The simulator produces what a 10-10 EEG cap (plus one EMG channel on the right first dorsal
interosseous, FDI) records during a TMS session over the left motor cortex, and remembers
everything it injected, so every later stage can be tested against known numbers.

Everything is generated in microvolts, float64, shape ``(n_channels, n_samples)``: the EEG
channels in cap order, then ``"EMG"``.

Signal model (every number below is a default; most are :class:`SimConfig` fields)
---------------------------------------------------------------------------------
Geometry
    Electrode positions come from MNE's 10-05 template montage (``colin27_1005``, formerly
    ``standard_1005``), projected on a fitted sphere (radius ~9.5 cm). Distances are great-circle
    distances in cm. Topographies are "difference of Gaussians" of that distance,
    ``g(d; s) - 0.35 g(d; 2.2 s)``, normalised to 1 at their centre, so each source is positive
    above itself with a weak opposite-polarity surround (as a radial dipole), which lets average
    reference and Laplacians behave like on real EEG.
Background (always on)
    * per-channel pink (1/f power) noise, ``noise_uv`` = 6 µV RMS, from a cascade of first-order
      pole/zero pairs (3 per decade from 0.2 Hz to Nyquist, bilinear transform; ripple < 0.5 dB)
      filtered with :func:`scipy.signal.sosfilt` whose state is carried across segments;
    * ``n_smooth_sources`` = 24 latent pink sources at random scalp points, mixed with a Gaussian
      of distance (``smooth_sigma_cm`` = 5 cm), ``smooth_uv`` = 12 µV RMS per channel;
    * posterior alpha: 9.8 Hz, centre Oz, spatial sigma 6 cm, mean envelope ``alpha_uv`` = 8 µV;
    * sensorimotor mu: 10.8 Hz, centre ``mu_site`` (C3), spatial sigma 3 cm, mean envelope
      ``mu_amplitude_uv`` = 6 µV. The mu source is ``s(t) = A(t) cos(phi(t))`` with **known**
      phase (see below);
    * blinks: Poisson, ``blink_rate_hz`` = 0.2 /s, gamma-shaped (peak 120 ms, ~0.5 s long),
      100-200 µV at Fp1/Fp2, decaying with distance from Fpz (sigma 4 cm);
    * line noise: ``line_noise_hz`` (50 Hz) with 0.5-3 µV per channel and a 3rd harmonic at 20 %;
    * optional ``noisy_channels`` get extra white noise of ``noisy_channel_uv`` RMS and 10x line
      noise (for bad-channel detection tests);
    * EMG: white baseline noise ``emg_noise_uv`` = 3 µV RMS, 0.5 µV line noise.
Oscillators (alpha and mu)
    Frequency and envelope are defined at knots every 25 ms. The frequency is
    ``f0 + x`` with ``x`` an AR(1) process (time constant 2 s, SD 0.3 Hz); the envelope is
    ``A_ref * exp(y - 0.5 * 0.45**2)`` with ``y`` AR(1) (time constant 0.6 s, SD 0.45), i.e.
    waxing and waning with mean ``A_ref``. Between knots the frequency is linear and the
    envelope is linear; the phase is the exact integral of the frequency, so
    :meth:`GroundTruth.mu_phase` recomputes any sample's phase from the stored knots.
    **Phase convention**: ``phi = 0`` is the positive peak of the mu source as seen at
    ``mu_site`` (``cos(phi) = 1``), ``phi = ±pi`` its trough, phase increases with time.
At each pulse (intensity ``I`` in % of maximum stimulator output)
    * pulse artifact: ``w(t) = exp(-t/0.8 ms) cos(2 pi t / 2 ms)`` for 0 <= t < 6 ms (largest at
      the pulse sample, then a negative lobe), amplitude ``8000 g(d; 4 cm) + 300`` µV x U(0.5, 1.5)
      x random sign, times ``I/100``; 200 µV on EMG;
    * decay artifact: ``a_f exp(-t/tau_f) + a_s exp(-t/tau_s)`` per channel, with
      ``a_f = (60 + 500 g(d; 5 cm)) U(0.7, 1.4)`` µV x random sign, ``tau_f`` ~ U(5, 40) ms,
      and a slow term (``a_s = 0.35 a_f``, ``tau_s`` ~ U(60, 150) ms) on channels within 5 cm of the
      coil and on a random third of the others; scaled by ``I/70`` x (1 + 0.1 N(0,1)) per term;
    * TMS-evoked muscle: three Gaussian lobes (+1 at 4 ms, -0.8 at 8.5 ms, +0.3 at 13 ms;
      sigmas 1.2, 2.0, 2.5 ms), amplitude ``150 g(d; 4 cm) + 60 g(d_temporal; 4 cm)`` µV
      (temporal = T7/T8 on the coil side) x random sign, scaled by ``(I/70)**2`` x
      lognormal(0, 0.2), all times ``muscle_uv / 150`` (``SimConfig.muscle_uv``, default 150);
    * TEP (linear; truth = template x gain): Gaussian waveforms in time x topography:

      ======  ===========  =========  ==========  ==========  ==============================
      name    latency ms   sigma ms   peak µV     space cm    centre
      ======  ===========  =========  ==========  ==========  ==============================
      N15     15           3          -4          3.5         coil site
      P30     30           5          +5          4           coil, 2 cm medial
      N45     45           7          -6          5           coil site
      P60     60           9          +5          5           coil, 3 cm posterior
      N100    100          16         -8          8           FCz (+ coil site, weight 0.5)
      P180    185          28         +7          9           Cz
      ======  ===========  =========  ==========  ==========  ==============================

      Optional TMS-evoked oscillation (off unless ``evoked_oscillation_hz > 0``; the
      "natural frequency" of the stimulated area, Rosanova et al. 2009): a damped sine
      ``A exp(-(t - t0)/tau) sin(2 pi f (t - t0))`` for ``t >= t0`` (``t0`` =
      ``evoked_oscillation_onset_ms`` = 15 ms, ``tau`` = ``evoked_oscillation_tau_ms`` = 80 ms,
      ``A`` = ``evoked_oscillation_uv`` = 6 µV), topography a difference of Gaussians of sigma
      ``evoked_oscillation_sigma_cm`` (4 cm) around the coil site, part of the template (so it
      is phase-locked to the pulse and scaled like the TEP); recorded in
      :attr:`GroundTruth.evoked_oscillation`.

      The template is exactly zero before the pulse. Per pulse it is multiplied by
      ``tep_gain_effective = tep_gain * (I / tep_reference_intensity_pct) * m * j`` with the
      state modulation ``m`` (below) and trial jitter ``j = max(0, 1 + tep_jitter N(0,1))``
      (``tep_jitter`` = 0.1).
    * MEP on EMG: one sine cycle under a sin² window, 12 ms long (positive then negative lobe),
      onset ``mep_latency_ms`` = 22 ms + N(0, 1 ms), peak-to-peak
      ``mep_max_uv * sigmoid((I - mep_threshold_pct) / mep_slope_pct) * exp(mep_variability
      N(0,1)) * m`` (``mep_variability`` = 0.35), times the paired-pulse factor below for the
      test pulse of a pair.
State dependence (``m``, same for TEP and MEP)
    ``m = (1 + phase_dependency cos(phi - preferred_phase_rad)) *
    (1 + power_dependency tanh(ln(A / mu_amplitude_uv)))``, with ``phi`` and ``A`` the true mu
    phase and envelope at the pulse sample. With the defaults (0.3, 0.2) excitability is 1.3x at
    the preferred phase and 0.7x opposite it.
Paired pulses
    The conditioning stimulus (CS, ``cs_intensity_pct``, default 80 % of ``mep_threshold_pct``)
    precedes the test stimulus by ``ipi_ms``. The test MEP is multiplied by
    ``1 - 0.6 exp(-((ipi - 2.5) / 1.2)**2 / 2) + 0.5 exp(-((ipi - 12) / 3)**2 / 2)`` (SICI
    around 2.5 ms, ICF around 12 ms).
Schedules
    Pulses start at ``first_pulse_s`` (1 s). ``single``: ISI ~ U(isi_range_s). ``paired``: CS+TS
    pairs, pair ISI ~ U(isi_range_s). ``train-1hz``: every 1 s. ``train-10hz``: 10 Hz trains of
    ``train_on_s`` (4 s) every ``train_on_s + train_off_s`` (4 + 26 s). ``itbs``: 3 pulses at
    50 Hz every 200 ms, 2 s on / 8 s off. ``ctbs``: the same bursts continuously.
    ``external``: only pulses asked for with :meth:`TMSEEGSimulator.request_pulse`.

Determinism
    The background is made in fixed segments of 40 knots (~1 s) whose random numbers come from
    ``numpy.random.default_rng([seed, tag, segment])``; per-pulse randomness comes from
    ``default_rng([seed, tag, pulse_sample])``. Pulse responses are added to the output sample
    by sample in pulse order, so ``generate(1000)`` equals ``generate(300)`` + ``generate(700)``
    bit for bit.
"""
from __future__ import annotations

import heapq
import json
import threading
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import signal

from tmseeg.stream.montage import ten_five_montage
from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Event, StreamMeta

# ----------------------------------------------------------------------------------------------
# Caps

#: actiCAP-style layouts (ground Fpz and reference FCz are not recorded); the 32 and 64 channel
#: caps are the first 32 / 64 entries of the 128-channel list.
CAP_128: tuple[str, ...] = (
    "Fp1", "Fz", "F3", "F7", "F9", "FC5", "FC1", "C3", "T7", "CP5", "CP1", "Pz", "P3", "P7",
    "P9", "O1", "Oz", "O2", "P10", "P8", "P4", "CP2", "CP6", "T8", "C4", "Cz", "FC2", "FC6",
    "F10", "F8", "F4", "Fp2",
    "AF7", "AF3", "AFz", "F1", "F5", "FT7", "FC3", "C1", "C5", "TP7", "CP3", "P1", "P5", "PO7",
    "PO3", "Iz", "POz", "PO4", "PO8", "P6", "P2", "CPz", "CP4", "TP8", "C6", "C2", "FC4", "FT8",
    "F6", "F2", "AF4", "AF8",
    "AFF3h", "FFC1h", "FFC5h", "FT9", "FTT7h", "FCC3h", "CCP1h", "CCP5h", "TP9", "TPP7h",
    "CPP3h", "PPO3h", "PPO9h", "POO1", "PO9", "I1", "I2", "PO10", "POO2", "PPO10h", "PPO4h",
    "CPP4h", "TPP8h", "TP10", "CCP6h", "CCP2h", "FCC4h", "FTT8h", "FT10", "FFC6h", "FFC2h",
    "AFF4h", "AFp1", "AFF1h", "AFF5h", "FFT7h", "FFC3h", "FCC1h", "FCC5h", "TTP7h", "CCP3h",
    "CPP1h", "CPP5h", "TPP9h", "PPO5h", "PPO1h", "POO9h", "OI1h", "OI2h", "POO10h", "PPO2h",
    "PPO6h", "TPP10h", "CPP6h", "CPP2h", "CCP4h", "TTP8h", "FCC6h", "FCC2h", "FFC4h", "FFT8h",
    "AFF6h", "AFF2h", "AFp2",
)
CAPS: dict[int, tuple[str, ...]] = {32: CAP_128[:32], 64: CAP_128[:64], 128: CAP_128}
EMG_NAME = "EMG"
SCHEDULES = ("single", "paired", "train-1hz", "train-10hz", "itbs", "ctbs", "external")

#: TEP components: name -> (latency ms, temporal sigma ms, peak µV, spatial sigma cm, centres)
#: centres are (where, weight); where is "coil", "coil-medial", "coil-posterior" or a 10-05 name.
TEP_COMPONENTS: dict[str, tuple[float, float, float, float, tuple[tuple[str, float], ...]]] = {
    "N15": (15.0, 3.0, -4.0, 3.5, (("coil", 1.0),)),
    "P30": (30.0, 5.0, 5.0, 4.0, (("coil-medial", 1.0),)),
    "N45": (45.0, 7.0, -6.0, 5.0, (("coil", 1.0),)),
    "P60": (60.0, 9.0, 5.0, 5.0, (("coil-posterior", 1.0),)),
    "N100": (100.0, 16.0, -8.0, 8.0, (("FCz", 1.0), ("coil", 0.5))),
    "P180": (185.0, 28.0, 7.0, 9.0, (("Cz", 1.0),)),
}
TEP_TMIN_MS = -100.0
TEP_TMAX_MS = 500.0

_KNOT_S = 0.025  # oscillator knot spacing
_KNOTS_PER_SEGMENT = 40
# random-stream tags (any fixed distinct integers)
_TAG_GEOMETRY, _TAG_BG, _TAG_MU, _TAG_ALPHA, _TAG_BLINK, _TAG_SCHED, _TAG_PULSE, _TAG_BURN = (
    101, 102, 103, 104, 105, 106, 107, 108)


@lru_cache(maxsize=1)
def _montage_positions() -> dict[str, np.ndarray]:
    """10-05 positions (m) from MNE, shifted to the centre of a fitted sphere."""
    pos = ten_five_montage().get_positions()["ch_pos"]
    names = [n for n in pos if n not in ("A1", "A2", "M1", "M2")]
    xyz = np.array([pos[n] for n in names], dtype=float)
    # sphere fit: |x|^2 = 2 c.x + (r^2 - |c|^2)
    a = np.c_[2 * xyz, np.ones(len(xyz))]
    sol, *_ = np.linalg.lstsq(a, (xyz ** 2).sum(1), rcond=None)
    centre = sol[:3]
    return {n: p - centre for n, p in zip(names, xyz)}


def _unit(names: Sequence[str]) -> np.ndarray:
    pos = _montage_positions()
    xyz = np.array([pos[n] for n in names])
    return xyz / np.linalg.norm(xyz, axis=1, keepdims=True)


_HEAD_RADIUS_CM = 9.5


def _distance_cm(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Great-circle distance (cm) between unit vectors u (n, 3) and v (3,)."""
    return _HEAD_RADIUS_CM * np.arccos(np.clip(u @ v, -1.0, 1.0))


def _gauss(d_cm: np.ndarray, sigma_cm: float) -> np.ndarray:
    return np.exp(-0.5 * (d_cm / sigma_cm) ** 2)


def _dog(d_cm: np.ndarray, sigma_cm: float) -> np.ndarray:
    """Difference-of-Gaussians topography, 1 at the centre, weak negative surround."""
    return (_gauss(d_cm, sigma_cm) - 0.35 * _gauss(d_cm, 2.2 * sigma_cm)) / 0.65


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def mep_recruitment(intensity_pct: float | np.ndarray, threshold_pct: float, slope_pct: float,
                    max_uv: float) -> np.ndarray | float:
    """Noise-free MEP peak-to-peak (µV) at an intensity: ``max * sigmoid((I - thr) / slope)``."""
    return max_uv * _sigmoid((np.asarray(intensity_pct, dtype=float) - threshold_pct) / slope_pct)


def paired_pulse_factor(ipi_ms: float) -> float:
    """Multiplier of the test MEP of a pair: SICI near 2.5 ms, ICF near 12 ms (see module doc)."""
    return float(1.0 - 0.6 * np.exp(-0.5 * ((ipi_ms - 2.5) / 1.2) ** 2)
                 + 0.5 * np.exp(-0.5 * ((ipi_ms - 12.0) / 3.0) ** 2))


# ----------------------------------------------------------------------------------------------
# Configuration

@dataclass
class SimConfig:
    """Everything the simulator needs; all numbers are documented in :mod:`tmseeg.sim.model`.

    Parameters
    ----------
    n_channels : int
        EEG channels: 32, 64 (default) or 128 (actiCAP-style 10-10/10-05 layouts).
    sfreq : float
        Sampling rate in Hz (500 to 20000).
    seed : int
        Seed of every random stream; same seed, same data.
    coil_site : str
        10-05 position of the coil centre.
    include_emg : bool
        Add the ``"EMG"`` channel (type ``emg``, µV, right FDI).
    schedule : str
        One of ``"single"``, ``"paired"``, ``"train-1hz"``, ``"train-10hz"``, ``"itbs"``,
        ``"ctbs"``, ``"external"``.
    isi_range_s : tuple of float
        Inter-stimulus interval range (single pulses, pairs).
    ipi_ms : float
        Inter-pulse interval of paired pulses.
    intensity_pct : float
        Stimulator output in % of maximum.
    pulse_artifact, decay_artifact, muscle_artifact, blinks, alpha, mu : bool
        Switch signal parts on or off.
    line_noise_hz : float
        Mains frequency (0 disables line noise).
    tep_gain : float
        Scale of the TEP (change at run time with :meth:`TMSEEGSimulator.set_tep_gain`).
    phase_dependency, preferred_phase_rad, power_dependency : float
        Depth of the mu-phase modulation, the phase of maximum excitability (0 = mu peak) and
        depth of the mu-power modulation of TEP and MEP size.
    mep_threshold_pct, mep_slope_pct, mep_max_uv : float
        Sigmoid recruitment curve of the MEP; ``mep_max_uv`` is the plateau of the median
        curve (single trials scatter around it by ``mep_variability`` and the state factor).
    mep_variability : float
        SD of the log of the trial-to-trial MEP factor (0 = none).
    mep_latency_ms : float
        Mean MEP onset latency.
    tep_jitter : float
        SD of the multiplicative trial-to-trial TEP amplitude jitter (0 = none).
    tep_reference_intensity_pct : float
        Intensity at which the TEP equals the template (it scales linearly with intensity).
    cs_intensity_pct : float or None
        Conditioning-stimulus intensity of paired pulses (None: 80 % of ``mep_threshold_pct``).
    first_pulse_s : float
        Time of the first scheduled pulse.
    train_on_s, train_off_s : float
        Train length and pause of ``train-10hz``.
    noise_uv, smooth_uv, n_smooth_sources, smooth_sigma_cm : float / int
        Background noise (see module doc).
    alpha_uv, mu_amplitude_uv, mu_site, mu_freq_hz, alpha_freq_hz : float / str
        Oscillations.
    blink_rate_hz, emg_noise_uv : float
        Blink rate, EMG baseline noise.
    noisy_channels : tuple of str
        EEG channels that get extra noise of ``noisy_channel_uv`` RMS and 10x line noise.
    noisy_channel_uv : float
        Extra noise RMS on ``noisy_channels``.
    ch_names : tuple of str or None
        Explicit EEG channel list (10-05 names) instead of ``n_channels``.
    coupling : bool
        Add three band-limited sources for connectivity tests (default False; see
        :class:`_CouplingSources`): ``coupling_sites[1]`` follows ``coupling_sites[0]`` with a
        delay of ``coupling_lag_ms`` and coherence ``coupling_strength``; ``coupling_sites[2]``
        is independent. Band ``coupling_band_hz``, ``coupling_uv`` RMS at each source's centre,
        topography a difference of Gaussians of sigma ``coupling_sigma_cm``.
    """

    n_channels: int = 64
    sfreq: float = 5000.0
    seed: int = 0
    coil_site: str = "C3"
    include_emg: bool = True
    schedule: str = "single"
    isi_range_s: tuple[float, float] = (2.0, 3.0)
    ipi_ms: float = 3.0
    intensity_pct: float = 70.0
    pulse_artifact: bool = True
    decay_artifact: bool = True
    muscle_artifact: bool = True
    blinks: bool = True
    line_noise_hz: float = 50.0
    alpha: bool = True
    mu: bool = True
    tep_gain: float = 1.0
    phase_dependency: float = 0.3
    preferred_phase_rad: float = 0.0
    power_dependency: float = 0.2
    mep_threshold_pct: float = 55.0
    mep_slope_pct: float = 4.0
    mep_max_uv: float = 2000.0
    mep_variability: float = 0.35
    mep_latency_ms: float = 22.0
    tep_jitter: float = 0.1
    tep_reference_intensity_pct: float = 70.0
    cs_intensity_pct: float | None = None
    first_pulse_s: float = 1.0
    train_on_s: float = 4.0
    train_off_s: float = 26.0
    noise_uv: float = 6.0
    smooth_uv: float = 12.0
    n_smooth_sources: int = 24
    smooth_sigma_cm: float = 5.0
    alpha_uv: float = 8.0
    alpha_freq_hz: float = 9.8
    mu_amplitude_uv: float = 6.0
    mu_freq_hz: float = 10.8
    mu_site: str = "C3"
    blink_rate_hz: float = 0.2
    emg_noise_uv: float = 3.0
    noisy_channels: tuple[str, ...] = ()
    noisy_channel_uv: float = 50.0
    ch_names: tuple[str, ...] | None = None
    # coupled sources (connectivity ground truth; off by default, see _CouplingSources)
    coupling: bool = False
    coupling_sites: tuple[str, str, str] = ("C3", "C4", "Oz")
    coupling_band_hz: tuple[float, float] = (15.0, 25.0)
    coupling_lag_ms: float = 10.0
    coupling_strength: float = 0.8
    coupling_uv: float = 6.0
    coupling_sigma_cm: float = 2.5
    # TMS-evoked oscillation at a "natural frequency" (off by default; see the module doc)
    evoked_oscillation_hz: float = 0.0
    evoked_oscillation_uv: float = 6.0
    evoked_oscillation_tau_ms: float = 80.0
    evoked_oscillation_onset_ms: float = 15.0
    evoked_oscillation_sigma_cm: float = 4.0
    # peak of the TMS-evoked muscle burst at the coil site, µV at ``tep_reference_intensity_pct``
    # (the temporal term scales with it: 60/150 of it). The default 150 µV is on the small side
    # of real data (hundreds of µV to several mV in the first 5-20 ms over lateral sites).
    muscle_uv: float = 150.0

    def __post_init__(self) -> None:
        self.isi_range_s = tuple(float(x) for x in self.isi_range_s)  # type: ignore[assignment]
        self.noisy_channels = tuple(self.noisy_channels)
        if self.ch_names is not None:
            self.ch_names = tuple(self.ch_names)
        self.validate()

    def eeg_names(self) -> tuple[str, ...]:
        """The EEG channel labels in row order."""
        if self.ch_names is not None:
            return tuple(self.ch_names)
        return CAPS[self.n_channels]

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting and how to fix it."""
        pos = _montage_positions()
        if self.ch_names is None and self.n_channels not in CAPS:
            raise ValueError(f"SimConfig.n_channels={self.n_channels}: supported caps are 32, 64 "
                             "and 128 channels; or pass ch_names=[...] with 10-05 labels.")
        if self.ch_names is not None:
            bad = [n for n in self.ch_names if n not in pos]
            if bad or not self.ch_names or len(set(self.ch_names)) != len(self.ch_names):
                raise ValueError(f"SimConfig.ch_names: {bad or 'empty/duplicate list'} are not "
                                 "unique 10-05 labels (e.g. 'C3', 'FCC3h').")
        if not 500.0 <= self.sfreq <= 20000.0:
            raise ValueError(f"SimConfig.sfreq={self.sfreq}: choose 500 to 20000 Hz.")
        for what in ("coil_site", "mu_site"):
            if getattr(self, what) not in pos:
                raise ValueError(f"SimConfig.{what}={getattr(self, what)!r} is not a 10-05 "
                                 "position; use a label such as 'C3' or 'FC3'.")
        bad = [n for n in self.noisy_channels if n not in self.eeg_names()]
        if bad:
            raise ValueError(f"SimConfig.noisy_channels {bad} are not in the cap; pick from "
                             f"{', '.join(self.eeg_names())}.")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"SimConfig.schedule={self.schedule!r}: use one of "
                             f"{', '.join(SCHEDULES)}.")
        lo, hi = self.isi_range_s
        if not (len(self.isi_range_s) == 2 and 0 < lo <= hi):
            raise ValueError(f"SimConfig.isi_range_s={self.isi_range_s}: give (min, max) seconds "
                             "with 0 < min <= max.")
        if self.schedule == "paired" and not 0 < self.ipi_ms < 1000 * lo:
            raise ValueError(f"SimConfig.ipi_ms={self.ipi_ms}: must be > 0 and shorter than the "
                             "minimum ISI.")
        if not 0 <= self.muscle_uv < 1e5:
            raise ValueError(f"SimConfig.muscle_uv={self.muscle_uv}: give the coil-site peak of "
                             "the TMS-evoked muscle burst in µV (>= 0, e.g. 150-2000).")
        if not 0 <= self.intensity_pct <= 100:
            raise ValueError(f"SimConfig.intensity_pct={self.intensity_pct}: give 0-100 % of "
                             "maximum stimulator output.")
        if self.cs_intensity_pct is not None and not 0 <= self.cs_intensity_pct <= 100:
            raise ValueError(f"SimConfig.cs_intensity_pct={self.cs_intensity_pct}: give 0-100 %.")
        if self.line_noise_hz < 0 or self.line_noise_hz >= self.sfreq / 2:
            raise ValueError(f"SimConfig.line_noise_hz={self.line_noise_hz}: use 0 (off), 50 or "
                             "60 Hz (below Nyquist).")
        if not (self.tep_gain >= 0 and np.isfinite(self.tep_gain)):
            raise ValueError(f"SimConfig.tep_gain={self.tep_gain}: must be a finite value >= 0.")
        if not 0 <= self.phase_dependency <= 1 or not 0 <= self.power_dependency <= 1:
            raise ValueError("SimConfig.phase_dependency and power_dependency must be in [0, 1] "
                             "(they are modulation depths).")
        if self.mep_slope_pct <= 0 or self.mep_max_uv < 0:
            raise ValueError("SimConfig.mep_slope_pct must be > 0 and mep_max_uv >= 0.")
        if self.first_pulse_s < 0 or self.train_on_s <= 0 or self.train_off_s < 0:
            raise ValueError("SimConfig.first_pulse_s, train_off_s must be >= 0 and train_on_s > 0.")
        if self.n_smooth_sources < 0:
            raise ValueError("SimConfig.n_smooth_sources must be >= 0.")
        if self.coupling:
            _validate_coupling(self, pos)
        if self.evoked_oscillation_hz:
            if not 0 < self.evoked_oscillation_hz < 0.45 * self.sfreq:
                raise ValueError(f"SimConfig.evoked_oscillation_hz={self.evoked_oscillation_hz}: "
                                 f"use 0 (off) or a frequency below {0.45 * self.sfreq:g} Hz.")
            if (self.evoked_oscillation_uv < 0 or self.evoked_oscillation_tau_ms <= 0
                    or self.evoked_oscillation_sigma_cm <= 0
                    or not 0 <= self.evoked_oscillation_onset_ms < TEP_TMAX_MS):
                raise ValueError("SimConfig.evoked_oscillation_*: need uv >= 0, tau_ms > 0, "
                                 f"sigma_cm > 0 and 0 <= onset_ms < {TEP_TMAX_MS:g}.")

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        d = asdict(self)
        d["isi_range_s"] = list(self.isi_range_s)
        d["noisy_channels"] = list(self.noisy_channels)
        d["ch_names"] = None if self.ch_names is None else list(self.ch_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SimConfig":
        """Inverse of :meth:`to_dict` (unknown keys are an error naming them)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"SimConfig: unknown setting(s) {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        # JSON has no tuples: restore them where the default is one
        defaults = cls()
        fixed = {k: (tuple(v) if isinstance(getattr(defaults, k), tuple) and isinstance(v, list)
                     else v) for k, v in d.items()}
        return cls(**fixed)


# ----------------------------------------------------------------------------------------------
# Knot-based oscillator phase (shared by generator and ground truth, so they agree exactly)

class KnotPhase:
    """Phase and envelope of a drifting oscillator, defined by knots every ``knot_samples``.

    Between knots ``k`` and ``k + 1`` the frequency and envelope are linear; the phase is the
    exact integral of the frequency. The phase at any sample is recomputed from the knots.

    Parameters
    ----------
    knot_samples : int
        Samples between knots.
    sfreq : float
        Sampling rate in Hz.
    """

    def __init__(self, knot_samples: int, sfreq: float,
                 freq_hz: np.ndarray | None = None, phase_rad: np.ndarray | None = None,
                 amp_uv: np.ndarray | None = None) -> None:
        self.knot_samples = int(knot_samples)
        self.sfreq = float(sfreq)
        self._n = 0
        cap = 1024
        self._f = np.zeros(cap)
        self._p = np.zeros(cap)
        self._a = np.zeros(cap)
        if freq_hz is not None:
            self.append(np.asarray(freq_hz, float), np.asarray(phase_rad, float),
                        np.asarray(amp_uv, float))

    @property
    def n_knots(self) -> int:
        return self._n

    @property
    def freq_hz(self) -> np.ndarray:
        return self._f[:self._n]

    @property
    def phase_rad(self) -> np.ndarray:
        return self._p[:self._n]

    @property
    def amp_uv(self) -> np.ndarray:
        return self._a[:self._n]

    def append(self, f: np.ndarray, p: np.ndarray, a: np.ndarray) -> None:
        need = self._n + len(f)
        if need > len(self._f):
            cap = max(need, 2 * len(self._f))
            for name in ("_f", "_p", "_a"):
                old = getattr(self, name)
                new = np.zeros(cap)
                new[:self._n] = old[:self._n]
                setattr(self, name, new)
        self._f[self._n:need] = f
        self._p[self._n:need] = p
        self._a[self._n:need] = a
        self._n = need

    @property
    def last_sample(self) -> int:
        """One past the last sample whose phase the knots define."""
        return max(0, (self._n - 1) * self.knot_samples)

    def _locate(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples = np.asarray(samples, dtype=np.int64)
        if samples.size and (samples.min() < 0 or samples.max() >= self.last_sample):
            raise ValueError(
                f"phase requested for samples {samples.min()}..{samples.max()} but only "
                f"0..{self.last_sample - 1} are known; generate that far first.")
        k = samples // self.knot_samples
        tau = (samples - k * self.knot_samples) / self.sfreq
        return k, tau

    def phase(self, samples: np.ndarray) -> np.ndarray:
        """Phase in (-pi, pi] at absolute sample indices."""
        k, tau = self._locate(samples)
        big_t = self.knot_samples / self.sfreq
        f0 = self._f[k]
        df = self._f[k + 1] - f0
        ph = self._p[k] + 2 * np.pi * (f0 * tau + df * tau * tau / (2 * big_t))
        return np.pi - np.mod(np.pi - ph, 2 * np.pi)

    def amplitude(self, samples: np.ndarray) -> np.ndarray:
        """Envelope (µV at the source's peak channel) at absolute sample indices."""
        k, tau = self._locate(samples)
        w = tau / (self.knot_samples / self.sfreq)
        return self._a[k] * (1 - w) + self._a[k + 1] * w


class _Oscillator:
    """Waxing/waning oscillator with drifting frequency; knots added a segment at a time."""

    def __init__(self, f0_hz: float, amp_uv: float, knots: KnotPhase, seed: int, tag: int,
                 f_sd_hz: float = 0.3, f_tau_s: float = 2.0, a_sd: float = 0.45,
                 a_tau_s: float = 0.6) -> None:
        self.f0, self.amp = f0_hz, amp_uv
        self.k = knots
        self.seed, self.tag = seed, tag
        big_t = knots.knot_samples / knots.sfreq
        self.af, self.sf = np.exp(-big_t / f_tau_s), f_sd_hz
        self.aa, self.sa = np.exp(-big_t / a_tau_s), a_sd
        rng = np.random.default_rng([seed, tag, 2 ** 31])
        self.x = rng.normal(0, f_sd_hz)
        self.y = rng.normal(0, a_sd)
        ph0 = rng.uniform(-np.pi, np.pi)
        knots.append(np.array([f0_hz + self.x]), np.array([ph0]),
                     np.array([self._env(self.y)]))

    def _env(self, y: float) -> float:
        return self.amp * float(np.exp(y - 0.5 * self.sa ** 2))

    def extend(self, segment: int, n_knots: int) -> None:
        rng = np.random.default_rng([self.seed, self.tag, segment])
        e = rng.standard_normal((2, n_knots))
        big_t = self.k.knot_samples / self.k.sfreq
        f = np.empty(n_knots)
        p = np.empty(n_knots)
        a = np.empty(n_knots)
        f_prev = self.k.freq_hz[-1]
        p_prev = self.k.phase_rad[-1]
        cf, ca = np.sqrt(1 - self.af ** 2), np.sqrt(1 - self.aa ** 2)
        for i in range(n_knots):
            self.x = self.af * self.x + self.sf * cf * e[0, i]
            self.y = self.aa * self.y + self.sa * ca * e[1, i]
            f[i] = self.f0 + self.x
            ph = p_prev + 2 * np.pi * big_t * 0.5 * (f_prev + f[i])
            p[i] = np.pi - np.mod(np.pi - ph, 2 * np.pi)
            a[i] = self._env(self.y)
            f_prev, p_prev = f[i], p[i]
        self.k.append(f, p, a)

    def signal(self, start: int, stop: int) -> np.ndarray:
        n = np.arange(start, stop)
        return self.k.amplitude(n) * np.cos(self.k.phase(n))


def _validate_coupling(cfg: "SimConfig", pos: dict) -> None:
    """Raise ``ValueError`` for a bad coupled-source setting (see :class:`_CouplingSources`)."""
    sites = tuple(cfg.coupling_sites)
    if len(sites) != 3 or len(set(sites)) != 3 or any(x not in pos for x in sites):
        raise ValueError(f"SimConfig.coupling_sites={cfg.coupling_sites!r}: give three distinct "
                         "10-05 labels (leader, follower, independent), e.g. ('C3', 'C4', 'Oz').")
    lo, hi = cfg.coupling_band_hz
    if not 0 < lo < hi < 0.45 * cfg.sfreq:
        raise ValueError(f"SimConfig.coupling_band_hz={cfg.coupling_band_hz}: need "
                         f"0 < lo < hi < {0.45 * cfg.sfreq:g} Hz.")
    if not 0 <= cfg.coupling_strength <= 1:
        raise ValueError(f"SimConfig.coupling_strength={cfg.coupling_strength}: a coherence, "
                         "0 (independent) .. 1 (identical up to the lag).")
    if not 0 <= cfg.coupling_lag_ms <= 200:
        raise ValueError(f"SimConfig.coupling_lag_ms={cfg.coupling_lag_ms}: use 0 .. 200 ms.")
    if cfg.coupling_uv < 0 or cfg.coupling_sigma_cm <= 0:
        raise ValueError("SimConfig.coupling_uv must be >= 0 and coupling_sigma_cm > 0.")


class _CouplingSources:
    """Three band-limited sources: a leader, a lagged coherent follower, an independent one.

    With ``u1, u2, u3`` independent unit-variance band-pass noises (Butterworth, 4th order,
    ``coupling_band_hz``; state carried across segments, so the process is stationary),

    * leader ``a(t) = u1(t)``,
    * follower ``b(t) = c u1(t - L) + sqrt(1 - c^2) u2(t)``,
    * independent ``z(t) = u3(t)``,

    each times ``coupling_uv`` and its topography (difference of Gaussians, sigma
    ``coupling_sigma_cm``, 1 at its site). ``c`` = ``coupling_strength`` is the coherence of
    ``a`` and ``b`` at every frequency of the band; ``L`` = ``coupling_lag_ms`` rounded to whole
    samples, so the phase of their cross-spectrum is ``2 pi f L`` (the leader leads).
    Random numbers: ``default_rng([seed, 109, segment])``.
    """

    _TAG = 109

    def __init__(self, cfg: "SimConfig", eeg: Sequence[str], u: np.ndarray) -> None:
        fs = float(cfg.sfreq)
        self.cfg, self.fs = cfg, fs
        self.sites = tuple(cfg.coupling_sites)
        self.lag = int(round(cfg.coupling_lag_ms * fs / 1000.0))
        self.c = float(cfg.coupling_strength)
        self.sos = signal.butter(4, list(cfg.coupling_band_hz), btype="bandpass", fs=fs,
                                 output="sos")
        imp = np.zeros(int(10 * fs))
        imp[0] = 1.0
        self.gain = 1.0 / np.sqrt(np.sum(signal.sosfilt(self.sos, imp) ** 2))
        self.topo = np.stack([_dog(_distance_cm(u, _unit([s])[0]), cfg.coupling_sigma_cm)
                              for s in self.sites], axis=1)  # (n_eeg, 3)
        self.eeg = list(eeg)
        rng = np.random.default_rng([cfg.seed, self._TAG, 2 ** 31])
        burn = rng.standard_normal((3, int(2 * fs) + self.lag))
        self.zi = np.zeros((self.sos.shape[0], 3, 2))
        y, self.zi = signal.sosfilt(self.sos, burn, axis=1, zi=self.zi)
        self.hist = y[0, y.shape[1] - self.lag:] * self.gain if self.lag else np.zeros(0)

    def segment(self, j: int, n: int) -> np.ndarray:
        """The sources' contribution to segment ``j`` (``n`` samples), (n_eeg, n) µV."""
        rng = np.random.default_rng([self.cfg.seed, self._TAG, j])
        y, self.zi = signal.sosfilt(self.sos, rng.standard_normal((3, n)), axis=1, zi=self.zi)
        y *= self.gain
        u1 = np.concatenate([self.hist, y[0]])
        delayed = u1[:n]  # u1(t - lag)
        self.hist = u1[n:] if self.lag else np.zeros(0)
        src = np.stack([y[0], self.c * delayed + np.sqrt(1 - self.c ** 2) * y[1], y[2]])
        return self.cfg.coupling_uv * (self.topo @ src)

    def truth(self) -> dict:
        """JSON-ready ground truth: sites, channels (topography >= 0.5), band, lag, strength."""
        chans = {role: [self.eeg[i] for i in np.flatnonzero(self.topo[:, k] >= 0.5)]
                 for k, role in enumerate(("leader", "follower", "independent"))}
        return {"sites": dict(zip(("leader", "follower", "independent"), self.sites)),
                "channels": chans, "band_hz": [float(x) for x in self.cfg.coupling_band_hz],
                "lag_ms": self.lag * 1000.0 / self.fs, "lag_samples": self.lag,
                "strength": self.c, "amplitude_uv": float(self.cfg.coupling_uv),
                "sigma_cm": float(self.cfg.coupling_sigma_cm),
                "topography": {role: [float(v) for v in self.topo[:, k]] for k, role in
                               enumerate(("leader", "follower", "independent"))}}


def _pink_sos(sfreq: float) -> np.ndarray:
    """SOS filter turning unit white noise into unit-variance pink (1/f power) noise."""
    f_lo, per_decade = 0.2, 3
    n_pairs = int(np.ceil(np.log10(0.45 * sfreq / f_lo) * per_decade))
    r = 10 ** (1 / per_decade)
    fp = f_lo * r ** np.arange(n_pairs)
    fz = fp * np.sqrt(r)
    z, p, k = signal.bilinear_zpk(-2 * np.pi * fz, -2 * np.pi * fp, 1.0, sfreq)
    sos = signal.zpk2sos(z, p, k)
    imp = np.zeros(int(30 * sfreq))
    imp[0] = 1.0
    h = signal.sosfilt(sos, imp)
    sos[0, :3] /= np.sqrt(np.sum(h * h))
    return sos


# ----------------------------------------------------------------------------------------------
# Ground truth

@dataclass
class PulseTruth:
    """What the simulator injected at one pulse.

    Parameters
    ----------
    sample : int
        Absolute sample of the pulse.
    time_s : float
        ``sample / sfreq``.
    intensity_pct : float
        Stimulator output (% of maximum).
    label : str
        Marker label (``"TMS"`` unless requested otherwise).
    mu_phase_rad : float
        True instantaneous mu phase at the pulse sample (0 = mu peak).
    mu_amplitude_uv : float
        True mu envelope at the pulse sample.
    tep_gain_effective : float
        Factor the TEP template was multiplied with (gain x intensity x phase/power x jitter).
    mep_ptp_uv : float
        Peak-to-peak of the injected MEP (0 without EMG).
    mep_latency_ms : float
        MEP onset latency (NaN without EMG).
    """

    sample: int
    time_s: float
    intensity_pct: float
    label: str
    mu_phase_rad: float
    mu_amplitude_uv: float
    tep_gain_effective: float
    mep_ptp_uv: float
    mep_latency_ms: float


class GroundTruth:
    """Everything the simulator injected, for tests and for judging the pipeline.

    Attributes
    ----------
    sfreq : float
    ch_names : list of str
        All channels (EEG, then EMG if present).
    pulses : list of PulseTruth
    markers : list of (int, str)
        Block markers (sample, label).
    tep_times_ms : ndarray, shape (n_times,)
        Template time axis, ``TEP_TMIN_MS`` .. ``TEP_TMAX_MS`` at ``sfreq``.
    tep_template_uv : ndarray, shape (n_eeg, n_times)
        Noise-free TEP at gain 1 and the reference intensity.
    components : dict of str -> ndarray (n_eeg,)
        Peak amplitude (µV) of each TEP component on each EEG channel.
    peaks : dict of str -> dict
        Per component: ``latency_ms`` and ``amplitude_uv`` of the template's ROI average at its
        extremum near the nominal latency, plus ``nominal_latency_ms``, ``sigma_ms``,
        ``peak_uv`` (topography maximum).
    roi : list of str
        Coil site (if in the cap) and its nearest cap neighbours (5 channels).
    coil_site, mu_site : str
    n_generated : int
        Samples generated so far (phase is known for ``0 .. n_generated - 1``).
    config : dict
        The :class:`SimConfig` as a dict.
    mu_topography, decay_tau_fast_ms, decay_tau_slow_ms : ndarray
        Per-EEG-channel mu weight and decay time constants (NaN where no slow term).
    decay_amp_fast_uv, decay_amp_slow_uv : ndarray
        Per-EEG-channel decay amplitudes at the pulse sample (µV, signed) at the reference
        intensity, before the per-pulse factor ``I / tep_reference_intensity_pct x (1 + 0.1
        N(0,1))`` (NaN where no slow term).
    """

    def __init__(self, sfreq: float, ch_names: Sequence[str], mu_knots: KnotPhase,
                 tep_times_ms: np.ndarray, tep_template_uv: np.ndarray,
                 components: dict[str, np.ndarray], roi: Sequence[str], coil_site: str,
                 mu_site: str, config: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.sfreq = float(sfreq)
        self.ch_names = list(ch_names)
        self.pulses: list[PulseTruth] = []
        self.markers: list[tuple[int, str]] = []
        self.mu_knots = mu_knots
        self.tep_times_ms = np.asarray(tep_times_ms, float)
        self.tep_template_uv = np.asarray(tep_template_uv, float)
        self.components = {k: np.asarray(v, float) for k, v in components.items()}
        self.roi = list(roi)
        self.coil_site = coil_site
        self.mu_site = mu_site
        self.config = dict(config)
        self.n_generated = 0
        arrays = arrays or {}
        n_eeg = self.tep_template_uv.shape[0]
        self.mu_topography = np.asarray(arrays.get("mu_topography", np.zeros(n_eeg)), float)
        self.decay_tau_fast_ms = np.asarray(arrays.get("decay_tau_fast_ms", np.full(n_eeg, np.nan)))
        self.decay_tau_slow_ms = np.asarray(arrays.get("decay_tau_slow_ms", np.full(n_eeg, np.nan)))
        self.decay_amp_fast_uv = np.asarray(arrays.get("decay_amp_fast_uv", np.full(n_eeg, np.nan)))
        self.decay_amp_slow_uv = np.asarray(arrays.get("decay_amp_slow_uv", np.full(n_eeg, np.nan)))
        self.peaks = self._measure_peaks()
        #: coupled sources (empty unless SimConfig.coupling), see _CouplingSources.truth
        self.coupling: dict = {}
        #: TMS-evoked oscillation (empty unless SimConfig.evoked_oscillation_hz > 0): freq_hz,
        #: amplitude_uv, tau_ms, onset_ms, sigma_cm, site, channels (topography >= 0.5),
        #: topography (per EEG channel); it is part of ``tep_template_uv``
        self.evoked_oscillation: dict = {}

    @property
    def eeg_names(self) -> list[str]:
        return self.ch_names[: self.tep_template_uv.shape[0]]

    def _measure_peaks(self) -> dict[str, dict]:
        idx = [self.eeg_names.index(n) for n in self.roi]
        roi_avg = self.tep_template_uv[idx].mean(0)
        out = {}
        for name, (lat, sig, amp, _, _) in TEP_COMPONENTS.items():
            win = (self.tep_times_ms >= lat - 1.5 * sig) & (self.tep_times_ms <= lat + 1.5 * sig)
            seg = roi_avg[win] * np.sign(amp)
            i = int(np.argmax(seg))
            out[name] = {
                "latency_ms": float(self.tep_times_ms[win][i]),
                "amplitude_uv": float(roi_avg[win][i]),
                "nominal_latency_ms": lat,
                "sigma_ms": sig,
                "peak_uv": amp,
            }
        return out

    def decay_uv(self, n_samples: int) -> np.ndarray:
        """The noise-free decay artifact of one pulse at the reference intensity (per-pulse
        factor 1), samples ``0 .. n_samples - 1`` from the pulse, shape (n_eeg, n_samples)."""
        t_ms = np.arange(n_samples) * (1000.0 / self.sfreq)
        out = np.zeros((self.decay_tau_fast_ms.size, n_samples))
        for amp, tau in ((self.decay_amp_fast_uv, self.decay_tau_fast_ms),
                         (self.decay_amp_slow_uv, self.decay_tau_slow_ms)):
            rows = np.flatnonzero(np.isfinite(amp) & np.isfinite(tau))
            out[rows] += amp[rows, None] * np.exp(-t_ms[None, :] / tau[rows, None])
        return out

    def tep_roi_uv(self) -> np.ndarray:
        """ROI average of the template (µV), shape (n_times,)."""
        idx = [self.eeg_names.index(n) for n in self.roi]
        return self.tep_template_uv[idx].mean(0)

    def mu_phase(self, start: int, stop: int) -> np.ndarray:
        """True instantaneous mu phase (rad, 0 = peak) of samples ``start .. stop - 1``."""
        self._check_range(start, stop)
        return self.mu_knots.phase(np.arange(start, stop))

    def mu_amplitude(self, start: int, stop: int) -> np.ndarray:
        """True mu envelope (µV at the mu site) of samples ``start .. stop - 1``."""
        self._check_range(start, stop)
        return self.mu_knots.amplitude(np.arange(start, stop))

    def mu_source(self, start: int, stop: int) -> np.ndarray:
        """Noise-free mu source ``A cos(phi)`` (µV at the mu site) of ``start .. stop - 1``."""
        n = np.arange(start, stop)
        self._check_range(start, stop)
        return self.mu_knots.amplitude(n) * np.cos(self.mu_knots.phase(n))

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= self.n_generated:
            raise ValueError(f"samples {start}..{stop} are outside what was generated "
                             f"(0..{self.n_generated}); ask only for generated samples.")

    def pulse_samples(self) -> np.ndarray:
        """Samples of all pulses so far."""
        return np.array([p.sample for p in self.pulses], dtype=np.int64)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``PATH.json`` (scalars, pulses, peaks) and ``PATH.npz`` (arrays).

        Returns the JSON path. ``path`` may end in ``.json`` or have no suffix.
        """
        path = Path(path)
        jpath = path if path.suffix == ".json" else path.with_name(path.name + ".json")
        npath = jpath.with_suffix(".npz")
        jpath.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "format": "tmseeg-sim-truth/1",
            "sfreq": self.sfreq,
            "ch_names": self.ch_names,
            "n_generated": self.n_generated,
            "coil_site": self.coil_site,
            "mu_site": self.mu_site,
            "roi": self.roi,
            "peaks": self.peaks,
            "config": self.config,
            "pulses": [asdict(p) for p in self.pulses],
            "markers": [[int(s), lab] for s, lab in self.markers],
            "mu_knot_samples": self.mu_knots.knot_samples,
            "arrays": npath.name,
            "coupling": self.coupling,
            "evoked_oscillation": self.evoked_oscillation,
        }
        tmp = npath.with_name(npath.name + ".tmp.npz")
        np.savez_compressed(
            tmp, tep_times_ms=self.tep_times_ms, tep_template_uv=self.tep_template_uv,
            mu_freq_hz=self.mu_knots.freq_hz, mu_phase_rad=self.mu_knots.phase_rad,
            mu_amp_uv=self.mu_knots.amp_uv, mu_topography=self.mu_topography,
            decay_tau_fast_ms=self.decay_tau_fast_ms, decay_tau_slow_ms=self.decay_tau_slow_ms,
            decay_amp_fast_uv=self.decay_amp_fast_uv, decay_amp_slow_uv=self.decay_amp_slow_uv,
            component_names=np.array(list(self.components)),
            components=np.array([self.components[k] for k in self.components]),
        )
        tmp.replace(npath)
        jtmp = jpath.with_name(jpath.name + ".tmp")
        jtmp.write_text(json.dumps(doc, indent=1, default=_json_default))
        jtmp.replace(jpath)
        return jpath

    @classmethod
    def load(cls, path: str | Path) -> "GroundTruth":
        """Read what :meth:`save` wrote (give the ``.json`` path or the stem)."""
        path = Path(path)
        jpath = path if path.suffix == ".json" else path.with_name(path.name + ".json")
        if not jpath.exists():
            raise FileNotFoundError(f"ground-truth file {jpath} not found; it is written by "
                                    "GroundTruth.save / `tmseeg simulate --truth FILE`.")
        doc = json.loads(jpath.read_text())
        if doc.get("format") != "tmseeg-sim-truth/1":
            raise ValueError(f"{jpath} is not a tmseeg simulator ground-truth file.")
        arr = np.load(jpath.with_name(doc["arrays"]))
        knots = KnotPhase(doc["mu_knot_samples"], doc["sfreq"], arr["mu_freq_hz"],
                          arr["mu_phase_rad"], arr["mu_amp_uv"])
        comps = {str(n): c for n, c in zip(arr["component_names"], arr["components"])}
        truth = cls(doc["sfreq"], doc["ch_names"], knots, arr["tep_times_ms"],
                    arr["tep_template_uv"], comps, doc["roi"], doc["coil_site"],
                    doc["mu_site"], doc["config"],
                    arrays={k: arr[k] for k in ("mu_topography", "decay_tau_fast_ms",
                                                "decay_tau_slow_ms", "decay_amp_fast_uv",
                                                "decay_amp_slow_uv") if k in arr})
        truth.n_generated = int(doc["n_generated"])
        truth.pulses = [PulseTruth(**p) for p in doc["pulses"]]
        truth.markers = [(int(s), str(lab)) for s, lab in doc["markers"]]
        truth.coupling = doc.get("coupling", {})
        truth.evoked_oscillation = doc.get("evoked_oscillation", {})
        return truth


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o)}")


# ----------------------------------------------------------------------------------------------
# Schedules

def _schedule(cfg: SimConfig) -> Iterator[tuple[float, float, str, dict]]:
    """Yield (time_s, intensity_pct, label, extra) of scheduled pulses in time order."""
    rng = np.random.default_rng([cfg.seed, _TAG_SCHED])
    t0, inten = cfg.first_pulse_s, cfg.intensity_pct
    if cfg.schedule == "external":
        return
    if cfg.schedule == "single":
        t = t0
        while True:
            yield t, inten, "TMS", {}
            t += rng.uniform(*cfg.isi_range_s)
    elif cfg.schedule == "paired":
        cs = 0.8 * cfg.mep_threshold_pct if cfg.cs_intensity_pct is None else cfg.cs_intensity_pct
        t = t0
        while True:
            yield t, cs, "TMS", {"pp_role": "conditioning", "ipi_ms": cfg.ipi_ms}
            yield t + cfg.ipi_ms / 1000.0, inten, "TMS", {"pp_role": "test", "ipi_ms": cfg.ipi_ms}
            t += rng.uniform(*cfg.isi_range_s)
    elif cfg.schedule == "train-1hz":
        k = 0
        while True:
            yield t0 + k * 1.0, inten, "TMS", {}
            k += 1
    elif cfg.schedule == "train-10hz":
        n_per = int(round(cfg.train_on_s * 10))
        cycle = cfg.train_on_s + cfg.train_off_s
        m = 0
        while True:
            for k in range(n_per):
                yield t0 + m * cycle + k * 0.1, inten, "TMS", {"train": m}
            m += 1
    elif cfg.schedule in ("itbs", "ctbs"):
        bursts_per_cycle, cycle = (10, 10.0) if cfg.schedule == "itbs" else (None, None)
        b = 0
        while True:
            if bursts_per_cycle is None:
                tb = t0 + b * 0.2
            else:
                tb = t0 + (b // bursts_per_cycle) * cycle + (b % bursts_per_cycle) * 0.2
            for p in range(3):
                yield tb + p * 0.02, inten, "TMS", {"burst": b}
            b += 1


# ----------------------------------------------------------------------------------------------
# The simulator

class _Active:
    """One pulse whose response is still being added: (rows, offset, waveform, scale) parts."""

    __slots__ = ("sample", "parts", "end")

    def __init__(self, sample: int, parts: list[tuple[slice, int, np.ndarray, float]]) -> None:
        self.sample = sample
        self.parts = parts
        self.end = sample + max((off + w.shape[1] for _, off, w, _ in parts), default=0)


class TMSEEGSimulator:
    """Sequential, deterministic TMS-EEG generator (see the module docstring for the model).

    Parameters
    ----------
    config : SimConfig, optional
        Defaults to ``SimConfig()`` (64 ch, 5 kHz, single pulses every 2-3 s over C3).

    Attributes
    ----------
    meta : StreamMeta
        Channel names (EEG then ``"EMG"``), types, rate; name ``"tmseeg-sim"``.
    n_generated : int
        Samples produced so far.
    truth : GroundTruth
        What was injected so far.

    Notes
    -----
    Thread-safe: :meth:`generate`, :meth:`request_pulse`, :meth:`set_tep_gain` and
    :meth:`mark_block` share one lock, so a protocol thread may steer a simulator that another
    thread is streaming.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        cfg = SimConfig() if config is None else config
        cfg.validate()
        self.config = cfg
        self._lock = threading.RLock()
        fs = self.sfreq = float(cfg.sfreq)
        eeg = list(cfg.eeg_names())
        self.n_eeg = len(eeg)
        names = eeg + ([EMG_NAME] if cfg.include_emg else [])
        types = ["eeg"] * self.n_eeg + (["emg"] if cfg.include_emg else [])
        self.meta = StreamMeta(tuple(names), fs, tuple(types), name="tmseeg-sim",
                               source_id=f"tmseeg-sim-{cfg.seed}")
        self.n_ch = len(names)
        self.emg_row = self.n_eeg if cfg.include_emg else None
        self.n_generated = 0
        self._tep_gain = float(cfg.tep_gain)

        # geometry ------------------------------------------------------------------------------
        u = _unit(eeg)
        coil = _unit([cfg.coil_site])[0]
        d_coil = _distance_cm(u, coil)
        self._d_coil = d_coil
        grng = np.random.default_rng([cfg.seed, _TAG_GEOMETRY])

        def centre(where: str) -> np.ndarray:
            if where == "coil":
                return coil
            if where == "coil-medial":
                v = coil + np.array([-np.sign(coil[0]) * 0.21, 0, 0])
                return v / np.linalg.norm(v)
            if where == "coil-posterior":
                v = coil + np.array([0, -0.32, 0])
                return v / np.linalg.norm(v)
            return _unit([where])[0]

        # TEP template
        self.tep_times_ms = np.arange(int(np.ceil(TEP_TMIN_MS * fs / 1000)),
                                      int(np.floor(TEP_TMAX_MS * fs / 1000)) + 1) * 1000 / fs
        t = self.tep_times_ms
        template = np.zeros((self.n_eeg, t.size))
        components = {}
        for name, (lat, sig, amp, s_cm, centres) in TEP_COMPONENTS.items():
            topo = sum(w * _dog(_distance_cm(u, centre(c)), s_cm) for c, w in centres)
            topo = amp * topo / np.max(np.abs(topo))
            components[name] = topo
            template += np.outer(topo, np.exp(-0.5 * ((t - lat) / sig) ** 2))
        evoked_osc: dict = {}
        if cfg.evoked_oscillation_hz > 0:
            eo_topo = _dog(d_coil, cfg.evoked_oscillation_sigma_cm)
            t0 = cfg.evoked_oscillation_onset_ms
            tt = np.clip(t - t0, 0.0, None) / 1000.0
            wave = np.where(t >= t0, np.exp(-tt * 1000.0 / cfg.evoked_oscillation_tau_ms)
                            * np.sin(2 * np.pi * cfg.evoked_oscillation_hz * tt), 0.0)
            template += np.outer(cfg.evoked_oscillation_uv * eo_topo, wave)
            evoked_osc = {"freq_hz": float(cfg.evoked_oscillation_hz),
                          "amplitude_uv": float(cfg.evoked_oscillation_uv),
                          "tau_ms": float(cfg.evoked_oscillation_tau_ms),
                          "onset_ms": float(t0), "sigma_cm": float(cfg.evoked_oscillation_sigma_cm),
                          "site": cfg.coil_site,
                          "channels": [eeg[i] for i in np.flatnonzero(eo_topo >= 0.5)],
                          "topography": [float(v) for v in eo_topo]}
        template[:, t < 0] = 0.0
        self._tep_post = np.ascontiguousarray(template[:, t >= 0])
        # ROI: coil site (if recorded) + nearest neighbours, 5 channels
        order = np.argsort(d_coil, kind="stable")
        roi = [eeg[i] for i in order[:5]]

        # mu / alpha
        self._mu_topo = _dog(_distance_cm(u, _unit([cfg.mu_site])[0]), 3.0)
        self._alpha_topo = _dog(_distance_cm(u, _unit(["Oz"])[0]), 6.0)
        self._knot = max(1, int(round(_KNOT_S * fs)))
        self._seg = self._knot * _KNOTS_PER_SEGMENT
        mu_knots = KnotPhase(self._knot, fs)
        self._mu = _Oscillator(cfg.mu_freq_hz, cfg.mu_amplitude_uv, mu_knots, cfg.seed, _TAG_MU)
        self._alpha = _Oscillator(cfg.alpha_freq_hz, cfg.alpha_uv, KnotPhase(self._knot, fs),
                                  cfg.seed, _TAG_ALPHA)
        self._coupling = _CouplingSources(cfg, eeg, u) if cfg.coupling else None

        # smooth background mixing
        ns = cfg.n_smooth_sources
        if ns:
            src = grng.standard_normal((ns, 3))
            src[:, 2] = np.abs(src[:, 2]) + 0.2
            src /= np.linalg.norm(src, axis=1, keepdims=True)
            g = np.stack([_gauss(_distance_cm(u, s), cfg.smooth_sigma_cm) for s in src], axis=1)
            g /= np.linalg.norm(g, axis=1, keepdims=True) + 1e-12
            self._mix = cfg.smooth_uv * g
        else:
            self._mix = np.zeros((self.n_eeg, 0))
        self._sos = _pink_sos(fs)
        n_pink = self.n_eeg + ns
        self._zi = np.zeros((self._sos.shape[0], n_pink, 2))
        burn = np.random.default_rng([cfg.seed, _TAG_BURN]).standard_normal(
            (n_pink, int(4.0 * fs)))
        _, self._zi = signal.sosfilt(self._sos, burn, axis=1, zi=self._zi)

        # line noise
        line_amp = grng.uniform(0.5, 3.0, self.n_ch)
        if cfg.include_emg:
            line_amp[-1] = 0.5
        noisy = [eeg.index(n) for n in cfg.noisy_channels]
        line_amp[noisy] *= 10
        line_ph = grng.uniform(-np.pi, np.pi, self.n_ch)
        self._line_c = line_amp * np.cos(line_ph)
        self._line_s = line_amp * np.sin(line_ph)
        self._noisy = np.array(noisy, dtype=np.intp)

        # blinks
        fpz = _unit(["Fpz"])[0]
        btopo = _gauss(_distance_cm(u, fpz), 4.0)
        ref = _gauss(_distance_cm(_unit(["Fp1", "Fp2"]), fpz), 4.0).mean()
        self._blink_topo = btopo / ref
        tb = np.arange(int(0.8 * fs)) / fs
        self._blink_wave = (tb / 0.12) ** 3 * np.exp(3 * (1 - tb / 0.12))
        self._carry = np.zeros((self.n_eeg, self._blink_wave.size))

        # artifacts (fixed per channel) -----------------------------------------------------
        n_art = int(round(0.006 * fs))
        ta = np.arange(n_art) / fs * 1000
        pw = np.exp(-ta / 0.8) * np.cos(2 * np.pi * ta / 2.0)
        pamp = (8000 * _gauss(d_coil, 4.0) + 300) * grng.uniform(0.5, 1.5, self.n_eeg) \
            * grng.choice([-1.0, 1.0], self.n_eeg)
        if cfg.include_emg:
            pamp = np.r_[pamp, 200.0]
        self._pulse_wave = np.outer(pamp, pw)  # all channels

        n_dec = int(round(1.0 * fs))
        td = np.arange(n_dec) / fs * 1000
        a_f = (60 + 500 * _gauss(d_coil, 5.0)) * grng.uniform(0.7, 1.4, self.n_eeg) \
            * grng.choice([-1.0, 1.0], self.n_eeg)
        tau_f = grng.uniform(5, 40, self.n_eeg)
        has_slow = (d_coil < 5.0) | (grng.uniform(size=self.n_eeg) < 1 / 3)
        tau_s = np.where(has_slow, grng.uniform(60, 150, self.n_eeg), np.nan)
        self._decay_fast = a_f[:, None] * np.exp(-td[None, :] / tau_f[:, None])
        slow_rows = np.flatnonzero(has_slow)
        self._decay_slow_rows = slow_rows
        self._decay_slow = (0.35 * a_f[slow_rows, None]) * np.exp(-td[None, :] / tau_s[slow_rows, None])
        n_slow_len = int(round(min(1.0, 6 * np.nanmax(tau_s, initial=1) / 1000) * fs))
        self._decay_slow = np.ascontiguousarray(self._decay_slow[:, :n_slow_len])
        n_fast_len = int(round(6 * tau_f.max() / 1000 * fs))
        self._decay_fast = np.ascontiguousarray(self._decay_fast[:, :n_fast_len])

        n_mus = int(round(0.03 * fs))
        tm = np.arange(n_mus) / fs * 1000
        mw = (np.exp(-0.5 * ((tm - 4) / 1.2) ** 2) - 0.8 * np.exp(-0.5 * ((tm - 8.5) / 2.0) ** 2)
              + 0.3 * np.exp(-0.5 * ((tm - 13) / 2.5) ** 2))
        temporal = "T7" if coil[0] < 0 else "T8"
        d_temp = _distance_cm(u, _unit([temporal])[0])
        mamp = (150 * _gauss(d_coil, 4.0) + 60 * _gauss(d_temp, 4.0)) \
            * grng.choice([-1.0, 1.0], self.n_eeg)
        if cfg.muscle_uv != 150.0:  # SimConfig.muscle_uv (the default leaves the data as is)
            mamp = mamp * (cfg.muscle_uv / 150.0)
        self._muscle_wave = np.outer(mamp, mw)

        self._mep_len = int(round(0.012 * fs))
        tmep = np.arange(self._mep_len) / self._mep_len
        w = np.sin(2 * np.pi * tmep) * np.sin(np.pi * tmep) ** 2
        self._mep_wave = (w / (w.max() - w.min()))[None, :]

        self.truth = GroundTruth(
            fs, names, mu_knots, self.tep_times_ms, template, components, roi, cfg.coil_site,
            cfg.mu_site, cfg.to_dict(),
            arrays={"mu_topography": self._mu_topo, "decay_tau_fast_ms": tau_f,
                    "decay_tau_slow_ms": tau_s, "decay_amp_fast_uv": a_f,
                    "decay_amp_slow_uv": np.where(has_slow, 0.35 * a_f, np.nan)})
        if self._coupling is not None:
            self.truth.coupling = self._coupling.truth()
        self.truth.evoked_oscillation = evoked_osc

        # streaming state -------------------------------------------------------------------
        self._bg: np.ndarray | None = None
        self._bg_start = 0
        self._next_segment = 0
        self._sched = _schedule(cfg)
        self._sched_next = next(self._sched, None)
        self._heap: list = []
        self._seq = 0
        self._active: list[_Active] = []
        self._markers_pending: list[tuple[int, str]] = []

    # -- public control -----------------------------------------------------------------------
    @property
    def tep_gain(self) -> float:
        return self._tep_gain

    def set_tep_gain(self, gain: float) -> None:
        """Scale the TEP of pulses from now on (e.g. 1.3 to model potentiation)."""
        gain = float(gain)
        if not (gain >= 0 and np.isfinite(gain)):
            raise ValueError(f"set_tep_gain: gain must be a finite number >= 0, got {gain!r}.")
        with self._lock:
            self._tep_gain = gain

    def request_pulse(self, sample: int | None = None, intensity_pct: float | None = None,
                      label: str = "TMS") -> int:
        """Schedule a pulse at an absolute sample (None: at the next sample to be generated).

        Returns
        -------
        int
            The pulse sample.

        Raises
        ------
        ValueError
            If ``sample`` was already generated or the intensity is outside 0-100 %.
        """
        with self._lock:
            s = self.n_generated if sample is None else int(sample)
            if s < self.n_generated:
                raise ValueError(
                    f"request_pulse: sample {s} was already generated (next sample is "
                    f"{self.n_generated}); ask for sample >= {self.n_generated} or None.")
            inten = self.config.intensity_pct if intensity_pct is None else float(intensity_pct)
            if not 0 <= inten <= 100:
                raise ValueError(f"request_pulse: intensity_pct={inten} must be 0-100 %.")
            heapq.heappush(self._heap, (s, self._seq, inten, str(label), {"source": "request"}))
            self._seq += 1
            return s

    def mark_block(self, label: str) -> None:
        """Emit a marker Event (kind ``"marker"``) at the next sample, e.g. ``"pre"``/``"post"``."""
        with self._lock:
            self._markers_pending.append((self.n_generated, str(label)))

    # -- generation ---------------------------------------------------------------------------
    def generate(self, n_samples: int) -> tuple[np.ndarray, list[Event]]:
        """Produce the next ``n_samples`` samples and the events in them.

        Returns
        -------
        data : ndarray, shape (n_channels, n_samples)
            µV, float64.
        events : list of Event
            Pulses (kind ``"pulse"``) and block markers (kind ``"marker"``) whose sample lies in
            this range, in sample order (a marker before a pulse at the same sample).
            ``time_s`` is ``sample / sfreq``.
        """
        n = int(n_samples)
        if n < 0:
            raise ValueError(f"generate: n_samples must be >= 0, got {n_samples!r}.")
        with self._lock:
            a, b = self.n_generated, self.n_generated + n
            out = np.empty((self.n_ch, n))
            self._fill_background(out, a, b)
            events: list[Event] = []
            # scheduled pulses into the heap
            while self._sched_next is not None:
                s = int(round(self._sched_next[0] * self.sfreq))
                if s >= b:
                    break
                _, inten, lab, extra = self._sched_next
                heapq.heappush(self._heap, (s, self._seq, inten, lab, dict(extra,
                                                                           source="schedule")))
                self._seq += 1
                self._sched_next = next(self._sched, None)
            while self._heap and self._heap[0][0] < b:
                s, _, inten, lab, extra = heapq.heappop(self._heap)
                self._active.append(self._make_pulse(s, inten, lab, extra))
                events.append(Event(s, lab, EVENT_PULSE, s / self.sfreq,
                                    extra={"intensity_pct": inten, **extra}))
            for act in self._active:
                for rows, off, wave, scale in act.parts:
                    s0 = act.sample + off
                    i0, i1 = max(a, s0), min(b, s0 + wave.shape[1])
                    if i1 > i0:
                        out[rows, i0 - a:i1 - a] += scale * wave[:, i0 - s0:i1 - s0]
            self._active = [x for x in self._active if x.end > b]
            keep = []
            for s, lab in self._markers_pending:
                if s < b:
                    events.append(Event(s, lab, EVENT_MARKER, s / self.sfreq))
                    self.truth.markers.append((s, lab))
                else:
                    keep.append((s, lab))
            self._markers_pending = keep
            events.sort(key=lambda e: (e.sample, e.kind != EVENT_MARKER))  # markers open blocks
            self.n_generated = b
            self.truth.n_generated = b
            return out, events

    def _fill_background(self, out: np.ndarray, a: int, b: int) -> None:
        pos = a
        while pos < b:
            if self._bg is None or pos >= self._bg_start + self._bg.shape[1]:
                self._bg = self._make_segment(self._next_segment)
                self._bg_start = self._next_segment * self._seg
                self._next_segment += 1
            j0 = pos - self._bg_start
            take = min(b - pos, self._bg.shape[1] - j0)
            out[:, pos - a:pos - a + take] = self._bg[:, j0:j0 + take]
            pos += take

    def _make_segment(self, j: int) -> np.ndarray:
        cfg = self.config
        S = self._seg
        start = j * S
        self._mu.extend(j, _KNOTS_PER_SEGMENT)
        self._alpha.extend(j, _KNOTS_PER_SEGMENT)
        rng = np.random.default_rng([cfg.seed, _TAG_BG, j])
        n_pink = self.n_eeg + self._mix.shape[1]
        white = rng.standard_normal((n_pink, S))
        pink, self._zi = signal.sosfilt(self._sos, white, axis=1, zi=self._zi)
        seg = np.empty((self.n_ch, S))
        eeg = seg[:self.n_eeg]
        np.multiply(pink[:self.n_eeg], cfg.noise_uv, out=eeg)
        if self._mix.shape[1]:
            eeg += self._mix @ pink[self.n_eeg:]
        if cfg.include_emg:
            seg[self.n_eeg] = cfg.emg_noise_uv * rng.standard_normal(S)
        if self._noisy.size:
            eeg[self._noisy] += cfg.noisy_channel_uv * rng.standard_normal((self._noisy.size, S))
        if cfg.mu:
            eeg += self._mu_topo[:, None] * self._mu.signal(start, start + S)[None, :]
        if self._coupling is not None:
            eeg += self._coupling.segment(j, S)
        if cfg.alpha:
            eeg += self._alpha_topo[:, None] * self._alpha.signal(start, start + S)[None, :]
        if cfg.line_noise_hz > 0:
            w = 2 * np.pi * cfg.line_noise_hz / self.sfreq * np.arange(start, start + S)
            s1, c1 = np.sin(w), np.cos(w)
            s3, c3 = np.sin(3 * w), np.cos(3 * w)
            seg += self._line_c[:, None] * (s1 + 0.2 * s3)[None, :]
            seg += self._line_s[:, None] * (c1 + 0.2 * c3)[None, :]
        if cfg.blinks:
            L = self._blink_wave.size
            brng = np.random.default_rng([cfg.seed, _TAG_BLINK, j])
            n_bl = brng.poisson(cfg.blink_rate_hz * S / self.sfreq)
            onsets = np.sort(brng.integers(0, S, n_bl))
            amps = brng.uniform(100, 200, n_bl)
            ext = np.zeros(S + L)
            for o, amp in zip(onsets, amps):
                ext[o:o + L] += amp * self._blink_wave
            blink = self._blink_topo[:, None] * ext[None, :]
            blink[:, :L] += self._carry
            eeg += blink[:, :S]
            self._carry = blink[:, S:S + L].copy()
        return seg

    def _make_pulse(self, s: int, inten: float, label: str, extra: dict) -> _Active:
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, _TAG_PULSE, s])
        r = rng.standard_normal(8)
        phi = float(self.truth.mu_knots.phase(np.array([s]))[0])
        amp = float(self.truth.mu_knots.amplitude(np.array([s]))[0])
        m = 1.0
        if cfg.mu:
            m = (1 + cfg.phase_dependency * np.cos(phi - cfg.preferred_phase_rad)) * \
                (1 + cfg.power_dependency * np.tanh(np.log(amp / cfg.mu_amplitude_uv)))
        jitter = max(0.0, 1 + cfg.tep_jitter * r[0])
        g = self._tep_gain * inten / cfg.tep_reference_intensity_pct * m * jitter
        eeg = slice(0, self.n_eeg)
        parts: list[tuple[slice, int, np.ndarray, float]] = [(eeg, 0, self._tep_post, g)]
        ri = inten / cfg.tep_reference_intensity_pct
        if cfg.decay_artifact:
            parts.append((eeg, 0, self._decay_fast, ri * (1 + 0.1 * r[1])))
            if self._decay_slow.shape[0]:
                # slow rows are not contiguous in general: a full-height wave (zeros elsewhere)
                parts.append((eeg, 0, self._slow_full(), ri * (1 + 0.1 * r[2])))
        if cfg.muscle_artifact:
            parts.append((eeg, 0, self._muscle_wave, ri ** 2 * float(np.exp(0.2 * r[3]))))
        if cfg.pulse_artifact:
            parts.append((slice(0, self.n_ch), 0, self._pulse_wave,
                          inten / 100.0 * (1 + 0.02 * r[4])))
        ptp, lat_ms = 0.0, float("nan")
        if cfg.include_emg:
            ptp = float(mep_recruitment(inten, cfg.mep_threshold_pct, cfg.mep_slope_pct,
                                        cfg.mep_max_uv))
            ptp *= float(np.exp(cfg.mep_variability * r[5])) * m
            if extra.get("pp_role") == "test":
                ptp *= paired_pulse_factor(float(extra["ipi_ms"]))
            off = int(round((cfg.mep_latency_ms + 1.0 * r[6]) * self.sfreq / 1000))
            off = max(off, 1)
            lat_ms = off * 1000 / self.sfreq
            parts.append((slice(self.n_eeg, self.n_eeg + 1), off, self._mep_wave, ptp))
        self.truth.pulses.append(PulseTruth(
            sample=int(s), time_s=s / self.sfreq, intensity_pct=float(inten), label=label,
            mu_phase_rad=float(phi), mu_amplitude_uv=float(amp), tep_gain_effective=float(g),
            mep_ptp_uv=float(ptp), mep_latency_ms=float(lat_ms)))
        return _Active(s, parts)

    def _slow_full(self) -> np.ndarray:
        if not hasattr(self, "_slow_full_cache"):
            full = np.zeros((self.n_eeg, self._decay_slow.shape[1]))
            full[self._decay_slow_rows] = self._decay_slow
            self._slow_full_cache = full
        return self._slow_full_cache


# ----------------------------------------------------------------------------------------------
# Offline

def simulate_recording(config: SimConfig, duration_s: float,
                       markers: Sequence[tuple[float, str]] = (),
                       chunk_s: float = 1.0):
    """Simulate a whole recording offline and return it as an MNE Raw plus the ground truth.

    Parameters
    ----------
    config : SimConfig
    duration_s : float
        Length of the recording.
    markers : sequence of (time_s, label)
        Block markers to insert (e.g. ``[(0.0, "pre")]``).
    chunk_s : float
        Generation chunk (does not change the data).

    Returns
    -------
    raw : mne.io.RawArray
        Data in volts (as MNE expects), EEG with 10-05 positions, EMG typed ``emg``; one
        annotation per pulse (its label, usually ``"TMS"``) and per marker.
    truth : GroundTruth
    """
    import mne

    if not duration_s > 0:
        raise ValueError(f"simulate_recording: duration_s must be > 0, got {duration_s!r}.")
    sim = TMSEEGSimulator(config)
    n_total = int(round(duration_s * sim.sfreq))
    pending = sorted((int(round(t * sim.sfreq)), lab) for t, lab in markers)
    if any(s < 0 or s >= n_total for s, _ in pending):
        raise ValueError("simulate_recording: every marker time must lie inside the recording.")
    step = max(1, int(round(chunk_s * sim.sfreq)))
    parts, events = [], []
    while sim.n_generated < n_total:
        while pending and pending[0][0] == sim.n_generated:
            sim.mark_block(pending.pop(0)[1])
        nxt = min(n_total, sim.n_generated + step)
        if pending:
            nxt = min(nxt, pending[0][0])
        data, ev = sim.generate(nxt - sim.n_generated)
        parts.append(data)
        events.extend(ev)
    data = np.concatenate(parts, axis=1) * 1e-6
    info = mne.create_info(list(sim.meta.ch_names), sim.sfreq, list(sim.meta.ch_types))
    raw = mne.io.RawArray(data, info, verbose="error")
    raw.set_montage(ten_five_montage(), on_missing="ignore", verbose="error")
    if events:
        raw.set_annotations(mne.Annotations(
            onset=[e.sample / sim.sfreq for e in events], duration=[0.0] * len(events),
            description=[e.label for e in events]))
    return raw, sim.truth
