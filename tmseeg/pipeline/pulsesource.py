"""Pulse markers checked against the pulse artifacts in the data, with one rule live and offline.

A stimulator's markers say *which* pulses a lab means; the artifact in the EEG says *where*
every pulse is. They disagree in three ways that real recordings show:

* the markers carry a label nobody configured (``R128``, a stim code ``1``): no marker matches
  the pulse pattern;
* there are no markers at all (or none near the pulses);
* some pulses have no marker: the conditioning pulse of a paired-pulse protocol marked only on
  its test pulse, pulses of another condition.

:class:`CheckedMarkerPulses` (``[pulses] source = "markers"``, the default) runs the data
detection (:class:`~tmseeg.pipeline.pulses.DataPulses`) next to the markers and settles these
with a rule that depends only on sample positions, never on block boundaries, so a live stream
and ``tmseeg analyze`` over its recording make the same decisions on the same pulses:

1. **The source** is decided once, at the first of:

   * a marker that matches the pattern: the markers are the pulses (``mode = "markers"``);
   * ``n_decide`` (5) pulse artifacts found in the data, or ``max_hold_s`` (20 s) after the
     first one: the markers up to then (those of the last ``max_hold_s``) are compared with the
     artifacts (:func:`~tmseeg.pipeline.pulses.labels_at_pulses`). Labels that fall on them far
     above chance become the pulse pattern, with their median lag as marker offset
     (``mode = "labels"``); without such a label the detected artifacts are the pulses
     (``mode = "data"``).

   Until then the stage holds the data from the first event on (at most ``max_hold_s`` +
   ``wait_ms``; a stream without pulses is delayed by ``2 tol_ms + wait_ms`` only).
2. **Each pulse artifact** the data show is, in the marker modes, *claimed* by the nearest
   pulse marker within ``tol_ms`` (10 ms), or else it is an **unmarked pulse**: a pulse event
   labelled :data:`UNMARKED_PULSE_LABEL` that later stages cut and clean like any pulse but that
   gets no epoch (``extra["epoch"] = False``). A claimed artifact adds nothing: the marker is
   the pulse (its lag is corrected by :class:`~tmseeg.pipeline.cutwindow.CutWindow`). This is
   decided ``2 tol_ms + wait_ms`` (60 ms) after the artifact, when every marker that could
   claim it has arrived, which is the stage's constant delay.

A marker delivered more than ``wait_ms`` after its sample (a slow marker stream live) may miss
that decision; such markers are counted in :attr:`CheckedMarkerPulses.n_late_markers` and named
as a possible live/offline difference (:meth:`CheckedMarkerPulses.differences`).
"""
from __future__ import annotations

import bisect
import logging
import math
import re
from collections import Counter
from dataclasses import replace

import numpy as np

from tmseeg.pipeline.base import HeldBlocks, ms_to_samples
from tmseeg.pipeline.pulses import (DEFAULT_PULSE_PATTERN, MARKER_TOL_MS, DataPulses,
                                   MarkerPulses, describe_unmatched, labels_at_pulses,
                                   marker_lag_ms, marker_pulse)
from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Block, Event

log = logging.getLogger(__name__)

__all__ = ["CheckedMarkerPulses", "UNMARKED_PULSE_LABEL"]

#: label of the pulse events made where the data show a pulse artifact that no marker names;
#: those pulses are cut and cleaned but get no epoch
UNMARKED_PULSE_LABEL = "tmseeg: unmarked pulse artifact"

#: most markers remembered while the source is undecided (for the label test)
_MAX_SEEN_MARKERS = 10_000


