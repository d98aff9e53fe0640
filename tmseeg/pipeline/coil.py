"""Where is the coil? Find the stimulation site from the pulse artifact, and the ROI around it.

The TMS pulse and decay artifacts are largest under the coil. :class:`CoilSiteDetector` looks
at the raw data 1..8 ms after each of the first pulses (before any cleaning), takes each
channel's median deviation from its pre-pulse level, takes the peak of that map smoothed over
the scalp, and proposes a region of interest: that channel and its nearest neighbours. It passes blocks through unchanged.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from tmseeg.pipeline.channels import montage_positions, nearest_channels, resolve_picks
from tmseeg.stream.block import Block, StreamMeta

__all__ = ["CoilSiteDetector", "centroid_channel", "roi_around"]


def centroid_channel(amplitudes_uv: np.ndarray, ch_names: Sequence[str],
                     montage: str = "auto", sigma_m: float | None = None) -> str:
    """The channel at the peak of the spatially smoothed artifact map.

    One channel's artifact can be larger than its neighbours' for reasons that have nothing to
    do with the coil (electrode impedance, a lead lying under the wing). Each candidate is
    scored by the sum of all channels' amplitudes weighted by a Gaussian of their distance to it
    (``sigma_m``; default: the cap's median nearest-neighbour distance, i.e. one electrode
    spacing — about 3.5 cm on a 64-channel cap, 6 cm on a 32-channel one), so the site is where
    the artifact is large *and* its neighbours agree. A fixed 3 cm on a 32-channel cap gave the
    neighbours almost no weight (a neighbour with a 50 % larger artifact, e.g. a worse electrode
    contact, won). Falls back to the maximum when positions are unknown.
    """
    amps = np.nan_to_num(np.asarray(amplitudes_uv, dtype=float))
    pos = montage_positions(montage)
    known = [i for i, n in enumerate(ch_names) if n.lower() in pos]
    if not known:
        return ch_names[int(np.argmax(amps))]
    xyz = np.array([pos[ch_names[i].lower()] for i in known])
    d2 = ((xyz[:, None, :] - xyz[None, :, :]) ** 2).sum(axis=-1)
    if sigma_m is None:
        if len(known) < 2:
            return ch_names[known[0]]
        sigma_m = float(np.median(np.sqrt(np.min(d2 + np.diag(np.full(len(known), np.inf)),
                                                 axis=1))))
    score = np.exp(-d2 / (2 * sigma_m ** 2)) @ amps[known]
    return ch_names[known[int(np.argmax(score))]]


def roi_around(site: str, ch_names: Sequence[str], n_neighbors: int = 4,
               montage: str = "auto") -> list[str]:
    """The channel ``site`` and its ``n_neighbors`` nearest channels among ``ch_names``.

    Distances are between 3-D electrode positions of a standard 10-05 montage. Channels without
    a position are ignored; if ``site`` itself has none, only ``[site]`` is returned.
    """
    names = list(ch_names)
    if site not in names:
        names.append(site)
    near = nearest_channels(names, n_neighbors, montage).get(names.index(site))
    return [site] if near is None else [site] + [names[j] for j in near]


class CoilSiteDetector:
    """Pass-through stage that estimates the coil site from the first pulses' artifacts.

    Parameters
    ----------
    n_pulses : int
        Pulses to use: the site is the peak of the smoothed map of the median artifact
        over them (see :func:`centroid_channel`; default 5).
    window_ms : (float, float)
        Post-pulse window where the artifact amplitude is measured (default 1..8 ms).
    baseline_ms : (float, float)
        Pre-pulse window giving each channel's level (default -20..-3 ms).
    n_neighbors : int
        Neighbours in the proposed ROI.
    picks : str
        Channels considered (default EEG).
    max_delay_ms : float
        How late a pulse event may arrive after its sample (a marker on a slow network) and
        still be measured: raw data that old are kept (default 500 ms).

    Attributes
    ----------
    site : str or None
        Best estimate so far.
    roi : list of str
        ``site`` and its neighbours (empty until the first pulse was measured).
    amplitudes_uv : list of ndarray
        Per-pulse artifact amplitude per channel.
    """

    name = "coil_site"

    def __init__(self, n_pulses: int = 5, window_ms: tuple[float, float] = (1.0, 8.0),
                 baseline_ms: tuple[float, float] = (-20.0, -3.0), n_neighbors: int = 4,
                 picks: str = "eeg", max_delay_ms: float = 500.0) -> None:
        self.n_pulses = n_pulses
        self.window_ms = window_ms
        self.baseline_ms = baseline_ms
        self.n_neighbors = n_neighbors
        self.picks = picks
        self.max_delay_ms = max_delay_ms
        self.reset()

    def reset(self) -> None:
        self.site: str | None = None
        self.roi: list[str] = []
        self.amplitudes_uv: list[np.ndarray] = []
        self._tail: np.ndarray | None = None
        self._tail_start = 0
        self._pending: list[int] = []
        self._meta: StreamMeta | None = None

    def flush(self) -> Block | None:
        return None

    def process(self, block: Block) -> Block:
        if len(self.amplitudes_uv) >= self.n_pulses:
            return block
        if self._meta is None:
            self._meta = block.meta
            self._rows = resolve_picks(block.meta, self.picks)
            sf = block.meta.sfreq
            self._b0 = int(round(self.baseline_ms[0] * sf / 1e3))
            self._b1 = int(round(self.baseline_ms[1] * sf / 1e3))
            self._w0 = int(round(self.window_ms[0] * sf / 1e3))
            self._w1 = int(round(self.window_ms[1] * sf / 1e3))
        self._pending.extend(e.sample for e in block.pulses())
        data = block.data[self._rows]
        if self._tail is None:
            self._tail, self._tail_start = data, block.first_sample
        else:
            self._tail = np.concatenate([self._tail, data], axis=1)
        stop = self._tail_start + self._tail.shape[1]
        n_measured = len(self.amplitudes_uv)
        still = []
        for s in self._pending:
            if s + self._w1 >= stop:
                still.append(s)
                continue
            lo = s + self._b0 - self._tail_start
            if lo < 0:  # the pre-pulse level is gone (pulse at the start): skip this pulse
                continue
            seg = self._tail[:, s + self._w0 - self._tail_start:s + self._w1 - self._tail_start + 1]
            with warnings.catch_warnings():  # a channel sending NaN: its amplitude is NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                base = np.nanmedian(self._tail[:, lo:s + self._b1 - self._tail_start + 1], axis=1)
                self.amplitudes_uv.append(np.nanmax(np.abs(seg - base[:, None]), axis=1))
        self._pending = still
        # keep only what a pending or future pulse can still need
        keep = (-self._b0 + self._w1 + 1
                + int(round(self.max_delay_ms * block.meta.sfreq / 1e3)))
        if self._tail.shape[1] > keep:
            cut = self._tail.shape[1] - keep
            if self._pending:
                cut = min(cut, self._pending[0] + self._b0 - self._tail_start)
            if cut > 0:
                self._tail = self._tail[:, cut:]
                self._tail_start += cut
        if len(self.amplitudes_uv) > n_measured:  # the map changed: the site may have moved
            med = np.nanmedian(np.vstack(self.amplitudes_uv), axis=0)
            names = [block.meta.ch_names[i] for i in self._rows]
            site = centroid_channel(med, names)
            if site != self.site:
                self.site = site
                self.roi = roi_around(site, names, self.n_neighbors)
        return block
