"""Pulse detection stages: turn what we know about TMS pulses into ``"pulse"`` events.

Three sources of knowledge, each a stage that adds :data:`~tmseeg.stream.block.EVENT_PULSE`
events to the blocks passing through (all other events are kept):

* :class:`MarkerPulses` — marker events whose label matches a pattern (``"TMS"``,
  BrainVision ``"Stimulus/S  1"``, ...), optionally shifted by a known marker lag.
* :class:`TriggerChannelPulses` — edges on a stimulus/trigger channel recorded with the EEG.
* :class:`DataPulses` — the pulse artifact itself: a steep jump in many EEG channels at once.

:class:`PulsePlausibility`, after them, refuses pulse events faster than any stimulator fires (a
marker flood from a stuck trigger line or a software loop), whatever their source.

They can be combined (e.g. markers for labels, the data for the exact onset): a stage that finds
a pulse within ``merge_ms`` of a pulse event it received keeps one of them and demotes the other
to a ``"marker"`` event (``extra["duplicate_of"]`` names the kept sample), so later stages never
cut the same pulse twice.
"""
from __future__ import annotations

import logging
import math
import re
from collections import deque
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from tmseeg._ext.jumps import jump_stats
from tmseeg.pipeline.base import StatelessStage, empty_block_like, ms_to_samples
from tmseeg.stream.pulseinfo import pattern_fields, with_info
from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Block, Event, StreamMeta

try:  # one pattern for file reading and live markers
    from tmseeg.io.files import DEFAULT_PULSE_PATTERN
except ImportError:  # pragma: no cover - io not available (minimal install)
    #: Case-insensitive regex for marker labels that are TMS pulses.
    DEFAULT_PULSE_PATTERN = r"(?:\btms)|(?:pulse)|(?:^(?:stimulus/)?s\s*1$)"

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PULSE_PATTERN",
    "MarkerPulses",
    "describe_unmatched",
    "MARKER_TOL_MS",
    "labels_at_pulses",
    "nearest_index",
    "TriggerChannelPulses",
    "DataPulses",
    "OnsetTracker",
    "jump_onsets",
    "marker_lag_ms",
    "marker_pulse",
    "PulsePlausibility",
]


class _PulseMerger:
    """Shared duplicate handling for stages that find pulses themselves.

    A pulse found by the stage is compared with the pulse events it receives (from an earlier
    stage): within ``merge_ms`` of each other they are the same pulse. The stage's own pulse is
    kept (a trigger channel or the data give the exact onset; markers may lag) and the received
    one is demoted to a ``"marker"`` event, unless the received one already went downstream in
    an earlier block — then the stage's own pulse is dropped (with a debug log).
    """

    def __init__(self, merge_ms: float) -> None:
        if merge_ms < 0:
            raise ValueError(f"merge_ms must be >= 0, got {merge_ms}")
        self.merge_ms = float(merge_ms)
        self._recent_in: deque[int] = deque(maxlen=256)  # received pulses already passed on
        self._recent_own: deque[int] = deque(maxlen=256)  # own pulses already passed on

    def _reset_merge(self) -> None:
        self._recent_in.clear()
        self._recent_own.clear()

    def _merge(self, events: list[Event], own: list[Event], sfreq: float) -> list[Event]:
        tol = self.merge_ms * sfreq / 1000.0
        incoming = [e for e in events if e.kind == EVENT_PULSE]
        kept_own: list[Event] = []
        demote: dict[int, int] = {}  # id(incoming event) -> own sample it duplicates
        for ev in own:
            same_block = [e for e in incoming if abs(e.sample - ev.sample) <= tol]
            if same_block:
                for e in same_block:
                    demote[id(e)] = ev.sample
                kept_own.append(ev)
            elif any(abs(s - ev.sample) <= tol for s in self._recent_in):
                log.debug("pulse found at %d duplicates a pulse event already passed on",
                          ev.sample)
            else:
                kept_own.append(ev)
        for e in incoming:
            if id(e) in demote:
                continue
            near = [s for s in self._recent_own if abs(s - e.sample) <= tol]
            if near:
                demote[id(e)] = near[0]
        out: list[Event] = []
        for e in events:
            if id(e) in demote:
                out.append(replace(e, kind=EVENT_MARKER,
                                   extra={**e.extra, "duplicate_of": demote[id(e)]}))
            else:
                out.append(e)
                if e.kind == EVENT_PULSE:
                    self._recent_in.append(e.sample)
        for ev in kept_own:
            self._recent_own.append(ev.sample)
        return out + kept_own


