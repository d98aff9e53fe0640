"""Cut pulse-locked epochs from the processed stream as soon as each is complete.

The :class:`Epocher` is not a stage: it consumes the blocks that come out of the stage chain
and emits :class:`Epoch` objects, which the metrics accumulate. It keeps its own
:class:`~tmseeg.stream.ringbuffer.RingBuffer`, so a pulse event that arrives late (in a block
after the one holding its sample, e.g. a marker delayed on the network, or a detector that
needed to see the whole artifact) is still cut, as long as its samples are still in the buffer
(``max_delay_s``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tmseeg.pipeline.channels import resolve_picks
from tmseeg.stream.block import Block, Event, StreamMeta
from tmseeg.stream.ringbuffer import RingBuffer

__all__ = ["Epoch", "Epocher", "REJECT_MODES"]

#: what ``reject_uv`` limits (see :class:`Epocher`)
REJECT_MODES = ("ptp", "abs", "ptp_unless_slow")


@dataclass
class Epoch:
    """One pulse-locked, baseline-corrected epoch.

    Parameters
    ----------
    event : Event
        The pulse.
    data_uv : ndarray, shape (n_channels, n_times)
        Baseline-corrected data in µV (NaN where samples were missing).
    times_ms : ndarray, shape (n_times,)
        Time of each column relative to the pulse.
    ch_names : tuple of str
        Row labels.
    first_sample : int
        Absolute sample index of ``data_uv[:, 0]``.
    sfreq : float
        Sampling rate in Hz.
    rejected : bool
        True if the epoch should not enter averages.
    reason : str
        Why it was rejected (empty if not).
    ptp_uv : ndarray, shape (n_channels,)
        Per-channel peak-to-peak amplitude outside the pulse window (NaN-aware).
    max_abs_uv : ndarray, shape (n_channels,)
        Per-channel maximum absolute (baseline-corrected) amplitude outside the pulse window.
    bads : tuple of str
        Channels that were bad when the epoch was cut (not used for rejection).
    """

    event: Event
    data_uv: np.ndarray
    times_ms: np.ndarray
    ch_names: tuple[str, ...]
    first_sample: int
    sfreq: float
    rejected: bool = False
    reason: str = ""
    ptp_uv: np.ndarray = field(default_factory=lambda: np.empty(0))
    max_abs_uv: np.ndarray = field(default_factory=lambda: np.empty(0))
    bads: tuple[str, ...] = ()

    @property
    def sample(self) -> int:
        """Absolute sample of the pulse."""
        return self.event.sample


class Epocher:
    """Turn a stream of processed blocks into pulse-locked epochs.

    Parameters
    ----------
    tmin_ms, tmax_ms : float
        Epoch window around the pulse (default -500 .. 500 ms; both ends included, as in MNE).
    baseline_ms : (float, float) or None
        Window whose per-channel mean is subtracted (default -500 .. -10 ms, clear of the
        pulse), clipped to the epoch; NaN samples are ignored in the mean. ``None``: no
        baseline correction.
    reject_uv : float or None
        Amplitude limit in µV (default 150). ``None`` disables amplitude rejection.
    reject_mode : {"ptp", "abs", "ptp_unless_slow"}
        ``"ptp"``: peak-to-peak per channel above ``reject_uv`` rejects (default);
        ``"abs"``: any baseline-corrected sample beyond ``±reject_uv`` rejects;
        ``"ptp_unless_slow"``: as ``"ptp"``, but a channel over ``reject_uv`` rejects only when
        its fast peak-to-peak (of the channel minus its moving average over ``fast_ms``, a
        high-pass near ``440 / fast_ms`` Hz: muscle and what is left of the pulse's artifacts
        count, blinks, eye movements and drifts do not) is over ``fast_uv`` too: an epoch whose
        excess is slow keeps its pulse; it never rejects an epoch ``"ptp"`` keeps.
    fast_ms : float
        Moving-average width of the fast peak-to-peak (default 50 ms).
    fast_uv : float
        The fast peak-to-peak limit of ``reject_mode="ptp_unless_slow"`` (default 100 µV).
    pulse_window_ms : (float, float) or CutWindow
        Excluded from the amplitude test (and from ``ptp_uv``/``max_abs_uv``): what is left of
        the pulse after interpolation is not brain. Default ``(-2, 10)``. NaN inside it is
        tolerated too.
    picks : str or sequence of str
        Channels in the epoch (default ``"eeg"``).
    bads_from : object with a ``bads`` mapping, optional
        Usually the session's bad-channel detector: bad channels are kept in the epoch but do
        not trigger rejection (neither amplitude nor NaN).
    max_delay_s : float
        How late a pulse event may arrive (after its post-window was received) and still be
        cut; sets the ring-buffer length. Default 5 s.
    group_ms : float
        A pulse followed by another pulse within this interval (the conditioning pulse of a
        paired pulse, the first pulses of a 50-Hz burst) belongs to a group whose epoch is
        locked to its last pulse (the test pulse, the usual time zero of paired-pulse TEPs):
        its own epoch is rejected with the reason ``"grouped: ..."``. 0 turns this off.
        Default 20 ms.
    epoch_filter : callable, optional
        ``f(data_uv, sfreq_hz) -> data_uv`` applied to each epoch before baseline correction
        and rejection, e.g. :class:`~tmseeg.pipeline.filters.EpochFilter`. Its ``pad_ms``
        attribute (if any) makes the epocher cut that much more data on both sides, filter,
        then crop; the epoch is emitted once the padding after it has arrived.

    Notes
    -----
    Rejection reasons, checked in this order:

    * ``"grouped: ..."`` — another pulse follows within ``group_ms`` (see above);
    * ``"pre-window missing: pulse ... ms after the start of the recording"`` — the pulse came
      before ``-tmin_ms`` of data existed (available samples are returned, the rest NaN);
    * ``"overwritten: ..."`` — the event arrived later than ``max_delay_s`` (data all NaN);
    * ``"incomplete: ..."`` — only from :meth:`flush`: the recording ended before the
      post-window did (available samples returned, the rest NaN);
    * ``"NaN in data (gap or NaN samples) on ..."`` — missing samples outside the pulse window;
    * ``"amplitude: ..."`` — ``reject_uv`` exceeded (the worst channel is named).

    Epochs are emitted in order of their pulse sample within one :meth:`push`; a pulse is cut
    once (repeated events for the same sample are ignored). A pulse event with
    ``extra["epoch"] = False`` gets no epoch (its artifact was removed, nothing more).
    """

    def __init__(
        self,
        tmin_ms: float = -500.0,
        tmax_ms: float = 500.0,
        baseline_ms: tuple[float, float] | None = (-500.0, -10.0),
        reject_uv: float | None = 150.0,
        reject_mode: str = "ptp",
        fast_ms: float = 50.0,
        fast_uv: float = 100.0,
        pulse_window_ms: tuple[float, float] = (-2.0, 10.0),
        picks: str | Sequence[str] = "eeg",
        bads_from=None,
        max_delay_s: float = 5.0,
        epoch_filter=None,
        group_ms: float = 20.0,
    ) -> None:
        if tmin_ms > 0 or tmax_ms <= 0:
            raise ValueError(f"need tmin_ms <= 0 < tmax_ms, got {tmin_ms}, {tmax_ms}")
        if reject_mode not in REJECT_MODES:
            raise ValueError(f"reject_mode must be one of {', '.join(REJECT_MODES)}, "
                             f"got {reject_mode!r}")
        if not fast_ms > 0:
            raise ValueError(f"fast_ms must be > 0, got {fast_ms}")
        if baseline_ms is not None:
            # clipped to the epoch (as MNE does), so a shorter tmin_ms keeps the default usable
            baseline_ms = (max(baseline_ms[0], tmin_ms), min(baseline_ms[1], tmax_ms))
            if baseline_ms[0] >= baseline_ms[1]:
                raise ValueError(f"baseline_ms={baseline_ms} (clipped to the epoch {tmin_ms}.."
                                 f"{tmax_ms} ms) is empty; pick a window inside the epoch")
        self.tmin_ms = float(tmin_ms)
        self.tmax_ms = float(tmax_ms)
        self.baseline_ms = baseline_ms
        self.reject_uv = reject_uv
        self.reject_mode = reject_mode
        self.fast_ms = float(fast_ms)
        self.fast_uv = float(fast_uv)
        # a (start, stop) tuple, or an object whose window_ms is decided later (CutWindow)
        self._pulse_window = pulse_window_ms
        self.picks = picks
        self.bads_from = bads_from
        self.max_delay_s = float(max_delay_s)
        self.epoch_filter = epoch_filter
        if group_ms < 0:
            raise ValueError(f"group_ms must be >= 0, got {group_ms}")
        self.group_ms = float(group_ms)
        self.reset()

    def reset(self) -> None:
        """Forget the buffer and pending pulses (a new stream begins)."""
        self._ring: RingBuffer | None = None
        self._meta: StreamMeta | None = None
        self._rows: np.ndarray | None = None
        self._all_rows = False
        self._pending: list[Event] = []
        self._seen: set[int] = set()
        self.n_emitted = 0
        self.n_rejected = 0

    # -- geometry ---------------------------------------------------------------------------
    def _setup(self, meta: StreamMeta) -> None:
        sf = meta.sfreq
        self._meta = meta
        self._rows = resolve_picks(meta, self.picks)
        if len(self._rows) == 0:
            raise ValueError(f"Epocher: picks={self.picks!r} selects no channel of stream "
                             f"{meta.name!r} (types: {sorted(set(meta.ch_types))})")
        self.ch_names = tuple(meta.ch_names[i] for i in self._rows)
        self._all_rows = np.array_equal(self._rows, np.arange(meta.n_channels))
        self.n_pre = int(round(-self.tmin_ms * sf / 1000.0))
        self.n_post = int(round(self.tmax_ms * sf / 1000.0))
        self.times_ms = np.arange(-self.n_pre, self.n_post + 1) * 1000.0 / sf
        pad_ms = getattr(self.epoch_filter, "pad_ms", 0.0) if self.epoch_filter else 0.0
        after_ms = getattr(self.epoch_filter, "pad_after_ms", pad_ms) if self.epoch_filter \
            else 0.0
        self.n_pad = int(round(pad_ms * sf / 1000.0))
        self.n_pad_after = int(round(after_ms * sf / 1000.0))
        #: samples one cut reads: the epoch and its filter padding on both sides
        self.n_span = self.n_pre + self.n_post + 1 + self.n_pad + self.n_pad_after
        cap = self.n_span + int(np.ceil(self.max_delay_s * sf))
        self._ring = RingBuffer(len(self._rows), cap)
        t = self.times_ms
        if self.baseline_ms is not None:
            self._base = (t >= self.baseline_ms[0]) & (t <= self.baseline_ms[1])
            if not self._base.any():
                raise ValueError(f"baseline_ms={self.baseline_ms} contains no sample")
        self._test_for: tuple[float, float] | None = None
        self._runs: list[tuple[int, int]] = []  # _test_mask's stretches, set with it
        self._n_group = int(round(self.group_ms * sf / 1000.0))

    @property
    def pulse_window_ms(self) -> tuple[float, float]:
        """The cut window in force (the measured one, once a CutWindow has decided it)."""
        win = self._pulse_window
        if hasattr(win, "window_ms"):
            from tmseeg.pipeline.interpolation import provided_window
            return provided_window(win)
        return (float(win[0]), float(win[1]))

    @property
    def baseline_mask(self) -> np.ndarray | None:
        """Samples of the epoch whose mean is subtracted (None: no baseline correction)."""
        return self._base if self.baseline_ms is not None else None

    def _test_mask(self) -> np.ndarray:
        """Samples of the epoch outside the pulse window (those the amplitude test sees)."""
        win = self.pulse_window_ms
        if win != self._test_for:
            t = self.times_ms
            self._test = ~((t >= win[0]) & (t <= win[1]))
            self._test_for = win
            edges = np.flatnonzero(np.diff(np.concatenate([[0], self._test.view(np.int8), [0]])))
            self._runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
        return self._test

    def _fast_ptp(self, data: np.ndarray) -> np.ndarray:
        """Per channel, the peak-to-peak over the test samples of ``data`` minus its moving
        average over ``fast_ms`` (``reject_mode="ptp_unless_slow"``); NaN samples are left
        out."""
        from scipy.ndimage import uniform_filter1d

        width = max(1, int(round(self.fast_ms * self._meta.sfreq / 1000.0)))
        finite = np.isfinite(data)
        x = np.where(finite, data, 0.0)
        fast = x - uniform_filter1d(x, width, axis=1, mode="nearest")
        fast[~finite] = np.nan
        test = fast[:, self._test_mask()]
        with np.errstate(all="ignore"), _quiet():
            return np.nan_to_num(np.nanmax(test, axis=1) - np.nanmin(test, axis=1))

    def _test_runs(self) -> list[tuple[int, int]]:
        """The test samples (:meth:`_test_mask`) as stretches ``[a, b)`` of the epoch."""
        self._test_mask()
        return self._runs

    @property
    def n_times(self) -> int:
        """Samples per epoch (known after the first block)."""
        return self.n_pre + self.n_post + 1

    # -- streaming --------------------------------------------------------------------------
    def push(self, block: Block) -> list[Epoch]:
        """Take the next processed block; return the epochs completed by it.

        Parameters
        ----------
        block : Block
            Output of the stage chain (may be empty, may carry late pulse events).

        Returns
        -------
        list of Epoch
        """
        if self._ring is None:
            self._setup(block.meta)
        elif block.meta.sfreq != self._meta.sfreq or block.meta.ch_names != self._meta.ch_names:
            raise ValueError("Epocher: the stream's channels or rate changed; call reset() first.")
        ring = self._ring
        # an empty block (a stage holding samples back) carries events only: its first_sample
        # says nothing about missing data, the next non-empty block does
        for ev in block.pulses():
            if ev.extra.get("epoch", True) is False:
                continue  # a pulse to cut and clean only (an unmarked artifact)
            if ev.sample not in self._seen:
                self._seen.add(ev.sample)
                self._pending.append(ev)
        self._pending.sort(key=lambda e: e.sample)
        if not block.n_samples:
            return self._cut_complete()
        if block.first_sample < ring.n_written:
            raise ValueError(
                f"Epocher: block starts at sample {block.first_sample} but samples up to "
                f"{ring.n_written} were already received (overlapping or repeated block)."
            )
        ring.write_gap(block.first_sample - ring.n_written)
        # every channel in order (the usual case): the ring copies the block, no copy first
        data = block.data if self._all_rows else block.data[self._rows]
        # A block longer than the ring's spare room (a stage releasing seconds it held back,
        # e.g. cleaning that calibrated only at the end of a file) is written in pieces, and
        # the epochs each piece completes are cut before the next piece overwrites them.
        step = max(1, ring.capacity - self.n_span)
        out: list[Epoch] = []
        for a in range(0, data.shape[1], step):
            ring.write(data[:, a:a + step])
            out += self._cut_complete()
        return out

    def _cut_complete(self) -> list[Epoch]:
        """Cut every pending epoch whose post-window (and padding) has been received."""
        out, keep = [], []
        n_written = self._ring.n_written
        for ev in self._pending:
            if ev.sample + self.n_post + 1 + self.n_pad_after <= n_written:
                out.append(self._cut(ev))
            else:
                keep.append(ev)
        self._pending = keep
        return out

    def flush(self) -> list[Epoch]:
        """End of the recording: pulses whose post-window never completed, rejected "incomplete".

        Their data hold what was received (NaN beyond), so a caller may still inspect them.
        """
        out = [self._cut(ev, incomplete=True) for ev in self._pending]
        self._pending = []
        return out

    # -- cutting ----------------------------------------------------------------------------
    def _cut(self, ev: Event, incomplete: bool = False) -> Epoch:
        ring = self._ring
        sf = self._meta.sfreq
        start = ev.sample - self.n_pre
        stop = ev.sample + self.n_post + 1
        pad = self.n_pad
        lo = max(start - pad, ring.first_available, 0)
        hi = min(stop + self.n_pad_after, ring.n_written)
        whole = lo == start - pad and hi - lo == self.n_span  # the usual case: all there
        data = ring.read(lo, hi) if whole else np.full((len(self._rows), self.n_span), np.nan)
        reason = ""
        # a later pulse of the group is still pending (its own epoch completes after this one)
        later = [e.sample for e in self._pending
                 if ev.sample < e.sample <= ev.sample + self._n_group]
        if later:
            reason = (f"grouped: another pulse {(min(later) - ev.sample) * 1000.0 / sf:.1f} ms "
                      f"later (paired pulse or burst); the group's epoch is locked to its last "
                      "pulse")
        elif start < 0:
            reason = (f"pre-window missing: pulse {ev.sample * 1000.0 / sf:.1f} ms after the start "
                      f"of the recording, epoch needs {-self.tmin_ms:g} ms")
        elif start < ring.first_available:
            reason = (f"overwritten: pulse event arrived more than {self.max_delay_s:g} s late "
                      f"(samples {start}..{stop} no longer buffered)")
        elif incomplete:
            reason = (f"incomplete: recording ended {(ring.n_written - ev.sample) * 1000.0 / sf:.1f}"
                      f" ms after the pulse, epoch needs {self.tmax_ms:g} ms")
        if hi > lo and not whole:
            data[:, lo - start + pad:hi - start + pad] = ring.read(lo, hi)
        if self.epoch_filter is not None:
            data = self.epoch_filter(data, sf)
        data = np.ascontiguousarray(data[:, pad:pad + self.n_times])
        if self.baseline_ms is not None:
            base = data[:, self._base]
            with np.errstate(all="ignore"):
                n_ok = np.isfinite(base).sum(axis=1)
                mean = np.where(n_ok > 0, np.nansum(base, axis=1) / np.maximum(n_ok, 1), np.nan)
            if not reason:
                data -= mean[:, None]
            else:
                data -= np.where(np.isfinite(mean), mean, 0.0)[:, None]
        # the usual case, no NaN: extremes over the stretches outside the pulse window, read
        # in place (a NaN would make them NaN; then the NaN-aware passes on a copy)
        finite_test = None
        runs = self._test_runs()
        if runs:
            hi_uv = np.max([data[:, a:b].max(axis=1) for a, b in runs], axis=0)
            lo_uv = np.min([data[:, a:b].min(axis=1) for a, b in runs], axis=0)
        if runs and np.isfinite(hi_uv).all() and np.isfinite(lo_uv).all():
            ptp, mx = hi_uv - lo_uv, np.maximum(hi_uv, -lo_uv)
        else:
            test = data[:, self._test_mask()]
            finite_test = np.isfinite(test)
            with np.errstate(all="ignore"), _quiet():
                ptp = np.nanmax(test, axis=1) - np.nanmin(test, axis=1)
                mx = np.nanmax(np.abs(test), axis=1)
        bads: tuple[str, ...] = ()
        if self.bads_from is not None:  # the set in force at the epoch's last sample
            at = getattr(self.bads_from, "bads_at", None)
            bads = tuple(at(stop - 1) if at is not None else self.bads_from.bads)
        good = np.array([n not in bads for n in self.ch_names], dtype=bool)
        if not reason and good.any() and finite_test is not None:
            nan_ch = good & ~finite_test.all(axis=1)
            if nan_ch.any():
                names = [self.ch_names[i] for i in np.flatnonzero(nan_ch)]
                n_nan = int((~finite_test[nan_ch]).any(axis=0).sum())
                reason = (f"NaN in data (gap or NaN samples) on {len(names)} channel(s) "
                          f"({', '.join(names[:4])}{'...' if len(names) > 4 else ''}), "
                          f"{n_nan * 1000.0 / sf:.1f} ms missing")
        if not reason and self.reject_uv is not None and good.any():
            mode = self.reject_mode
            metric = mx if mode == "abs" else ptp
            over = good & (metric > self.reject_uv)
            fast = None
            if mode == "ptp_unless_slow" and over.any():  # a slow excess keeps the pulse
                fast = self._fast_ptp(data)
                over &= fast > self.fast_uv
            if over.any():
                worst = int(np.flatnonzero(over)[np.argmax(metric[over])])
                what = "ptp" if mode == "ptp_unless_slow" else mode
                reason = (f"amplitude: {what} {metric[worst]:.1f} uV > "
                          f"{self.reject_uv:g} uV on {self.ch_names[worst]}"
                          + (f", fast ptp {fast[worst]:.1f} uV > {self.fast_uv:g} uV"
                             if fast is not None else ""))
        self.n_emitted += 1
        self.n_rejected += bool(reason)
        return Epoch(
            event=ev, data_uv=data, times_ms=self.times_ms.copy(), ch_names=self.ch_names,
            first_sample=start, sfreq=sf, rejected=bool(reason), reason=reason,
            ptp_uv=ptp, max_abs_uv=mx, bads=bads,
        )


class _quiet:
    """Silence numpy's all-NaN slice warnings."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)
