"""The cut window measured from the data: how long the pulse artifact really lasts.

A fixed -2..+10 ms cut (TESA's usual window) is right for an amplifier that recovers within a
few milliseconds. One that rings for 5 ms, or sits at its rail near the coil for 4 ms and then
recovers, leaves artifact after a 10 ms cut; a marker that lags the pulse by 2 ms leaves the
start of the jump before a -2 ms cut. :class:`CutWindow` measures the artifact on the first
pulses of a recording (live: the first pulses of the stream), fixes the window once, and every
artifact stage after it (interpolation, decay removal, the epochs' rejection test) uses that
window, live and offline alike.

The rule (:func:`measure_artifact`, :func:`choose_window`)
----------------------------------------------------------
For each of the first ``n_pulses`` pulses, each EEG channel's EEG range is taken from the data
before the pulse (-300 .. -20 ms): the robust SD (1.4826 x median absolute deviation) of its
first difference, in µV/ms. After the pulse a sample is *artifact* on a channel when

* its first difference exceeds ``k_hf`` (8) robust SDs: the pulse, its ringing, the jumps of
  the amplifier's recovery (EEG and line noise practically never reach it); or
* it sits at a rail: part of a run of identical samples (at least 3 and 0.2 ms) at the
  channel's extreme value, far (> 10 robust SDs) from the pre-pulse level (a saturated
  amplifier repeats its extreme code).

Jumps are measured against the median of the channels at each sample (a muscle twitch under
the recording reference shows on every channel but is no pulse artifact; an average reference
would spread a large local burst to all of them); rails on the data as recorded.

The pulse's artifact ends at the later of

* the time by which half of the channels are back in range (the median over channels of each
  channel's last artifact sample): the pulse and its ringing reach every lead, while a
  TMS-evoked muscle burst (which a cut must not try to remove: it lasts up to 40 ms) sits on a
  minority of channels near the coil;
* the last railed sample on any channel (saturation is unambiguous, and it is where the coil
  is, i.e. in the region of interest).

It starts where a quarter of the channels jump out of range at once, with a fresh jump (the
rules of :class:`~tmseeg.pipeline.pulses.DataPulses`: not a cycle of ringing); of several such
onsets (a conditioning pulse before a marked test pulse), the one nearest the event. A marker
that lags the pulse has its onset before time zero.

Marker lag. When the pulses come from markers (or a trigger channel) and the artifact starts
at the same offset from them on the measured pulses (spread (MAD) under 0.5 ms), that constant
lag is corrected when it is at least one sample and 0.25 ms: every such pulse event from then on
is moved to the pulse (``summary()["marker_lag_ms"]``), so time zero is the pulse, not the
marker. The lag is the mean onset minus half a sample: the first sample that shows the
artifact comes 0..1 sample after the physical pulse, so a marker on the pulse's nearest sample
sees onsets of 0 or +1 sample and is left where it is. Pulses found in the data are never
moved.

The window is the median over the pulses of those start and end times, widened by
``margin_ms`` (1 ms) on each side, rounded outwards to 0.5 ms, never shorter than
``min_window_ms`` (-2 .. 10 ms, TESA's window) and never beyond ``max_window_ms``
(-10 .. 20 ms: an artifact longer than that cannot be cut without cutting the N15-P30 complex,
and the summary says so).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from tmseeg.pipeline.base import HeldBlocks, concat_blocks
from tmseeg.pipeline.channels import resolve_picks
from tmseeg.pipeline.pulses import jump_onsets, marker_lag_ms
from tmseeg.stream.block import EVENT_PULSE, Block

log = logging.getLogger(__name__)

__all__ = ["ArtifactExtent", "CutWindow", "measure_artifact", "choose_window"]

#: data before the pulse that give each channel's EEG range (ms)
PRE_MS = (-300.0, -20.0)


@dataclass(frozen=True)
class ArtifactExtent:
    """How long one pulse's artifact lasts (ms relative to the pulse event).

    Attributes
    ----------
    onset_ms : float
        First sample where a quarter of the channels are out of their EEG range (NaN: none).
    end_ms : float
        When the artifact is over (the later of ``hf_end_ms`` and ``rail_end_ms``).
    hf_end_ms : float
        When half of the channels are back within their EEG range (jumps, ringing).
    rail_end_ms : float
        Last sample at which a channel sits at a rail (NaN: no saturation).
    n_railed : int
        Channels that saturated.
    """

    onset_ms: float
    end_ms: float
    hf_end_ms: float
    rail_end_ms: float
    n_railed: int


def _railed(x: np.ndarray, level: np.ndarray, sd: np.ndarray, min_run: int) -> np.ndarray:
    """Samples where a channel sits at a rail: runs of at least ``min_run`` identical values at
    the channel's largest or smallest value in ``x``, far (> 10 robust SDs) from its pre-pulse
    level. A saturated amplifier repeats its extreme code; a slow decay stored with a coarse
    resolution repeats values too, but not at its extreme (where it is steepest)."""
    out = np.zeros(x.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        far = np.abs(x - level[:, None]) > 10.0 * sd[:, None]
        at_extreme = ((x == np.nanmax(x, axis=1, keepdims=True))
                      | (x == np.nanmin(x, axis=1, keepdims=True))) & far
    for c in np.flatnonzero(at_extreme.sum(axis=1) >= min_run):
        edges = np.diff(np.concatenate([[0], at_extreme[c].astype(np.int8), [0]]))
        for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if b - a >= min_run and np.all(x[c, a:b] == x[c, a]):
                out[c, a:b] = True
    return out


def measure_artifact(data_uv: np.ndarray, sfreq: float, pulse_col: int,
                     search_ms: tuple[float, float] = (-10.0, 20.0),
                     k_hf: float = 8.0) -> ArtifactExtent | None:
    """Measure one pulse's artifact (see the module description for the rule).

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples)
        Raw EEG around the pulse: at least ``-PRE_MS[0]`` ms before it and ``search_ms[1]``
        after it (less before is used if that is all there is, down to 50 ms).
    sfreq : float
        Sampling rate in Hz.
    pulse_col : int
        Column of the pulse event in ``data_uv``.
    search_ms : (float, float)
        Where the artifact is looked for, relative to the pulse.
    k_hf : float
        Threshold of the first difference in robust SDs of the pre-pulse data.

    Returns
    -------
    ArtifactExtent or None
        None when the data around the pulse do not allow a measurement (too little baseline,
        no channel with a usable range).
    """
    ms = 1000.0 / sfreq
    pre0 = max(0, pulse_col + int(math.floor(PRE_MS[0] / ms)))
    pre1 = pulse_col + int(math.floor(PRE_MS[1] / ms))
    a = pulse_col + int(math.floor(search_ms[0] / ms))
    b = min(data_uv.shape[1], pulse_col + int(math.ceil(search_ms[1] / ms)) + 1)
    if pre1 - pre0 < max(10, 0.05 * sfreq) or a < 1 or b - a < 3:
        return None
    pre = data_uv[:, pre0:pre1]
    with np.errstate(invalid="ignore"):
        d_pre = np.diff(pre, axis=1) / ms
        med_d = np.nanmedian(d_pre, axis=1)
        sd_d = 1.4826 * np.nanmedian(np.abs(d_pre - med_d[:, None]), axis=1)
        level = np.nanmedian(pre, axis=1)
        sd_x = 1.4826 * np.nanmedian(np.abs(pre - level[:, None]), axis=1)
    usable = np.isfinite(sd_d) & (sd_d > 0) & np.isfinite(sd_x) & (sd_x > 0)
    if usable.sum() < 1:
        return None
    x = data_uv[usable, a - 1:b]
    rail = _railed(x[:, 1:], level[usable], sd_x[usable], max(3, int(round(0.2 / ms))))
    # jumps against the median of the channels: what happens at the recording reference (a
    # muscle twitch under a mastoid electrode) is common to all channels and no pulse
    # artifact; the median (unlike the mean) does not spread a large local burst to them all
    if usable.sum() >= 4:
        pre_ar = pre[usable] - np.median(pre[usable], axis=0)
        with np.errstate(invalid="ignore"):
            d_pre = np.diff(pre_ar, axis=1) / ms
            sd_d = 1.4826 * np.nanmedian(np.abs(d_pre - np.nanmedian(d_pre, axis=1)[:, None]),
                                         axis=1)
        sd_d = np.where(sd_d > 0, sd_d, np.inf)
        x = x - np.median(x, axis=0)
    else:
        sd_d = sd_d[usable]
    d = np.abs(np.diff(x, axis=1)) / ms  # d[:, i] belongs to sample a + i
    with np.errstate(invalid="ignore"):
        hf = d > k_hf * sd_d[:, None]
    t_ms = (np.arange(a, b) - pulse_col) * ms
    after = t_ms >= 0
    n_ch = int(usable.sum())
    # onset: a quarter of the channels jump at once, a fresh jump (not ringing), the one
    # nearest the event (a conditioning pulse a few ms before a marked test pulse is another
    # pulse, not a marker lag)
    count = (hf | rail).sum(axis=0)
    onsets = jump_onsets(np.flatnonzero(count >= max(1, math.ceil(n_ch / 4))),
                         np.diff(x, axis=1) / ms, refractory=max(1, int(round(1.0 / ms))),
                         gate=x.shape[1], n_back=max(1, int(round(0.8 / ms))))
    onset = (float(t_ms[min(onsets, key=lambda j: (abs(t_ms[j]), t_ms[j]))]) if onsets
             else math.nan)
    # per channel: the last artifact sample after the pulse (the pulse itself if none)
    last_hf = np.where((hf & after).any(axis=1),
                       t_ms[np.where(hf & after, np.arange(t_ms.size), -1).max(axis=1)], 0.0)
    hf_end = float(np.median(last_hf))
    railed_ch = (rail & after).any(axis=1)
    if railed_ch.any():
        last_rail = np.where(rail & after, np.arange(t_ms.size), -1).max(axis=1)
        rail_end = float(t_ms[last_rail[railed_ch].max()])
    else:
        rail_end = math.nan
    end = hf_end if math.isnan(rail_end) else max(hf_end, rail_end)
    return ArtifactExtent(onset_ms=onset, end_ms=end, hf_end_ms=hf_end, rail_end_ms=rail_end,
                          n_railed=int(railed_ch.sum()))


def choose_window(extents: Sequence[ArtifactExtent],
                  min_window_ms: tuple[float, float] = (-2.0, 10.0),
                  max_window_ms: tuple[float, float] = (-10.0, 20.0),
                  margin_ms: float = 1.0) -> tuple[tuple[float, float], str]:
    """The cut window for a recording from its measured pulses (see the module description).

    Returns
    -------
    window_ms : (float, float)
    reason : str
        One sentence for the summary and the report.
    """
    if not extents:
        return (tuple(min_window_ms),
                f"no pulse could be measured: the minimum window {list(min_window_ms)} ms")
    onsets = [e.onset_ms for e in extents if not math.isnan(e.onset_ms)]
    onset = float(np.median(onsets)) if onsets else 0.0
    end = float(np.median([e.end_ms for e in extents]))
    start_ms = math.floor(2 * min(onset - margin_ms, min_window_ms[0])) / 2
    stop_ms = math.ceil(2 * max(end + margin_ms, min_window_ms[1])) / 2
    start_ms = max(start_ms, max_window_ms[0])
    stop_ms = min(stop_ms, max_window_ms[1])
    railed = [e for e in extents if e.n_railed]
    parts = [f"artifact measured on {len(extents)} pulses: onset {onset:+.2f} ms, back in the "
             f"EEG's range at {end:.2f} ms (median)"]
    if railed:
        parts.append(f"saturation on {int(np.median([e.n_railed for e in railed]))} channels "
                     f"in {len(railed)} pulses, to "
                     f"{float(np.nanmedian([e.rail_end_ms for e in railed])):.2f} ms")
    if end + margin_ms > max_window_ms[1]:
        parts.append(f"LONGER than the cap: cut at {max_window_ms[1]:g} ms, artifact remains "
                     "after the cut (early peaks are not reliable)")
    parts.append(f"window [{start_ms:g}, {stop_ms:g}] ms (margin {margin_ms:g} ms, at least "
                 f"{list(min_window_ms)}, at most {list(max_window_ms)})")
    return (start_ms, stop_ms), "; ".join(parts)


def _movable(event) -> bool:
    """A pulse event whose time comes from a marker or trigger (not from the artifact)."""
    return (event.kind == EVENT_PULSE and event.extra.get("source") != "data"
            and not event.extra.get("onset_from_data"))


class _Held(HeldBlocks):
    """The held blocks and the pulses among them still to be measured."""

    def __init__(self) -> None:
        super().__init__()
        self.pulses: list[int] = []


class CutWindow:
    """Decide the pulse cut window from the first pulses, then pass data through.

    Until the window is decided, the stage holds back the data from the first pulse's baseline
    on; once ``n_pulses`` pulses have ``max_window_ms[1]`` of data after them (or
    ``max_hold_s`` of data are held, or the stream ends), it measures them
    (:func:`measure_artifact`), fixes :attr:`window_ms` (:func:`choose_window`) and releases
    everything. Later stages that cut around pulses read :attr:`window_ms` from this object
    (they see no pulse before it is decided). With a fixed window it is decided from the start
    and holds nothing.

    Parameters
    ----------
    fixed_ms : (float, float) or None
        A fixed window (the configuration's ``window_ms`` list); None measures it.
    n_pulses : int
        Pulses measured.
    min_window_ms, max_window_ms : (float, float)
        Least and largest window (see :func:`choose_window`).
    margin_ms : float
        Added on both sides of the measured artifact.
    correct_lag : bool
        Move marker/trigger pulses by the constant lag measured on the first pulses.
    max_hold_s : float
        Hold at most this much data while waiting for ``n_pulses`` pulses (slow protocols:
        decide from fewer).
    picks : str or list of str
        Channels measured (default EEG).

    Attributes
    ----------
    window_ms : (float, float) or None
        The window in force (None while undecided).
    reason : str
        Why this window (for ``summary.json`` and the report).
    extents : list of ArtifactExtent
        The measured pulses.
    """

    name = "cut_window"

    def __init__(self, fixed_ms: Sequence[float] | None = None, n_pulses: int = 5,
                 min_window_ms: Sequence[float] = (-2.0, 10.0),
                 max_window_ms: Sequence[float] = (-10.0, 20.0), margin_ms: float = 1.0,
                 correct_lag: bool = True, max_hold_s: float = 20.0,
                 picks: str | Sequence[str] = "eeg") -> None:
        if n_pulses < 1:
            raise ValueError(f"n_pulses must be >= 1, got {n_pulses}")
        self.fixed_ms = None if fixed_ms is None else (float(fixed_ms[0]), float(fixed_ms[1]))
        if self.fixed_ms is not None and not self.fixed_ms[0] < self.fixed_ms[1]:
            raise ValueError(f"window {list(fixed_ms)}: the start must precede the end")
        self.n_pulses = int(n_pulses)
        self.min_window_ms = (float(min_window_ms[0]), float(min_window_ms[1]))
        self.max_window_ms = (float(max_window_ms[0]), float(max_window_ms[1]))
        if not (self.max_window_ms[0] <= self.min_window_ms[0] < self.min_window_ms[1]
                <= self.max_window_ms[1]):
            raise ValueError(f"cut window bounds: need max_window_ms[0] <= min_window_ms[0] < "
                             f"min_window_ms[1] <= max_window_ms[1], got min {min_window_ms}, "
                             f"max {max_window_ms}")
        self.margin_ms = float(margin_ms)
        self.correct_lag = bool(correct_lag)
        self.max_hold_s = float(max_hold_s)
        self.picks = picks
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins): the window is measured again."""
        self._held = _Held()
        self.extents: list[ArtifactExtent] = []
        self.lag_samples = 0  # added to marker/trigger pulse samples
        self.lag_ms = math.nan  # measured marker lag (NaN: not measured)
        self._lag_fs = math.nan
        if self.fixed_ms is not None:
            self.window_ms: tuple[float, float] | None = self.fixed_ms
            self.reason = f"fixed in the configuration: [{self.fixed_ms[0]:g}, " \
                          f"{self.fixed_ms[1]:g}] ms"
        else:
            self.window_ms = None
            self.reason = "not decided yet (no pulse so far)"

    @property
    def decided(self) -> bool:
        """Whether :attr:`window_ms` is fixed."""
        return self.window_ms is not None

    def summary(self) -> dict:
        """What ``summary.json`` says about the cut window."""
        return {"window_ms": None if self.window_ms is None else list(self.window_ms),
                "mode": "fixed" if self.fixed_ms is not None else "measured",
                "reason": self.reason,
                "marker_lag_ms": None if math.isnan(self.lag_ms) else self.lag_ms,
                "marker_shift_samples": self.lag_samples,
                "pulses_measured": [
                    {"onset_ms": e.onset_ms, "end_ms": e.end_ms, "hf_end_ms": e.hf_end_ms,
                     "rail_end_ms": e.rail_end_ms, "n_railed": e.n_railed}
                    for e in self.extents]}

    # -- stage API ---------------------------------------------------------------------------
    def process(self, block: Block) -> Block:
        """Pass the block on once the window is decided; until then hold what it needs."""
        if self.decided and not self._held.blocks:
            return self._shifted(block)
        fs = block.meta.sfreq
        self._held.blocks.append(block)
        self._held.pulses += [e.sample for e in block.events if e.kind == EVENT_PULSE]
        if self.decided:  # decided at the end of a gap-free hold: release what is left
            return self._release(self._held.stop)
        after = int(math.ceil(self.max_window_ms[1] * fs / 1000.0)) + 2
        ready = [p for p in self._held.pulses if p + after <= self._held.stop]
        held_s = (self._held.stop - self._held.start) / fs
        if len(ready) >= self.n_pulses or (ready and held_s >= self.max_hold_s):
            self._decide(ready[:self.n_pulses], fs)
            return self._release(self._held.stop)
        # nothing to measure yet: keep only the baseline a future pulse needs
        keep_from = (min(self._held.pulses) if self._held.pulses else self._held.stop) \
            + int(math.floor(PRE_MS[0] * fs / 1000.0)) - 1
        return self._release(keep_from)

    def flush(self) -> Block | None:
        """End of stream: decide from the pulses seen (if any) and release everything."""
        if not self._held.blocks:
            return None
        if not self.decided and self._held.pulses:
            self._decide(self._held.pulses[:self.n_pulses], self._held.blocks[0].meta.sfreq)
        out = self._release(self._held.stop)
        return out if out.n_samples or out.events else None

    @property
    def holds_more(self) -> bool:
        """Whether :meth:`flush` has more to release (data after a gap in the stream)."""
        return bool(self._held.blocks)

    def _shifted(self, block: Block) -> Block:
        """The block with its marker/trigger pulses moved by the measured lag."""
        if not self.lag_samples or not block.events:
            return block
        events = [replace(e, sample=e.sample + self.lag_samples,
                          time_s=e.time_s + self.lag_samples / self._lag_fs,
                          extra={**e.extra, "lag_corrected_samples": self.lag_samples})
                  if _movable(e) else e for e in block.events]
        return replace(block, events=events)

    # -- internals ---------------------------------------------------------------------------
    def _release(self, upto: int) -> Block:
        """Return the held samples before ``upto`` (whole blocks, or a split one)."""
        return self._shifted(self._held.release(upto))

    def _decide(self, pulses: list[int], fs: float) -> None:
        held = self._held
        blocks = [b for b in held.blocks]
        whole = concat_blocks(blocks) if self._contiguous(blocks) else None
        movable_onsets = []
        if whole is not None:
            rows = resolve_picks(whole.meta, self.picks)
            movable = {e.sample for e in whole.events if e.kind == EVENT_PULSE and _movable(e)}
            for p in pulses:
                col = p - whole.first_sample
                extent = measure_artifact(whole.data[rows], fs, col,
                                          search_ms=(self.max_window_ms[0],
                                                     self.max_window_ms[1]))
                if extent is not None:
                    self.extents.append(extent)
                    if p in movable and not math.isnan(extent.onset_ms):
                        movable_onsets.append(extent.onset_ms)
        self._decide_lag(movable_onsets, fs)
        if self.lag_samples:
            # the window is relative to the corrected time zero
            shift_ms = self.lag_samples * 1000.0 / fs
            self.extents = [replace(e, onset_ms=e.onset_ms - shift_ms,
                                    end_ms=e.end_ms - shift_ms, hf_end_ms=e.hf_end_ms - shift_ms,
                                    rail_end_ms=e.rail_end_ms - shift_ms)
                            for e in self.extents]
        self.window_ms, self.reason = choose_window(self.extents, self.min_window_ms,
                                                    self.max_window_ms, self.margin_ms)
        if self.lag_samples:
            self.reason = (f"pulse markers lag the artifact onset by {self.lag_ms:+.2f} ms: "
                           f"moved by {self.lag_samples:+d} samples; " + self.reason)
        log.info("cut window: %s", self.reason)
        # later pulses no longer matter here
        held.pulses = []

    def _decide_lag(self, onsets_ms: list[float], fs: float) -> None:
        """A constant marker lag, if the measured onsets agree on one (module description)."""
        self._lag_fs = fs
        if not self.correct_lag or not onsets_ms:
            return
        onsets = np.asarray(onsets_ms, dtype=float)
        median = float(np.median(onsets))
        spread = float(np.median(np.abs(onsets - median)))
        # the mean onset of those near the median, less the half-sample bias of a measured
        # onset (marker_lag_ms): at 1 kHz, moving an on-time marker by the median (+1 sample)
        # shifted every TEP by 1 ms
        sample_ms = 1000.0 / fs
        near = onsets[np.abs(onsets - median) <= max(3.0 * spread, sample_ms)]
        onset = marker_lag_ms(float(near.mean()), fs)
        self.lag_ms = -onset  # a marker after the onset lags by a positive amount
        shift = int(math.floor(onset / sample_ms + 0.5))
        if shift and abs(onset) >= 0.25 and spread <= 0.5:
            self.lag_samples = shift

    @staticmethod
    def _contiguous(blocks: list[Block]) -> bool:
        return all(a.stop_sample == b.first_sample for a, b in zip(blocks, blocks[1:]))
