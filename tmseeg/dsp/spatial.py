"""Spatial filters that reduce a multichannel EEG window to the one signal a phase estimator reads.

A closed-loop protocol targets one cortical rhythm, e.g. the sensorimotor mu rhythm under C3.
A single channel carries a lot of far-field activity (posterior alpha, the common reference);
a Hjorth / surface Laplacian (the channel minus the mean of its nearest neighbours, Hjorth 1975)
removes what is spatially smooth and keeps what is local, which is the montage used in
EEG-triggered TMS (e.g. Zrenner et al. 2018, "C3 Laplacian": C3 - 1/4 (FC1 + FC5 + CP1 + CP5)).

Specs understood by :meth:`SpatialFilter.from_spec`
----------------------------------------------------
``"C3"``
    One channel.
``"C3 Laplacian"`` (also ``"C3 Hjorth"``, case-insensitive)
    The channel minus the mean of its ``n_neighbors`` (default 4) nearest channels of the stream,
    nearest by 3-D distance between the positions of MNE's 10-05 template montage
    (``colin27_1005``, or ``standard_1005`` on older MNE).
``{"C3": 1, "FC1": -0.25, "FC5": -0.25, "CP1": -0.25, "CP5": -0.25}``
    Arbitrary weights by channel name (an explicit Laplacian, a bipolar pair, a beamformer row).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from tmseeg.stream.montage import montage_positions

__all__ = ["SpatialFilter", "nearest_neighbors"]

_LAPLACIAN_RE = re.compile(r"^\s*(\S+)\s+(laplacian|hjorth)\s*$", re.IGNORECASE)


def nearest_neighbors(center: str, ch_names: Sequence[str], n_neighbors: int = 4,
                      montage: str = "auto") -> list[str]:
    """The ``n_neighbors`` channels of ``ch_names`` nearest to ``center`` on the scalp.

    Parameters
    ----------
    center : str
        The centre channel (a 10-05 label).
    ch_names : sequence of str
        Candidate channels (usually all channels of the stream); channels without a template
        position (EMG, triggers) are ignored.
    n_neighbors : int
        How many neighbours to return.
    montage : str
        MNE built-in montage name, or ``"auto"`` (``colin27_1005`` / ``standard_1005``).

    Returns
    -------
    list of str
        Neighbour names as spelled in ``ch_names``, nearest first.

    Raises
    ------
    ValueError
        If ``center`` has no template position or fewer than ``n_neighbors`` candidates have.
    """
    pos = montage_positions(montage)
    c = pos.get(center.lower())
    if c is None:
        raise ValueError(f"nearest_neighbors: {center!r} is not a position of the {montage!r} "
                         "montage; give the neighbours explicitly as weights, e.g. "
                         "{'C3': 1, 'FC1': -0.25, 'FC5': -0.25, 'CP1': -0.25, 'CP5': -0.25}.")
    cands = [(float(np.linalg.norm(pos[n.lower()] - c)), n) for n in ch_names
             if n.lower() in pos and n.lower() != center.lower()]
    if len(cands) < n_neighbors:
        raise ValueError(f"nearest_neighbors: only {len(cands)} channels with known positions "
                         f"besides {center!r}; a Laplacian needs {n_neighbors}.")
    cands.sort()
    return [n for _, n in cands[:n_neighbors]]


class SpatialFilter:
    """A fixed linear combination of channels: ``y = sum_i w_i x_i``.

    Parameters
    ----------
    weights : mapping of str to float
        Channel name -> weight (non-zero weights only need be given).
    ch_names : sequence of str
        The stream's channels in data row order (matching is case-insensitive).

    Attributes
    ----------
    weights : dict of str to float
        The weights by channel name as spelled in ``ch_names``.
    picks : ndarray of int
        Rows of the data that take part.
    coefs : ndarray of float
        Weight of each picked row.

    Raises
    ------
    ValueError
        If a weighted channel is not in ``ch_names``, a weight is not finite, or all are zero.
    """

    def __init__(self, weights: Mapping[str, float], ch_names: Sequence[str]) -> None:
        self.ch_names = tuple(ch_names)
        lookup = {n.lower(): i for i, n in enumerate(self.ch_names)}
        if len(lookup) != len(self.ch_names):
            raise ValueError("SpatialFilter: duplicate channel names in the stream.")
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("SpatialFilter: give weights as a non-empty {channel: weight} dict.")
        missing = [k for k in weights if str(k).lower() not in lookup]
        if missing:
            raise ValueError(f"SpatialFilter: channel(s) {missing} are not in the stream; it has "
                             f"{', '.join(self.ch_names)}.")
        acc: dict[int, float] = {}
        for k, w in weights.items():
            w = float(w)
            if not np.isfinite(w):
                raise ValueError(f"SpatialFilter: weight of {k!r} is {w}; weights must be finite.")
            i = lookup[str(k).lower()]
            acc[i] = acc.get(i, 0.0) + w
        acc = {i: w for i, w in acc.items() if w != 0.0}
        if not acc:
            raise ValueError("SpatialFilter: all weights are zero.")
        order = sorted(acc)
        self.picks = np.array(order, dtype=np.intp)
        self.coefs = np.array([acc[i] for i in order], dtype=np.float64)
        self.weights = {self.ch_names[i]: acc[i] for i in order}

    @classmethod
    def from_spec(cls, spec: str | Mapping[str, float], ch_names: Sequence[str],
                  n_neighbors: int = 4, montage: str = "auto") -> "SpatialFilter":
        """Build a filter from a channel name, ``"<channel> Laplacian"`` or a weight dict.

        Parameters
        ----------
        spec : str or mapping
            ``"C3"``, ``"C3 Laplacian"`` / ``"C3 Hjorth"``, or ``{name: weight}``.
        ch_names : sequence of str
            The stream's channels in row order.
        n_neighbors : int
            Neighbours of a Laplacian (default 4).
        montage : str
            Template montage for the neighbour search (default ``"auto"``).

        Returns
        -------
        SpatialFilter
        """
        if isinstance(spec, Mapping):
            return cls(spec, ch_names)
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"SpatialFilter: spec must be a channel name, '<channel> Laplacian' "
                             f"or a weight dict; got {spec!r}.")
        m = _LAPLACIAN_RE.match(spec)
        if m:
            center = m.group(1)
            known = {n.lower(): n for n in ch_names}
            if center.lower() not in known:
                raise ValueError(f"SpatialFilter: Laplacian centre {center!r} is not in the "
                                 f"stream; it has {', '.join(ch_names)}.")
            center = known[center.lower()]
            nb = nearest_neighbors(center, ch_names, n_neighbors, montage)
            w = {center: 1.0}
            w.update({n: -1.0 / n_neighbors for n in nb})
            return cls(w, ch_names)
        return cls({spec.strip(): 1.0}, ch_names)

    def apply(self, data: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Combine the channels of ``data`` (n_channels, n_samples) into one signal (n_samples,).

        Only the picked rows are read, so the cost does not grow with the channel count.
        """
        if data.ndim != 2 or data.shape[0] != len(self.ch_names):
            raise ValueError(f"SpatialFilter.apply: data of shape {data.shape}, expected "
                             f"({len(self.ch_names)}, n_samples).")
        return np.dot(self.coefs, data[self.picks], out=out)

    def __repr__(self) -> str:
        terms = " ".join(f"{w:+g}*{n}" for n, w in self.weights.items())
        return f"SpatialFilter({terms})"
