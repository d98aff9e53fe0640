"""The engine loop: source -> ring buffer -> stages -> epocher -> metrics -> sinks.

One loop serves the live path (an :class:`~tmseeg.stream.inlet.LSLSource`) and the offline path
(blocks cut from a file by :func:`~tmseeg.stream.block.blocks_from_array`), so live and offline
numbers agree.

Live, the work is on two threads when ``worker=True`` (``tmseeg run``, ``demo``, the monitor):

* the **acquisition thread** pulls the stream, writes the ring buffer, and calls the raw hooks
  (``on_raw``: the recorder, a closed-loop protocol's trigger decisions) -- microseconds per
  block, so a decay fit or a plug-in summary never delays a sample or a trigger;
* the **processing thread** runs the stages, the epochs, the metrics and the sinks'
  ``on_block`` on the blocks in the order they came, so its results are the offline ones.

Between them a queue holds at most ``max_backlog_s`` seconds of data. When processing falls that
far behind, new blocks are recorded and shown raw but not processed: the processing thread sees
them as a gap (``extra["skipped"]``), the log says which samples and which pulse markers were
skipped, and the status counts them; acquisition is never blocked and nothing is skipped in
silence.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Protocol

import numpy as np

from tmseeg.pipeline.base import Chain, Stage, concat_blocks
from tmseeg.stream.block import (EVENT_GAP, EVENT_INFO, EVENT_MARKER, EVENT_PULSE, Block,
                                 Event, blocks_from_array)
from tmseeg.stream.ringbuffer import RingBuffer
from tmseeg.utils import limit_malloc_arenas, now_s, return_freed_memory

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
    #: from a block's arrival to the end of its processing (stages, epochs, metrics, sinks);
    #: with a processing thread this includes the wait in its queue
    update_latency_ms_p50: float = float("nan")
    update_latency_ms_p99: float = float("nan")
    #: seconds of data waiting for the processing thread
    backlog_s: float = 0.0
    #: samples acquired (and recorded) but not processed: the processing thread was too far
    #: behind (see :class:`Engine`)
    n_skipped_samples: int = 0

    def line(self) -> str:
        """One-line text for a terminal dashboard (starts with the outage while there is one)."""
        gone = (f"NO DATA for {self.no_data_s:.1f} s (stream gone? waiting for it) | "
                if self.no_data_s > 0 else "")
        return (f"{gone}{self.stream} {self.n_channels}ch @ {self.rate_hz:7.1f} Hz "
                f"(nominal {self.sfreq_hz:g}) | samples {self.n_samples:9d} | "
                f"pulses {self.n_pulses:4d} | gaps {self.n_gaps} ({self.n_missing} smp) | "
                f"transport {self.transport_latency_ms:6.2f} ms | processing p50 "
                f"{self.processing_latency_ms_p50:6.3f} ms p99 "
                f"{self.processing_latency_ms_p99:6.3f} ms{self._worker_part()} | "
                f"{self.elapsed_s:6.1f} s")

    def _worker_part(self) -> str:
        if np.isnan(self.update_latency_ms_p99) and not self.n_skipped_samples:
            return ""
        skipped = (f", SKIPPED {self.n_skipped_samples} smp (processing behind)"
                   if self.n_skipped_samples else "")
        return (f" | updates p50 {self.update_latency_ms_p50:6.1f} ms p99 "
                f"{self.update_latency_ms_p99:6.1f} ms, backlog {self.backlog_s:4.2f} s{skipped}")


#: the end sentinel, once :meth:`Engine._coalesce` has taken it from the queue
_END = object()

#: Offline block length. Any length gives the same numbers (the stages are block-size
#: invariant, which the tests check); this one keeps Python overhead low: each stage's
#: per-block work is paid 1500 times in a 10-minute recording instead of 6000 (100 ms: 1.9 s
#: more of a 16-s analysis at 64 ch / 5 kHz), for ~30 MB more held at once.
OFFLINE_BLOCK_MS = 400.0


def events_as_markers(events: Iterable[Event]) -> list[Event]:
    """A file's events as a live stream delivers them: every event but gaps and per-pulse
    metadata messages (which come on streams of their own) is a plain marker; which ones are
    pulses the stages decide, as they do live."""
    return [e if e.kind in (EVENT_GAP, EVENT_INFO) else replace(e, kind=EVENT_MARKER)
            for e in events]


class BlocksSource:
    """Blocks given in advance as a block source (a recording cut into blocks, a test's
    hand-made stream); :attr:`exhausted` once every block was read.

    Parameters
    ----------
    blocks : iterable of Block
    meta : StreamMeta
    """

    def __init__(self, blocks: Iterable[Block], meta) -> None:
        self.meta = meta
        self._blocks = iter(blocks)
        self.exhausted = False

    def read(self) -> Block | None:
        """The next block, None at the end."""
        block = next(self._blocks, None)
        if block is None:
            self.exhausted = True
        return block

    def close(self) -> None:
        self._blocks = iter(())
        self.exhausted = True


class RecordingSource(BlocksSource):
    """A recording as a block source: a file is just another source for the :class:`Engine`,
    its events delivered as a live stream delivers them (:func:`events_as_markers`).

    Parameters
    ----------
    recording : tmseeg.io.files.Recording
    block_ms : float
        Milliseconds of data per block (the last block may be shorter).
    progress : bool
        Show a progress bar (tqdm) over the blocks.
    """

    def __init__(self, recording, block_ms: float = OFFLINE_BLOCK_MS,
                 progress: bool = False) -> None:
        self.recording = recording
        self.block_size = max(1, int(round(block_ms * recording.meta.sfreq / 1e3)))
        self.n_blocks = -(-recording.n_samples // self.block_size)
        blocks = blocks_from_array(recording.data_uv, recording.meta, self.block_size,
                                   events=events_as_markers(recording.events))
        if progress:
            from tqdm import tqdm
            blocks = tqdm(blocks, total=self.n_blocks, unit="block",
                          desc=recording.meta.name, mininterval=0.5)
        super().__init__(read_ahead(blocks), recording.meta)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def read_ahead(blocks: Iterable[Block], depth: int = 4):
    """``blocks``, read on a thread of their own up to ``depth`` blocks ahead of the consumer.

    A file's blocks are read (``pread``) and converted to float64 µV while the stages work
    on the ones before (both let go of the interpreter lock): 1.5 s of a 10-minute 64 ch /
    5 kHz analysis off the processing thread. The order is the file's; an error reading a
    block is raised where that block would have been taken. Closing the generator stops the
    reading.
    """
    out: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for block in blocks:
                if not put(block):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
            return
        put(end)

    thread = threading.Thread(target=produce, name="tmseeg-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is end:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item
    finally:
        stop.set()


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
        Seconds of raw data kept in the ring buffer :attr:`ring` for displays (the monitor's
        raw traces); 0 keeps none (``ring`` is None: an offline analysis, where copying every
        block there cost 0.7 s of a 10-minute 64 ch / 5 kHz recording).
    on_processed : callable, optional
        Called with each processed block (e.g. the epocher).
    worker : bool
        Process on a thread of its own (see the module description); :meth:`run` starts it,
        :meth:`finish` drains it. Without, :meth:`step` processes each block at once.
    max_backlog_s : float
        With ``worker``: most seconds of data waiting for processing; beyond, blocks are
        recorded but skipped by processing (said in the log and the status).
    """

    def __init__(self, source: Source, stages: Iterable[Stage] | Chain = (),
                 sinks: Iterable[Sink] = (), buffer_s: float = 10.0,
                 on_processed: Callable[[Block], None] | None = None,
                 worker: bool = False, max_backlog_s: float = 30.0) -> None:
        self.source = source
        self.chain = stages if isinstance(stages, Chain) else Chain(stages)
        self.sinks = list(sinks)
        # sinks that work on raw data (a closed-loop protocol) get it before the stages: a
        # decay fit holds this thread 10-150 ms once per pulse, a trigger decision must not
        self._raw_hooks = [s.on_raw for s in self.sinks if hasattr(s, "on_raw")]
        self.meta = source.meta
        n_ring = int(buffer_s * self.meta.sfreq)
        self.ring = RingBuffer(self.meta.n_channels, n_ring) if n_ring > 0 else None
        self.n_samples = 0  # one past the newest sample acquired (gaps included)
        self.on_processed = on_processed
        self.n_pulses = 0
        self.n_gaps = 0
        self.n_missing = 0
        self._latencies_ms: deque[float] = deque(maxlen=2000)
        self._update_ms: deque[float] = deque(maxlen=2000)
        self._t_start = time.monotonic()
        self._stop = threading.Event()
        self.worker = bool(worker)
        self.max_backlog_samples = max(1, int(max_backlog_s * self.meta.sfreq))
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._queued_samples = 0  # written by both threads under _count_lock
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._skipping: dict | None = None  # the run of blocks being skipped now
        self.n_skipped_samples = 0
        #: wall time spent processing blocks (stages, epochs, metrics, sinks): against the
        #: stream's duration, the real-time headroom
        self.processing_busy_s = 0.0
        self.n_blocks_processed = 0  # fewer than read when waiting blocks were joined
        #: one entry per run of skipped blocks: first/stop sample and the pulse markers in it
        self.skipped: list[dict] = []
        self._status_cb: Callable[[EngineStatus], None] | None = None
        #: the session whose epochs and metrics the processed blocks feed (see
        #: :meth:`for_session`); :meth:`finish` finishes it
        self.session = None

    @classmethod
    def for_session(cls, source: Source, session, sinks: Iterable[Sink] = (),
                    worker: bool = False, buffer_s: float = 10.0, lock=None,
                    max_backlog_s: float = 30.0) -> "Engine":
        """The one driver of a :class:`~tmseeg.session.TEPSession`, live and offline:
        ``source`` (an LSL stream, a :class:`RecordingSource`, a simulator) -> the session's
        stages -> its epochs and metrics -> ``sinks``.

        Parameters
        ----------
        source : Source
        session : tmseeg.session.TEPSession
        sinks : iterable of Sink
        worker : bool
            Stages, epochs and metrics on a processing thread of their own (live).
        buffer_s : float
        lock : context manager, optional
            Held while a processed block updates the session (a display reading it from
            another thread).
        max_backlog_s : float
        """
        guard = lock if lock is not None else contextlib.nullcontext()

        def on_processed(block: Block) -> None:
            with guard:
                session.after_stages(block, block.received_s)

        engine = cls(source, stages=session.chain, sinks=sinks, buffer_s=buffer_s,
                     on_processed=on_processed, worker=worker, max_backlog_s=max_backlog_s)
        engine.session = session
        return engine

    def run_to_end(self) -> None:
        """A finite source (a recording) from its first block to its last, then
        :meth:`finish`: every block processed, none skipped (offline analysis)."""
        while True:
            if self.step() == 0 and getattr(self.source, "exhausted", True):
                break
        self.finish()

    # -- one iteration ---------------------------------------------------------------------
    def step(self) -> int:
        """Process whatever the source has now; returns the number of new samples."""
        raw = self.source.read()
        if raw is None:
            return 0
        self._ingest(raw)
        return raw.n_samples

    def _ingest(self, raw: Block) -> Block | None:
        """Acquire ``raw`` (ring buffer, raw hooks), then process it here or queue it."""
        t0 = now_s()
        for ev in raw.events:
            if ev.kind == EVENT_GAP:
                self._skip_missing(ev.duration)
                self.n_gaps += 1
                self.n_missing += ev.duration
        self._skip_missing(raw.first_sample - self.n_samples)  # gaps not announced as events
        if self.ring is not None:
            self.ring.write(raw.data)
        self.n_samples += raw.n_samples
        for on_raw in self._raw_hooks:
            try:
                on_raw(raw)
            except Exception:
                log.exception("%r failed on raw block at sample %d", on_raw, raw.first_sample)
        if self.worker:
            self._enqueue(raw)
            self._latencies_ms.append((now_s() - t0) * 1e3)  # this thread's work only
            return None
        processed = self._process(raw)
        self._latencies_ms.append((now_s() - t0) * 1e3)
        return processed

    def _skip_missing(self, n: int) -> None:
        """Count ``n`` samples that never arrived (NaN in the display ring); none if n <= 0."""
        n = max(0, int(n))
        if self.ring is not None:
            self.ring.write_gap(n)
        self.n_samples += n

    def _process(self, raw: Block) -> Block:
        t0 = time.perf_counter()
        processed = self.chain.process(raw)
        self._deliver(raw, processed)
        self.processing_busy_s += time.perf_counter() - t0
        self.n_blocks_processed += 1
        if not np.isnan(raw.received_s):
            self._update_ms.append((now_s() - raw.received_s) * 1e3)
        return processed

    # -- the processing thread ---------------------------------------------------------------
    def _enqueue(self, raw: Block) -> None:
        if self._thread is None:
            self.start_worker()
        with self._count_lock:
            full = self._queued_samples + raw.n_samples > self.max_backlog_samples
            if not full:
                self._queued_samples += raw.n_samples
        if full:
            self._skip(raw)
            return
        if self._skipping is not None:  # processing caught up: the skipped run is a gap
            raw = self._after_skip(raw)
        self._queue.put(raw)

    def _skip(self, raw: Block) -> None:
        """Leave ``raw`` out of processing (it is in the ring buffer and the recording)."""
        marks = [f"{e.label}@{e.sample}" for e in raw.events
                 if e.kind in (EVENT_PULSE, EVENT_MARKER)]
        if self._skipping is None:
            self._skipping = {"first_sample": raw.first_sample, "markers": []}
            log.warning("processing is %.1f s behind acquisition: from sample %d on, blocks are "
                        "recorded but not processed until it catches up (a slow plug-in or "
                        "a machine too busy for this rate)", self.max_backlog_samples /
                        self.meta.sfreq, raw.first_sample)
        self._skipping["markers"] += marks
        self._skipping["stop_sample"] = raw.stop_sample
        self.n_skipped_samples += raw.n_samples

    def _after_skip(self, raw: Block) -> Block:
        run, self._skipping = self._skipping, None
        n = raw.first_sample - run["first_sample"]
        self.skipped.append(run)
        log.warning("processing caught up: samples %d-%d (%.2f s) were not processed%s",
                    run["first_sample"], raw.first_sample, n / self.meta.sfreq,
                    f"; pulse markers skipped: {', '.join(run['markers'])}"
                    if run["markers"] else "; no pulse marker among them")
        gap = Event(sample=run["first_sample"], label="gap", kind=EVENT_GAP,
                    time_s=float("nan"), duration=n,
                    extra={"skipped": "processing behind", "markers": run["markers"]})
        return replace(raw, events=[gap, *raw.events])

    def _work(self) -> None:
        """The processing thread: blocks in arrival order until the end sentinel. Blocks that
        wait together (processing is behind) are joined into one (:meth:`_coalesce`)."""
        ahead = None  # taken from the queue but not joinable with the last join (or _END)
        trimmed_s = time.monotonic()
        while True:
            raw = ahead if ahead is not None else self._queue.get()
            if raw is None or raw is _END:
                return
            raw, ahead = self._coalesce(raw)
            self._process_queued(raw)
            if time.monotonic() - trimmed_s > self.TRIM_EVERY_S:
                # epochs, fits and batches of many sizes come and go for hours: what the C
                # heap keeps of them after they are freed is handed back now and then, so
                # the resident memory follows what is held (ctypes lets go of the
                # interpreter lock meanwhile; acquisition is not held up)
                return_freed_memory()
                trimmed_s = time.monotonic()
            cb = self._status_cb
            if cb is not None:
                cb()

    #: how often (s) the processing thread hands freed heap memory back to the system
    TRIM_EVERY_S = 5.0
    #: heap arenas a live run lets glibc keep (:func:`tmseeg.utils.limit_malloc_arenas`)
    MALLOC_ARENAS = 2
    #: most data joined into one block when blocks wait for processing
    COALESCE_S = 0.1
    #: least data the processing thread takes at once: it waits up to this long for blocks to
    #: join (live TEP updates come a few hundred ms after the epoch anyway; the per-block cost
    #: of the stages in Python is paid once per batch instead of once per 1-ms block). The
    #: acquisition thread, the ring buffer and a protocol's raw hooks are not delayed.
    #: Measured at 128 ch / 5 kHz: processing 44 % -> 18 % of real time; 128 ch / 20 kHz:
    #: 25 ms batches 53 %, 10 ms 60 %, none 76 % (benchmarks/bench_live.py).
    MIN_BATCH_S = 0.01
    #: above this many values per second (channels x rate), batches of HIGH_RATE_MIN_BATCH_S
    HIGH_RATE_VALUES_PER_S = 1e6
    HIGH_RATE_MIN_BATCH_S = 0.025

    def min_batch_s(self) -> float:
        """The least data (s) the processing thread takes at once for this stream."""
        rate = self.meta.n_channels * self.meta.sfreq
        return self.HIGH_RATE_MIN_BATCH_S if rate > self.HIGH_RATE_VALUES_PER_S \
            else self.MIN_BATCH_S

    def _coalesce(self, first: Block) -> tuple[Block, object]:
        """``first`` joined with the blocks queued right behind it (consecutive samples, no
        gap), up to :attr:`COALESCE_S` of data; and what was taken from the queue but not
        joined: a block, :data:`_END` (the end sentinel), or None (nothing).

        The stages give the same numbers whatever the block sizes (tested), so a backlog is
        worked off in fewer, larger blocks: the per-block cost of ten stages in Python is paid
        once per join, not once per 1-ms block (at 128 ch / 20 kHz that cost alone exceeds
        real time). Less than :meth:`min_batch_s` of data waits that long for more. Latency is
        counted from the first block's arrival."""
        limit = max(1, int(self.COALESCE_S * self.meta.sfreq))
        batch_s = self.min_batch_s()
        want = min(limit, int(batch_s * self.meta.sfreq))
        deadline = time.monotonic() + batch_s
        parts, n = [first], first.n_samples
        while n < limit and not any(e.kind == EVENT_GAP for e in parts[-1].events):
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                wait_s = deadline - time.monotonic()
                if n >= want or wait_s <= 0:
                    break
                try:  # a short batch: wait a little for the blocks behind it
                    nxt = self._queue.get(timeout=wait_s)
                except queue.Empty:
                    break
            if nxt is None or nxt.first_sample != parts[-1].stop_sample \
                    or nxt.meta is not first.meta or any(e.kind == EVENT_GAP for e in nxt.events):
                return self._join(parts), (nxt if nxt is not None else _END)
            parts.append(nxt)
            n += nxt.n_samples
        return self._join(parts), None

    @staticmethod
    def _join(parts: list[Block]) -> Block:
        if len(parts) == 1:
            return parts[0]
        return replace(concat_blocks(parts), received_s=parts[0].received_s)

    def _process_queued(self, raw: Block) -> None:
        """Process one block taken from the queue (its samples leave the backlog count)."""
        try:
            self._process(raw)
        except Exception:  # a bug in a stage must not end processing for the session
            log.exception("processing failed on block at sample %d", raw.first_sample)
        finally:
            with self._count_lock:
                self._queued_samples -= raw.n_samples

    def start_worker(self) -> None:
        """Start the processing thread (``worker=True``; :meth:`run` does it)."""
        if not self.worker or self._thread is not None:
            return
        # the acquisition thread waits at most this long for the interpreter while the
        # processing thread runs Python code (default 5 ms: a whole block period or more)
        if sys.getswitchinterval() > 0.0005:
            sys.setswitchinterval(0.0005)
        self._thread = threading.Thread(target=self._work, name="tmseeg-processing",
                                        daemon=True)
        self._thread.start()

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until the processing thread has processed every queued block and ended;
        return whether it did within ``timeout_s``."""
        if self._skipping is not None:  # the stream ended while processing was behind
            run, self._skipping = self._skipping, None
            self.skipped.append(run)
            log.warning("samples %d-%d were not processed (processing behind at the end)%s",
                        run["first_sample"], run["stop_sample"],
                        f"; pulse markers skipped: {', '.join(run['markers'])}"
                        if run["markers"] else "")
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout_s)
        done = not self._thread.is_alive()
        if done:
            self._thread = None
        return done

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

    def finish(self, drain_timeout_s: float | None = None) -> bool:
        """End of stream: process what is queued, then release samples held back by stages
        and finish the session (its last epochs, the plug-ins' finals).

        Returns
        -------
        bool
            False when the processing thread did not end within ``drain_timeout_s`` (what
            it still held is then not in the results).
        """
        if not self.drain(timeout_s=drain_timeout_s):
            log.error("the processing thread did not end; held-back samples are not released")
            return False
        for rest in self.chain.flush():
            self._deliver(None, rest)
        if self.session is not None:
            self.session.finish()
        return True

    # -- loops -----------------------------------------------------------------------------
    def run(self, duration_s: float | None = None, status_every_s: float = 1.0,
            on_status: Callable[[EngineStatus], None] | None = None,
            idle_sleep_s: float = 0.0005) -> EngineStatus:
        """Poll the source until ``duration_s`` passes or :meth:`stop` is called.

        The loop never blocks on the source: it polls, sleeping ``idle_sleep_s`` when nothing
        came, which keeps latency well under a millisecond on loopback. With ``worker``,
        ``on_status`` is called on the processing thread (it may read what processing
        writes, e.g. the running TEP), after a block, and here while nothing is queued.
        """
        # hours of epochs freed on several threads: two heap arenas shared by all of them
        # keep the resident memory flat (see limit_malloc_arenas)
        limit_malloc_arenas(self.MALLOC_ARENAS)
        t_end = None if duration_s is None else time.monotonic() + duration_s
        self._t_start = time.monotonic()
        next_status = [time.monotonic() + status_every_s]
        status_lock = threading.Lock()

        def maybe_status() -> None:
            if on_status is None:
                return
            with status_lock:
                now = time.monotonic()
                if now < next_status[0]:
                    return
                next_status[0] = now + status_every_s
                on_status(self.status())

        if self.worker:
            self._status_cb = maybe_status
            self.start_worker()
        try:
            while not self._stop.is_set():
                if t_end is not None and time.monotonic() >= t_end:
                    break
                if self.step() == 0:
                    time.sleep(idle_sleep_s)
                # with a processing thread, the status comes from it; from here only while
                # it has nothing to do (a silent stream must still show its outage)
                if not self.worker or self._queue_is_idle():
                    maybe_status()
        finally:
            self._status_cb = None
        return self.status()

    def _queue_is_idle(self) -> bool:
        with self._count_lock:
            return self._queued_samples == 0

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self._stop.set()

    def status(self) -> EngineStatus:
        stats = getattr(getattr(self.source, "eeg", None), "stats", None)
        p50, p99 = _percentiles(self._latencies_ms)
        u50, u99 = _percentiles(self._update_ms)
        return EngineStatus(
            stream=self.meta.name,
            n_channels=self.meta.n_channels,
            sfreq_hz=self.meta.sfreq,
            rate_hz=float(stats.rate_hz) if stats is not None else float("nan"),
            n_samples=self.n_samples,
            n_pulses=self.n_pulses,
            n_gaps=self.n_gaps,
            n_missing=self.n_missing,
            transport_latency_ms=(stats.transport_latency_s * 1e3 if stats is not None
                                  else float("nan")),
            processing_latency_ms_p50=float(p50),
            processing_latency_ms_p99=float(p99),
            elapsed_s=time.monotonic() - self._t_start,
            no_data_s=float(stats.no_data_s) if stats is not None else 0.0,
            update_latency_ms_p50=u50,
            update_latency_ms_p99=u99,
            backlog_s=self._queued_samples / self.meta.sfreq,
            n_skipped_samples=self.n_skipped_samples,
        )


def _percentiles(values: deque) -> tuple[float, float]:
    """p50 and p99 of the finite values (NaN when there are none)."""
    x = np.array(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return float("nan"), float("nan")
    p50, p99 = np.percentile(x, [50, 99])
    return float(p50), float(p99)
