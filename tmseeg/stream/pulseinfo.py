"""What the lab knows about each pulse: intensity, coil position, condition, ...

In a TMS lab this lives outside the EEG markers: in the stimulator's or the neuronavigation
system's log, in a protocol spreadsheet, or in the marker text itself. It reaches a pulse in
three ways, all kept in the pulse event's ``extra["pulse_info"]`` (a dict of column -> value)
and written as columns of ``pulses.csv``, sent with each pulse on the metrics stream and read
by the plug-ins (the MEP plug-in takes ``intensity_pct`` from it for the motor threshold):

* a JSON marker, ``{"label": "TMS", "intensity_pct": 55, "condition": "active"}`` (live
  stimulators and protocols send these; :func:`tmseeg.stream.inlet.parse_marker`);
* named groups of the pulse pattern, ``--pulse-pattern 'TMS/(?P<intensity_pct>\\d+)'`` on a
  marker ``TMS/55`` (:func:`pattern_fields`);
* a table, ``--pulse-table FILE.csv`` / ``[pulses] table`` (:class:`PulseTable`), joined to
  the pulses in their order, or by time when it has a ``time_s`` column.

Values that read as numbers are numbers; everything else stays text.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping

from dataclasses import replace

from tmseeg.stream.navlogs import NavLogError, nav_log_kind, read_nav_log
from tmseeg.stream.block import EVENT_INFO, Block, Event

log = logging.getLogger(__name__)

__all__ = ["PULSE_INFO", "INFO_LABEL", "pulse_info", "pulse_info_message", "info_event",
           "pattern_fields", "info_value", "PulseTable", "PulseInfoJoin",
           "PulseTableError"]

#: key of ``Event.extra`` holding the pulse's metadata
PULSE_INFO = "pulse_info"

#: columns of a table that give a pulse's time (s from the recording's first sample)
_TIME_COLUMNS = ("time_s", "onset_s", "onset", "time")

#: a column of times on another clock (a navigation system's): rows join in order, their
#: intervals checked against the pulses'
NAV_TIME = "nav_time_s"


class PulseTableError(ValueError):
    """The pulse table cannot be used: the message names the file, row and column."""


def info_value(text: Any) -> Any:
    """A number when ``text`` reads as one (``"55"`` -> 55.0), else ``text`` stripped."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    try:
        return float(s)
    except ValueError:
        return s


#: label of the ``"info"`` events (per-pulse metadata sent apart from the pulse); a
#: recording keeps them as BrainVision markers of this type, a replay as a stream of this type
INFO_LABEL = "PulseInfo"


def pulse_info_message(text: str) -> dict[str, Any] | None:
    """The metadata in one message of a pulse-info stream (a JSON object; its ``label`` or
    ``event`` key, if any, is not metadata), or None when it is not one."""
    try:
        payload = json.loads(text)
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return {k: info_value(v) for k, v in payload.items()
            if k not in ("label", "event") and isinstance(v, (str, int, float))
            and not isinstance(v, bool)}


def info_event(sample: int, info: Mapping[str, Any], time_s: float = math.nan) -> Event:
    """The ``"info"`` event of one pulse-info message (joined to a pulse by
    :class:`PulseInfoJoin`)."""
    return Event(sample=sample, label=INFO_LABEL, kind=EVENT_INFO, time_s=time_s,
                 extra=with_info({}, info))


def pulse_info(event: Event) -> dict[str, Any]:
    """The metadata of a pulse event (empty when nothing is known)."""
    return dict(event.extra.get(PULSE_INFO) or {})


def pattern_fields(match: re.Match | None) -> dict[str, Any]:
    """Named groups of a pulse-pattern match that matched, as pulse metadata."""
    if match is None:
        return {}
    return {k: info_value(v) for k, v in match.groupdict().items() if v is not None}


def with_info(extra: Mapping[str, Any], info: Mapping[str, Any]) -> dict[str, Any]:
    """``extra`` with ``info`` added to its pulse metadata (``info`` wins on a clash)."""
    if not info:
        return dict(extra)
    return {**extra, PULSE_INFO: {**(extra.get(PULSE_INFO) or {}), **info}}


