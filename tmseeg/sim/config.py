"""The simulator's configuration: caps, TEP components, head geometry and :class:`SimConfig`.

What :mod:`tmseeg.sim.model` simulates is set here (every field documented on
:class:`SimConfig`, validated when it is built); the oscillators are in
:mod:`tmseeg.sim.sources`, what was injected in :mod:`tmseeg.sim.truth`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Sequence

import numpy as np

from tmseeg.stream.montage import ten_five_montage


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
