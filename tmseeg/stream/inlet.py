"""LSL ingest: find EEG and marker streams, pull without blocking, keep time, record gaps.

The pieces, each usable alone:

- :func:`resolve_stream` finds one stream by name / type / source id, or raises
  :class:`StreamNotFoundError` listing what *is* on the network.
- :class:`SampleClock` dejitters timestamps with an exponentially-forgetting linear fit of
  time against sample index, and maps marker times back to sample indices.
- :class:`EEGInlet` pulls chunks with ``timeout=0`` into a preallocated buffer, converts to
  microvolts, numbers samples absolutely, and records a :data:`~tmseeg.stream.block.EVENT_GAP`
  whenever samples are missing (a stream that vanished and came back, or dropped packets): a gap
  is never silently bridged. A stream that stops sending is announced at once (a warning, rate
  0 and the seconds without data in :attr:`EEGInlet.stats`) and followed: whether it comes back
  with the same source id (liblsl's own recovery) or as a new stream of the same name and type
  (a new device, a restarted program), the inlet picks it up.
- :class:`MarkerInlet` pulls string markers with their clock-corrected times.
- :class:`LSLSource` joins the two and emits :class:`~tmseeg.stream.block.Block` objects whose
  events are aligned to EEG samples.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tmseeg.stream.montage import tidy_meta
from tmseeg.stream.pulseinfo import info_event, pulse_info_message, with_info
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, Block, Event, StreamMeta

log = logging.getLogger(__name__)


def _pylsl():
    """Import pylsl lazily so that a missing liblsl gives our error, not an import crash."""
    try:
        import pylsl
    except Exception as err:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            f"pylsl could not be imported ({err}). Install it with `pip install pylsl` "
            "(its Linux/macOS/Windows wheels carry liblsl)."
        ) from err
    return pylsl


class StreamNotFoundError(RuntimeError):
    """No LSL stream matched the request within the timeout."""


def lost_error(pylsl) -> type[BaseException]:
    """pylsl's "stream lost" exception (top level before 1.17, ``pylsl.util`` since: an
    ``except pylsl.LostError`` on a newer pylsl is an AttributeError the moment anything, even
    Ctrl-C, interrupts the pull)."""
    err = getattr(pylsl, "LostError", None)
    if err is None:
        from pylsl.util import LostError as err
    return err


class StreamLostError(RuntimeError):
    """A stream disappeared and could not be recovered within the allowed time."""


def _describe(info) -> str:
    return (f"name={info.name()!r} type={info.type()!r} source_id={info.source_id()!r} "
            f"channels={info.channel_count()} rate={info.nominal_srate():g} Hz "
            f"host={info.hostname()!r}")


def resolve_stream(
    name: str | None = None,
    stype: str | None = "EEG",
    source_id: str | None = None,
    timeout_s: float = 5.0,
):
    """Find one LSL stream by name, type and/or source id.

    Parameters
    ----------
    name, stype, source_id : str or None
        Properties the stream must have (None = any).
    timeout_s : float
        How long to wait for the stream to appear.

    Returns
    -------
    pylsl.StreamInfo
        The first match (the newest created, if several match).

    Raises
    ------
    StreamNotFoundError
        Nothing matched; the message lists the streams that are visible, and what to check.
    """
    pylsl = _pylsl()
    wanted = {"name": name, "type": stype, "source_id": source_id}
    clauses = []
    if name is not None:
        clauses.append(f"name='{name}'")
    if source_id is not None:
        clauses.append(f"source_id='{source_id}'")
    if stype is not None:  # XPath is case-sensitive; LSL users write EEG, eeg, Eeg ...
        variants = sorted({stype, stype.upper(), stype.lower(), stype.capitalize()})
        clauses.append("(" + " or ".join(f"type='{v}'" for v in variants) + ")")
    found = []
    if clauses:
        # a targeted, continuous query returns as soon as the stream answers
        matches = pylsl.resolve_bypred(" and ".join(clauses), minimum=1, timeout=timeout_s)
        if matches:
            return max(matches, key=lambda s: s.created_at())
        found = pylsl.resolve_streams(wait_time=1.0)
    else:
        deadline = time.monotonic() + timeout_s
        while not found and time.monotonic() < deadline:
            found = pylsl.resolve_streams(wait_time=min(1.0, max(0.1, timeout_s)))
        if found:
            return max(found, key=lambda s: s.created_at())
    criteria = ", ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not None) or "any"
    visible = "\n  ".join(_describe(s) for s in found) or "(none)"
    raise StreamNotFoundError(
        f"No LSL stream with {criteria} appeared within {timeout_s:g} s.\n"
        f"Visible streams:\n  {visible}\n"
        "Check that the amplifier software (or `tmseeg simulate` / `tmseeg replay FILE`) is "
        "streaming, that the name/type match, and that both programs share a network "
        "(liblsl config LSLAPICFG)."
    )


UNIT_SCALE_TO_UV = {
    "microvolts": 1.0, "microvolt": 1.0, "uv": 1.0, "µv": 1.0, "μv": 1.0,
    "millivolts": 1e3, "millivolt": 1e3, "mv": 1e3,
    "volts": 1e6, "volt": 1e6, "v": 1e6,
    "nanovolts": 1e-3, "nanovolt": 1e-3, "nv": 1e-3,
}
_TYPE_MAP = {"eeg": "eeg", "emg": "emg", "eog": "eog", "ecg": "ecg", "stim": "stim",
             "trigger": "stim", "trig": "stim", "marker": "stim", "misc": "misc"}


def unit_scale_to_uv(unit: str | None) -> float:
    """Factor that converts values in ``unit`` to microvolts (1.0 when unknown or absent).

    Integer strings follow the mne-lsl convention of a power of ten of volts (``"-6"`` = µV).
    """
    if unit is None:
        return 1.0
    u = unit.strip().lower()
    if u in UNIT_SCALE_TO_UV:
        return UNIT_SCALE_TO_UV[u]
    if re.fullmatch(r"[+-]?\d+", u):
        return 10.0 ** (int(u) + 6)
    return 1.0


def meta_from_info(info) -> tuple[StreamMeta, np.ndarray]:
    """Channel names, types and µV scale factors from a stream's XDF-style description.

    EEG labels with an ``EEG`` prefix or a reference suffix are renamed to 10-05 labels as for
    files (:func:`~tmseeg.stream.montage.tidy_meta`), so a stream and its recording agree.
    """
    n = info.channel_count()
    labels = info.get_channel_labels() or [None] * n
    types = info.get_channel_types() or [None] * n
    units = info.get_channel_units() or [None] * n
    # descriptions with fewer entries than channels happen in the wild: pad, do not crash
    labels = (list(labels) + [None] * n)[:n]
    types = (list(types) + [None] * n)[:n]
    units = (list(units) + [None] * n)[:n]
    ch_names = [lab if lab else f"Ch{i + 1}" for i, lab in enumerate(labels)]
    stream_type = info.type().lower()
    ch_types = []
    for lab, typ in zip(ch_names, types):
        t = _TYPE_MAP.get((typ or "").lower())
        if t is None:
            t = "emg" if lab.upper().startswith("EMG") else ("eeg" if stream_type == "eeg" else "misc")
        ch_types.append(t)
    scales = np.array([unit_scale_to_uv(u) if t in ("eeg", "emg", "eog", "ecg") else 1.0
                       for u, t in zip(units, ch_types)])
    meta = StreamMeta(ch_names=tuple(ch_names), sfreq=float(info.nominal_srate()),
                      ch_types=tuple(ch_types), name=info.name(), source_id=info.source_id())
    return tidy_meta(meta), scales


class SampleClock:
    """Dejittered sample times: exponentially-forgetting least-squares fit of time on index.

    ``t(n) = t_ref + slope * (n - n_ref)``. Until enough samples are in, the slope is the
    nominal ``1 / sfreq``; the fit then follows the real rate of the amplifier clock.

    Parameters
    ----------
    sfreq : float
        Nominal rate in Hz.
    halflife_s : float
        Half-life of the forgetting (liblsl's own dejitter uses 90 s).
    """

    def __init__(self, sfreq: float, halflife_s: float = 90.0) -> None:
        self.sfreq = float(sfreq)
        self._lambda = 0.5 ** (1.0 / max(1.0, halflife_s * sfreq))
        self._n_ref: float | None = None
        self._t_ref = 0.0
        # weighted sums in coordinates relative to (n_ref, t_ref)
        self._sw = self._sn = self._st = self._snn = self._snt = 0.0

    @property
    def ready(self) -> bool:
        return self._n_ref is not None

    def update(self, sample_idx: np.ndarray, times_s: np.ndarray) -> None:
        """Feed raw (index, time) pairs of one chunk."""
        if len(sample_idx) == 0:
            return
        if self._n_ref is None:
            self._n_ref = float(sample_idx[0])
            self._t_ref = float(times_s[0])
        n = np.asarray(sample_idx, dtype=np.float64) - self._n_ref
        t = np.asarray(times_s, dtype=np.float64) - self._t_ref
        k = len(n)
        w = self._lambda ** np.arange(k - 1, -1, -1, dtype=np.float64)
        decay = self._lambda ** k
        self._sw = self._sw * decay + w.sum()
        self._sn = self._sn * decay + (w * n).sum()
        self._st = self._st * decay + (w * t).sum()
        self._snn = self._snn * decay + (w * n * n).sum()
        self._snt = self._snt * decay + (w * n * t).sum()

    def _fit(self) -> tuple[float, float, float]:
        """(mean_n, mean_t, slope) of the current fit."""
        mean_n = self._sn / self._sw
        mean_t = self._st / self._sw
        var_n = self._snn / self._sw - mean_n ** 2
        slope = 1.0 / self.sfreq
        if var_n > (0.25 * self.sfreq) ** 2:  # need at least ~1 s of spread to trust the rate
            fitted = (self._snt / self._sw - mean_n * mean_t) / var_n
            # an amplifier clock is off by ppm, not percent: keep the fit sane
            if abs(fitted * self.sfreq - 1.0) < 0.01:
                slope = fitted
        return mean_n, mean_t, slope

    def time_of(self, sample_idx) -> np.ndarray:
        """Dejittered LSL time of absolute sample indices."""
        if self._n_ref is None:
            raise RuntimeError("SampleClock has no data yet")
        mean_n, mean_t, slope = self._fit()
        n = np.asarray(sample_idx, dtype=np.float64) - self._n_ref
        return self._t_ref + mean_t + slope * (n - mean_n)

    def sample_of(self, time_s: float) -> int:
        """Nearest absolute sample index of an LSL time."""
        if self._n_ref is None:
            raise RuntimeError("SampleClock has no data yet")
        mean_n, mean_t, slope = self._fit()
        return int(round(self._n_ref + mean_n + (time_s - self._t_ref - mean_t) / slope))


@dataclass
class InletStats:
    """Running counters of an :class:`EEGInlet`, for status displays and logs."""

    n_samples: int = 0
    n_chunks: int = 0
    n_gaps: int = 0
    n_missing: int = 0
    last_pull_s: float = float("nan")
    last_data_s: float = float("nan")
    transport_latency_s: float = float("nan")
    rate_hz: float = float("nan")
    clock_offset_s: float = float("nan")
    #: seconds since data last came, while the stream is silent (0.0 while data flow)
    no_data_s: float = 0.0
    #: times the stream went silent for longer than ``stale_s``
    n_outages: int = 0
    #: times the inlet moved to a new stream of the same name and type (new source id)
    n_reconnects: int = 0
    _rate_window: list = field(default_factory=list, repr=False)


class EEGInlet:
    """Non-blocking EEG inlet with absolute sample numbering, gap detection and stream following.

    Parameters
    ----------
    info : pylsl.StreamInfo
        From :func:`resolve_stream`.
    max_chunk : int
        Most samples pulled per call (the preallocated destination buffer's length).
    gap_tolerance_s : float
        A jump of the raw timestamps beyond the dejittered prediction by more than this is
        recorded as a gap of the corresponding number of samples.
    stale_s : float
        No data for this long is an outage: announced once (a warning), shown in
        :attr:`stats` (``rate_hz`` 0, ``no_data_s``), and, with ``follow``, the network is
        searched for the stream again. When data come back the missing samples are a gap.
    expected_channels : int or None
        If given, a stream with another channel count is refused (clear error).
    follow : bool
        During an outage, look for a stream of the same name and type (and the same channels
        and rate) with another identity -- a new device, or the amplifier program restarted
        with a new source id -- and read from it. liblsl's own recovery only finds a stream
        that comes back with the same source id.
    same_source_id : bool
        Follow only a stream with the same source id too (when the user chose the stream by
        its source id).

    Attributes
    ----------
    source_id : str
        Source id of the stream read now (it changes when the inlet follows a new stream;
        ``meta.source_id`` keeps the first one).
    """

    def __init__(self, info, max_chunk: int = 4096, gap_tolerance_s: float = 0.05,
                 stale_s: float = 1.0, expected_channels: int | None = None,
                 follow: bool = True, same_source_id: bool = False) -> None:
        pylsl = _pylsl()
        if expected_channels is not None and info.channel_count() != expected_channels:
            raise ValueError(
                f"channel-count mismatch: stream {info.name()!r} has {info.channel_count()} "
                f"channels but {expected_channels} were expected (montage/config). Select the "
                "right stream or fix the configuration."
            )
        if info.nominal_srate() <= 0:
            raise ValueError(
                f"stream {info.name()!r} has an irregular rate; an EEG stream needs a nominal "
                "sampling rate. Is this a marker stream? Resolve the EEG stream instead."
            )
        self._pylsl = pylsl
        self._inlet, full = _open_eeg_inlet(info)
        self.meta, self.scales_to_uv = meta_from_info(full)
        self._eeg_rows = self.meta.picks("eeg")
        self.max_chunk = max_chunk
        self._adopt(full)
        #: set when the EEG values look like volts although no unit was declared
        self.unit_warning = ""
        self.clock = SampleClock(self.meta.sfreq)
        self.gap_tolerance_s = gap_tolerance_s
        self.stale_s = stale_s
        self.follow = follow
        self.same_source_id = same_source_id
        self.next_sample = 0
        self.stats = InletStats()
        self._last_offset_check = 0.0
        self._lost = False  # liblsl gave the stream up (a stream without a source id)
        self._in_outage = False
        self._new_stream = False  # the next data come from a stream just followed
        self._finder: _StreamFinder | None = None

    def _adopt(self, full) -> None:
        """Read the data format, units and identity of the stream behind ``full``."""
        pylsl = self._pylsl
        _, self.scales_to_uv = meta_from_info(full)
        self._uniform_scale = bool(np.all(self.scales_to_uv == self.scales_to_uv[0]))
        # LSL's convention is µV, and a stream without units is read so; a player that sends
        # volts without saying so would give numbers a million times too small, silently
        units = list(full.get_channel_units() or [])
        self._unit_check = bool(self._eeg_rows.size) and not any(
            i < len(units) and units[i] for i in self._eeg_rows)
        self._unit_seen: list[np.ndarray] = []
        fmt = full.channel_format()
        self._dtype = {pylsl.cf_float32: np.float32, pylsl.cf_double64: np.float64,
                       pylsl.cf_int32: np.int32, pylsl.cf_int16: np.int16}.get(fmt)
        if self._dtype is None:
            raise ValueError(f"stream {full.name()!r} has channel format {fmt}; tmseeg reads "
                             "float32, double64, int32 or int16 EEG streams")
        self._dest = np.zeros((self.max_chunk, self.meta.n_channels), dtype=self._dtype)
        self._uid = full.uid()
        self._stype = full.type()
        self.source_id = full.source_id()

    @property
    def stalled(self) -> bool:
        """True when no data came for ``stale_s`` seconds."""
        last = self.stats.last_data_s
        return not math.isnan(last) and self._pylsl.local_clock() - last > self.stale_s

    def pull(self) -> tuple[np.ndarray, np.ndarray, list[Event]] | None:
        """Pull what is available now.

        Returns
        -------
        (samples, timestamps, gap_events) or None
            ``samples`` (n, n_channels) in microvolts, float64 or the stream's float type scaled;
            ``timestamps`` the dejittered LSL times; ``gap_events`` any gap recorded just
            before these samples (their sample indices are absolute). None when nothing came.
        """
        pylsl = self._pylsl
        k = 0
        if not self._lost:
            try:
                view, raw_ts = self._inlet.pull_chunk(timeout=0.0, max_samples=self.max_chunk,
                                                      dest_obj=self._dest, as_numpy=True)
                k = len(raw_ts)
            except lost_error(pylsl):
                # liblsl recovers only streams with a source id; the others we look for
                # ourselves (the outage is announced like any other)
                self._lost = True
        # after the pull: the first one waits for liblsl's clock offset (~0.6 s here)
        now = pylsl.local_clock()
        self.stats.last_pull_s = now
        if k == 0:
            self._idle(now)
            return None
        raw_ts = np.asarray(raw_ts, dtype=np.float64)
        gaps: list[Event] = []
        if self._new_stream:
            gaps.append(self._gap_to_new_stream(raw_ts, k, now))
        elif self.clock.ready:
            predicted = float(self.clock.time_of(self.next_sample))
            jump_s = raw_ts[0] - predicted
            if jump_s > self.gap_tolerance_s:
                gaps.append(self._gap(predicted, jump_s))
        if self._in_outage:
            self._end_outage(now, gaps)
        idx = np.arange(self.next_sample, self.next_sample + k)
        self.clock.update(idx, raw_ts)
        ts = self.clock.time_of(idx)
        samples = np.array(view[:k], dtype=np.float64)
        if not self._uniform_scale or self.scales_to_uv[0] != 1.0:
            samples *= self.scales_to_uv
        if self._unit_check:
            self._check_unit(samples)
        self.next_sample += k
        st = self.stats
        st.n_samples += k
        st.n_chunks += 1
        st.last_data_s = now
        st.transport_latency_s = now - raw_ts[-1]
        self._update_rate(now)
        if now - self._last_offset_check > 5.0:
            self._last_offset_check = now
            try:
                st.clock_offset_s = self._inlet.time_correction(timeout=0.0)
            except Exception:  # a timeout only means no estimate yet
                pass
        return samples, ts, gaps

    def _update_rate(self, now: float) -> None:
        """Samples received per second over the last ~2 s (0 while the stream is silent)."""
        st = self.stats
        st._rate_window.append((now, st.n_samples))
        while len(st._rate_window) > 2 and now - st._rate_window[0][0] > 2.0:
            st._rate_window.pop(0)
        (t_a, n_a), (t_b, n_b) = st._rate_window[0], st._rate_window[-1]
        if t_b > t_a + 0.2:
            st.rate_hz = (n_b - n_a) / (t_b - t_a)

    def _gap(self, predicted_s: float, jump_s: float) -> Event:
        """Record ``jump_s`` seconds of missing samples before ``next_sample``."""
        n_missing = max(1, int(round(jump_s * self.meta.sfreq)))
        gap = Event(sample=self.next_sample, label="gap", kind=EVENT_GAP, time_s=predicted_s,
                    duration=n_missing, extra={"seconds": jump_s})
        self.stats.n_gaps += 1
        self.stats.n_missing += n_missing
        if not self._in_outage:  # an outage's end is said by _end_outage
            log.warning("EEG stream %r: %d samples (%.3f s) missing before sample %d",
                        self.meta.name, n_missing, jump_s, self.next_sample)
        self.next_sample += n_missing
        return gap

    def _gap_to_new_stream(self, raw_ts: np.ndarray, k: int, now: float) -> Event:
        """The gap between the old stream's last sample and a new stream's first.

        A new device has its own clock: its timestamps are trusted for the length of the gap
        only when they agree with the time that passed here; otherwise that time is the gap.
        """
        self._new_stream = False
        predicted = float(self.clock.time_of(self.next_sample))
        silent_s = max(0.0, now - self.stats.last_data_s - k / self.meta.sfreq)
        jump_s = raw_ts[0] - predicted
        if not 0.0 < jump_s < silent_s + 5.0:
            jump_s = silent_s
        gap = self._gap(predicted, jump_s)
        self.clock = SampleClock(self.meta.sfreq)  # fit the new stream's clock afresh
        return gap

    def _idle(self, now: float) -> None:
        """Nothing came: keep the rate and the outage state true, and look for the stream."""
        st = self.stats
        if math.isnan(st.last_data_s):
            return  # no data yet: nothing is missing
        if not st._rate_window or now - st._rate_window[-1][0] > 0.1:
            self._update_rate(now)
        silent_s = now - st.last_data_s
        if silent_s <= self.stale_s:
            return
        st.rate_hz = 0.0
        st.no_data_s = silent_s
        if not self._in_outage:
            self._in_outage = True
            st.n_outages += 1
            log.warning(
                "EEG stream %r (source id %r) sent nothing for %.1f s: is the amplifier or "
                "its program stopped, or the network down? Waiting for it%s; the samples "
                "missing meanwhile will be recorded as a gap.", self.meta.name, self.source_id,
                silent_s, " or a stream of the same name and type" if self.follow else "")
        if self.follow:
            if self._finder is None:
                self._finder = _StreamFinder(self)
                self._finder.start()
            found = self._finder.take()
            if found is not None:
                self._switch_to(*found)

    def _switch_to(self, inlet, full) -> None:
        """Read from now on from the stream behind ``inlet`` (found during an outage)."""
        old = self._inlet
        try:
            old.close_stream()
        except Exception:  # a lost stream may refuse to close: it is dropped either way
            pass
        self._inlet = inlet
        self._adopt(full)
        self._lost = False
        self._new_stream = True
        self._stop_finder()
        self.stats.n_reconnects += 1
        log.warning("EEG stream %r is back as a new stream (source id %r, host %r): reading "
                    "from it.", self.meta.name, full.source_id(), full.hostname())

    def _end_outage(self, now: float, gaps: list[Event]) -> None:
        st = self.stats
        missing = sum(g.duration for g in gaps)
        log.warning("EEG stream %r: data again after %.1f s without (%d samples, %.1f s "
                    "missing, recorded as a gap).", self.meta.name, now - st.last_data_s,
                    missing, missing / self.meta.sfreq)
        self._in_outage = False
        st.no_data_s = 0.0
        # the rate restarts from the data now coming, not from before the outage
        st._rate_window.clear()
        st._rate_window.append((st.last_data_s, st.n_samples))
        self._stop_finder()

    def _stop_finder(self) -> None:
        if self._finder is not None:
            self._finder.stop()
            self._finder = None

    def _check_unit(self, samples: np.ndarray) -> None:
        """Once 0.5 s of data are in: warn if EEG without a declared unit looks like volts."""
        self._unit_seen.append(samples[:, self._eeg_rows])
        if sum(len(x) for x in self._unit_seen) < 0.5 * self.meta.sfreq:
            return
        self._unit_check = False
        x = np.concatenate(self._unit_seen)
        self._unit_seen = []
        with np.errstate(all="ignore"):
            spread = np.nanmedian(np.nanstd(x, axis=0))
        if 0 < spread < 0.05:  # EEG moves by µV; volts move by 1e-6..1e-4
            self.unit_warning = (
                f"EEG stream {self.meta.name!r} declares no unit and its values vary by "
                f"{spread:.2g} (median SD): that looks like volts, read as µV (LSL's convention) "
                "every amplitude would be 1e6 too small. Declare the unit in the stream "
                "(desc/channels/channel/unit = 'volts' or 'microvolts') or scale the data.")
            log.warning(self.unit_warning)

    def close(self) -> None:
        self._stop_finder()
        self._inlet.close_stream()


def clock_flags(info) -> int:
    """liblsl processing flags for an inlet on ``info``: clock synchronisation for a stream
    from another computer; none for one from this computer, whose time stamps are already on
    this clock (an estimated offset would only add jitter: tens of µs under load, a sample at
    20 kHz, between the EEG and a marker stream each estimating its own)."""
    pylsl = _pylsl()
    try:
        local = info.hostname() == socket.gethostname()
    except Exception:  # no host name: synchronise, as liblsl would
        local = False
    return pylsl.proc_none if local else pylsl.proc_clocksync


def _open_eeg_inlet(info):
    """An opened inlet on ``info`` and the stream's full description."""
    pylsl = _pylsl()
    inlet = pylsl.StreamInlet(info, max_buflen=30, recover=True,
                              processing_flags=clock_flags(info))
    inlet.open_stream(timeout=5.0)
    try:  # the first clock-offset estimate takes ~0.6 s: here, not in the first pull
        inlet.time_correction(timeout=5.0)
    except Exception:  # no estimate yet: the first pull waits for it instead
        pass
    return inlet, inlet.info(timeout=5.0)


class _StreamFinder(threading.Thread):
    """Looks for a stream to follow during an outage, off the acquisition thread.

    A candidate has the lost stream's name and type (and source id, if pinned), another LSL
    identity (uid), and the same channels and rate; it is opened here, so that the thread that
    pulls never waits on the network. One with other channels is refused with a warning.
    """

    def __init__(self, eeg: EEGInlet) -> None:
        super().__init__(name=f"tmseeg-follow-{eeg.meta.name}", daemon=True)
        self._meta = eeg.meta
        self._uid = eeg._uid
        clauses = [f"name='{eeg.meta.name}'", f"type='{eeg._stype}'"]
        if eeg.same_source_id:
            clauses.append(f"source_id='{eeg.source_id}'")
        self._predicate = " and ".join(clauses)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._found = None
        self._refused: set[str] = set()

    def take(self):
        """``(inlet, full_info)`` of a stream found, once; else None."""
        with self._lock:
            found, self._found = self._found, None
        return found

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            found, self._found = self._found, None
        if found is not None:  # found too late: the old stream came back first
            found[0].close_stream()

    def run(self) -> None:
        pylsl = _pylsl()
        while not self._stop.is_set():
            try:
                infos = pylsl.resolve_bypred(self._predicate, minimum=1, timeout=1.0)
            except Exception as err:  # the network may be what failed: keep trying
                log.debug("looking for %r: %s", self._meta.name, err)
                infos = []
            others = [i for i in infos if i.uid() != self._uid and i.uid() not in self._refused]
            for info in sorted(others, key=lambda s: -s.created_at()):
                got = self._try(info)
                if got is not None:
                    with self._lock:
                        if self._stop.is_set():
                            got[0].close_stream()
                        else:
                            self._found = got
                    return
            self._stop.wait(0.5)  # the old stream is still listed, or none: ask again soon

    def _try(self, info):
        why = ""
        if info.channel_count() != self._meta.n_channels:
            why = f"it has {info.channel_count()} channels, not {self._meta.n_channels}"
        elif abs(info.nominal_srate() - self._meta.sfreq) > 1e-9 * self._meta.sfreq:
            why = f"its rate is {info.nominal_srate():g} Hz, not {self._meta.sfreq:g} Hz"
        inlet = None
        if not why:
            try:
                inlet, full = _open_eeg_inlet(info)
            except Exception as err:
                log.debug("could not open %s: %s", _describe(info), err)
                return None
            meta, _ = meta_from_info(full)
            if meta.ch_names != self._meta.ch_names:
                changed = [f"{a}->{b}" for a, b in zip(self._meta.ch_names, meta.ch_names)
                           if a != b]
                why = f"its channels differ ({', '.join(changed[:5])})"
        if not why:
            return inlet, full
        if inlet is not None:
            inlet.close_stream()
        self._refused.add(info.uid())
        log.warning("a stream named %r is back but is not followed: %s. Restart tmseeg to "
                    "use the new layout.", self._meta.name, why)
        return None


def marker_label(value) -> str:
    """A marker sample's first channel as a label: strings as they are, whole numbers without
    a decimal point (an int32 or float marker ``1`` becomes ``"1"``)."""
    if isinstance(value, str):
        return value
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


class MarkerInlet:
    """Marker stream: pulls ``(label, local time)`` pairs without blocking.

    String markers are used as they are. Numeric marker streams (trigger boxes and stimulator
    bridges often send int32 codes) are accepted too: the first channel's value becomes the
    label, e.g. ``"1"`` (match it with a pulse pattern such as ``^1$``). A numeric stream of
    several named channels is one-hot: each non-zero channel in a sample is a marker labelled
    with the channel's name. That is how mne-lsl's ``PlayerLSL`` sends a recording's
    annotations (a stream ``<name>-annotations`` of type ``annotations``, one channel per
    description, the annotation's duration or -1 as the value).
    """

    def __init__(self, info) -> None:
        pylsl = _pylsl()
        if info.channel_count() < 1:
            raise ValueError(f"marker stream {info.name()!r} has no channel")
        self._pylsl = pylsl
        self.name = info.name()
        self._inlet = pylsl.StreamInlet(info, max_buflen=360, recover=True,
                                        processing_flags=clock_flags(info))
        self._inlet.open_stream(timeout=5.0)
        self._one_hot: list[str] | None = None
        if info.channel_count() > 1 and info.channel_format() != pylsl.cf_string:
            labels = self._inlet.info(timeout=5.0).get_channel_labels() or []
            self._one_hot = (list(labels) if len(labels) == info.channel_count() and all(labels)
                             else [str(i) for i in range(info.channel_count())])

    def pull(self) -> list[tuple[str, float]]:
        try:
            samples, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=256)
        except lost_error(self._pylsl):
            return []
        if self._one_hot is None:
            return [(marker_label(s[0]), float(t)) for s, t in zip(samples, ts)]
        return [(self._one_hot[i], float(t)) for s, t in zip(samples, ts)
                for i, v in enumerate(s) if v != 0 and i < len(self._one_hot)]

    def close(self) -> None:
        self._inlet.close_stream()


def parse_marker(label: str) -> tuple[str, dict]:
    """Split a marker string into its label and extra fields (JSON markers carry both)."""
    text = label.strip()
    if text.startswith("{"):
        try:
            payload = json.loads(text)
        except ValueError:
            return text, {}
        if isinstance(payload, dict):
            # every other key is what the sender knows about the pulse (intensity, coil
            # position, condition): the pulse's metadata (tmseeg.stream.pulseinfo)
            info = pulse_info_message(text) or {}
            return (str(payload.get("label", payload.get("event", text))),
                    with_info(payload, info))
    return text, {}


class LSLSource:
    """EEG (+ optional markers) over LSL, delivered as :class:`Block` objects.

    Markers are aligned to EEG sample indices through the EEG stream's dejittered clock. A
    marker whose sample has not yet arrived is held until it has, so every event is delivered
    in (or after) the block that contains its sample; a late marker (its sample already
    delivered) comes with the next block, carrying its true, earlier sample index.

    Parameters
    ----------
    eeg : EEGInlet
    markers : MarkerInlet or None
    max_marker_wait_s : float
        A marker pointing further than this into the future is delivered anyway (its sample
        index is still exact), so a bad clock cannot hold events back forever.
    infos : MarkerInlet or None
        A stream of per-pulse metadata, one JSON object per pulse (``{"intensity_pct": 55,
        "coil_x_mm": -38.2}``): each becomes an ``"info"`` event at its time stamp, which the
        pulse nearest in time claims (:class:`~tmseeg.stream.pulseinfo.PulseInfoJoin`).
    """

    def __init__(self, eeg: EEGInlet, markers: MarkerInlet | None = None,
                 max_marker_wait_s: float = 2.0, infos: MarkerInlet | None = None) -> None:
        self.eeg = eeg
        self.markers = markers
        self.infos = infos
        self.meta = eeg.meta
        self.max_marker_wait_s = max_marker_wait_s
        self._pending: list[Event] = []  # time-stamped, waiting for their EEG sample
        self.n_bad_infos = 0

    @classmethod
    def resolve(cls, name: str | None = None, stype: str | None = None,
                source_id: str | None = None,
                marker_name: str | None = None, marker_type: str = "Markers",
                with_markers: bool = True, timeout_s: float = 5.0,
                marker_timeout_s: float = 2.0, info_name: str | None = None) -> "LSLSource":
        """Find the EEG stream and (optionally) a marker stream and open both.

        The EEG stream is the one named ``name`` (or with ``source_id``) whatever its type
        (mne-lsl's ``PlayerLSL`` gives a file with EEG and EMG channels no type), else any
        stream of type ``stype`` (default ``EEG``).

        When no marker name is given, a marker stream whose name starts with the EEG stream's
        name is preferred (``<eeg>-markers``), else any ``Markers`` stream that is not an
        engine output (``tmseeg-triggers``, ``tmseeg-metrics``). ``info_name`` names a
        stream of per-pulse JSON metadata (any type); it must be there.
        """
        if stype is None and name is None and source_id is None:
            stype = "EEG"
        eeg_info = resolve_stream(name=name, stype=stype, source_id=source_id,
                                  timeout_s=timeout_s)
        marker_inlet = None
        if with_markers:
            try:
                if marker_name is not None:  # named: whatever its type (annotations, ...)
                    m_info = resolve_stream(name=marker_name, stype=None,
                                            timeout_s=marker_timeout_s)
                else:
                    m_info = _pick_marker_stream(eeg_info.name(), marker_type, marker_timeout_s)
                marker_inlet = MarkerInlet(m_info) if m_info is not None else None
            except StreamNotFoundError:
                if marker_name is not None:
                    raise
        if marker_inlet is None and with_markers:
            # a full second: on a busy machine or network, 0.2 s missed streams that were there
            others = [f"{i.name()!r} ({i.type()})" for i in _pylsl().resolve_streams(wait_time=1.0)
                      if i.name() != eeg_info.name() and i.name() not in ENGINE_OUTPUT_STREAMS]
            log.warning("no marker stream of type %r next to EEG stream %r: the pulses will be "
                        "looked for in the data. Other streams seen: %s. If one of them carries "
                        "the pulse markers, name it with --markers NAME.", marker_type,
                        eeg_info.name(), ", ".join(others) or "none")
        # a stream chosen by its source id is followed only under that id; one chosen by
        # name or type also when it comes back as a new stream (new device, restart)
        info_inlet = None
        if info_name is not None:
            try:
                info_inlet = MarkerInlet(resolve_stream(name=info_name, stype=None,
                                                        timeout_s=marker_timeout_s))
            except StreamNotFoundError as exc:
                raise StreamNotFoundError(
                    f"no LSL stream named {info_name!r} for the per-pulse metadata "
                    f"(--pulse-info): {exc}") from exc
        return cls(EEGInlet(eeg_info, same_source_id=source_id is not None), marker_inlet,
                   infos=info_inlet)

    def read(self) -> Block | None:
        """The next block (None when no new EEG samples arrived)."""
        if self.markers is not None:
            for label, t in self.markers.pull():
                text, extra = parse_marker(label)
                self._pending.append(Event(sample=-1, label=text, kind=EVENT_MARKER, time_s=t,
                                           extra=extra))
        if self.infos is not None:
            for label, t in self.infos.pull():
                info = pulse_info_message(label)
                if info is None:
                    self.n_bad_infos += 1
                    if self.n_bad_infos == 1:
                        log.warning("pulse-info stream %r sent %r, which is not a JSON object "
                                    "of pulse metadata ({\"intensity_pct\": 55, ...}); such "
                                    "messages are ignored", self.infos.name, label[:80])
                    continue
                self._pending.append(info_event(-1, info, t))
        got = self.eeg.pull()
        if got is None:
            return None
        samples, ts, gaps = got
        first = self.eeg.next_sample - samples.shape[0]
        events: list[Event] = list(gaps)
        still: list[Event] = []
        for ev in self._pending:  # markers and info messages, their sample still to find
            sample = self.eeg.clock.sample_of(ev.time_s)
            if sample < self.eeg.next_sample or ev.time_s - ts[-1] > self.max_marker_wait_s:
                events.append(dataclasses.replace(ev, sample=sample))
            else:
                still.append(ev)
        self._pending = still
        events.sort(key=lambda e: e.sample)
        return Block(data=np.ascontiguousarray(samples.T), first_sample=first, timestamps=ts,
                     meta=self.meta, events=events, received_s=self.eeg.stats.last_pull_s)

    def close(self) -> None:
        self.eeg.close()
        for inlet in (self.markers, self.infos):
            if inlet is not None:
                inlet.close()


ENGINE_OUTPUT_STREAMS = ("tmseeg-triggers", "tmseeg-metrics")


def _pick_marker_stream(eeg_name: str, marker_type: str, timeout_s: float):
    pylsl = _pylsl()
    deadline = time.monotonic() + timeout_s
    while True:
        streams = [s for s in pylsl.resolve_streams(wait_time=0.3)
                   if s.name() not in ENGINE_OUTPUT_STREAMS]
        found = [s for s in streams if s.type().lower() == marker_type.lower()]
        # the EEG's own: "<eeg>-markers", or mne-lsl PlayerLSL's "<eeg>-annotations"
        own = [s for s in found if s.name().startswith(eeg_name)] + [
            s for s in streams if s.type().lower() == "annotations"
            and s.name().startswith(eeg_name) and s.name() != eeg_name]
        if own:
            return own[0]
        if found and time.monotonic() >= deadline:
            return found[0]
        if time.monotonic() >= deadline:
            return None