class PulseTable:
    """Per-pulse metadata from a CSV file or a navigation log, joined to the pulses as they come.

    Parameters
    ----------
    path : path
        A navigation system's per-pulse export (Localite TriggerMarkers XML, Brainsight
        text export: :mod:`tmseeg.stream.navlogs`), or a CSV file with a header row
        (comma, semicolon or tab separated). Every column is
        carried into the pulse's metadata; ``intensity_pct`` (% of maximum stimulator output)
        is what the motor threshold needs. With a ``time_s`` column (or ``onset_s``,
        ``onset``, ``time``: seconds from the recording's first sample), each pulse takes the
        row nearest in time, within ``tolerance_ms``; without one, the n-th pulse found takes
        the n-th row (one row per pulse fired, as a stimulator logs them: a paired pulse's
        conditioning pulse takes a row of its own, though only the pair gets an epoch). A
        ``nav_time_s`` column (a navigation log's own clock) joins in order too, the first
        pulse taking the first row, and follows that clock: a row whose time does not fit
        the pulse's interval from the previous match is skipped when a later row fits (a
        pulse the EEG did not record), and a pulse no row fits gets none (a pulse the
        navigator missed).
    tolerance_ms : float
        Largest time difference of a join by time.

    Raises
    ------
    PulseTableError
        No such file, no header, an empty table, a row with more or fewer cells than the
        header, or a time that is not a number (the message names row and column).
    """

    def __init__(self, path: str | Path, tolerance_ms: float = 50.0) -> None:
        self.path = Path(path)
        self.tolerance_ms = float(tolerance_ms)
        if not self.path.is_file():
            raise PulseTableError(f"pulse table {self.path} does not exist")
        self.used: set[int] = set()
        self.unmatched_pulses = 0
        self.n_pulses = 0
        self.notes: list[str] = []
        self.source = nav_log_kind(self.path) or "csv"
        self.time_column: str | None = None
        self.times_s: list[float] = []
        # navigation join: the last row matched, and its time minus its pulse's time
        self._last_row = -1
        self._clock_offset_s: float | None = None
        self.resyncs = 0
        if self.source != "csv":
            try:
                _, self.columns, rows, self.notes = read_nav_log(self.path)
            except NavLogError as exc:
                raise PulseTableError(f"pulse table {exc}") from exc
            self.rows = [{k: info_value(v) if isinstance(v, str) else v
                          for k, v in r.items()} for r in rows]
            return
        text = self.path.read_text(encoding="utf-8-sig")
        try:
            dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        rows = list(csv.reader(text.splitlines(), dialect))
        rows = [r for r in rows if any(c.strip() for c in r)]
        if len(rows) < 2:
            raise PulseTableError(f"pulse table {self.path}: needs a header row and at least "
                                  "one pulse row (e.g. 'intensity_pct' then one value per "
                                  "pulse)")
        header = [h.strip() for h in rows[0]]
        if len(set(header)) != len(header) or not all(header):
            raise PulseTableError(f"pulse table {self.path}: the header {header} has an empty "
                                  "or repeated column name")
        self.columns = header
        self.rows: list[dict[str, Any]] = []
        for n, cells in enumerate(rows[1:], start=2):
            if len(cells) != len(header):
                raise PulseTableError(f"pulse table {self.path}, line {n}: {len(cells)} cells "
                                      f"for {len(header)} columns ({', '.join(header)})")
            self.rows.append({h: info_value(c) for h, c in zip(header, cells)})
        self.time_column = next((c for c in _TIME_COLUMNS if c in header), None)
        if self.time_column is not None:
            for n, row in enumerate(self.rows, start=2):
                t = row[self.time_column]
                if not isinstance(t, float) or not math.isfinite(t):
                    raise PulseTableError(f"pulse table {self.path}, line {n}, column "
                                          f"{self.time_column!r}: {t!r} is not a time in s")
                self.times_s.append(t)

    @property
    def join(self) -> str:
        """How rows are matched to pulses: ``"time"`` (the recording's clock), ``"navigation"``
        (in order, following the intervals of the navigator's own clock) or ``"order"``."""
        if self.time_column is not None:
            return "time"
        return "navigation" if NAV_TIME in self.columns else "order"

    def _navigation_row(self, time_s: float) -> int | None:
        """The row of a pulse at ``time_s`` (recording clock) on the navigator's clock: the
        next row when its time fits the offset between the two clocks (the last match's,
        so a slow drift is followed), else the first later row that fits (rows of pulses
        the EEG missed are skipped); None when no row fits (a pulse the navigator missed)."""
        if self._clock_offset_s is None:
            self._clock_offset_s = self.rows[0][NAV_TIME] - time_s
        expected = time_s + self._clock_offset_s
        tol_s = self.tolerance_ms / 1000.0
        for i in range(self._last_row + 1, len(self.rows)):
            t = self.rows[i].get(NAV_TIME)
            if not isinstance(t, float) or not math.isfinite(t):
                continue
            if abs(t - expected) <= tol_s:
                if i > self._last_row + 1:
                    self.resyncs += 1
                self._last_row = i
                self._clock_offset_s = t - time_s
                return i
            if t > expected + tol_s:
                break
        return None

    def lookup(self, index: int, time_s: float) -> dict[str, Any]:
        """The row for the ``index``-th pulse (0-based) at ``time_s``; {} if there is none."""
        self.n_pulses = max(self.n_pulses, index + 1)
        if self.join == "navigation":
            row = self._navigation_row(time_s)
            if row is None:
                self.unmatched_pulses += 1
                return {}
            self.used.add(row)
            return dict(self.rows[row])
        if self.time_column is None:
            if index < len(self.rows):
                self.used.add(index)
                return dict(self.rows[index])
            self.unmatched_pulses += 1
            return {}
        best = min(range(len(self.rows)), key=lambda i: abs(self.times_s[i] - time_s))
        if abs(self.times_s[best] - time_s) * 1000.0 > self.tolerance_ms:
            self.unmatched_pulses += 1
            return {}
        self.used.add(best)
        return dict(self.rows[best])

    def messages(self) -> list[str]:
        """What did not join, for the analysis warnings (empty when every row met a pulse)."""
        out = list(f"pulse table {self.path.name}: {n}" for n in self.notes)
        left = len(self.rows) - len(self.used)
        how = {"order": "in order",
               "time": f"by {self.time_column!r} within {self.tolerance_ms:g} ms",
               "navigation": f"in order, following the navigator's clock within "
                             f"{self.tolerance_ms:g} ms"}[self.join]
        if self.resyncs:
            out.append(f"pulse table {self.path.name}: rows and pulses fell out of step "
                       f"{self.resyncs} time(s) (rows of pulses the EEG did not record were "
                       "skipped by their times)")
        if self.unmatched_pulses:
            out.append(f"pulse table {self.path.name}: {self.unmatched_pulses} of "
                       f"{self.n_pulses} pulses found no row (joined {how}); their "
                       "metadata columns are empty")
        if left:
            out.append(f"pulse table {self.path.name}: {left} of {len(self.rows)} rows met no "
                       f"pulse (joined {how}); check that the table belongs to this "
                       "recording")
        return out

    def summary(self) -> dict[str, Any]:
        """For ``summary.json``."""
        return {"file": str(self.path), "format": self.source, "join": self.join,
                "columns": self.columns, "rows": len(self.rows), "rows_used": len(self.used),
                "pulses_without_row": self.unmatched_pulses, "resyncs": self.resyncs}


