"""Where is the coil? Find the stimulation site from the pulse artifact, and the ROI around it.

The TMS pulse and decay artifacts are largest under the coil. :class:`CoilSiteDetector` looks
at the raw data 1..8 ms after each of the first pulses (before any cleaning), takes each
channel's median deviation from its pre-pulse level, takes the peak of that map smoothed over
the scalp, and proposes a region of interest: that channel and its nearest neighbours. It passes blocks through unchanged.

A channel that is railed (an amplifier input at its limit, e.g. a lead off at +-3 V) or flat
before a pulse shows no artifact, only its own fault: its "amplitude" (a rail-to-rail swing of
millions of µV) would win the map. Such channels are left out of the site search and of the
ROI (:func:`broken_channels`).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from tmseeg.pipeline.channels import edge_counts, nearest_channels, resolve_picks
from tmseeg.stream.montage import montage_positions
from tmseeg.stream.block import Block, StreamMeta

__all__ = ["CoilSiteDetector", "broken_channels", "centroid_channel", "roi_around"]

#: share of a pre-pulse stretch at one extreme value that makes a channel railed; a rail
#: holds (or toggles between) its limits most of the time, quantised EEG touches its extreme
#: a few times
RAIL_FRACTION = 0.1


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


def broken_channels(x: np.ndarray, flat_uv: float = 0.5,
                    rail_fraction: float = RAIL_FRACTION) -> np.ndarray:
    """Which channels of a pre-pulse stretch are railed or flat.

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_samples)
        Raw data in µV, pulse artifacts left out (NaN samples are ignored).
    flat_uv : float
        A channel whose standard deviation is below this is flat (a dead input, a channel
        stuck at one rail).
    rail_fraction : float
        A channel with more than this share of its samples (and at least 3) exactly at its
        minimum or maximum (within 1e-6 of its range) is railed: an input swinging between its
        limits, or clipped most of the time.

    Returns
    -------
    ndarray of bool, shape (n_channels,)
        True for a railed or flat channel; channels without finite samples are False (no
        evidence either way).
    """
    finite = np.isfinite(x)
    n = finite.sum(axis=1)
    with warnings.catch_warnings():  # a channel with no finite sample: all NaN below
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nanstd(x, axis=1)
        hi = np.nanmax(x, axis=1) if x.shape[1] else np.full(x.shape[0], np.nan)
        lo = np.nanmin(x, axis=1) if x.shape[1] else np.full(x.shape[0], np.nan)
    at_edge = np.maximum(*edge_counts(x, hi, lo))
    railed = (at_edge >= 3) & (at_edge > rail_fraction * np.maximum(n, 1))
    return (n >= 3) & ((sd < flat_uv) | railed)


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
    check_ms : float
        Pre-pulse stretch examined for railed and flat channels (default 250 ms; earlier
        pulses' artifacts, ``-10..100 ms`` around them, are left out). See
        :func:`broken_channels`.
    flat_uv : float
        Standard deviation below which a channel is flat over that stretch (default 0.5 µV,
        as the bad-channel detector's).

    Attributes
    ----------
    site : str or None
        Best estimate so far.
    roi : list of str
        ``site`` and its neighbours (empty until the first pulse was measured).
    amplitudes_uv : list of ndarray
        Per-pulse artifact amplitude per channel (NaN where the channel was railed or flat
        before that pulse).
    excluded : dict of str to str
        Channels left out of the site search and the ROI, and why (railed or flat before
        every measured pulse).
    """

    name = "coil_site"

    def __init__(self, n_pulses: int = 5, window_ms: tuple[float, float] = (1.0, 8.0),
                 baseline_ms: tuple[float, float] = (-20.0, -3.0), n_neighbors: int = 4,
                 picks: str = "eeg", max_delay_ms: float = 500.0, check_ms: float = 250.0,
                 flat_uv: float = 0.5) -> None:
        self.n_pulses = n_pulses
        self.check_ms = float(check_ms)
        self.flat_uv = float(flat_uv)
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
        self.excluded: dict[str, str] = {}
        self._broken: list[np.ndarray] = []  # per measured pulse: railed/flat channels
        self._seen: list[int] = []  # pulse samples (their artifacts are no rail evidence)
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
            self._check = int(round(self.check_ms * sf / 1e3))
            self._art = (int(round(-10.0 * sf / 1e3)), int(round(100.0 * sf / 1e3)))
        new = [e.sample for e in block.pulses()]
        if new:
            self._pending.extend(new)
            self._seen = sorted(self._seen + new)[-64:]
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
                amp = np.nanmax(np.abs(seg - base[:, None]), axis=1)
            broken = self._broken_before(s)
            amp[broken] = np.nan
            self._broken.append(broken)
            self.amplitudes_uv.append(amp)
        self._pending = still
        # keep only what a pending or future pulse can still need
        keep = (max(-self._b0, self._check) + self._w1 + 1
                + int(round(self.max_delay_ms * block.meta.sfreq / 1e3)))
        if self._tail.shape[1] > keep:
            cut = self._tail.shape[1] - keep
            if self._pending:
                cut = min(cut, self._pending[0] - max(-self._b0, self._check)
                          - self._tail_start)
            if cut > 0:
                self._tail = self._tail[:, cut:]
                self._tail_start += cut
        if len(self.amplitudes_uv) > n_measured:  # the map changed: the site may have moved
            with warnings.catch_warnings():  # a channel broken before every pulse: NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(np.vstack(self.amplitudes_uv), axis=0)
            names = [block.meta.ch_names[i] for i in self._rows]
            always = np.logical_and.reduce(self._broken)
            self.excluded = {names[i]: (f"railed or flat before each of the first "
                                        f"{len(self._broken)} pulses")
                             for i in np.flatnonzero(always)}
            usable = [i for i in range(len(names)) if not always[i]] or list(range(len(names)))
            kept = [names[i] for i in usable]
            site = centroid_channel(med[usable], kept)
            roi = roi_around(site, kept, self.n_neighbors)
            if site != self.site or roi != self.roi:
                self.site = site
                self.roi = roi
        return block

    def _broken_before(self, s: int) -> np.ndarray:
        """Channels railed or flat over the ``check_ms`` before pulse ``s`` (raw data, earlier
        pulses' artifacts left out)."""
        a = max(s - self._check, self._tail_start)
        b = s + self._b1 + 1
        x = self._tail[:, a - self._tail_start:b - self._tail_start]
        use = np.ones(x.shape[1], dtype=bool)
        for p in self._seen:
            if p < s and p + self._art[1] >= a:
                use[max(p + self._art[0] - a, 0):max(p + self._art[1] + 1 - a, 0)] = False
        if use.sum() < max(3, (self._b1 - self._b0) // 2):  # too little clean data to judge
            return np.zeros(x.shape[0], dtype=bool)
        return broken_channels(x[:, use], self.flat_uv)
