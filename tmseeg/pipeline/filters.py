"""Causal (online) and zero-phase (offline) IIR filters as pipeline stages.

Where the filters sit
---------------------
The default chain is::

    pulse detection -> pulse-window interpolation -> decay removal -> BadChannelDetector
        -> filters (NotchFilter, BandpassFilter) -> BadChannelInterpolation -> AverageReference

so a filter only ever sees data whose pulse window has already been replaced by the
interpolator. An IIR filter fed a raw TMS pulse (millivolts for a few ms) rings for hundreds of
milliseconds and smears the artifact into the TEP; interpolating first is the real protection.

As a second guard, a filter can be told the cut window (``protect_window_ms=(-2, 10)``): for
every pulse event it sees, the filter's *input* inside that window is replaced before it enters
the filter state, so whatever is left of the artifact there never reaches the state:

* causal mode: sample-and-hold of the last input sample before the window (no look-ahead is
  needed, so no extra latency). The output inside the window is the filter's response to the
  held value; the original samples there are not passed through.
* zero-phase mode: a straight line between the samples just before and just after the window
  (the whole recording is available).

A pulse event that arrives *late* (its sample is in a block that was already filtered) cannot be
protected retroactively: only the part of its window that is still to come is held.

NaN gaps
--------
Samples missing from the stream arrive as NaN. A NaN entering ``sosfilt`` would poison the
state forever, so each channel is filtered run by run over its finite samples: output is NaN
where input is NaN, and the first finite sample after a gap re-initialises that channel's state
to the steady state for that sample (the same start-up used on the very first sample), so the
filter restarts without a step transient. A channel that turns NaN mid-session (dead
electrode) therefore recovers by itself if it comes back.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy import signal

from tmseeg._ext.sosfilt import sosfilt_channels
from tmseeg.pipeline.base import empty_block_like, concat_blocks
from tmseeg.pipeline.channels import resolve_picks
from tmseeg.stream.block import Block
from tmseeg.utils import map_rows

log = logging.getLogger(__name__)

__all__ = [
    "SosFilter",
    "BandpassFilter",
    "NotchFilter",
    "design_bandpass",
    "design_notch",
    "sosfilt_nan",
    "sosfiltfilt_nan",
    "EpochFilter",
]

MODES = ("causal", "zero_phase")


def design_bandpass(
    sfreq_hz: float, l_freq_hz: float | None, h_freq_hz: float | None, order: int = 4
) -> np.ndarray:
    """Butterworth band-pass (or high-/low-pass) design as second-order sections.

    Parameters
    ----------
    sfreq_hz : float
        Sampling rate.
    l_freq_hz, h_freq_hz : float or None
        Lower and upper edges (-3 dB); ``None`` for a high-pass only (``h_freq_hz=None``) or a
        low-pass only (``l_freq_hz=None``).
    order : int
        Butterworth order of each edge (a band-pass of order 4 has 8 poles).

    Returns
    -------
    sos : ndarray, shape (n_sections, 6)
    """
    nyq = sfreq_hz / 2.0
    if l_freq_hz is None and h_freq_hz is None:
        raise ValueError("BandpassFilter needs l_freq_hz, h_freq_hz or both; both are None.")
    if l_freq_hz is not None and not 0 < l_freq_hz < nyq:
        raise ValueError(f"l_freq_hz={l_freq_hz} must lie between 0 and Nyquist ({nyq} Hz).")
    if h_freq_hz is not None and not 0 < h_freq_hz < nyq:
        raise ValueError(
            f"h_freq_hz={h_freq_hz} must lie between 0 and Nyquist ({nyq} Hz) at "
            f"{sfreq_hz} Hz sampling; lower it or pass h_freq_hz=None."
        )
    if l_freq_hz is not None and h_freq_hz is not None:
        if l_freq_hz >= h_freq_hz:
            raise ValueError(f"l_freq_hz={l_freq_hz} must be below h_freq_hz={h_freq_hz}.")
        return signal.butter(order, [l_freq_hz, h_freq_hz], btype="bandpass", fs=sfreq_hz,
                             output="sos")
    if l_freq_hz is not None:
        return signal.butter(order, l_freq_hz, btype="highpass", fs=sfreq_hz, output="sos")
    return signal.butter(order, h_freq_hz, btype="lowpass", fs=sfreq_hz, output="sos")


def design_notch(sfreq_hz: float, freq_hz: float, harmonics: int = 3, q: float = 30.0) -> np.ndarray:
    """Cascade of second-order IIR notches at ``freq_hz`` and its harmonics.

    Parameters
    ----------
    sfreq_hz : float
        Sampling rate.
    freq_hz : float
        Line frequency (50 or 60 Hz).
    harmonics : int
        Number of notches: ``freq_hz * k`` for ``k = 1..harmonics``; those at or above Nyquist
        are skipped.
    q : float
        Quality factor of each notch (-3 dB width = ``f / q``).

    Returns
    -------
    sos : ndarray, shape (n_sections, 6)
    """
    if harmonics < 1:
        raise ValueError(f"harmonics must be >= 1, got {harmonics}")
    if not 0 < freq_hz < sfreq_hz / 2:
        raise ValueError(f"notch freq_hz={freq_hz} must lie between 0 and Nyquist ({sfreq_hz / 2}).")
    sections = []
    for k in range(1, harmonics + 1):
        f = freq_hz * k
        if f >= sfreq_hz / 2:
            break
        b, a = signal.iirnotch(f, q, fs=sfreq_hz)
        sections.append(signal.tf2sos(b, a))
    return np.vstack(sections)


def _finite_runs(mask_finite: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive True values."""
    m = np.concatenate(([False], mask_finite, [False]))
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return list(zip(d[0::2].tolist(), d[1::2].tolist()))


