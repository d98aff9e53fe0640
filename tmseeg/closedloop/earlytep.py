"""The fast path: each pulse's early TEP for a closed-loop protocol, 60 ms after the pulse.

The session's TEP of a pulse arrives ~0.65 s after its epoch ends, ~1.15 s after the pulse
(decay removal waits for its 800-ms fit window; the zero-phase epoch filter needs 200 ms of
data after the epoch). A protocol that adapts the next pulse to this one's early response
(15-60 ms) would wait that long. :class:`EarlyTEPCutter` gives it from the raw stream as soon as the stream holds
``post_ms`` after the pulse:

1. the pulse's sample: a pulse marker's, or the time this protocol's trigger was sent, moved
   to the artifact's onset in the data when one is seen within ``tolerance_ms`` (the first
   sample whose median absolute change over the EEG channels exceeds half the largest one,
   which must be at least 20 times the median change of the search window);
2. the EEG from ``pre_ms`` before to ``post_ms`` after it, the pulse window ``cut_ms``
   replaced by a straight line between the 1-ms means on either side (as the pipeline's
   linear interpolation does), average referenced over the EEG channels, the mean of
   ``baseline_ms`` subtracted;
3. the global field power and, with a spatial filter (the protocol's ``early_tep_channels``,
   else its ``channels``), the ROI signal.

What it does **not** do: decay and muscle artifacts are not removed and nothing is filtered
(both need data after the epoch, or many pulses). Where a recording has a decay artifact the
early TEP here carries it; the full pipeline's value for the same pulse follows in
``on_pulse`` (``row["early_tep_ptp_uv"]``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tmseeg.dsp.spatial import SpatialFilter
from tmseeg.stream.block import Block, StreamMeta
from tmseeg.stream.ringbuffer import RingBuffer

__all__ = ["EarlyTEPCutter", "EarlyTEPData"]

#: an onset is the artifact's only when the largest change is this many times the typical one
_ONSET_RATIO = 20.0


@dataclass
class EarlyTEPData:
    """One pulse's early TEP from the fast path (see the module description).

    Attributes
    ----------
    sample : int
        The pulse's sample (after the onset search).
    requested_sample : int
        The marker's or the trigger's sample it was found from.
    source : str
        ``"marker"`` or ``"trigger"`` (this protocol's own accepted request).
    onset_found : bool
        Whether the artifact's onset was seen (else ``sample == requested_sample``).
    times_ms : ndarray, shape (n_times,)
        Time from the pulse.
    ch_names : tuple of str
        The EEG channels of ``data_uv``.
    data_uv : ndarray, shape (n_eeg, n_times)
        Interpolated, average referenced, baseline corrected.
    gmfp_uv : ndarray, shape (n_times,)
        Global mean field power (SD over the channels).
    roi_uv : ndarray or None, shape (n_times,)
        The spatially filtered signal (None without a spatial filter).
    window_ms : tuple of float
        The early-TEP window, (15, 60).
    ready_s : float
        When the block that completed the data arrived (the engine's clock).
    """

    sample: int
    requested_sample: int
    source: str
    onset_found: bool
    times_ms: np.ndarray
    ch_names: tuple[str, ...]
    data_uv: np.ndarray
    gmfp_uv: np.ndarray
    roi_uv: np.ndarray | None
    window_ms: tuple[float, float] = (15.0, 60.0)
    ready_s: float = math.nan

    def signal_uv(self) -> np.ndarray:
        """The ROI signal, else the GMFP."""
        return self.roi_uv if self.roi_uv is not None else self.gmfp_uv

    def ptp_uv(self, window_ms: tuple[float, float] | None = None) -> float:
        """Peak-to-peak of :meth:`signal_uv` in ``window_ms`` (default the early window)."""
        lo, hi = window_ms or self.window_ms
        x = self.signal_uv()[(self.times_ms >= lo) & (self.times_ms <= hi)]
        return float(np.ptp(x)) if x.size else math.nan

    def mean_uv(self, window_ms: tuple[float, float]) -> float:
        """Mean of :meth:`signal_uv` in ``window_ms`` (e.g. around P30)."""
        lo, hi = window_ms
        x = self.signal_uv()[(self.times_ms >= lo) & (self.times_ms <= hi)]
        return float(x.mean()) if x.size else math.nan


@dataclass
class _Pending:
    sample: int
    source: str
    ready_at: int  # newest sample the cut needs


class EarlyTEPCutter:
    """Cuts each pulse's early TEP out of the raw stream (see the module description).

    Parameters
    ----------
    meta : StreamMeta
    pre_ms, post_ms : float
        The cut, from the pulse (default -100 .. 60 ms).
    cut_ms : tuple of float
        The pulse window replaced by a line (default -2 .. 10 ms).
    baseline_ms : tuple of float
        Subtracted mean (default -100 .. -5 ms; must end before ``cut_ms`` starts).
    tolerance_ms : float
        How far from the marker or trigger the artifact's onset is looked for (default 20).
    spatial : SpatialFilter, optional
        The ROI signal.
    """

    def __init__(self, meta: StreamMeta, pre_ms: float = 100.0, post_ms: float = 60.0,
                 cut_ms: tuple[float, float] = (-2.0, 10.0),
                 baseline_ms: tuple[float, float] = (-100.0, -5.0),
                 tolerance_ms: float = 20.0, spatial: SpatialFilter | None = None) -> None:
        if not (0 < post_ms and 0 < pre_ms and cut_ms[0] < 0 <= cut_ms[1] < post_ms
                and -pre_ms <= baseline_ms[0] < baseline_ms[1] <= cut_ms[0]):
            raise ValueError(f"early TEP: need -pre_ms <= baseline < cut_ms start < 0 <= cut_ms "
                             f"end < post_ms (pre_ms={pre_ms}, post_ms={post_ms}, "
                             f"cut_ms={cut_ms}, baseline_ms={baseline_ms})")
        self.meta = meta
        self.rows = meta.picks("eeg")
        if self.rows.size < 3:
            raise ValueError(f"early TEP: {self.rows.size} EEG channel(s) in {meta.name!r}; the "
                             "average reference needs at least 3")
        self.ch_names = tuple(meta.ch_names[i] for i in self.rows)
        fs = meta.sfreq
        n = lambda ms: int(round(ms * fs / 1000.0))  # noqa: E731
        self.n_pre, self.n_post, self.n_tol = n(pre_ms), n(post_ms), max(1, n(tolerance_ms))
        self.cut = (n(cut_ms[0]), n(cut_ms[1]))
        self.base = (n(baseline_ms[0]), n(baseline_ms[1]))
        self.n_edge = max(1, n(1.0))
        self.spatial = spatial
        self.times_ms = np.arange(-self.n_pre, self.n_post + 1) * (1000.0 / fs)
        # raw EEG kept: what the longest cut needs, twice over (blocks arrive in any size)
        self.n_keep = 2 * (self.n_pre + self.n_post + 2 * self.n_tol + self.n_edge + 1)
        self._ring: RingBuffer | None = None
        self._origin = 0  # absolute sample of the ring's sample 0 (the first after a reset)
        self._pending: list[_Pending] = []
        self.n_lost = 0  # pulses whose data a gap (or a late arrival) took

    # -- input -----------------------------------------------------------------------------
    def add_pulse(self, sample: int, source: str) -> None:
        """A pulse marker's sample, or the sample a trigger of this protocol was sent at; one
        within the tolerance of a pulse already waiting is the same pulse (a marker wins)."""
        for p in self._pending:
            if abs(p.sample - sample) <= self.n_tol:
                if source == "marker" and p.source != "marker":
                    p.sample, p.source = int(sample), source
                    p.ready_at = int(sample) + self.n_tol + self.n_post
                return
        self._pending.append(_Pending(int(sample), source,
                                      int(sample) + self.n_tol + self.n_post))

    def reset(self) -> None:
        """A gap in the stream: the data held and the pulses waiting on it are gone."""
        self.n_lost += len(self._pending)
        self._pending = []
        self._ring = None

    def process(self, block: Block, ready_s: float = math.nan) -> list[EarlyTEPData]:
        """Take a raw block (all channels); the early TEPs its data completed."""
        if not block.n_samples:
            return []
        if self._ring is not None and \
                block.first_sample != self._origin + self._ring.n_written:
            self.reset()  # samples missing: never cut across them
        if self._ring is None:
            self._ring = RingBuffer(self.rows.size, self.n_keep)
            self._origin = block.first_sample
        self._ring.write(block.data[self.rows])
        newest = block.stop_sample - 1
        out, waiting = [], []
        for p in self._pending:
            if newest < p.ready_at:
                waiting.append(p)
                continue
            early = self._cut(p, ready_s)
            if early is None:
                self.n_lost += 1
            else:
                out.append(early)
        self._pending = waiting
        return out

    # -- the cut -----------------------------------------------------------------------------
    def _view(self, a: int, b: int) -> np.ndarray | None:
        """Absolute samples a..b-1 of the held EEG (a copy), or None when not all are held."""
        ring = self._ring
        if ring is None or a - self._origin < ring.first_available \
                or b - self._origin > ring.n_written:
            return None
        return ring.read(a - self._origin, b - self._origin)

    def onset(self, requested: int) -> tuple[int, bool]:
        """The artifact's first sample within the tolerance of ``requested``, and whether one
        was seen (else ``requested``)."""
        x = self._view(requested - self.n_tol - 1, requested + self.n_tol + 1)
        if x is None:
            return requested, False
        change = np.median(np.abs(np.diff(x, axis=1)), axis=0)
        big = float(change.max())
        typical = float(np.median(change))
        if not np.isfinite(big) or big <= _ONSET_RATIO * max(typical, 1e-12):
            return requested, False
        first = int(np.flatnonzero(change > 0.5 * big)[0])
        # change[j] lies between samples j and j + 1 of the view: the artifact starts at j + 1
        return requested - self.n_tol - 1 + first + 1, True

    def _cut(self, p: _Pending, ready_s: float) -> EarlyTEPData | None:
        sample, found = self.onset(p.sample)
        x = self._view(sample - self.n_pre, sample + self.n_post + 1)
        if x is None:
            return None
        zero = self.n_pre
        c0, c1 = zero + self.cut[0], zero + self.cut[1]
        left = x[:, max(c0 - self.n_edge, 0):c0].mean(axis=1)
        right = x[:, c1 + 1:c1 + 1 + self.n_edge].mean(axis=1)
        w = np.linspace(0.0, 1.0, c1 - c0 + 3)[1:-1]
        x[:, c0:c1 + 1] = left[:, None] + (right - left)[:, None] * w[None, :]
        x -= x.mean(axis=0, keepdims=True)
        x -= x[:, zero + self.base[0]:zero + self.base[1]].mean(axis=1, keepdims=True)
        roi = None
        if self.spatial is not None:
            full = np.zeros((self.meta.n_channels, x.shape[1]))
            full[self.rows] = x
            roi = np.asarray(self.spatial.apply(full), float).reshape(-1)
        return EarlyTEPData(sample=sample, requested_sample=p.sample, source=p.source,
                            onset_found=found, times_ms=self.times_ms.copy(),
                            ch_names=self.ch_names, data_uv=x, gmfp_uv=x.std(axis=0),
                            roi_uv=roi, ready_s=ready_s)
