"""What the simulator injected, kept as ground truth: per pulse and for the whole recording.

:class:`GroundTruth` holds the TEP components, every pulse (:class:`PulseTruth`), the
oscillators' phases and the coupling; it is saved with a recording (JSON) so that tests and
benchmarks can score any analysis against it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tmseeg.sim.config import TEP_COMPONENTS
from tmseeg.sim.sources import KnotPhase

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
