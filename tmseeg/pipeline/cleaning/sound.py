"""SOUND: channel-specific noise estimation and suppression with a lead field.

Reimplemented from the paper (Mutanen, Metsomaa, Liljander & Ilmoniemi 2018, NeuroImage 166:
135-151, "Automatic and robust noise suppression in EEG and MEG: The SOUND algorithm"); no code
was copied from any implementation.

Model: ``y(t) = L j(t) + n(t)``, sources ``j ~ N(0, I)``, noise ``n ~ N(0, diag(sigma^2))``
independent across channels. SOUND estimates the noise SDs ``sigma`` by cross-validation over
channels, iterating to convergence:

for each channel ``i`` in turn: whiten the *other* channels by their current ``sigma``, take
the regularised minimum-norm (Wiener) source estimate from them, predict channel ``i`` through
its lead-field row, and set ``sigma_i`` to the RMS of the prediction error (a channel whose
data the rest of the head cannot explain is noisy). The updates use the newest values
(Gauss-Seidel, as in the paper); iteration stops when no ``sigma`` changes by more than ``tol``
(relative) or after ``max_iter`` sweeps.

The cleaned data are the final Wiener estimate of the noise-free signal on every channel:
``y_clean = L L_w^T (L_w L_w^T + lambda I)^-1 W y`` with ``W = diag(1 / sigma)`` and
``L_w = W L``. Channels left out of the estimate (bad, NaN) are still reconstructed from
the others through the lead field.

Regularisation: ``lambda = lambda0 * trace(L_w L_w^T) / n`` (``lambda0`` is the noise-to-signal
power ratio in whitened units; the paper's authors suggest ~1 for single-trial or continuous
data and ~0.01-0.1 for averaged responses). Only the data covariance enters the iteration,
so its cost does not depend on the amount of data: one ``(n-1) x (n-1)`` solve per channel and
sweep.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SoundResult", "sound", "sound_matrix"]


@dataclass
class SoundResult:
    """What :func:`sound` found.

    Attributes
    ----------
    sigma_uv : ndarray, shape (n_channels,)
        Estimated noise SD per channel (µV, same units as the data; NaN for excluded channels).
    matrix : ndarray, shape (n_channels, n_channels)
        The cleaning filter for data in any reference: ``clean = matrix @ data`` (the output is
        on the average reference; excluded channels' columns are zero and their rows are
        reconstructed).
    n_iter : int
        Sweeps run.
    converged : bool
        True if the largest relative change fell below ``tol``.
    history : list of float
        Largest relative change of ``sigma`` per sweep.
    lambda0 : float
        The regularisation used.
    used : ndarray of bool, shape (n_channels,)
        Channels that entered the estimate.
    """

    sigma_uv: np.ndarray
    matrix: np.ndarray
    n_iter: int
    converged: bool
    history: list = field(default_factory=list)
    lambda0: float = 1.0
    used: np.ndarray = field(default_factory=lambda: np.empty(0, bool))


def _avg_ref_matrix(n: int) -> np.ndarray:
    return np.eye(n) - np.full((n, n), 1.0 / n)


def sound_matrix(leadfield: np.ndarray, sigma: np.ndarray, lambda0: float) -> np.ndarray:
    """The SOUND (Wiener) estimator for given noise SDs.

    Parameters
    ----------
    leadfield : ndarray, shape (n_channels, n_sources)
        Average-referenced lead field of the channels used.
    sigma : ndarray, shape (n_channels,)
        Noise SD per channel.
    lambda0 : float
        Noise-to-signal ratio (see module notes).

    Returns
    -------
    ndarray, shape (n_channels, n_channels)
        ``y_clean = matrix @ y`` for average-referenced ``y``.
    """
    w = 1.0 / np.asarray(sigma, float)
    Lw = leadfield * w[:, None]
    G = Lw @ Lw.T
    lam = lambda0 * np.trace(G) / G.shape[0]
    K = np.linalg.solve(G + lam * np.eye(G.shape[0]), Lw).T  # (n_src, n) = Lw^T (G + lam I)^-1
    return (leadfield @ K) * w[None, :]


def sound(
    data_uv: np.ndarray,
    leadfield: np.ndarray,
    lambda0: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-3,
    exclude: np.ndarray | None = None,
) -> SoundResult:
    """Estimate channel noise with SOUND and build the cleaning filter.

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples) or (n_epochs, n_channels, n_times)
        EEG (any reference: it is average-referenced over the used channels here). Samples
        with NaN on a used channel are ignored.
    leadfield : ndarray, shape (n_channels, n_sources)
        Lead field of the same channels (e.g. :func:`~.leadfield.sphere_leadfield`).
    lambda0 : float
        Noise-to-signal ratio, default 1.0 (single-trial / continuous data).
    max_iter : int
        Maximum number of sweeps over the channels (default 100).
    tol : float
        Convergence: largest relative change of any ``sigma`` in a sweep (default 1e-3).
    exclude : ndarray of bool, shape (n_channels,), optional
        Channels left out of the estimate (bad channels); channels that are entirely
        non-finite are excluded automatically.

    Returns
    -------
    SoundResult
    """
    x = np.asarray(data_uv, float)
    if x.ndim == 3:
        x = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    n = x.shape[0]
    if leadfield.shape[0] != n:
        raise ValueError(f"lead field has {leadfield.shape[0]} rows, data {n} channels")
    used = ~np.isnan(x).all(axis=1)
    if exclude is not None:
        used &= ~np.asarray(exclude, bool)
    idx = np.flatnonzero(used)
    if idx.size < 4:
        raise ValueError(f"SOUND needs at least 4 usable channels, got {idx.size}")
    xu = x[idx]
    xu = xu[:, np.isfinite(xu).all(axis=0)]
    if xu.shape[1] < 2:
        raise ValueError("SOUND: no sample is finite on all used channels")
    L = leadfield[idx] - leadfield[idx].mean(axis=0, keepdims=True)
    xu = xu - xu.mean(axis=0, keepdims=True)
    C = xu @ xu.T / xu.shape[1]
    m = idx.size
    sigma = np.ones(m)
    LL = L @ L.T
    history = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        old = sigma.copy()
        for i in range(m):
            o = np.r_[0:i, i + 1:m]
            w = 1.0 / sigma[o]
            G = LL[np.ix_(o, o)] * np.outer(w, w)
            lam = lambda0 * np.trace(G) / G.shape[0]
            # prediction of channel i: a @ y_o with a = W_o (G + lam I)^-1 W_o L_o L_i^T
            b = LL[o, i] * w
            a = np.linalg.solve(G + lam * np.eye(m - 1), b) * w
            var = C[i, i] - 2.0 * a @ C[o, i] + a @ C[np.ix_(o, o)] @ a
            sigma[i] = np.sqrt(max(var, 1e-12 * C[i, i] + 1e-30))
        change = float(np.max(np.abs(sigma - old) / old))
        history.append(change)
        if change < tol:
            converged = True
            break
    # rows for every channel: excluded ones reconstructed through their lead-field row
    w = 1.0 / sigma
    Lw = L * w[:, None]
    G = Lw @ Lw.T
    lam = lambda0 * np.trace(G) / m
    K = np.linalg.solve(G + lam * np.eye(m), Lw).T * w[None, :]  # sources from used channels
    K = K @ _avg_ref_matrix(m)
    Lall = leadfield - leadfield[idx].mean(axis=0, keepdims=True)
    matrix = np.zeros((n, n))
    matrix[:, idx] = Lall @ K  # on the used rows this is sound_matrix(L, sigma, lambda0)
    matrix = _avg_ref_matrix(n) @ matrix
    sig = np.full(n, np.nan)
    sig[idx] = sigma
    return SoundResult(sigma_uv=sig, matrix=matrix, n_iter=it, converged=converged,
                       history=history, lambda0=float(lambda0), used=used)
