"""The simulator's ongoing sources: knot-based oscillators (mu, alpha) and coupled sources.

Phase and amplitude follow smooth random walks on a 25-ms knot grid (:class:`KnotPhase`), so
the true phase is known at every sample (closed-loop ground truth), and the generator and the
ground truth agree exactly; three band-limited coupled sources give connectivity a known lag and
coherence; pink noise shapes the background.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import signal

from tmseeg.sim.config import SimConfig, _distance_cm, _dog, _unit

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
