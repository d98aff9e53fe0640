"""A cheap live scalp map: a precomputed interpolation matrix from electrodes to a pixel grid.

``mne.viz.plot_topomap`` into a matplotlib canvas takes tens to hundreds of milliseconds, too
slow for a live display. Here the electrode positions (from the standard 10-05 montage) are
projected once onto the plane (azimuthal equidistant, nose up), and a matrix ``W`` of shape
(n_pixels_inside_head, n_electrodes) is built once with inverse-distance-squared weights over
the nearest electrodes. A map is then one matrix-vector product: ~0.1 ms for 64 channels on a
64 x 64 grid.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def electrode_positions_2d(ch_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """2-D positions (head radius 1, nose at +y) of the channels the standard montage knows.

    Returns
    -------
    names : list of str
        Channels with a position (in input order; EMG, triggers... are left out).
    pos : ndarray, shape (n, 2)
    """
    from tmseeg.stream.montage import montage_positions

    lookup = montage_positions()
    names, xyz = [], []
    for n in ch_names:
        p = lookup.get(n.lower())
        if p is not None:
            names.append(n)
            xyz.append(p)
    if not names:
        return [], np.empty((0, 2))
    xyz = np.array(xyz, dtype=float)
    xyz = xyz - _sphere_center(xyz)
    r = np.linalg.norm(xyz, axis=1)
    theta = np.arccos(np.clip(xyz[:, 2] / r, -1, 1))  # polar angle from the vertex
    phi = np.arctan2(xyz[:, 1], xyz[:, 0])
    rad = theta / (np.pi / 2)  # Fpz/Oz/T7/T8 (equator) at radius 1
    return names, np.column_stack([rad * np.cos(phi), rad * np.sin(phi)])


def _sphere_center(xyz: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre of electrode positions (>= 4 points), else the origin."""
    if len(xyz) < 4:
        return np.zeros(3)
    a = np.column_stack([2 * xyz, np.ones(len(xyz))])
    b = (xyz ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    return sol[:3]


class TopoInterpolator:
    """Electrode values -> image of the scalp, by one precomputed matrix.

    Parameters
    ----------
    ch_names : sequence of str
        Data rows (channels without a standard position are ignored).
    size : int
        Image side in pixels.
    n_nearest : int
        Electrodes that contribute to each pixel.

    Attributes
    ----------
    names : list of str
        Channels on the map; ``rows`` are their indices in ``ch_names``.
    pos : ndarray, shape (n, 2)
        Their 2-D positions (head radius 1).
    extent : float
        The image spans ``[-extent, extent]`` on both axes.
    """

    def __init__(self, ch_names: Sequence[str], size: int = 64, n_nearest: int = 6) -> None:
        self.names, self.pos = electrode_positions_2d(ch_names)
        lookup = {n: i for i, n in enumerate(ch_names)}
        self.rows = np.array([lookup[n] for n in self.names], dtype=np.intp)
        self.size = int(size)
        self.extent = max(1.0, float(np.abs(self.pos).max()) if len(self.pos) else 1.0) * 1.05
        g = np.linspace(-self.extent, self.extent, self.size)
        gx, gy = np.meshgrid(g, g, indexing="ij")  # image[x, y] as pyqtgraph's ImageItem wants
        self.inside = (gx ** 2 + gy ** 2) <= self.extent ** 2
        pix = np.column_stack([gx[self.inside], gy[self.inside]])
        n = len(self.names)
        self.matrix = np.zeros((pix.shape[0], n))
        if n:
            d2 = ((pix[:, None, :] - self.pos[None, :, :]) ** 2).sum(axis=2)
            k = min(n_nearest, n)
            near = np.argpartition(d2, k - 1, axis=1)[:, :k]
            w = 1.0 / np.maximum(np.take_along_axis(d2, near, axis=1), 1e-6)
            w /= w.sum(axis=1, keepdims=True)
            np.put_along_axis(self.matrix, near, w, axis=1)

    def image(self, values: np.ndarray) -> np.ndarray:
        """Map of one value per input channel, shape (size, size); NaN outside the head.

        Channels whose value is not finite are left out (weights renormalised).
        """
        v = np.asarray(values, dtype=float)[self.rows]
        out = np.full((self.size, self.size), np.nan)
        ok = np.isfinite(v)
        if not ok.any():
            return out
        if ok.all():
            out[self.inside] = self.matrix @ v
        else:
            w = self.matrix[:, ok]
            s = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[self.inside] = np.where(s > 0, (w @ v[ok]) / s, np.nan)
        return out