class PulseInfoJoin:
    """Metadata sent apart from the pulses (``"info"`` events), joined to the pulse nearest in
    time.

    Live, a stimulator bridge or a navigation system sends one JSON object per pulse on an
    LSL stream of its own (``tmseeg run --pulse-info NAME``): ``{"intensity_pct": 55,
    "coil_x_mm": -38.2, ...}``; a recording keeps each as a ``PulseInfo`` marker, so the
    analysis of the recording joins them the same way. As the first stage of the chain this
    takes the info events out of the blocks (no later stage sees them) and keeps them until a
    pulse claims them in :meth:`lookup`: the pulse takes the unclaimed info nearest in time
    within ``tolerance_ms``. The pulse source holds the processed stream back by 60 ms, so an
    info may arrive up to that long after its pulse; one that arrives later, or that no pulse
    claims, is counted (:meth:`messages`).

    Parameters
    ----------
    tolerance_ms : float
        Largest time between a pulse and its info.
    """

    name = "pulse_info"

    def __init__(self, tolerance_ms: float = 50.0) -> None:
        self.tolerance_ms = float(tolerance_ms)
        self.reset()

    def reset(self) -> None:
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self.n_infos = 0
        self.n_joined = 0
        self.n_unclaimed = 0
        self.pulses_without = 0
        self._n_pulses_seen = 0

    def process(self, block: Block) -> Block:
        if not any(e.kind == EVENT_INFO for e in block.events):
            return block
        for e in block.events:
            if e.kind == EVENT_INFO:
                self._pending.append((e.sample, pulse_info(e)))
                self.n_infos += 1
        self._pending.sort(key=lambda p: p[0])
        return replace(block, events=[e for e in block.events if e.kind != EVENT_INFO])

    def flush(self) -> Block | None:
        return None

    def lookup(self, sample: int, sfreq: float) -> dict[str, Any]:
        """The info of a pulse at ``sample``; {} when none is near enough. Infos more than
        the tolerance before this pulse can no longer be claimed: they are counted."""
        tol = self.tolerance_ms * sfreq / 1000.0
        self._n_pulses_seen += 1
        stale = [p for p in self._pending if p[0] < sample - tol]
        if stale:
            self.n_unclaimed += len(stale)
            self._pending = [p for p in self._pending if p[0] >= sample - tol]
        near = [k for k, p in enumerate(self._pending) if abs(p[0] - sample) <= tol]
        if not near:
            if self.n_infos:
                self.pulses_without += 1
            return {}
        best = min(near, key=lambda k: abs(self._pending[k][0] - sample))
        self.n_joined += 1
        return dict(self._pending.pop(best)[1])

    @property
    def active(self) -> bool:
        """Whether any info arrived (only then is it said in the summary)."""
        return self.n_infos > 0

    def messages(self) -> list[str]:
        """What did not join, for the analysis warnings."""
        out = []
        unclaimed = self.n_unclaimed + len(self._pending)
        if unclaimed:
            out.append(f"pulse info: {unclaimed} of {self.n_infos} info messages met no pulse "
                       f"within {self.tolerance_ms:g} ms (sent too early or late, or for a "
                       "pulse the EEG did not record)")
        if self.pulses_without:
            out.append(f"pulse info: {self.pulses_without} of {self._n_pulses_seen} pulses "
                       f"got no info message within {self.tolerance_ms:g} ms")
        return out

    def summary(self) -> dict[str, Any]:
        """For ``summary.json``."""
        return {"infos": self.n_infos, "joined": self.n_joined,
                "unclaimed": self.n_unclaimed + len(self._pending),
                "pulses_without": self.pulses_without,
                "tolerance_ms": self.tolerance_ms}
