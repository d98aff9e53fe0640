"""SSP-SIR: signal-space projection with source-informed reconstruction.

Reimplemented from the paper (Mutanen, Mäki, Metsomaa, Ilmoniemi et al., NeuroImage 2016,
"Recovering TMS-evoked EEG responses masked by muscle artifacts"); no code was copied from any
implementation.

Muscle artifact (:func:`fit_sspsir`)
    TMS-evoked muscle activity is much stronger than the brain response at high frequencies in
    the first tens of milliseconds. Each epoch is high-passed (zero-phase Butterworth,
    ``highpass_hz``, default 100 Hz), the early window (``artifact_window_ms``, default
    0-50 ms) of all epochs is concatenated, and the principal components of its covariance are
    the artifact topographies (``estimator = "pca"``, the paper's choice: components are taken,
    strongest first, while they explain less than ``variance_pct``, default 90 %, of the
    early-window high-frequency variance and carry at least ``min_ratio`` times their baseline
    power). The default ``estimator = "whitened"`` first whitens by the high-frequency
    covariance of the pre-pulse baseline (``baseline_ms``): the generalised eigenproblem
    ``C_early v = r C_base v`` ranks directions by how much more high-frequency power they
    carry after the pulse than before, and components with ``r >= min_ratio`` (default 3)
    are projected out (their patterns ``C_base v``). Spatially correlated background
    high-frequency activity (scalp EMG, line harmonics, amplifier noise) then cannot be
    mistaken for the artifact, and with no artifact no component qualifies, so the data pass
    unchanged. ``n_components`` fixes the number instead.

    SSP projects the artifact subspace ``U`` out: ``P = I - U U^T``. That also removes the
    brain signal along ``U`` and distorts the topographies; SIR undoes the distortion: the
    minimum-norm estimate of the sources from the projected data with the projected lead field
    ``PL``, mapped back through the original lead field,
    ``S = L (PL)^T (PL (PL)^T + lambda I)^-1 P`` with
    ``lambda = lambda0 trace(PL (PL)^T) / n``.

    Time limitation: the artifact lasts tens of milliseconds, so the filter is applied only
    there, ``y'(t) = y(t) + w(t - t_pulse) (S - I) y(t)``, with ``w`` = 1 in
    ``apply_window_ms`` (default -2..50 ms) tapered to 0 by a raised cosine over ``taper_ms``
    (default 10 ms) at the end (``weighting = "window"``), or (``"envelope"``) the paper's
    smooth alternative: the RMS time course of the high-passed artifact components in the
    epoch average, smoothed over 5 ms and scaled to a maximum of 1.

Control-data variant (:func:`fit_sspsir_control`)
    For responses that are not brain responses to the cortical stimulation (auditory click,
    scalp somatosensation), the paper estimates the projection from a control condition (e.g.
    sham or realistic-sham stimulation) that evokes them without the cortical response: the
    principal components of the control epochs' *average* in ``control_window_ms``
    (default 0-300 ms, no high-pass) explaining ``variance_pct`` of its variance, or a fixed
    ``n_components``. The same SIR correction follows; the filter is applied at all times
    (static), because sensory responses are long. Here the control epochs are the pulses /
    markers whose label matches ``control_label`` in the cleaning configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, signal

__all__ = ["SSPSIRResult", "fit_sspsir", "fit_sspsir_control", "sir_matrix", "time_weights"]


@dataclass
class SSPSIRResult:
    """An SSP-SIR filter.

    Attributes
    ----------
    filter : ndarray, shape (n_channels, n_channels)
        ``S``: projection + source-informed reconstruction (average-referenced output).
    topographies : ndarray, shape (n_channels, n_components)
        Projected-out artifact topographies (unit norm columns).
    explained_pct : ndarray, shape (n_components,)
        Share of the early-window high-frequency (or control) variance of each.
    power_ratio : ndarray, shape (n_components,)
        Early-window over baseline high-frequency power along each (NaN for the control
        variant).
    weights : ndarray, shape (n_weights,)
        ``w`` at times ``weight_times_ms`` (empty for the static control filter).
    weight_times_ms : ndarray
        Times after the pulse of ``weights``.
    kind : str
        ``"muscle"`` (time-limited) or ``"control"`` (static).
    """

    filter: np.ndarray
    topographies: np.ndarray
    explained_pct: np.ndarray
    power_ratio: np.ndarray
    weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    weight_times_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    kind: str = "muscle"

    @property
    def n_components(self) -> int:
        return int(self.topographies.shape[1])


def _avg_ref(n: int) -> np.ndarray:
    return np.eye(n) - np.full((n, n), 1.0 / n)


def sir_matrix(leadfield: np.ndarray, topographies: np.ndarray, lambda0: float = 0.01) -> np.ndarray:
    """``S = L (PL)^T (PL (PL)^T + lambda I)^-1 P`` for ``P = I - U U^T`` (average reference).

    Parameters
    ----------
    leadfield : ndarray, shape (n_channels, n_sources)
        Average-referenced lead field.
    topographies : ndarray, shape (n_channels, k)
        Orthonormal artifact topographies ``U`` (k may be 0: then ``S`` is the plain
        minimum-norm re-estimate, close to the identity for small ``lambda0``).
    lambda0 : float
        Regularisation relative to the mean eigenvalue of ``PL (PL)^T`` (default 0.01).

    Returns
    -------
    ndarray, shape (n_channels, n_channels)
    """
    n = leadfield.shape[0]
    H = _avg_ref(n)
    U = np.asarray(topographies, float).reshape(n, -1)
    P = H - U @ U.T @ H if U.size else H
    PL = P @ leadfield
    G = PL @ PL.T
    lam = lambda0 * np.trace(G) / n
    K = np.linalg.solve(G + lam * np.eye(n), PL).T  # (n_src, n)
    return leadfield @ K @ P


def _highpass(epochs: np.ndarray, sfreq: float, highpass_hz: float) -> np.ndarray:
    if highpass_hz >= 0.45 * sfreq:
        raise ValueError(f"SSP-SIR high-pass {highpass_hz} Hz needs a sampling rate above "
                         f"{highpass_hz / 0.45:.0f} Hz (data: {sfreq:g} Hz); lower highpass_hz")
    sos = signal.butter(4, highpass_hz, "highpass", fs=sfreq, output="sos")
    return signal.sosfiltfilt(sos, epochs, axis=-1)


def time_weights(times_ms: np.ndarray, apply_window_ms: tuple[float, float],
                 taper_ms: float) -> np.ndarray:
    """``w(t)``: 1 inside the window, raised-cosine taper to 0 over its last ``taper_ms``."""
    t = np.asarray(times_ms, float)
    a, b = apply_window_ms
    w = ((t >= a) & (t <= b)).astype(float)
    if taper_ms > 0:
        m = (t > b - taper_ms) & (t <= b)
        w[m] = 0.5 * (1 + np.cos(np.pi * (t[m] - (b - taper_ms)) / taper_ms))
    return w


def fit_sspsir(
    epochs_uv: np.ndarray,
    times_ms: np.ndarray,
    sfreq: float,
    leadfield: np.ndarray,
    highpass_hz: float = 100.0,
    artifact_window_ms: tuple[float, float] = (0.0, 50.0),
    baseline_ms: tuple[float, float] = (-500.0, -10.0),
    variance_pct: float = 90.0,
    min_ratio: float = 3.0,
    n_components: int = 0,
    max_components: int = 5,
    lambda0: float = 0.01,
    estimator: str = "whitened",
    weighting: str = "window",
    apply_window_ms: tuple[float, float] = (-2.0, 50.0),
    taper_ms: float = 10.0,
) -> SSPSIRResult:
    """Estimate the TMS-evoked muscle subspace and the SSP-SIR filter from epochs.

    Parameters
    ----------
    epochs_uv : ndarray, shape (n_epochs, n_channels, n_times)
        Pulse-locked epochs (pulse window already interpolated), µV, any reference.
    times_ms : ndarray, shape (n_times,)
        Epoch time axis.
    sfreq : float
        Sampling rate (Hz).
    leadfield : ndarray, shape (n_channels, n_sources)
        Average-referenced lead field of the same channels.
    highpass_hz, artifact_window_ms, baseline_ms, variance_pct, min_ratio, n_components,
    max_components, lambda0, estimator, weighting, apply_window_ms, taper_ms
        See the module notes. ``n_components = 0`` selects automatically (at most
        ``max_components``).

    Returns
    -------
    SSPSIRResult
    """
    x = np.asarray(epochs_uv, float)
    n = x.shape[1]
    t = np.asarray(times_ms, float)
    H = _avg_ref(n)
    x = np.einsum("ij,ejt->eit", H, np.nan_to_num(x))
    hp = _highpass(x, sfreq, highpass_hz)
    early = (t >= artifact_window_ms[0]) & (t <= artifact_window_ms[1])
    base = (t >= baseline_ms[0]) & (t <= baseline_ms[1])
    if not early.any() or not base.any():
        raise ValueError("SSP-SIR: the artifact window or the baseline lies outside the epochs")
    xe = np.moveaxis(hp[:, :, early], 1, 0).reshape(n, -1)
    xb = np.moveaxis(hp[:, :, base], 1, 0).reshape(n, -1)
    Ce = xe @ xe.T / xe.shape[1]
    Cb = xb @ xb.T / xb.shape[1]
    if estimator == "pca":  # the paper's plain PCA of the early high-frequency covariance
        evals, evecs = np.linalg.eigh(Ce)
        order = np.argsort(evals)[::-1]
        evals, evecs = np.clip(evals[order], 0, None), evecs[:, order]
        patterns = evecs
        ratio = np.array([(v @ Ce @ v) / max(v @ Cb @ v, 1e-30) for v in evecs.T])
    elif estimator == "whitened":  # PCA after whitening by the baseline: Ce v = r Cb v
        reg = 1e-6 * np.trace(Cb) / n
        ratio, V = linalg.eigh(Ce, Cb + reg * np.eye(n))
        order = np.argsort(ratio)[::-1]
        ratio, V = ratio[order], V[:, order]
        patterns = Cb @ V  # topography of each component (the filter's inverse)
        patterns /= np.linalg.norm(patterns, axis=0, keepdims=True)
        evals = np.array([(p @ Ce @ p) for p in patterns.T])
    else:
        raise ValueError(f"estimator must be 'whitened' or 'pca', got {estimator!r}")
    total = np.trace(Ce) or 1.0
    explained = 100.0 * evals / total
    if n_components > 0:
        k = int(n_components)
    else:
        k = 0
        cum = 0.0
        while (k < min(max_components, n - 2) and ratio[k] >= min_ratio
               and (estimator == "whitened" or cum < variance_pct)):
            cum += explained[k]
            k += 1
    U = np.linalg.qr(patterns[:, :k])[0] if k else np.zeros((n, 0))
    # nothing to remove: identity (on the average reference), not a needless re-estimate
    S = sir_matrix(leadfield, U, lambda0) if k else H
    if weighting == "window":
        w = time_weights(t, apply_window_ms, taper_ms)
    elif weighting == "envelope":
        if k:
            comp = np.einsum("ik,it->kt", U, hp.mean(axis=0))
            env = np.sqrt((comp ** 2).sum(axis=0))
            win = max(1, int(round(5.0 * sfreq / 1000.0)))
            env = np.convolve(env, np.ones(win) / win, mode="same")
            env[~((t >= apply_window_ms[0]) & (t <= apply_window_ms[1]))] = 0.0
            w = env / env.max() if env.max() > 0 else env
        else:
            w = np.zeros_like(t)
    else:
        raise ValueError(f"weighting must be 'window' or 'envelope', got {weighting!r}")
    keep = w > 0
    wt = t[keep] if keep.any() else np.empty(0)
    return SSPSIRResult(filter=S, topographies=U, explained_pct=explained[:k],
                        power_ratio=ratio[:k], weights=w[keep], weight_times_ms=wt,
                        kind="muscle")


def fit_sspsir_control(
    control_epochs_uv: np.ndarray,
    times_ms: np.ndarray,
    leadfield: np.ndarray,
    control_window_ms: tuple[float, float] = (0.0, 300.0),
    variance_pct: float = 90.0,
    n_components: int = 0,
    max_components: int = 5,
    lambda0: float = 0.01,
) -> SSPSIRResult:
    """SSP-SIR from control-condition epochs (sensory responses), applied at all times.

    Parameters
    ----------
    control_epochs_uv : ndarray, shape (n_epochs, n_channels, n_times)
        Epochs of the control condition (e.g. sham pulses), baseline-corrected.
    times_ms : ndarray
        Their time axis.
    leadfield : ndarray
        Average-referenced lead field.
    control_window_ms, variance_pct, n_components, max_components, lambda0
        See the module notes.

    Returns
    -------
    SSPSIRResult
    """
    x = np.asarray(control_epochs_uv, float)
    n = x.shape[1]
    t = np.asarray(times_ms, float)
    avg = _avg_ref(n) @ np.nanmean(x, axis=0)
    win = (t >= control_window_ms[0]) & (t <= control_window_ms[1])
    if not win.any():
        raise ValueError("SSP-SIR control: control_window_ms lies outside the epochs")
    seg = avg[:, win]
    Uall, s, _ = np.linalg.svd(seg, full_matrices=False)
    var = s ** 2
    explained = 100.0 * var / (var.sum() or 1.0)
    if n_components > 0:
        k = int(n_components)
    else:
        k = int(np.searchsorted(np.cumsum(explained), variance_pct) + 1)
        k = min(k, max_components, n - 2)
    U = Uall[:, :k]
    return SSPSIRResult(filter=sir_matrix(leadfield, U, lambda0), topographies=U,
                        explained_pct=explained[:k], power_ratio=np.full(k, np.nan),
                        kind="control")
