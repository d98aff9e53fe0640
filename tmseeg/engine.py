"""The engine loop: source -> ring buffer -> stages -> epocher -> metrics -> sinks.

One loop serves the live path (an :class:`~tmseeg.stream.inlet.LSLSource`) and the offline path
(blocks cut from a file by :func:`~tmseeg.stream.block.blocks_from_array`), so live and offline
numbers agree.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from tmseeg.pipeline.base import Chain, Stage
from tmseeg.stream.block import EVENT_GAP, Block
from tmseeg.stream.ringbuffer import RingBuffer
from tmseeg.utils import now_s

log = logging.getLogger(__name__)


class Source(Protocol):
    """Anything that delivers blocks: ``read()`` returns the next block or None (nothing new)."""

    meta: Any

    def read(self) -> Block | None: ...


class Sink(Protocol):
    """Receives every raw block (as acquired) and every processed block.

    ``raw`` is None for the samples that stages release at the end of a file (flush). A sink
    may also define ``on_raw(raw)``: it is then called with each raw block *before* the stages
    run (a closed-loop protocol must not wait for artifact removal).
    """

    def on_block(self, raw: Block | None, processed: Block) -> None: ...


@dataclass
class EngineStatus:
    """A snapshot of the engine for status lines, the monitor and the metrics stream."""

    stream: str
    n_channels: int
    sfreq_hz: float
    rate_hz: float
    n_samples: int
    n_pulses: int
    n_gaps: int
    n_missing: int
    transport_latency_ms: float
    processing_latency_ms_p50: float
    processing_latency_ms_p99: float
    elapsed_s: float
    #: seconds since the stream last sent data, while it is silent (0.0 while data flow)
    no_data_s: float = 0.0

    def line(self) -> str:
        """One-line text for a terminal dashboard (starts with the outage while there is one)."""
        gone = (f"NO DATA for {self.no_data_s:.1f} s (stream gone? waiting for it) | "
                if self.no_data_s > 0 else "")
        return (f"{gone}{self.stream} {self.n_channels}ch @ {self.rate_hz:7.1f} Hz "
                f"(nominal {self.sfreq_hz:g}) | samples {self.n_samples:9d} | "
                f"pulses {self.n_pulses:4d} | gaps {self.n_gaps} ({self.n_missing} smp) | "
                f"transport {self.transport_latency_ms:6.2f} ms | processing p50 "
                f"{self.processing_latency_ms_p50:6.3f} ms p99 "
                f"{self.processing_latency_ms_p99:6.3f} ms | {self.elapsed_s:6.1f} s")


class Engine:
    """Drive blocks from a source through the stages and out to the sinks.

    Parameters
    ----------
    source : Source
        Live or offline block source.
    stages : iterable of Stage or Chain
        Processing stages in order (see :mod:`tmseeg.pipeline`).
    sinks : iterable of Sink
        Recorder, metrics outlet, monitor state, protocol runner...
    buffer_s : float
        Seconds of raw data kept in the ring buffer (for displays and late events).
    on_processed : callable, optional
        Called with each processed block (e.g. the epocher).
    """

    def __init__(self, source: Source, stages: Iterable[Stage] | Chain = (),
                 sinks: Iterable[Sink] = (), buffer_s: float = 10.0,
                 on_processed: Callable[[Block], None] | None = None) -> None:
        self.source = source
        self.chain = stages if isinstance(stages, Chain) else Chain(stages)
        self.sinks = list(sinks)
        # sinks that work on raw data (a closed-loop protocol) get it before the stages: a
        # decay fit holds this thread 10-150 ms once per pulse, a trigger decision must not
        self._raw_hooks = [s.on_raw for s in self.sinks if hasattr(s, "on_raw")]
        self.meta = source.meta
        self.ring = RingBuffer(self.meta.n_channels, max(1, int(buffer_s * self.meta.sfreq)))
        self.on_processed = on_processed
        self.n_pulses = 0
        self.n_gaps = 0
        self.n_missing = 0
        self._latencies_ms: deque[float] = deque(maxlen=2000)
        self._t_start = time.monotonic()
        self._stop = threading.Event()

    # -- one iteration ---------------------------------------------------------------------
    def step(self) -> int:
        """Process whatever the source has now; returns the number of new samples."""
        raw = self.source.read()
        if raw is None:
            return 0
        self._ingest(raw)
        return raw.n_samples

    def _ingest(self, raw: Block) -> Block:
        for ev in raw.events:
            if ev.kind == EVENT_GAP:
                self.ring.write_gap(ev.duration)
                self.n_gaps += 1
                self.n_missing += ev.duration
        if self.ring.n_written < raw.first_sample:  # gaps not announced as events
            self.ring.write_gap(raw.first_sample - self.ring.n_written)
        self.ring.write(raw.data)
        for on_raw in self._raw_hooks:
            try:
                on_raw(raw)
            except Exception:
                log.exception("%r failed on raw block at sample %d", on_raw, raw.first_sample)
        processed = self.chain.process(raw)
        self._deliver(raw, processed)
        if not np.isnan(raw.received_s):
            self._latencies_ms.append((now_s() - raw.received_s) * 1e3)
        return processed

    def _deliver(self, raw: Block | None, processed: Block) -> None:
        self.n_pulses += len(processed.pulses())
        if self.on_processed is not None:
            self.on_processed(processed)
        for sink in self.sinks:
            try:
                sink.on_block(raw, processed)
            except Exception:  # one broken consumer must not stop acquisition
                log.exception("sink %r failed on block at sample %d", sink,
                              processed.first_sample)

    def finish(self) -> None:
        """End of stream: release samples held back by stages (offline files)."""
        for rest in self.chain.flush():
            self._deliver(None, rest)

    # -- loops -----------------------------------------------------------------------------
    def run(self, duration_s: float | None = None, status_every_s: float = 1.0,
            on_status: Callable[[EngineStatus], None] | None = None,
            idle_sleep_s: float = 0.0005) -> EngineStatus:
        """Poll the source until ``duration_s`` passes or :meth:`stop` is called.

        The loop never blocks on the source: it polls, sleeping ``idle_sleep_s`` when nothing
        came, which keeps latency well under a millisecond on loopback.
        """
        t_end = None if duration_s is None else time.monotonic() + duration_s
        next_status = time.monotonic() + status_every_s
        self._t_start = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                break
            if self.step() == 0:
                time.sleep(idle_sleep_s)
            if on_status is not None and now >= next_status:
                next_status = now + status_every_s
                on_status(self.status())
        return self.status()

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def status(self) -> EngineStatus:
        stats = getattr(getattr(self.source, "eeg", None), "stats", None)
        lat = np.array(self._latencies_ms, dtype=float)
        lat = lat[np.isfinite(lat)]
        p50, p99 = (np.percentile(lat, [50, 99]) if lat.size else (np.nan, np.nan))
        return EngineStatus(
            stream=self.meta.name,
            n_channels=self.meta.n_channels,
            sfreq_hz=self.meta.sfreq,
            rate_hz=float(stats.rate_hz) if stats is not None else float("nan"),
            n_samples=self.ring.n_written,
            n_pulses=self.n_pulses,
            n_gaps=self.n_gaps,
            n_missing=self.n_missing,
            transport_latency_ms=(stats.transport_latency_s * 1e3 if stats is not None
                                  else float("nan")),
            processing_latency_ms_p50=float(p50),
            processing_latency_ms_p99=float(p99),
            elapsed_s=time.monotonic() - self._t_start,
            no_data_s=float(stats.no_data_s) if stats is not None else 0.0,
        )
