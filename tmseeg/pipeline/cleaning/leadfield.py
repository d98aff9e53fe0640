"""EEG lead field from a spherical head model built by MNE from the electrode montage (no MRI).

SOUND and SSP-SIR need a lead field: how a unit current dipole anywhere in the brain shows up
on each electrode. Without an individual MRI we use what TESA and the SOUND papers also use for
this purpose, a layered sphere:

* electrode positions from the channel names and an MNE built-in 10-05 montage
  (:func:`tmseeg.stream.montage.standard_montage`);
* :func:`mne.make_sphere_model` fitted to those positions (``r0="auto"``,
  ``head_radius="auto"``), with MNE's default 4-layer conductivities (brain, CSF, skull,
  scalp);
* a discrete source space of ``n_locations`` points spread evenly (Fibonacci lattice) over a
  spherical shell at ``shell_fraction`` of the head radius, from the vertex down to
  ``min_elevation`` (``z / r`` relative to the sphere centre; below that there is no cortex
  under a cap), i.e. a smooth stand-in for the cortical mantle;
* :func:`mne.make_forward_solution` (EEG only, identity head<->MRI transform).

``orientation="free"`` keeps three orthogonal dipoles per location (the default: a sphere has
no folded cortex, so the normal is unknown; free orientation spans every topography a
superficial source can make); ``"fixed"`` keeps one radial dipole per location.

The rows are re-referenced to the common average (SOUND and SSP-SIR work on
average-referenced data; the lead field must have the data's reference) and the columns
scaled so that ``trace(L L^T) = n_channels`` (only ratios matter to the estimators; this keeps
the regularisation parameters readable). Results are cached per channel set and settings.
"""
from __future__ import annotations

import threading
import warnings
from typing import Sequence

import numpy as np

__all__ = ["sphere_leadfield", "clear_leadfield_cache"]

_CACHE: dict[tuple, np.ndarray] = {}
_LOCK = threading.Lock()


def _shell_points(n: int, min_elevation: float) -> np.ndarray:
    """``n`` unit vectors evenly spread over the cap ``z >= min_elevation`` (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - k / n * (1.0 - min_elevation)
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    r = np.sqrt(np.clip(1.0 - z ** 2, 0.0, None))
    return np.c_[r * np.cos(phi), r * np.sin(phi), z]


def sphere_leadfield(
    ch_names: Sequence[str],
    montage: str = "auto",
    n_locations: int = 500,
    shell_fraction: float = 0.8,
    min_elevation: float = -0.3,
    orientation: str = "free",
) -> np.ndarray:
    """Average-referenced EEG lead field of a spherical head for the given channels.

    Parameters
    ----------
    ch_names : sequence of str
        EEG channel labels (10-05 names; case-insensitive), in data row order.
    montage : str
        MNE built-in montage name; ``"auto"`` = ``colin27_1005`` / ``standard_1005``.
    n_locations : int
        Source locations on the shell (default 500, ~1.5 cm apart on a 7.7 cm shell).
    shell_fraction : float
        Shell radius as a fraction of the fitted head radius (default 0.8: inside the brain
        layer, which MNE puts at 0.9).
    min_elevation : float
        Lowest source, as ``z / r`` relative to the sphere centre (default -0.3).
    orientation : {"free", "fixed"}
        Three dipoles per location, or one radial dipole.

    Returns
    -------
    ndarray, shape (n_channels, n_sources)
        Average-referenced lead field scaled to ``trace(L L^T) = n_channels``. A cached array
        is returned (do not modify it in place).

    Raises
    ------
    ValueError
        A channel has no position in the montage, or fewer than 4 channels.
    """
    names = tuple(ch_names)
    if orientation not in ("free", "fixed"):
        raise ValueError(f"orientation must be 'free' or 'fixed', got {orientation!r}")
    if len(names) < 4:
        raise ValueError(f"a lead field needs at least 4 EEG channels, got {len(names)}")
    from tmseeg.stream.montage import resolve_montage

    montage = resolve_montage(montage)  # "auto" is the montage in use: part of the cache key
    key = (tuple(n.lower() for n in names), montage, int(n_locations), float(shell_fraction),
           float(min_elevation), orientation)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    L = _compute(names, montage, n_locations, shell_fraction, min_elevation, orientation)
    with _LOCK:
        _CACHE[key] = L
    return L


def clear_leadfield_cache() -> None:
    """Forget every cached lead field."""
    with _LOCK:
        _CACHE.clear()


def _compute(names, montage, n_locations, shell_fraction, min_elevation, orientation):
    import mne

    from tmseeg.stream.montage import standard_montage

    mont = standard_montage(montage)
    known = {n.lower() for n in mont.ch_names}
    missing = [n for n in names if n.lower() not in known]
    if missing:
        raise ValueError(
            f"no electrode position for channel(s) {missing} in montage {montage!r}: the "
            "spherical lead field needs positions for every EEG channel. Rename them to 10-05 "
            "labels, or type them as non-EEG so cleaning leaves them alone.")
    info = mne.create_info(list(names), 1000.0, "eeg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info.set_montage(mont, match_case=False, verbose=False)
        sphere = mne.make_sphere_model(r0="auto", head_radius="auto", info=info,
                                       verbose=False)
        u = _shell_points(int(n_locations), float(min_elevation))
        rr = np.asarray(sphere["r0"])[None, :] + shell_fraction * float(sphere.radius) * u
        src = mne.setup_volume_source_space(pos={"rr": rr, "nn": u}, sphere=sphere,
                                            verbose=False)
        fwd = mne.make_forward_solution(info, trans=None, src=src, bem=sphere, eeg=True,
                                        meg=False, verbose=False)
        if orientation == "fixed":
            fwd = mne.convert_forward_solution(fwd, force_fixed=True, surf_ori=True,
                                               verbose=False)
    L = np.asarray(fwd["sol"]["data"], dtype=float)
    # forward rows follow info order, which is ``names``
    L = L - L.mean(axis=0, keepdims=True)
    L *= np.sqrt(len(names) / np.einsum("ij,ij->", L, L))
    L.setflags(write=False)
    return L
