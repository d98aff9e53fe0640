"""Cut-and-interpolate: the TMS pulse artifact replaced by a polynomial across its window.

:class:`PulseInterpolation` replaces the samples in a window around each pulse (default
-2 .. +10 ms) by a polynomial fitted on a little clean data on either side of the window — the
"remove data and interpolate" step of TMS-EEG pipelines (TESA's ``tesa_removedata`` +
``tesa_interpdata``, reimplemented here from their description). It runs right after pulse
detection, before decay removal (:mod:`tmseeg.pipeline.decay`, which re-interpolates the window
with the same rules after its subtraction).

On a live stream it holds samples back until the end of the window plus the fit stretch has
arrived (:class:`HoldBuffer`), then releases them: given the same data and pulses the live
output equals the whole-file output bit for bit, whatever the block sizes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tmseeg._ext.interp import interp_span
from tmseeg.pipeline.base import empty_block_like, ms_to_samples
from tmseeg.pipeline.channels import resolve_picks
from tmseeg.stream.block import EVENT_PULSE, Block, Event, StreamMeta

log = logging.getLogger(__name__)

__all__ = ["PulseInterpolation", "RechargeInterpolation", "provided_window",
           "interpolate_pulses", "plan_spans", "Span", "HoldBuffer"]


_METHOD_ORDER = {"linear": 1, "cubic": 3}
INTERP_METHODS = tuple(_METHOD_ORDER)  # the fills interp_params knows


def resolve_rows(meta: StreamMeta, channels: str | Sequence[str] | None) -> np.ndarray:
    """Rows a stage works on: ``"eeg"`` (a channel type), ``None`` (all) or a list of names."""
    rows = resolve_picks(meta, "all" if channels is None else channels)
    if rows.size == 0:
        log.warning("stream %r has no %r channels: nothing to clean", meta.name, channels)
    return rows


@dataclass(frozen=True)
class Span:
    """One interpolated span: samples ``[start, stop)`` replaced, fitted on ``n_left`` samples
    before and ``n_right`` after, with a polynomial of degree ``order`` (absolute indices)."""

    start: int
    stop: int
    n_left: int
    n_right: int
    order: int


def _merge_windows(windows: list[tuple[int, int]], n_fit: int) -> list[tuple[int, int]]:
    """Sort half-open windows and merge those that overlap or leave fewer than ``n_fit`` clean
    samples between them (too few to anchor a fit: the two become one span)."""
    merged: list[list[int]] = []
    for a, b in sorted(windows):
        if merged and a - merged[-1][1] < n_fit:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _finish_span(a: int, b: int, lo: int, hi: int, n_fit: int, order: int) -> Span | None:
    """Fit stretches of a merged span, clipped at the data edges ``[lo, hi)``."""
    a = max(a, lo)
    b = min(b, hi)
    if b <= a:
        return None
    n_left = min(n_fit, a - lo)
    n_right = min(n_fit, hi - b)
    if n_left + n_right == 0:
        return None
    if n_left == 0 or n_right == 0:
        order = 0  # one-sided (at the data edge): hold the mean level, never extrapolate a cubic
    return Span(a, b, n_left, n_right, min(order, n_left + n_right - 1))


def plan_spans(
    pulse_samples: Sequence[int],
    w0: int,
    w1: int,
    n_fit: int,
    order: int,
    lo: int,
    hi: int,
) -> list[Span]:
    """Turn pulse samples into the spans to interpolate (offline: all pulses known).

    Each pulse ``p`` cuts ``[p + w0, p + w1]`` (inclusive). Windows that overlap, or whose clean
    gap is shorter than ``n_fit``, are merged into one span, so a fit never uses samples inside
    another pulse's window. Fit stretches are clipped at the data edges ``[lo, hi)``; a span
    with data on one side only (at an edge) is filled with the mean of that side (degree 0).

    Parameters
    ----------
    pulse_samples : sequence of int
        Absolute pulse samples.
    w0, w1 : int
        Window bounds in samples relative to the pulse (inclusive).
    n_fit : int
        Fit samples wanted on each side.
    order : int
        Polynomial degree (1 linear, 3 cubic).
    lo, hi : int
        Absolute sample range of the data (``hi`` exclusive).

    Returns
    -------
    list of Span
    """
    windows = [(int(p) + w0, int(p) + w1 + 1) for p in sorted(set(int(p) for p in pulse_samples))]
    spans = []
    for a, b in _merge_windows(windows, n_fit):
        span = _finish_span(a, b, lo, hi, n_fit, order)
        if span is not None:
            spans.append(span)
    return spans


def apply_span(buf: np.ndarray, buf_start: int, rows: np.ndarray, span: Span) -> None:
    interp_span(buf, rows, span.start - buf_start, span.stop - buf_start, span.n_left,
                span.n_right, span.order)


def provided_window(source) -> tuple[float, float]:
    """The cut window a :class:`~tmseeg.pipeline.cutwindow.CutWindow` (or any object with
    ``window_ms``/``min_window_ms``) gives: the decided one, else its minimum (no pulse has
    passed it yet, so nothing is cut with it)."""
    win = source.window_ms if source.window_ms is not None else source.min_window_ms
    return (float(win[0]), float(win[1]))


def interp_params(window_ms: tuple[float, float], method: str, fit_ms: float,
                   sfreq: float) -> tuple[int, int, int, int]:
    if method not in _METHOD_ORDER:
        raise ValueError(f"method must be 'linear' or 'cubic', got {method!r}")
    w0 = ms_to_samples(window_ms[0], sfreq)
    w1 = ms_to_samples(window_ms[1], sfreq)
    if w1 < w0:
        raise ValueError(f"window_ms {window_ms}: the end lies before the start")
    order = _METHOD_ORDER[method]
    if method == "linear":
        n_fit = 1
    else:
        if fit_ms <= 0:
            raise ValueError(f"fit_ms must be positive, got {fit_ms}")
        n_fit = max(2, ms_to_samples(fit_ms, sfreq))
    return w0, w1, n_fit, order


def interpolate_pulses(
    data_uv: np.ndarray,
    pulse_samples: Sequence[int],
    sfreq: float,
    window_ms: tuple[float, float] = (-2.0, 10.0),
    method: str = "cubic",
    fit_ms: float = 1.0,
    rows: Sequence[int] | None = None,
    first_sample: int = 0,
) -> np.ndarray:
    """Whole-recording pulse-window interpolation (what :class:`PulseInterpolation` does live).

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples)
        The recording (not modified).
    pulse_samples : sequence of int
        Absolute pulse samples.
    sfreq : float
        Sampling rate in Hz.
    window_ms, method, fit_ms
        As in :class:`PulseInterpolation`.
    rows : sequence of int, optional
        Rows to interpolate (default all).
    first_sample : int
        Absolute index of ``data_uv[:, 0]``.

    Returns
    -------
    ndarray
        A cleaned copy.
    """
    w0, w1, n_fit, order = interp_params(window_ms, method, fit_ms, sfreq)
    out = np.array(data_uv, dtype=np.float64, order="C", copy=True)
    rows_arr = (np.arange(out.shape[0], dtype=np.intp) if rows is None
                else np.asarray(rows, dtype=np.intp))
    for span in plan_spans(pulse_samples, w0, w1, n_fit, order, first_sample,
                           first_sample + out.shape[1]):
        apply_span(out, first_sample, rows_arr, span)
    return out


class HoldBuffer:
    """Samples held back by a stage: data, timestamps and events from ``start`` on.

    The samples live in a preallocated array; appending copies only the new block, and a
    released block is a view of the array (no copy): when the array's end is reached the live
    part moves to a new array, so nothing ever writes to a column once it was released, and
    holding back 800 ms of 128 channels at 20 kHz costs O(block) per block, not O(held).
    (The release copy was ~3 % of real time at 128 ch / 20 kHz.)
    """

    def __init__(self) -> None:
        self.arr: np.ndarray | None = None  # (n_channels, capacity)
        self.tarr = np.empty(0)
        self.off = 0  # column of ``start`` in ``arr``
        self.n = 0  # held samples
        self.start = 0
        self.events: list[Event] = []
        self.meta: StreamMeta | None = None
        self.received_s = float("nan")

    @property
    def data(self) -> np.ndarray | None:
        """The held samples (a view: writing to it changes the held data)."""
        return None if self.arr is None else self.arr[:, self.off:self.off + self.n]

    @property
    def arr_start(self) -> int:
        """Absolute sample index of ``arr[:, 0]``."""
        return self.start - self.off

    @property
    def stop(self) -> int:
        return self.start + self.n

    def append(self, block: Block) -> None:
        k = block.n_samples
        if self.arr is None:
            cap = max(1024, 2 * k)
            self.arr = np.empty((block.meta.n_channels, cap))
            self.tarr = np.empty(cap)
            self.off = self.n = 0
            self.start = block.first_sample
            self.meta = block.meta
        cap = self.arr.shape[1]
        if self.off + self.n + k > cap:
            # the live part moves to a new array (released blocks are views of the old one:
            # it is never written again, and freed when they are gone), twice what is held:
            # after a backlog's large joins it shrinks back
            need = self.n + k
            live = slice(self.off, self.off + self.n)
            new_cap = max(2 * need, 1024)
            arr = np.empty((self.arr.shape[0], new_cap))
            tarr = np.empty(new_cap)
            arr[:, :self.n] = self.arr[:, live]
            tarr[:self.n] = self.tarr[live]
            self.arr, self.tarr = arr, tarr
            self.off = 0
        end = self.off + self.n
        self.arr[:, end:end + k] = block.data
        self.tarr[end:end + k] = block.timestamps
        self.n += k
        self.events.extend(block.events)
        self.received_s = block.received_s

    def release(self, upto: int) -> Block:
        """Cut off and return samples ``[start, upto)`` with the events before ``upto``."""
        assert self.arr is not None and self.meta is not None
        upto = max(self.start, min(upto, self.stop))
        k = upto - self.start
        out_events = [e for e in self.events if e.sample < upto]
        self.events = [e for e in self.events if e.sample >= upto]
        block = Block(  # views: these columns are never written again (see append)
            data=self.arr[:, self.off:self.off + k],
            first_sample=self.start,
            timestamps=self.tarr[self.off:self.off + k],
            meta=self.meta,
            events=out_events,
            received_s=self.received_s,
        )
        self.off += k
        self.n -= k
        self.start = upto
        return block


class PulseInterpolation:
    """Replace a window around each TMS pulse by interpolation (live or offline).

    For each pulse event, samples ``[pulse + window_ms[0], pulse + window_ms[1]]`` are replaced,
    for the chosen channels, by a polynomial fitted on clean data on either side:

    * ``"cubic"``: a cubic fitted by least squares on ``fit_ms`` of data before the window and
      ``fit_ms`` after it (at least 2 samples each side), evaluated inside the window.
    * ``"linear"``: the straight line between the last sample before and the first sample after
      the window (``fit_ms`` is not used).

    Pulses close together (paired pulses, 50 Hz theta bursts, 10 Hz trains) are handled: windows
    that overlap, or leave fewer fit samples between them than one fit stretch, are merged into
    one span, so no fit ever uses data inside another pulse's window.

    Live, the stage holds samples back until a window and its right fit stretch are complete and
    no later pulse can still touch them: normally ``fit_ms - window_ms[0] + max_delay_ms``, around
    a pulse until ``window_ms[1] + fit_ms`` after it. The output for any block sizes equals
    :func:`interpolate_pulses` on the whole recording exactly.

    Parameters
    ----------
    window_ms : (float, float)
        Cut window relative to the pulse, in ms (both ends included).
    method : {"cubic", "linear"}
        Interpolation method.
    fit_ms : float
        Length of the clean stretch used on each side for the cubic fit, in ms (default 1 ms;
        longer stretches smooth more but reach further into the pre-pulse EEG and the
        post-window decay).
    channels : "eeg" | list of str | None
        Channel type, channel names, or None for all channels.
    max_delay_ms : float
        How late a pulse event may arrive (relative to its own sample) and still be cut exactly,
        e.g. a marker that lags the pulse. Adds to the hold-back. Later pulses are skipped with a
        warning (counted in :attr:`n_late`).
    window_from : object with ``window_ms`` and ``min_window_ms``, optional
        Usually the session's :class:`~tmseeg.pipeline.cutwindow.CutWindow`: the window measured
        on the first pulses replaces ``window_ms`` once it is decided (it is decided before
        any pulse reaches this stage).

    Attributes
    ----------
    n_spans : int
        Spans interpolated so far.
    n_late : int
        Pulses that arrived too late to be cut.
    """

    name = "interp"

    def __init__(
        self,
        window_ms: tuple[float, float] = (-2.0, 10.0),
        method: str = "cubic",
        fit_ms: float = 1.0,
        channels: str | Sequence[str] | None = "eeg",
        max_delay_ms: float = 0.0,
        window_from=None,
    ) -> None:
        if method not in _METHOD_ORDER:
            raise ValueError(f"method must be 'linear' or 'cubic', got {method!r}")
        if max_delay_ms < 0:
            raise ValueError(f"max_delay_ms must be >= 0, got {max_delay_ms}")
        self.window_from = window_from
        self.window_ms = (float(window_ms[0]), float(window_ms[1]))
        self.method = method
        self.fit_ms = float(fit_ms)
        self.channels = channels
        self.max_delay_ms = float(max_delay_ms)
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        self._buf = HoldBuffer()
        self._pending: set[int] = set()
        self._rows: np.ndarray | None = None
        self._params: tuple[int, int, int, int] | None = None
        self._delay = 0
        self._lo: int | None = None
        self._done_stop: int | None = None  # end of the last interpolated span
        self.n_spans = 0
        self.n_late = 0

    # -- helpers ---------------------------------------------------------------------------
    def _setup(self, block: Block) -> None:
        self._rows = resolve_rows(block.meta, self.channels)
        self._fs = block.meta.sfreq
        self._sync_window()
        self._delay = ms_to_samples(self.max_delay_ms, block.meta.sfreq)
        self._lo = block.first_sample

    def _sync_window(self) -> None:
        """Take the measured window from ``window_from`` once it is decided."""
        if self.window_from is not None:
            win = provided_window(self.window_from)
            if win != self.window_ms and self._pending:
                raise RuntimeError("interp: the cut window changed while pulses were pending")
            self.window_ms = win
        self._params = interp_params(self.window_ms, self.method, self.fit_ms, self._fs)

    def _take_pulses(self, block: Block) -> None:
        w0, w1 = self._params[0], self._params[1]
        released = self._buf.start
        for ev in block.events:
            if ev.kind != EVENT_PULSE:
                continue
            if ev.sample + w1 < self._lo:
                continue  # its whole window lies before the stream began
            if released > self._lo and ev.sample + w0 < released:
                # part of its window has already left this stage
                self.n_late += 1
                log.warning(
                    "pulse at sample %d arrived after samples up to %d were released; its "
                    "window was not interpolated (raise max_delay_ms)", ev.sample, released)
                continue
            self._pending.add(int(ev.sample))

    def _process_final(self, horizon: int, at_end: bool) -> int:
        """Interpolate every span that can no longer change; return the release point."""
        w0, w1, n_fit, order = self._params
        buf = self._buf
        future_lo = horizon - self._delay + min(w0, 0)  # earliest start of an unknown window
        windows = [(p + w0, p + w1 + 1) for p in sorted(self._pending)]
        release = horizon if at_end else future_lo - n_fit
        for a, b in _merge_windows(windows, n_fit):
            if not at_end and b + n_fit > future_lo:
                release = min(release, a - n_fit)
                break
            lo = self._lo if self._done_stop is None else max(self._lo, self._done_stop)
            span = _finish_span(max(a, buf.start), b, lo, horizon, n_fit, order)
            if span is not None:
                apply_span(buf.arr, buf.arr_start, self._rows, span)
                self.n_spans += 1
            self._done_stop = b
            self._pending = {p for p in self._pending if p + w0 >= b}
        return max(buf.start, min(release, horizon))

    # -- Stage API -------------------------------------------------------------------------
    def process(self, block: Block) -> Block:
        """Take the next block; return the cleaned samples that can no longer change."""
        if self._params is None:
            self._setup(block)
        elif self.window_from is not None and not self._pending:
            self._sync_window()
        if self._buf.data is not None and block.first_sample != self._buf.stop:
            # a discontinuity: finish what we hold as if the stream ended, restart after it
            log.warning("interp: samples %d..%d missing; windows near the gap are clipped",
                        self._buf.stop, block.first_sample)
            out = self.flush()
            self._lo = block.first_sample
            self._done_stop = None
            self._buf = HoldBuffer()
            self._buf.append(block)
            self._take_pulses(block)
            return out if out is not None else empty_block_like(block)
        self._buf.append(block)
        self._take_pulses(block)
        release = self._process_final(self._buf.stop, at_end=False)
        return self._buf.release(release)

    def flush(self) -> Block | None:
        """End of stream: finish every pending pulse and release everything held."""
        if self._buf.data is None:
            return None
        release = self._process_final(self._buf.stop, at_end=True)
        out = self._buf.release(release)
        self._pending.clear()
        return out


class RechargeInterpolation(PulseInterpolation):
    """Cut and interpolate the stimulator's recharge artifact: a brief transient at a fixed
    delay after every pulse, when the capacitor recharges (the delay is a stimulator setting,
    e.g. MagVenture's "recharge delay"; TESA removes it the same way, by cutting it out).

    A :class:`PulseInterpolation` whose window lies at the delay: the same fit either side,
    the same merging of close windows, the same live output as on the whole recording.

    Parameters
    ----------
    delay_ms : float
        Recharge delay after the pulse, in ms (> 0).
    window_ms : (float, float)
        Samples cut around the delay, in ms relative to it (``delay_ms + window_ms[0]`` must
        lie after the pulse).
    method, fit_ms, channels, max_delay_ms
        As for :class:`PulseInterpolation`.
    """

    name = "recharge"

    def __init__(self, delay_ms: float, window_ms: tuple[float, float] = (-1.0, 5.0),
                 method: str = "cubic", fit_ms: float = 1.0,
                 channels: str | Sequence[str] | None = "eeg",
                 max_delay_ms: float = 0.0) -> None:
        start, stop = float(delay_ms) + float(window_ms[0]), float(delay_ms) + float(window_ms[1])
        if not 0 < start < stop:
            raise ValueError(f"the recharge window {window_ms} ms around {delay_ms} ms must lie "
                             "after the pulse, start before stop")
        self.delay_ms = float(delay_ms)
        super().__init__(window_ms=(start, stop), method=method, fit_ms=fit_ms,
                         channels=channels, max_delay_ms=max_delay_ms)