def sosfilt_nan(sos: np.ndarray, data: np.ndarray) -> np.ndarray:
    """One causal pass over a whole array, restarting (steady state) after every NaN run.

    This is the offline reference of what the causal stage computes block by block.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    data : ndarray, shape (n_channels, n_samples)

    Returns
    -------
    ndarray, shape (n_channels, n_samples)
    """
    zi_ss = signal.sosfilt_zi(sos)
    out = np.full(data.shape, np.nan)
    for c in range(data.shape[0]):
        for a, b in _finite_runs(np.isfinite(data[c])):
            out[c, a:b], _ = signal.sosfilt(sos, data[c, a:b], zi=zi_ss * data[c, a])
    return out


def _sosfiltfilt_rows(sos: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``sosfiltfilt`` along the last axis, the rows split over the machine's cores (the filter
    loop runs without the interpreter lock; each row's result is the same)."""
    return map_rows(lambda rows: sosfiltfilt_channels(sos, rows), data)


def sosfiltfilt_channels(sos: np.ndarray, data: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, data, axis=-1)`` (odd extension of ``3 * n_taps``
    samples, initial states from ``sosfilt_zi``), the same to the bit, with every channel
    filtered at once by :func:`tmseeg._ext.sosfilt.sosfilt_channels` (2x faster on an epoch
    of 64 channels: scipy filters them one after another).

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    data : ndarray, shape (n_channels, n_samples)
        Finite; longer than the extension (else scipy's own, which raises as it does).
    """
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    x = np.asarray(data, dtype=np.float64)
    n_taps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    edge = 3 * n_taps
    if x.ndim != 2 or x.shape[1] <= edge or edge < 1:
        return signal.sosfiltfilt(sos, x, axis=-1)
    # odd extension at both ends, laid out (n_samples, n_channels) for the kernel
    ext = np.empty((x.shape[1] + 2 * edge, x.shape[0]))
    ext[edge:-edge] = x.T
    ext[:edge] = (2 * x[:, :1] - x[:, edge:0:-1]).T
    ext[-edge:] = (2 * x[:, -1:] - x[:, -2:-(edge + 2):-1]).T
    zi = signal.sosfilt_zi(sos)
    state = np.ascontiguousarray(zi[:, :, None] * ext[0][None, None, :])
    sosfilt_channels(sos, ext, state)
    state = np.ascontiguousarray(zi[:, :, None] * ext[-1][None, None, :])
    sosfilt_channels(sos, ext, state, True)
    return np.ascontiguousarray(ext[edge:-edge].T)


def sosfiltfilt_nan(sos: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Zero-phase (forward-backward) filtering of each finite run of each channel.

    Runs shorter than the default pad length are filtered with a shorter pad; runs of fewer
    than 2 samples are copied unchanged. NaN stays NaN.

    Parameters
    ----------
    sos : ndarray, shape (n_sections, 6)
    data : ndarray, shape (n_channels, n_samples)

    Returns
    -------
    ndarray, shape (n_channels, n_samples)
    """
    out = np.full(data.shape, np.nan)
    default_pad = 3 * (2 * len(sos) + 1)
    finite = np.isfinite(data)
    if finite.all():
        if data.shape[1] > default_pad:
            return _sosfiltfilt_rows(sos, data)
    for c in range(data.shape[0]):
        for a, b in _finite_runs(finite[c]):
            n = b - a
            if n < 2:
                out[c, a:b] = data[c, a:b]
                continue
            out[c, a:b] = signal.sosfiltfilt(sos, data[c, a:b], padlen=min(default_pad, n - 1))
    return out


class SosFilter:
    """A filter stage built from second-order sections, causal or zero-phase.

    Subclasses provide :meth:`design`. Use :class:`BandpassFilter` or :class:`NotchFilter`.

    Parameters
    ----------
    mode : {"causal", "zero_phase"}
        ``"causal"``: ``sosfilt`` with the state carried per channel across blocks; the output
        of any block split equals one ``sosfilt`` over the whole recording (started from the
        steady state of the first sample). Zero latency, but phase-distorting.
        ``"zero_phase"``: offline only. The stage holds every block it is given (returning
        empty blocks) and releases the whole recording, forward-backward filtered, at
        :meth:`flush`; pulse events are held with the data and released with it. Memory grows
        with the recording; for a whole array already in memory use :meth:`apply_array`.
    picks : str or sequence of str
        Channels to filter: a channel type (``"eeg"``, default), ``"all"``, or channel names.
        Other channels pass through untouched (EMG must keep its bandwidth for MEPs).
    protect_window_ms : (float, float) or None
        Window around each pulse event whose input is held (causal) or bridged linearly
        (zero-phase) before it enters the filter. ``None`` (default) trusts the upstream
        interpolation. See the module notes.
    """

    name = "filter"

    def __init__(
        self,
        mode: str = "causal",
        picks: str | Sequence[str] = "eeg",
        protect_window_ms: tuple[float, float] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if protect_window_ms is not None and protect_window_ms[0] >= protect_window_ms[1]:
            raise ValueError(f"protect_window_ms={protect_window_ms} must be (start, stop), start < stop")
        self.mode = mode
        self.picks = picks
        self.protect_window_ms = protect_window_ms
        self.reset()

    # -- to be provided by subclasses -------------------------------------------------------
    def design(self, sfreq_hz: float) -> np.ndarray:  # pragma: no cover - interface
        """Second-order sections for this sampling rate."""
        raise NotImplementedError

    # -- stage protocol ------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the filter state, held data and protected windows (a new stream begins)."""
        self._sos: np.ndarray | None = None
        self._zi_ss: np.ndarray | None = None
        self._zi: np.ndarray | None = None
        self._needs_init: np.ndarray | None = None
        self._rows: np.ndarray | None = None
        self._sfreq: float | None = None
        self._last_in: np.ndarray | None = None
        self._protect: list[tuple[int, int]] = []
        self._held: list[Block] = []
        self._next_sample: int | None = None

    def _setup(self, block: Block) -> None:
        if self._sos is None:
            self._sfreq = block.meta.sfreq
            self._sos = self.design(block.meta.sfreq)
            self._zi_ss = signal.sosfilt_zi(self._sos)
            self._rows = resolve_picks(block.meta, self.picks)
            n = len(self._rows)
            self._zi = np.zeros((len(self._sos), n, 2))
            self._needs_init = np.ones(n, dtype=bool)
            self._last_in = np.full(n, np.nan)
        elif block.meta.sfreq != self._sfreq:
            raise ValueError(
                f"{self.name}: sampling rate changed from {self._sfreq} to {block.meta.sfreq} Hz "
                "mid-stream; call reset() before feeding a new stream."
            )

    def _window_samples(self) -> tuple[int, int]:
        lo, hi = self.protect_window_ms  # type: ignore[misc]
        return (int(np.floor(lo * self._sfreq / 1000.0)), int(np.ceil(hi * self._sfreq / 1000.0)))

    def _note_pulses(self, block: Block) -> None:
        if self.protect_window_ms is None:
            return
        lo, hi = self._window_samples()
        for ev in block.pulses():
            iv = (ev.sample + lo, ev.sample + hi + 1)
            if iv not in self._protect:
                self._protect.append(iv)

    def process(self, block: Block) -> Block:
        """Filter the picked channels of the next block (see ``mode``)."""
        self._setup(block)
        if self._next_sample is not None and block.first_sample < self._next_sample and block.n_samples:
            raise ValueError(
                f"{self.name}: block starts at sample {block.first_sample} but samples up to "
                f"{self._next_sample} were already filtered (overlapping or repeated block)."
            )
        if block.n_samples:
            if self._next_sample is not None and block.first_sample > self._next_sample:
                # samples missing between blocks: treat like a NaN gap
                self._needs_init[:] = True
                self._last_in[:] = np.nan
            self._next_sample = block.stop_sample
        self._note_pulses(block)
        if self.mode == "zero_phase":
            self._held.append(block)
            out = empty_block_like(block, first_sample=self._held[0].first_sample)
            return out
        if block.n_samples == 0:
            return block
        data = block.data.copy()
        x = data[self._rows]
        if self._protect:
            x = self._hold_protected(x, block.first_sample)
        data[self._rows] = self._filter_causal(x)
        if len(self._rows):
            self._last_in = x[:, -1].copy()
        return block.with_data(data)

    def flush(self) -> Block | None:
        """Zero-phase mode: the whole held recording, filtered. Causal mode: nothing."""
        if self.mode != "zero_phase" or not self._held:
            return None
        held = [b for b in self._held if b.n_samples]
        events = [e for b in self._held for e in b.events]
        self._held = []
        if not held:
            return None
        whole = _concat_with_gaps(held)
        data = whole.data.copy()
        x = data[self._rows]
        if self.protect_window_ms is not None:
            x = self._bridge_protected(x, whole.first_sample)
        data[self._rows] = sosfiltfilt_nan(self._sos, x)
        out = whole.with_data(data)
        out.events = events
        return out

    # -- array helpers ----------------------------------------------------------------------
    def apply_array(self, data_uv: np.ndarray, sfreq_hz: float) -> np.ndarray:
        """Filter a whole array at once, without touching this stage's streaming state.

        ``mode="zero_phase"`` gives forward-backward filtering (NaN runs filtered separately);
        ``mode="causal"`` gives exactly what the stage produces block by block. All rows are
        filtered (``picks`` applies to blocks only). No pulse protection is applied.

        Parameters
        ----------
        data_uv : ndarray, shape (n_channels, n_samples)
        sfreq_hz : float

        Returns
        -------
        ndarray, shape (n_channels, n_samples)
        """
        sos = self.design(sfreq_hz)
        data_uv = np.asarray(data_uv, dtype=np.float64)
        if self.mode == "zero_phase":
            return sosfiltfilt_nan(sos, data_uv)
        return sosfilt_nan(sos, data_uv)

    # -- internals --------------------------------------------------------------------------
    def _hold_protected(self, x: np.ndarray, first: int) -> np.ndarray:
        stop = first + x.shape[1]
        x = x.copy()
        keep = []
        for a, b in sorted(self._protect):
            if b <= first:
                continue  # entirely in the past (late event): nothing left to protect
            keep.append((a, b))
            if a >= stop:
                continue
            s, e = max(a, first) - first, min(b, stop) - first
            hold = x[:, s - 1] if s > 0 else self._last_in
            x[:, s:e] = hold[:, None]
        self._protect = [iv for iv in keep if iv[1] > stop]
        return x

    def _bridge_protected(self, x: np.ndarray, first: int) -> np.ndarray:
        x = x.copy()
        n = x.shape[1]
        for a, b in sorted(self._protect):
            s, e = max(a - first, 0), min(b - first, n)
            if e <= s:
                continue
            left = x[:, s - 1] if s > 0 else x[:, e] if e < n else None
            right = x[:, e] if e < n else left
            if left is None:
                continue
            t = np.arange(1, e - s + 1) / (e - s + 1)
            x[:, s:e] = left[:, None] + (right - left)[:, None] * t[None, :]
        self._protect = []
        return x

    def _filter_causal(self, x: np.ndarray) -> np.ndarray:
        sos, zi, zi_ss = self._sos, self._zi, self._zi_ss
        if x.shape[0] == 0:
            return x
        finite = np.isfinite(x)
        bad_rows = ~finite.all(axis=1)
        init = self._needs_init & ~bad_rows
        if init.any():
            zi[:, init, :] = zi_ss[:, None, :] * x[init, 0][None, :, None]
            self._needs_init[init] = False
        y = np.empty_like(x)
        good = ~bad_rows
        if good.all():
            y, self._zi = signal.sosfilt(sos, x, axis=-1, zi=zi)
            return y
        if good.any():
            gi = np.flatnonzero(good)
            y[gi], zi[:, gi, :] = signal.sosfilt(sos, x[gi], axis=-1, zi=zi[:, gi, :])
        for c in np.flatnonzero(bad_rows):
            y[c] = np.nan
            runs = _finite_runs(finite[c])
            for a, b in runs:
                if a > 0 or self._needs_init[c]:
                    zi[:, c, :] = zi_ss * x[c, a]
                y[c, a:b], zi[:, c, :] = signal.sosfilt(sos, x[c, a:b], zi=zi[:, c, :])
                self._needs_init[c] = False
            # the next block restarts this channel unless the block ended on a finite sample
            self._needs_init[c] = not (runs and runs[-1][1] == x.shape[1])
        return y


def _concat_with_gaps(blocks: list[Block]) -> Block:
    """Concatenate blocks, filling missing samples between them with NaN."""
    parts = []
    for prev, cur in zip([None] + blocks[:-1], blocks):
        if prev is not None and cur.first_sample > prev.stop_sample:
            n = cur.first_sample - prev.stop_sample
            parts.append(Block(
                data=np.full((cur.meta.n_channels, n), np.nan),
                first_sample=prev.stop_sample,
                timestamps=np.full(n, np.nan),
                meta=cur.meta,
            ))
        parts.append(cur)
    return concat_blocks(parts)


class BandpassFilter(SosFilter):
    """Butterworth band-pass (or high-/low-pass) filter stage.

    Parameters
    ----------
    l_freq_hz : float or None
        High-pass edge (-3 dB), default 1 Hz. ``None`` for a low-pass only.
    h_freq_hz : float or None
        Low-pass edge (-3 dB), default 100 Hz. ``None`` for a high-pass only.
    order : int
        Butterworth order per edge (default 4; each edge rolls off at 24 dB/octave in causal
        mode, twice that with zero-phase).
    mode : {"causal", "zero_phase"}
        See :class:`SosFilter`.
    picks : str or sequence of str
        Channels to filter (default ``"eeg"``).
    protect_window_ms : (float, float) or None
        Pulse window kept out of the filter state, e.g. ``(-2, 10)``; see the module notes.

    Examples
    --------
    >>> bp = BandpassFilter(1.0, 100.0)            # doctest: +SKIP
    >>> out = bp.process(block)                     # doctest: +SKIP
    """

    name = "bandpass"

    def __init__(
        self,
        l_freq_hz: float | None = 1.0,
        h_freq_hz: float | None = 100.0,
        order: int = 4,
        mode: str = "causal",
        picks: str | Sequence[str] = "eeg",
        protect_window_ms: tuple[float, float] | None = None,
    ) -> None:
        self.l_freq_hz = l_freq_hz
        self.h_freq_hz = h_freq_hz
        self.order = int(order)
        if self.order < 1:
            raise ValueError(f"order must be >= 1, got {order}")
        super().__init__(mode=mode, picks=picks, protect_window_ms=protect_window_ms)

    def design(self, sfreq_hz: float) -> np.ndarray:
        """Second-order sections for ``sfreq_hz`` (see :func:`design_bandpass`)."""
        return design_bandpass(sfreq_hz, self.l_freq_hz, self.h_freq_hz, self.order)


class NotchFilter(SosFilter):
    """Line-noise notch at ``freq_hz`` and its harmonics.

    Parameters
    ----------
    freq_hz : float
        Line frequency (default 50 Hz).
    harmonics : int
        Number of notches (``freq_hz``, ``2 freq_hz``, ...; default 3), capped below Nyquist.
    q : float
        Quality factor (default 30: a 50 Hz notch is ~1.7 Hz wide at -3 dB).
    mode, picks, protect_window_ms
        See :class:`SosFilter`.
    """

    name = "notch"

    def __init__(
        self,
        freq_hz: float = 50.0,
        harmonics: int = 3,
        q: float = 30.0,
        mode: str = "causal",
        picks: str | Sequence[str] = "eeg",
        protect_window_ms: tuple[float, float] | None = None,
    ) -> None:
        self.freq_hz = float(freq_hz)
        self.harmonics = int(harmonics)
        self.q = float(q)
        super().__init__(mode=mode, picks=picks, protect_window_ms=protect_window_ms)

    def design(self, sfreq_hz: float) -> np.ndarray:
        """Second-order sections for ``sfreq_hz`` (see :func:`design_notch`)."""
        return design_notch(sfreq_hz, self.freq_hz, self.harmonics, self.q)


class EpochFilter:
    """Zero-phase band-pass and notch applied to each (padded) epoch: the TEP path.

    A causal IIR filter delays and reshapes a TEP (a 4th-order 80 Hz low-pass alone delays it
    by ~5 ms; a 1 Hz high-pass shifts N100/P180 by several ms), so TEP metrics are computed
    on epochs filtered forward and backward instead. Because an epoch is complete when it is
    emitted, this works live exactly as offline: same numbers, at the price of the padding's
    latency. The :class:`~tmseeg.pipeline.epochs.Epocher` cuts ``pad_ms`` more data before and
    ``pad_after_ms`` after, calls the filter, and crops, so the filter's edge transients fall in
    the padding.

    Parameters
    ----------
    l_freq_hz, h_freq_hz : float or None
        Band edges (default 1 and 100 Hz, as TESA); None drops that edge. A low-pass edge at
        or above 0.9 x the Nyquist frequency of the data is dropped with a warning (the
        sampling rate already limits the band).
    order : int
        Butterworth order per edge (default 4; doubled by the forward-backward pass).
    notch_hz : float or None
        Line frequency (50 Hz default; 60 Hz in the Americas; None or 0 = no notch).
    notch_harmonics : int
        Notches at ``notch_hz * k``, ``k = 1..notch_harmonics``.
    pad_ms : float
        Data added before the epoch before filtering (default 500 ms), and after it unless
        ``pad_after_ms`` is given.
    pad_after_ms : float, optional
        Data added after the epoch: live, the epoch goes out this much after its end (the data
        before it are there already).
    """

    def __init__(self, l_freq_hz: float | None = 1.0, h_freq_hz: float | None = 100.0,
                 order: int = 4, notch_hz: float | None = 50.0, notch_harmonics: int = 2,
                 pad_ms: float = 500.0, pad_after_ms: float | None = None) -> None:
        if pad_after_ms is None:
            pad_after_ms = pad_ms
        if pad_ms < 0 or pad_after_ms < 0:
            raise ValueError(f"pad_ms and pad_after_ms must be >= 0, got {pad_ms}, "
                             f"{pad_after_ms}")
        self.pad_after_ms = float(pad_after_ms)
        self.l_freq_hz = l_freq_hz or None
        self.h_freq_hz = h_freq_hz or None
        self.order = int(order)
        self.notch_hz = notch_hz or None
        self.notch_harmonics = int(notch_harmonics)
        self.pad_ms = float(pad_ms)
        self._sos: dict[float, np.ndarray | None] = {}

    def sos(self, sfreq_hz: float) -> np.ndarray | None:
        """The cascaded sections at a sampling rate (None: nothing to do)."""
        if sfreq_hz not in self._sos:
            parts = []
            h_freq = self.h_freq_hz
            if h_freq and h_freq >= 0.45 * sfreq_hz:
                log.warning("epoch filter: low-pass %g Hz is at or above 0.9 x Nyquist at %g Hz "
                            "sampling; no low-pass (set [filter] h_freq_hz lower to keep one)",
                            h_freq, sfreq_hz)
                h_freq = None
            if self.l_freq_hz or h_freq:
                parts.append(design_bandpass(sfreq_hz, self.l_freq_hz, h_freq, self.order))
            if self.notch_hz:
                parts.append(design_notch(sfreq_hz, self.notch_hz, self.notch_harmonics))
            self._sos[sfreq_hz] = np.vstack(parts) if parts else None
        return self._sos[sfreq_hz]

    def __call__(self, data_uv: np.ndarray, sfreq_hz: float) -> np.ndarray:
        """Filter an epoch ``(n_channels, n_times)``; NaN runs are left as NaN."""
        sos = self.sos(sfreq_hz)
        return data_uv if sos is None else sosfiltfilt_nan(sos, data_uv)