def describe_unmatched(counts: Mapping[str, int], most: int = 8) -> tuple[str, str]:
    """Marker labels seen without a pulse among them, for a message that says how to fix it.

    Returns
    -------
    present : str
        ``"'R128' x78, 'pre' x1"`` (most frequent first), or ``"none"``.
    pattern : str
        A quoted pattern naming the most frequent label exactly (``"'^R128$'"``), or
        ``"REGEX"`` when there is none.
    """
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    present = ", ".join(f"'{label}' x{n}" for label, n in ranked[:most]) or "none"
    pattern = f"'^{re.escape(str(ranked[0][0]))}$'" if ranked else "REGEX"
    return present, pattern


#: how far a marker may lie from the pulse artifact it names
MARKER_TOL_MS = 10.0


def nearest_index(sorted_samples: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Index into ``sorted_samples`` (ascending, not empty) of the nearest one to each of
    ``samples`` (ties go to the earlier one)."""
    if sorted_samples.size == 1:
        return np.zeros(np.shape(samples), dtype=np.intp)
    j = np.clip(np.searchsorted(sorted_samples, samples), 1, sorted_samples.size - 1)
    earlier = np.abs(sorted_samples[j - 1] - samples) <= np.abs(sorted_samples[j] - samples)
    return np.where(earlier, j - 1, j)


def labels_at_pulses(markers: Sequence[tuple[int, str]], pulse_samples: Sequence[int],
                     sfreq: float, n_samples: int, tol_ms: float = MARKER_TOL_MS) -> list[dict]:
    """Marker labels whose markers fall on pulses found another way (far more than by chance).

    For a stimulator whose marker nobody named (``R128``, a stim code ``1``, ...): the pulse
    artifacts found in the data say which label is the pulse, even where the detection misses
    some pulses (small artifacts at a low sampling rate) and the markers catch them all.

    A label counts when at least 3 of its markers, and at least a fifth of them, have a pulse
    within ``tol_ms``, and that is more than 10 times what markers placed at random would hit.

    Parameters
    ----------
    markers : sequence of (int, str)
        Marker samples and labels.
    pulse_samples : sequence of int
        Pulses found another way (e.g. by :class:`DataPulses`).
    sfreq : float
        Sampling rate in Hz.
    n_samples : int
        Length of the recording (for the chance level).
    tol_ms : float
        Largest marker-to-pulse distance that counts as the same pulse.

    Returns
    -------
    list of dict
        ``label``, ``n_markers``, ``n_at_pulses`` and ``lag_ms`` (median pulse minus marker
        time), most hits first.
    """
    pulses = np.sort(np.asarray(pulse_samples, dtype=np.int64))
    if pulses.size == 0 or n_samples <= 0:
        return []
    tol = tol_ms * sfreq / 1000.0
    by_label: dict[str, list[int]] = {}
    for sample, label in markers:
        by_label.setdefault(str(label), []).append(int(sample))
    out = []
    for label, samples in by_label.items():
        m = np.asarray(samples, dtype=np.int64)
        lag = pulses[nearest_index(pulses, m)] - m
        hit = np.abs(lag) <= tol
        n_hit = int(hit.sum())
        chance = m.size * min(1.0, pulses.size * (2 * tol + 1) / n_samples)
        if n_hit >= 3 and n_hit >= 0.2 * m.size and n_hit > 10 * chance:
            out.append({"label": label, "n_markers": int(m.size), "n_at_pulses": n_hit,
                        "lag_ms": float(np.median(lag[hit]) * 1000.0 / sfreq)})
    return sorted(out, key=lambda d: -d["n_at_pulses"])


def marker_pulse(marker: Event, shift: int, shift_s: float,
                 info: Mapping[str, object] | None = None) -> Event:
    """The pulse event a pulse marker stands for: moved by ``shift`` samples (``shift_s``
    seconds on its time stamp), remembering where the marker was, with ``info`` (the pulse
    pattern's named groups) added to its metadata (:mod:`tmseeg.stream.pulseinfo`)."""
    extra = with_info(marker.extra, info or {})
    return replace(marker, sample=marker.sample + shift, kind=EVENT_PULSE,
                   time_s=marker.time_s + shift_s,
                   extra={**extra, "source": "marker", "marker_sample": marker.sample})


class MarkerPulses(StatelessStage):
    """Marker events whose label matches a regex become pulse events.

    Parameters
    ----------
    pattern : str
        Regular expression searched (case-insensitive) in each ``"marker"`` event's label.
        The default, :data:`DEFAULT_PULSE_PATTERN` (shared with :mod:`tmseeg.io.files`),
        matches ``"TMS"``, ``"tms_pulse"``, anything containing ``"pulse"``, and BrainVision
        ``"Stimulus/S  1"``/``"S  1"``. For other conventions pass your own, e.g. ``"R128"``
        or ``r"^Stimulus/S\\s*128$"``.
    offset_ms : float
        Added to the marker time to get the pulse sample (negative when markers lag the pulse,
        e.g. ``-3.0`` for a stimulator whose marker is sent 3 ms after the pulse).

    Named groups of the pattern become the pulse's metadata: ``TMS/(?P<intensity_pct>\\d+)``
    on ``TMS/55`` gives ``intensity_pct = 55`` (:mod:`tmseeg.stream.pulseinfo`).
    """

    name = "marker_pulses"

    def __init__(self, pattern: str = DEFAULT_PULSE_PATTERN, offset_ms: float = 0.0) -> None:
        try:
            self._re = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"MarkerPulses: pattern {pattern!r} is not a valid regex: {exc}"
                             ) from exc
        self.pattern = pattern
        self.offset_ms = float(offset_ms)
        self.reset()

    def reset(self) -> None:
        """Forget the markers seen (a new stream begins)."""
        self.n_matched = 0
        self.unmatched: dict[str, int] = {}  # label -> count, while nothing has matched
        self._warned = False

    def matches(self, label: str) -> bool:
        """Whether a marker label is a pulse under this stage's pattern."""
        return self._re.search(label) is not None

    def fields(self, label: str) -> dict:
        """The pattern's named groups in ``label``, as pulse metadata."""
        return pattern_fields(self._re.search(label))

    def process(self, block: Block) -> Block:
        """Return the block with pulse events added (see the class description)."""
        if not block.events:
            return block
        shift = ms_to_samples(self.offset_ms, block.meta.sfreq)
        events = []
        for e in block.events:
            found = self._re.search(e.label) if e.kind == EVENT_MARKER else None
            if found is not None:
                e = marker_pulse(e, shift, self.offset_ms / 1000.0, pattern_fields(found))
                self.n_matched += 1
            elif e.kind == EVENT_MARKER and not self.n_matched and len(self.unmatched) < 50:
                self.unmatched[e.label] = self.unmatched.get(e.label, 0) + 1
            events.append(e)
        if not self.n_matched and not self._warned and sum(self.unmatched.values()) >= 3:
            # live, nobody reads a summary: say it while the experimenter can still fix it
            self._warned = True
            present, pattern = describe_unmatched(self.unmatched)
            log.warning("markers arrive but none is a TMS pulse under the pattern '%s' (labels so "
                        "far: %s); if one is the pulse, set [pulses] pattern = %s (or "
                        "--pulse-pattern)", self.pattern, present, pattern)
        return replace(block, events=events)


class TriggerChannelPulses(_PulseMerger):
    """Edges on a trigger/stimulus channel become pulse events.

    Parameters
    ----------
    channel : str
        Name of the trigger channel.
    threshold : float, optional
        Level the channel crosses at an edge, in the channel's units. ``None`` uses 0.5, which
        suits digital stim channels (0 = idle, event codes >= 1, MNE's convention) and TTL in
        volts; give a threshold for analog trigger inputs scaled to µV.
    edge : {"rising", "falling"}
        Which crossing marks the pulse.
    refractory_ms : float
        Edges closer than this to the previous pulse are ignored (contact bounce).
    merge_ms : float
        A pulse event received from an earlier stage within this distance of an edge is the same
        pulse: the edge's sample is kept, the other is demoted to a marker.

    Notes
    -----
    The last sample of each block is carried, so an edge between two blocks is found at the
    first sample at or beyond the threshold. The first sample of the stream is never an edge.
    """

    name = "trigger_pulses"

    def __init__(self, channel: str, threshold: float | None = None, edge: str = "rising",
                 refractory_ms: float = 1.0, merge_ms: float = 5.0) -> None:
        if edge not in ("rising", "falling"):
            raise ValueError(f"edge must be 'rising' or 'falling', got {edge!r}")
        super().__init__(merge_ms)
        self.channel = channel
        self.threshold = 0.5 if threshold is None else float(threshold)
        self.edge = edge
        self.refractory_ms = float(refractory_ms)
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        self._last = math.nan
        self._last_pulse: int | None = None
        self._row: int | None = None
        self._reset_merge()

    def flush(self) -> Block | None:
        """Release what is still held back at the end of the stream (None if nothing)."""
        return None

    def process(self, block: Block) -> Block:
        """Return the block with pulse events added (see the class description)."""
        if self._row is None:
            self._row = int(block.meta.index(self.channel)[0])
        x = block.data[self._row]
        if x.size == 0:
            return replace(block, events=self._merge(block.events, [], block.meta.sfreq))
        prev = np.concatenate([[self._last], x[:-1]])
        if self.edge == "rising":
            hits = np.flatnonzero((prev < self.threshold) & (x >= self.threshold))
        else:
            hits = np.flatnonzero((prev >= self.threshold) & (x < self.threshold))
        self._last = x[-1]
        refr = self.refractory_ms * block.meta.sfreq / 1000.0
        own = []
        for j in hits:
            s = block.first_sample + int(j)
            if self._last_pulse is not None and s - self._last_pulse < refr:
                continue
            self._last_pulse = s
            own.append(Event(sample=s, label=self.channel, kind=EVENT_PULSE,
                             time_s=float(block.timestamps[j]),
                             extra={"source": "trigger", "value": float(x[j])}))
        return replace(block, events=self._merge(block.events, own, block.meta.sfreq))


class OnsetTracker:
    """The rules that turn "many channels jump at this sample" into pulse onsets.

    Shared by :class:`DataPulses` (streaming) and :func:`jump_onsets` (a stretch of data).
    Feed it, in time order, every sample where enough channels jump (:meth:`step`); it answers
    with the onset of a new pulse or None.

    * Within ``refractory`` samples of the last onset: the last pulse's own jump.
    * Within ``gate`` samples: a new pulse must (1) jump the way the last pulse's onset did
      (cosine >= 0.8), (2) be at least half as large, and (3) be a *fresh* jump: at least
      ``rise_ratio`` times any jump in the ``n_back`` samples before it. Ringing decays and
      never rises out of its own past; a second pulse does, even on top of the first one's
      ringing.
    * The gate also stays open while the last pulse's artifact goes on: as long as jumps keep
      coming less than ``quiet`` samples apart (a TMS-evoked muscle burst can outlast any fixed
      gate; a new pulse passes the tests above anyway).
    * While every sample since the onset jumped the same way (cosine >= 0.8 with the sample
      before), the onset's rise goes on: at 1 kHz a pulse's rise can span 3 samples, the first
      of them small. Ringing turns, and ends this.
    * Later: any jump is a new pulse.
    """

    def __init__(self, refractory: int, gate: int, n_back: int, rise_ratio: float = 1.5,
                 quiet: int = 0) -> None:
        self.refractory, self.gate, self.n_back = int(refractory), int(gate), int(n_back)
        self.rise_ratio = float(rise_ratio)
        self.quiet = int(quiet)
        self.last_onset: int | None = None
        self.last_jump: int | None = None
        self.last_vector: np.ndarray | None = None
        self.rising = False
        self.pattern: np.ndarray | None = None

    def step(self, s: int, vector: np.ndarray, size: float, before: np.ndarray) -> int | None:
        """Sample ``s`` jumps with ``vector`` (across channels, norm ``size``); ``before`` holds
        the jump sizes of the ``n_back`` samples before it. Returns a new onset or None."""
        last_jump, self.last_jump = self.last_jump, s
        last_vector, self.last_vector = self.last_vector, vector
        # the onset's rise goes on while every sample since it jumps the same way
        self.rising = (self.rising and last_jump == s - 1
                       and _cosine(vector, last_vector) >= 0.8)
        if self.last_onset is not None:
            since = s - self.last_onset
            if since < self.refractory:
                return None
            going_on = last_jump is not None and s - last_jump < self.quiet
            if (since < self.gate or going_on) and self.pattern is not None:
                ref = self.pattern
                nr = float(np.linalg.norm(ref))
                if size < 0.5 * nr or _cosine(vector, ref) < 0.8:
                    return None
                if before.size and size < self.rise_ratio * float(before.max()):
                    return None  # ringing (or another echo) of the pulse
                if self.rising:
                    return None  # the pulse's own rise, still going (a slow rise at 1 kHz)
        self.last_onset, self.pattern, self.rising = s, vector, True
        return s


def _cosine(a: np.ndarray, b: np.ndarray | None) -> float:
    if b is None:
        return 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na and nb else 0.0


def marker_lag_ms(onset_ms: float, sfreq: float) -> float:
    """The lag of a marker behind its pulse, from the artifact onset measured relative to it
    (first jumped sample minus marker; negative when the marker comes late).

    The first sample that shows a pulse's artifact comes 0..1 sample after the pulse (half a
    sample on average), while a marker put on the pulse's nearest sample is on time: an
    on-time marker measures onsets of 0 or +1 sample. So half a sample is taken off."""
    return onset_ms - 500.0 / sfreq


def jump_onsets(candidates: np.ndarray, jumps: np.ndarray, refractory: int, gate: int,
                n_back: int, rise_ratio: float = 1.5) -> list[int]:
    """Pulse onsets in a stretch of data, by the rules of :class:`OnsetTracker`.

    Parameters
    ----------
    candidates : ndarray of int
        Ascending columns of ``jumps`` where enough channels jump.
    jumps : ndarray, shape (n_channels, n_samples)
        Sample-to-sample differences.
    refractory, gate, n_back : int
        In samples (see :class:`OnsetTracker`).
    """
    sizes = np.sqrt(np.nansum(jumps ** 2, axis=0))
    tracker = OnsetTracker(refractory, gate, n_back, rise_ratio)
    out = []
    for j in candidates:
        j = int(j)
        onset = tracker.step(j, np.nan_to_num(jumps[:, j]), float(sizes[j]),
                             sizes[max(0, j - n_back):j])
        if onset is not None:
            out.append(onset)
    return out


class DataPulses(_PulseMerger):
    """Find TMS pulses in the EEG itself: a steep jump in many channels at the same sample.

    The derivative (µV/ms, one-sample difference) of each chosen channel is compared with a
    threshold; a sample where at least ``min_channels`` channels exceed it is a pulse onset (the
    first such sample, so the onset is the first sample of the jump, not its peak).

    After a pulse, ``refractory_ms`` is dead time. For ``pattern_gate_ms`` after a pulse a new
    onset must pass three tests that tell a second physical pulse from the first pulse's own
    artifact (the return from amplifier saturation, ringing, the TMS-evoked muscle burst):

    1. **same pattern**: its jump across channels points the way the previous pulse's onset
       did (cosine >= 0.8; the return from a rail and every other half-cycle of ringing point
       the other way);
    2. **same size**: at least half as large as the previous pulse's onset jump;
    3. **a fresh jump**: at least ``rise_ratio`` (1.5) times any jump in the ``rise_ms``
       (0.8 ms) before it. Ringing decays — each cycle is smaller than the
       ones before — so it never rises out of its own recent past; a second pulse does, even
       on top of the first one's ringing.

    (:class:`OnsetTracker` has the rules.)

    The next pulse of a pair (>= 1.5 ms apart), a 10 Hz train or a 50 Hz theta burst passes
    all three: its artifact repeats the first one's spatial pattern on quiet (or decaying) data.

    Parameters
    ----------
    channels : list of str, optional
        Channels to watch; default all EEG channels.
    threshold_uv_per_ms : float, optional
        Derivative threshold in µV/ms for all channels. Default ``None``: per channel
        ``k_mad`` times the robust standard deviation of its derivative (1.4826 x median
        absolute derivative) over the first ``calibration_ms`` of data.
    k_mad : float
        Multiplier for the automatic threshold (default 20: an EEG/line-noise derivative almost
        never reaches it, a TMS artifact exceeds it many times over).
    refractory_ms : float
        Dead time after a pulse (default 1.0 ms). This is the shortest inter-pulse interval
        resolved: paired pulses 1-3 ms apart are found as two pulses if the first pulse's
        artifact has not saturated the amplifier (a saturated channel cannot show the second
        jump) and both jumps share their spatial pattern.
    min_channels : int, optional
        Channels that must exceed the threshold at the same sample; default a quarter of the
        watched channels (at least 1). One channel jumping (an electrode pop) is not a pulse.
    pattern_gate_ms : float
        How long after a pulse a new onset must pass the tests above (default 50 ms, longer
        than the pulse artifact and its muscle response).
    rise_ms, rise_ratio : float
        The fresh-jump test (3. above): the look-back and the factor.
    quiet_ms : float
        The tests also apply after ``pattern_gate_ms`` while the artifact goes on: until no
        jump came for this long (a muscle burst outlasting the gate is not a new pulse).
    calibration_ms : float
        Data used to set the automatic threshold (default 500 ms). These first samples are held
        back (released, with their pulses, once the threshold is known); not used when
        ``threshold_uv_per_ms`` is given.
    merge_ms : float
        A pulse event received from an earlier stage (a marker) within this distance of a
        detected onset is the same pulse: the detected onset is kept, the marker is demoted.

    Attributes
    ----------
    threshold : ndarray or None
        Per-channel thresholds in µV/ms once known.
    n_detected : int
        Pulses found so far.
    """

    name = "data_pulses"

    def __init__(
        self,
        channels: Sequence[str] | None = None,
        threshold_uv_per_ms: float | None = None,
        k_mad: float = 20.0,
        refractory_ms: float = 1.0,
        min_channels: int | None = None,
        pattern_gate_ms: float = 50.0,
        calibration_ms: float = 500.0,
        merge_ms: float = 5.0,
        rise_ms: float = 0.8,
        rise_ratio: float = 1.5,
        quiet_ms: float = 5.0,
    ) -> None:
        super().__init__(merge_ms)
        if threshold_uv_per_ms is not None and not threshold_uv_per_ms > 0:
            raise ValueError(f"threshold_uv_per_ms must be positive, got {threshold_uv_per_ms}")
        if refractory_ms <= 0:
            raise ValueError(f"refractory_ms must be positive, got {refractory_ms}")
        self.channels = None if channels is None else list(channels)
        self.threshold_uv_per_ms = threshold_uv_per_ms
        self.k_mad = float(k_mad)
        self.refractory_ms = float(refractory_ms)
        self.min_channels = min_channels
        self.pattern_gate_ms = float(pattern_gate_ms)
        self.calibration_ms = float(calibration_ms)
        self.rise_ms = float(rise_ms)
        self.rise_ratio = float(rise_ratio)
        self.quiet_ms = float(quiet_ms)
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        self._rows: np.ndarray | None = None
        self._norm_tail = np.zeros(0)  # jump sizes of the last rise_ms (across blocks)
        self._tracker: OnsetTracker | None = None
        self._min_ch = 1
        self.threshold: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._held: list[Block] = []
        self.n_detected = 0
        self._reset_merge()

    def _setup(self, meta: StreamMeta) -> None:
        if self.channels is not None:
            rows = meta.index(self.channels)
        else:
            rows = meta.picks("eeg")
            if rows.size == 0:
                raise ValueError(
                    f"DataPulses: stream {meta.name!r} has no EEG channels; name the channels "
                    "to watch with channels=[...]")
        self._rows = rows = np.ascontiguousarray(rows, dtype=np.intp)
        n = rows.size
        self._min_ch = (max(1, math.ceil(n / 4)) if self.min_channels is None
                        else int(self.min_channels))
        if not 1 <= self._min_ch <= n:
            raise ValueError(f"min_channels={self._min_ch} but only {n} channels are watched")
        if self.threshold_uv_per_ms is not None:
            self.threshold = np.full(n, float(self.threshold_uv_per_ms))

    def _calibrate(self, data: np.ndarray, sfreq: float) -> None:
        d = np.abs(np.diff(data, axis=1)) * (sfreq / 1000.0)
        with np.errstate(all="ignore"):
            sigma = 1.4826 * np.nanmedian(d, axis=1)
        thr = self.k_mad * sigma
        # a flat or dead channel (sigma 0 / NaN) cannot vote
        thr[~(thr > 0)] = np.inf
        self.threshold = np.ascontiguousarray(thr, dtype=np.float64)
        log.info("DataPulses: thresholds %.1f..%.1f uV/ms (median %.1f) from %d samples",
                 np.nanmin(thr), np.nanmax(thr[np.isfinite(thr)]) if np.isfinite(thr).any()
                 else np.inf, np.median(thr), data.shape[1])

    def _detect(self, block: Block) -> list[Event]:
        data = block.data
        n = data.shape[1]
        if n == 0:
            return []
        sfreq = block.meta.sfreq
        rows = self._rows
        scale = sfreq / 1000.0
        prev = self._prev if self._prev is not None else data[rows, 0].astype(float)
        if data.dtype != np.float64:
            data = data.astype(np.float64)
        # per sample: channels over threshold, jump size across the voting channels (a dead
        # channel's inf threshold leaves it out; NaN jumps count as none), in one compiled pass
        count = np.empty(n, dtype=np.int32)
        norm = np.empty(n)
        jump_stats(data, rows, np.ascontiguousarray(prev, dtype=np.float64), scale,
                   self.threshold, count, norm)
        self._prev = data[rows, -1].copy()
        if self._tracker is None:
            self._tracker = OnsetTracker(
                refractory=int(round(self.refractory_ms * sfreq / 1000.0)),
                gate=int(round(self.pattern_gate_ms * sfreq / 1000.0)),
                n_back=max(1, int(round(self.rise_ms * sfreq / 1000.0))),
                rise_ratio=self.rise_ratio,
                quiet=int(round(self.quiet_ms * sfreq / 1000.0)))
        n_back = self._tracker.n_back
        norms = np.concatenate([self._norm_tail, norm])  # jump sizes incl. the last rise_ms
        off = self._norm_tail.size
        self._norm_tail = norms[-n_back:].copy()
        found = []
        candidates = np.flatnonzero(count >= self._min_ch)
        if candidates.size:
            voting = np.isfinite(self.threshold)
        for j in candidates:
            s = block.first_sample + int(j)
            before = data[rows, j - 1] if j else prev
            d = (data[rows, j] - before) * scale
            v = np.nan_to_num(np.where(voting, d, 0.0))
            onset = self._tracker.step(s, v, float(norm[j]),
                                       norms[max(0, off + j - n_back):off + j])
            if onset is None:
                continue
            self.n_detected += 1
            found.append(Event(sample=onset, label="TMS (detected)", kind=EVENT_PULSE,
                               time_s=float(block.timestamps[j]) - (s - onset) / sfreq,
                               extra={"source": "data", "n_channels": int(count[j])}))
        return found

    def process(self, block: Block) -> Block:
        """Return the block with pulse events added (see the class description)."""
        if self._rows is None:
            self._setup(block.meta)
        if self.threshold is None:
            self._held.append(block)
            have = sum(b.n_samples for b in self._held)
            if have < self.calibration_ms * block.meta.sfreq / 1000.0:
                return empty_block_like(block, first_sample=self._held[0].first_sample)
            return self._release_held()
        own = self._detect(block)
        return replace(block, events=self._merge(block.events, own, block.meta.sfreq))

    def _release_held(self) -> Block:
        from tmseeg.pipeline.base import concat_blocks

        whole = concat_blocks(self._held)
        self._held = []
        if self.threshold is None:
            self._calibrate(whole.data[self._rows], whole.meta.sfreq)
        own = self._detect(whole)
        return replace(whole, events=self._merge(whole.events, own, whole.meta.sfreq))

    def flush(self) -> Block | None:
        """Release what is still held back at the end of the stream (None if nothing)."""
        if not self._held:
            return None
        return self._release_held()


class PulsePlausibility(StatelessStage):
    """Refuse pulse events faster than any stimulator can fire; say so once per second.

    Applies to every pulse event leaving the pulse stages (markers, a trigger channel, the
    data), in order of arrival. A pulse is refused when

    1. it comes less than ``min_interval_ms`` after the previous pulse *candidate*, or
    2. the last ``1 s`` already holds ``max_rate_hz`` + 1 pulse candidates or more (one of
       slack for timing jitter),

    where refused pulses count as candidates too: a flood stays refused until it stops, instead
    of letting one pulse in every ``min_interval_ms``. Refused pulses leave the stream (no cut,
    no epoch, no row in ``pulses.csv``); how many, when and why is logged as one warning per
    second of stream that had refusals, and kept in :attr:`refusals` (``summary.json``).

    The defaults are the fastest protocols in use: paired-pulse and quadripulse protocols put
    pulses down to 1-1.5 ms apart (SICI, SICF, QPS-1.5; the conditioning pulse of a pair marked
    on its test pulse comes from the data, 1-3 ms before the marker), theta bursts 20 ms apart
    (50 Hz), and no stimulator repeats faster than 100 Hz. Pulses 1 ms apart are also the
    closest the data detection and a trigger channel resolve (their ``refractory_ms``).

    Parameters
    ----------
    min_interval_ms : float
        Shortest interval between two pulses (default 1.0 ms; 0 turns the test off). Compared
        in whole samples: at 1 kHz a pair one sample apart passes.
    max_rate_hz : float
        Most pulses in any second (default 100; 0 turns the test off).

    Attributes
    ----------
    n_refused : int
        Pulse events refused so far.
    refusals : list of dict
        One entry per second of stream with refusals: ``start_s`` (from the stream's first
        sample), ``n_refused``, ``n_accepted`` (in that second), ``reasons`` (count per
        test), ``labels`` (count per pulse label).
    """

    name = "pulse_plausibility"

    #: length of the rate window and of the summary bins
    WINDOW_S = 1.0
    #: how late a pulse event may arrive and still be counted in its second's warning
    LATE_S = 2.0

    def __init__(self, min_interval_ms: float = 1.0, max_rate_hz: float = 100.0) -> None:
        if min_interval_ms < 0 or max_rate_hz < 0:
            raise ValueError(f"min_interval_ms and max_rate_hz must be >= 0 (0 = off), got "
                             f"{min_interval_ms}, {max_rate_hz}")
        self.min_interval_ms = float(min_interval_ms)
        self.max_rate_hz = float(max_rate_hz)
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        self.n_refused = 0
        self.refusals: list[dict] = []
        self._first: int | None = None
        self._fs = math.nan
        self._recent: deque[int] = deque()  # candidate samples of the last second
        self._last: int | None = None  # the latest candidate
        self._bins: dict[int, dict] = {}  # the seconds being counted, by index

    def process(self, block: Block) -> Block:
        """Return the block without its implausible pulse events (see the class description)."""
        if self._first is None:
            self._first, self._fs = block.first_sample, block.meta.sfreq
            self._floor = ms_to_samples(self.min_interval_ms, self._fs)
            self._window = max(1, ms_to_samples(self.WINDOW_S * 1000.0, self._fs))
            self._most = (math.floor(self.max_rate_hz * self.WINDOW_S) + 1
                          if self.max_rate_hz > 0 else math.inf)
        events = block.events
        if any(e.kind == EVENT_PULSE for e in events):
            events = [e for e in events if e.kind != EVENT_PULSE or self._accept(e)]
        # a second's count is said once the stream is LATE_S past it: markers come late (a
        # busy network, a loaded machine), and one second must not be said twice
        late = self.LATE_S * self._fs
        for k in [k for k, b in self._bins.items() if block.stop_sample >= b["stop"] + late]:
            self._close_bin(k)
        return block if len(events) == len(block.events) else replace(block, events=events)

    def flush(self) -> Block | None:
        """Nothing is held back; the last second's refusals are reported."""
        for k in sorted(self._bins):
            self._close_bin(k)
        return None

    def _accept(self, e: Event) -> bool:
        s = e.sample
        while self._recent and self._recent[0] <= s - self._window:
            self._recent.popleft()
        why = ""
        if self._floor > 0 and self._last is not None and abs(s - self._last) < self._floor:
            why = f"closer than {self.min_interval_ms:g} ms to the previous pulse"
        elif len(self._recent) >= self._most:
            why = f"more than {self.max_rate_hz:g} pulses in a second"
        self._last = s
        self._recent.append(s)
        self._count(s, e.label, why)
        return not why

    def _count(self, s: int, label: str, why: str) -> None:
        k = (s - self._first) // self._window
        b = self._bins.get(k)
        if b is None:
            b = self._bins[k] = {"k": k, "stop": self._first + (k + 1) * self._window,
                                 "n_refused": 0, "n_accepted": 0, "reasons": {}, "labels": {}}
        if not why:
            b["n_accepted"] += 1
            return
        self.n_refused += 1
        b["n_refused"] += 1
        b["reasons"][why] = b["reasons"].get(why, 0) + 1
        if len(b["labels"]) < 20 or label in b["labels"]:
            b["labels"][label] = b["labels"].get(label, 0) + 1

    def _close_bin(self, k: int) -> None:
        b = self._bins.pop(k)
        if not b["n_refused"]:
            return
        entry = {"start_s": b["k"] * self._window / self._fs, "n_refused": b["n_refused"],
                 "n_accepted": b["n_accepted"], "reasons": b["reasons"], "labels": b["labels"]}
        self.refusals.append(entry)
        log.warning("%s", self._describe(entry))

    def _describe(self, entry: dict) -> str:
        t0 = entry["start_s"]
        reasons = "; ".join(f"{n} {why}" for why, n in entry["reasons"].items())
        labels = ", ".join(f"'{lab}' x{n}" for lab, n in
                           sorted(entry["labels"].items(), key=lambda kv: -kv[1])[:3])
        return (f"pulse plausibility: refused {entry['n_refused']} pulse event(s) at "
                f"{t0:.0f}-{t0 + self.WINDOW_S:.0f} s ({reasons}; labels {labels}), "
                f"{entry['n_accepted']} accepted: faster than any stimulator fires (a stuck "
                "trigger line, a marker loop?). Limits: [pulses] min_interval_ms, max_rate_hz")

    def messages(self) -> list[str]:
        """One line for ``summary.json``: how many pulses were refused, when and why."""
        if not self.n_refused:
            return []
        starts = [r["start_s"] for r in self.refusals]
        first, last = min(starts), max(starts) + self.WINDOW_S
        reasons: dict[str, int] = {}
        for r in self.refusals:
            for why, n in r["reasons"].items():
                reasons[why] = reasons.get(why, 0) + n
        said = "; ".join(f"{n} {why}" for why, n in reasons.items())
        return [f"{self.n_refused} pulse event(s) refused as faster than any stimulator fires, "
                f"in {len(self.refusals)} second(s) between {first:.0f} and {last:.0f} s "
                f"({said}): no epoch, no row in pulses.csv. Check the trigger or marker line; "
                f"the limits are [pulses] min_interval_ms = {self.min_interval_ms:g} and "
                f"max_rate_hz = {self.max_rate_hz:g} (0 = off)."]

    def summary(self) -> dict:
        """What ``summary.json`` says about refused pulses."""
        return {"min_interval_ms": self.min_interval_ms, "max_rate_hz": self.max_rate_hz,
                "n_refused": self.n_refused, "refusals": self.refusals}
