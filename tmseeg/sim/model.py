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
import threading
from typing import Iterator, Sequence

import numpy as np
from scipy import signal

from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Event, StreamMeta
from tmseeg.stream.montage import ten_five_montage
from tmseeg.sim.config import (EMG_NAME, TEP_COMPONENTS, TEP_TMAX_MS,
                               TEP_TMIN_MS, SimConfig, _distance_cm, _dog, _gauss,
                               _KNOT_S, _KNOTS_PER_SEGMENT, _unit, mep_recruitment,
                               paired_pulse_factor)
from tmseeg.sim.sources import KnotPhase, _CouplingSources, _Oscillator, _pink_sos
from tmseeg.sim.truth import GroundTruth, PulseTruth

# random-stream tags (any fixed distinct integers)
_TAG_GEOMETRY, _TAG_BG, _TAG_MU, _TAG_ALPHA, _TAG_BLINK, _TAG_SCHED, _TAG_PULSE, _TAG_BURN = (
    101, 102, 103, 104, 105, 106, 107, 108)


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