class CheckedMarkerPulses:
    """Marker pulses, checked against (and completed by) the pulse artifacts in the data.

    See the module description for the rules.

    Parameters
    ----------
    pattern : str
        Regular expression (case-insensitive) of the marker labels that are pulses.
    offset_ms : float
        Added to marker times (negative when markers lag the pulse).
    detector : DataPulses, optional
        The data detection (default: :class:`~tmseeg.pipeline.pulses.DataPulses` with its
        defaults). Without EEG channels to watch, the markers are used unchecked.
    n_decide : int
        Pulse artifacts after which the source is decided when no marker matches the pattern.
    tol_ms : float
        Largest marker-to-artifact distance that makes them the same pulse.
    wait_ms : float
        How late (after its sample) a marker may arrive and still take part in the decisions.
    max_hold_s : float
        Longest wait for ``n_decide`` artifacts; also how far back markers count in the label
        test.

    Attributes
    ----------
    mode : {"markers", "labels", "data"} or None
        The source decided (None: not yet).
    pattern, offset_ms : str, float
        In force (``"labels"`` replaces both).
    n_marked, n_unmarked, n_late_markers : int
        Pulses from markers, unmarked pulse artifacts, markers that arrived too late.
    """

    name = "checked_marker_pulses"

    def __init__(self, pattern: str = DEFAULT_PULSE_PATTERN, offset_ms: float = 0.0,
                 detector: DataPulses | None = None, n_decide: int = 5,
                 tol_ms: float = MARKER_TOL_MS, wait_ms: float = 40.0,
                 max_hold_s: float = 20.0) -> None:
        self._given = MarkerPulses(pattern or DEFAULT_PULSE_PATTERN, offset_ms)  # validates
        self._given_offset_ms = float(offset_ms)
        self.detector = detector if detector is not None else DataPulses()
        if n_decide < 1:
            raise ValueError(f"n_decide must be >= 1, got {n_decide}")
        if tol_ms <= 0 or wait_ms < 0 or max_hold_s <= 0:
            raise ValueError(f"tol_ms and max_hold_s must be positive and wait_ms >= 0, got "
                             f"{tol_ms}, {wait_ms}, {max_hold_s}")
        self.n_decide = int(n_decide)
        self.tol_ms = float(tol_ms)
        self.wait_ms = float(wait_ms)
        self.max_hold_s = float(max_hold_s)
        self.reset()

    def reset(self) -> None:
        """Forget all state (a new stream begins): the source is decided again."""
        self.detector.reset()
        self._markers = self._given  # the pattern in force ("labels" replaces it)
        self.offset_ms = self._given_offset_ms
        self.mode: str | None = None
        self.reason = "not decided yet"
        self.hits: list[dict] = []
        self.warnings: list[str] = []
        self._held = HeldBlocks()
        self._ahead: list[Event] = []  # events whose sample has not arrived yet
        self._fs = math.nan
        self._check = True  # False: no EEG to watch, the markers are used as they are
        self._first: int | None = None  # first sample of the stream
        self._released: int | None = None  # samples before this one went downstream
        self._adopt_from = -math.inf  # earlier markers stay plain markers ("labels" mode)
        self._seen: list[tuple[int, str]] = []  # markers while undecided
        self._first_match: int | None = None  # first pulse marker seen while undecided
        self._marks: list[int] = []  # pulse samples of pulse markers (recent, sorted)
        self._dets: list[int] = []  # pulse artifacts found (recent, sorted)
        self._unmarked_gaps_ms: list[float] = []
        self.n_marked = 0
        self.n_unmarked = 0
        self.n_late_markers = 0
        self._late_said_at: int | None = None  # sample of the last line said about late ones
        self._late_unsaid = 0
        self.decided_at: int | None = None

    # -- sample arithmetic -------------------------------------------------------------------
    def _n(self, ms: float) -> int:
        return ms_to_samples(ms, self._fs)

    @property
    def hold_ms(self) -> float:
        """How late (after its sample) a marker may arrive and still leave this stage with the
        block that holds its sample, once the source is decided: ``2 tol_ms + wait_ms``."""
        return 2.0 * self.tol_ms + self.wait_ms

    @property
    def delay_samples(self) -> int:
        """The stage's constant delay once decided: ``2 tol_ms + wait_ms``."""
        return 2 * self._n(self.tol_ms) + self._n(self.wait_ms)

    # -- stage API ---------------------------------------------------------------------------
    def process(self, block: Block) -> Block:
        """Hold the block as long as the rules need, return what is settled."""
        if self._first is None:
            self._fs = block.meta.sfreq
            self._first = self._released = block.first_sample
            self._setup(block)
        # an event ahead of the data (a marker pulled while the engine lags behind the stream)
        # waits for the block that holds its sample: the decisions see it where offline does
        events = self._ahead + list(block.events)
        self._ahead = [e for e in events if e.sample >= block.stop_sample]
        if self._ahead or len(events) != len(block.events):
            block = replace(block, events=sorted((e for e in events
                                                  if e.sample < block.stop_sample),
                                                 key=lambda e: e.sample))
        if self._check:
            block = self.detector.process(block)
        if block.n_samples or block.events:
            self._note(block.events)
            self._held.push(block)
        if not self._held:
            return block
        if self.mode is None:
            self._try_decide(final=False)
        return self._release(self._release_point(), block)

    def flush(self) -> Block | None:
        """End of stream: decide from what was seen and release everything."""
        if self._first is None:
            return None
        if self._check:
            rest = self.detector.flush()
            if self._ahead and rest is not None:
                rest = replace(rest, events=list(rest.events) + self._ahead)
                self._ahead = []
            if rest is not None and (rest.n_samples or rest.events):
                self._note(rest.events)
                self._held.push(rest)
        if self._ahead and self._held:  # events beyond the end of the data
            last = self._held.blocks[-1]
            self._held.blocks[-1] = replace(last, events=list(last.events) + self._ahead)
            self._note(self._ahead)
            self._ahead = []
        if not self._held:
            return None
        if self.mode is None:
            self._try_decide(final=True)
        out = self._release(self._held.stop, None)  # the piece before a gap, if any: the
        return out if out.n_samples or out.events else None  # chain asks again for the rest

    @property
    def pattern(self) -> str:
        """The pulse pattern in force."""
        return self._markers.pattern

    @property
    def holds_more(self) -> bool:
        """Whether :meth:`flush` has more to release (data after a gap in the stream)."""
        return bool(self._held)

    def _setup(self, block: Block) -> None:
        if not block.meta.picks("eeg").size and self.detector.channels is None:
            self._check = False
            self._decide("markers", "no EEG channel to check the markers against: markers "
                         "used as they are", at=block.first_sample)

    # -- what arrives -----------------------------------------------------------------------
    def _say_late(self, e: Event) -> None:
        """Count a marker that came after its pulse decisions; say the first at once, then at
        most one line per second of stream with the count (a marker loop on a busy machine
        must not write one line per marker)."""
        self.n_late_markers += 1
        self._late_unsaid += 1
        if (self._late_said_at is not None
                and e.sample - self._late_said_at < (self._fs if self._fs > 0 else 1000.0)):
            return
        if self._late_unsaid == 1:
            log.warning("marker '%s' at sample %d arrived after the pulse decisions around it "
                        "were made (more than %.0f ms late)", e.label, e.sample, self.wait_ms)
        else:
            log.warning("%d markers arrived after the pulse decisions around them were made "
                        "(more than %.0f ms late), the latest '%s' at sample %d",
                        self._late_unsaid, self.wait_ms, e.label, e.sample)
        self._late_said_at, self._late_unsaid = e.sample, 0

    def _note(self, events: list[Event]) -> None:
        for e in events:
            if e.kind == EVENT_MARKER:
                if e.sample < self._released:
                    self._say_late(e)
                if self.mode is None and len(self._seen) < _MAX_SEEN_MARKERS:
                    self._seen.append((e.sample, str(e.label)))
                if self._is_pulse_marker(e):
                    bisect.insort(self._marks, self._pulse_sample(e))
                    if self.mode is None:
                        self._first_match = (e.sample if self._first_match is None
                                             else min(self._first_match, e.sample))
            elif e.kind == EVENT_PULSE and e.extra.get("source") == "data":
                bisect.insort(self._dets, e.sample)

    def _is_pulse_marker(self, e: Event) -> bool:
        return (e.kind == EVENT_MARKER and e.sample >= self._adopt_from
                and self._markers.matches(str(e.label)))

    def _pulse_sample(self, e: Event) -> int:
        return e.sample + self._n(self.offset_ms)

    # -- the source decision ----------------------------------------------------------------
    def _try_decide(self, final: bool) -> None:
        hold = self._n(self.max_hold_s * 1000.0)
        wait = self._n(self.wait_ms)
        horizon = math.inf  # events before it decide
        if len(self._dets) >= self.n_decide:
            horizon = self._dets[self.n_decide - 1] + 2 * self._n(self.tol_ms)
        if self._dets:
            horizon = min(horizon, self._dets[0] + hold)
        if self._first_match is not None and self._first_match < horizon:
            self._decide("markers", f"markers match the pulse pattern '{self.pattern}'",
                         at=self._first_match)
            return
        stop = self._held.stop
        if not final and not stop >= horizon + wait:
            return
        if not self._dets:
            return  # only markers, none a pulse: nothing to decide (yet)
        horizon = int(min(horizon, stop))
        since = max(self._first, horizon - hold)
        markers = [(s, label) for s, label in self._seen if since <= s < horizon]
        dets = [d for d in self._dets if d < horizon]
        self.hits = labels_at_pulses(markers, dets, self._fs, horizon - since,
                                     tol_ms=self.tol_ms)
        present, suggestion = describe_unmatched(Counter(label for _, label in markers))
        unmatched = (f"no marker matches the pulse pattern '{self.pattern}' (markers before "
                     f"the first {len(dets)} pulse artifacts: {present})")
        if self.hits:
            names = [h["label"] for h in self.hits]
            # less the half-sample bias of a measured onset (marker_lag_ms); under 0.25 ms a
            # lag is nothing a TEP shows, only jitter a live stream's marker timestamps add
            lag_ms = marker_lag_ms(float(np.median([h["lag_ms"] for h in self.hits])),
                                   self._fs)
            if abs(lag_ms) >= max(0.25, 1000.0 / self._fs):  # markers off the artifact onset
                self.offset_ms += lag_ms
            self._markers = MarkerPulses("^(?:" + "|".join(re.escape(n) for n in names) + ")$",
                                         self.offset_ms)
            self._adopt_from = since
            self._marks = sorted(self._pulse_sample(e) for e in self._held.events()
                                 if self._is_pulse_marker(e))
            found = ", ".join(f"'{h['label']}' ({h['n_at_pulses']} of {h['n_markers']} on a "
                              f"pulse artifact, median lag {h['lag_ms']:+.1f} ms)"
                              for h in self.hits)
            self._decide("labels", f"{unmatched}; the markers {found} fall on the pulse "
                         f"artifacts found in the data, so they were taken as the pulses "
                         f"(pattern '{self.pattern}', marker offset {self.offset_ms:+.2f} ms). "
                         "Name them to make this explicit: --pulse-pattern (or [pulses] "
                         "pattern in the configuration).", at=horizon, warn=True)
        elif not markers:
            self._decide("data", f"no marker before the first {len(dets)} pulse artifacts "
                         "found in the data: those artifacts are the pulses. If a marker stream "
                         "or annotation names the pulses, check that it reaches tmseeg.",
                         at=horizon, warn=True)
        else:
            self._decide("data", f"{unmatched}; the pulses were looked for in the data "
                         "instead. If one of those markers is the pulse, name it: "
                         f"--pulse-pattern {suggestion} (or [pulses] pattern in the "
                         "configuration).", at=horizon, warn=True)

    def _decide(self, mode: str, reason: str, at: int, warn: bool = False) -> None:
        self.mode, self.reason, self.decided_at = mode, reason, int(at)
        self._seen = []
        if warn:
            self.warnings.append(reason)
            log.warning("pulse source: %s", reason)
        else:
            log.info("pulse source: %s", reason)

    # -- release -----------------------------------------------------------------------------
    def _release_point(self) -> int:
        stop = self._held.stop
        settled = stop - self.delay_samples
        if self.mode is not None or not self._check:
            return settled
        # undecided: events wait for the decision, or expire (stay plain markers) after
        # max_hold_s + wait_ms, when no decision can take them any more
        first_event = min((e.sample for e in self._held.events()), default=None)
        if first_event is None:
            return settled
        expired = stop - self._n(self.max_hold_s * 1000.0) - self._n(self.wait_ms)
        return max(min(first_event, settled), expired)

    def _release(self, upto: int, like: Block | None) -> Block:
        upto = max(upto, self._released)
        out = self._held.release(upto, like)
        self._released = max(self._released, out.stop_sample if out.n_samples else upto)
        if out.events:
            out = replace(out, events=self._resolve(out.events))
        self._forget_before(self._released - 2 * self._n(self.tol_ms))
        return out

    def _resolve(self, events: list[Event]) -> list[Event]:
        """The released events as later stages must see them (module description, rule 2)."""
        out = []
        for e in events:
            if self._is_pulse_marker(e) and self.mode in ("markers", "labels"):
                self.n_marked += 1
                offset = self._n(self.offset_ms)
                out.append(marker_pulse(e, offset, offset / self._fs,
                                        self._markers.fields(str(e.label))))
            elif e.kind == EVENT_PULSE and e.extra.get("source") == "data":
                if self.mode == "data":
                    out.append(e)
                elif self.mode is not None and not self._claimed(e.sample):
                    out.append(self._unmarked(e))
                # claimed: the marker is the pulse; undecided (only at the end of a stream
                # with no decision possible): dropped with the detection's data
            else:
                out.append(e)
        out.sort(key=lambda e: e.sample)  # stable: the same order for any block boundaries
        return out

    def _claimed(self, d: int) -> bool:
        tol = self._n(self.tol_ms)
        lo = bisect.bisect_left(self._marks, d - tol)
        hi = bisect.bisect_right(self._marks, d + tol)
        for p in self._marks[lo:hi]:  # does one of these markers have d as nearest artifact?
            a = bisect.bisect_left(self._dets, p - tol)
            b = bisect.bisect_right(self._dets, p + tol)
            near = self._dets[a:b]
            if near and min(near, key=lambda x: (abs(x - p), x)) == d:
                return True
        return False

    def _unmarked(self, e: Event) -> Event:
        self.n_unmarked += 1
        k = bisect.bisect_right(self._marks, e.sample)
        gap_ms = ((self._marks[k] - e.sample) * 1000.0 / self._fs if k < len(self._marks)
                  else math.inf)
        self._unmarked_gaps_ms.append(gap_ms)
        if self.n_unmarked == 1:
            log.warning("pulse source: a pulse artifact at sample %d has no pulse marker "
                        "(%.1f ms before the next marked pulse); it is cut and cleaned but "
                        "gets no epoch", e.sample, gap_ms)
        return replace(e, label=UNMARKED_PULSE_LABEL,
                       extra={**e.extra, "epoch": False, "onset_from_data": True})

    def _forget_before(self, sample: int) -> None:
        if self.mode is None:
            return  # the decision needs every artifact since the first
        for seq in (self._marks, self._dets):
            del seq[:bisect.bisect_left(seq, sample)]

    # -- reporting ---------------------------------------------------------------------------
    def messages(self) -> list[str]:
        """What an analyst must know (the source decision, unmarked artifacts, late markers)."""
        out = list(self.warnings)
        if self.n_unmarked:
            gaps = np.asarray(self._unmarked_gaps_ms)
            gaps = gaps[np.isfinite(gaps)]
            where = (f" (median {np.median(gaps):.1f} ms before the next marked pulse: "
                     "conditioning pulses of a paired-pulse protocol?)" if gaps.size else "")
            out.append(f"{self.n_unmarked} pulse artifacts in the data have no pulse "
                       f"marker{where}; they are cut and cleaned like the marked pulses but "
                       f"get no epoch (label '{UNMARKED_PULSE_LABEL}'). If they are pulses to "
                       "average, name their markers with --pulse-pattern or use "
                       "--pulse-source markers+data.")
        out += self.differences()
        return out

    def differences(self) -> list[str]:
        """Where a live run and the offline analysis of its recording may disagree."""
        if not self.n_late_markers:
            return []
        return [f"{self.n_late_markers} markers arrived more than {self.wait_ms:g} ms after "
                "their sample, after the pulse decisions around them: live, those pulses may "
                "differ from the offline analysis of the recording"]

    def summary(self) -> dict:
        """What ``summary.json`` says about where the pulses came from."""
        return {"mode": self.mode, "reason": self.reason, "pattern": self.pattern,
                "marker_offset_ms": self.offset_ms,
                "decided_at_s": (None if self.decided_at is None or self._first is None
                                 else (self.decided_at - self._first) / self._fs),
                "labels_at_pulses": self.hits, "n_marked": self.n_marked,
                "n_unmarked": self.n_unmarked,
                "n_detected": self.detector.n_detected if self._check else None,
                "n_late_markers": self.n_late_markers,
                "delay_ms": (None if math.isnan(self._fs)
                             else self.delay_samples * 1000.0 / self._fs)}
