"""The engine's processing thread: acquisition never waits for processing, processing sees
every block in order (the offline numbers), and what it cannot keep up with is said."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import numpy as np
import pytest

from tmseeg.engine import BlocksSource, Engine, read_ahead
from tmseeg.config import load_config
from tmseeg.report.analyze import run_session
from tmseeg.session import TEPSession
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, Event, StreamMeta, blocks_from_array


class BlockSource:
    """Blocks of an array, one per ``read()`` (``None`` once they are all read)."""

    def __init__(self, data_uv: np.ndarray, meta: StreamMeta, block_size: int, events=()):
        self.meta = meta
        self.blocks = list(blocks_from_array(data_uv, meta, block_size, events=events))

    def read(self):
        return self.blocks.pop(0) if self.blocks else None


class SlowStage:
    """A stage that holds its thread ``seconds`` on every block (a machine too slow for the
    rate), and records which thread ran it."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: set[str] = set()
        self.seen: list[Event] = []

    def process(self, block):
        self.threads.add(threading.current_thread().name)
        self.seen += block.events
        time.sleep(self.seconds)
        return block

    def flush(self):
        return None

    def reset(self):
        pass


def _meta(n_ch=4, sfreq=1000.0):
    return StreamMeta(ch_names=tuple(f"E{i}" for i in range(n_ch)), sfreq=sfreq,
                      ch_types=("eeg",) * n_ch, name="test")


def test_the_processing_thread_gives_the_offline_numbers():
    """The same recording in 7-ms blocks through an engine with a processing thread and through
    the same driver without it (offline analysis): the same pulses, the same kept epochs, the
    same TEP to the bit. The source gives its blocks faster than they are processed, so the
    processing thread joins the blocks that wait (and must still give the same numbers)."""
    sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=5000.0, seed=5,
                                    isi_range_s=(0.9, 1.2)))
    data, events = sim.generate(int(12.0 * sim.meta.sfreq))
    cfg = load_config()
    session = TEPSession(cfg, sim.meta)
    engine = Engine.for_session(BlockSource(data, sim.meta, 35, events), session, worker=True)
    while engine.step():
        pass
    engine.finish()
    assert engine.ring.n_written == data.shape[1] and not engine.n_skipped_samples
    n_blocks = -(-data.shape[1] // 35)
    assert engine.n_blocks_processed < n_blocks / 2  # waiting blocks were joined

    from tmseeg.io.files import Recording
    offline = run_session(Recording(data_uv=data, meta=sim.meta, events=list(events)), cfg,
                          keep_epochs=False)
    assert len(offline.pulses) >= 8
    assert [p["sample"] for p in session.pulses] == [p["sample"] for p in offline.pulses]
    assert [p["kept"] for p in session.pulses] == [p["kept"] for p in offline.pulses]
    np.testing.assert_array_equal(session.tep.average_uv, offline.tep.average_uv)


@pytest.mark.slow  # real time on LSL
def test_a_slow_processing_thread_never_holds_acquisition_and_says_what_it_skipped(caplog):
    """Processing at 20 ms per 10-ms block falls behind a source that gives its first second
    at once, and catches up when blocks come every 50 ms. Acquisition still takes every block
    into the ring buffer (and the raw hooks, where the recorder is) at once; beyond 0.2 s of
    backlog blocks go unprocessed, the log names the samples and the pulse markers skipped,
    and the processing thread sees them as one gap per run, so nothing is bridged."""
    meta = _meta()
    n = 3000
    marks = [Event(sample=s, label="TMS", kind=EVENT_MARKER) for s in (500, 1500, 2500)]
    source = BlockSource(np.zeros((4, n)), meta, 10, marks)
    slow = SlowStage(0.02)
    raw_seen: list[tuple[int, str]] = []

    class RawHook:
        def on_raw(self, raw):
            raw_seen.append((raw.n_samples, threading.current_thread().name))

        def on_block(self, raw, processed):
            pass

    engine = Engine(source, stages=[slow], sinks=[RawHook()], worker=True, max_backlog_s=0.2)
    caplog.set_level(logging.WARNING, logger="tmseeg.engine")
    k = 0
    while engine.step():  # the first second as fast as the source gives, then slower
        k += 1          # than processing (50 ms per block): it catches up
        if k > 100:
            time.sleep(0.05)
    assert engine.ring.n_written == n  # acquisition took everything ...
    assert sum(k for k, _ in raw_seen) == n  # ... and the raw hooks saw every sample
    assert {t for _, t in raw_seen} == {threading.current_thread().name}
    engine.finish()
    assert slow.threads == {"tmseeg-processing"}
    assert engine.n_skipped_samples > 0 and engine.skipped
    gaps = [e for e in slow.seen if e.kind == EVENT_GAP]
    assert len(gaps) >= 1 and all(g.extra["skipped"] for g in gaps)
    # every sample is either processed or inside a skipped run, and each run is said
    n_gap = sum(g.duration for g in gaps)
    skipped_runs = sum(r["stop_sample"] - r["first_sample"] for r in engine.skipped)
    assert n_gap <= engine.n_skipped_samples == skipped_runs
    said = caplog.text
    assert "behind acquisition" in said and "caught up" in said
    skipped_marks = [m for r in engine.skipped for m in r["markers"]]
    seen_marks = [e.sample for e in slow.seen if e.kind == EVENT_MARKER]
    assert sorted(skipped_marks + [f"TMS@{s}" for s in seen_marks]) == \
        sorted(f"TMS@{e.sample}" for e in marks)  # every marker processed or named
    for m in skipped_marks:
        assert m in said


def test_status_comes_from_the_processing_thread():
    """``on_status`` may read what processing writes: it is called on the processing thread
    while blocks flow."""
    meta = _meta()
    source = BlockSource(np.zeros((4, 2000)), meta, 10)
    engine = Engine(source, stages=[SlowStage(0.0)], worker=True)
    threads = set()

    def on_status(status):
        threads.add(threading.current_thread().name)
        if engine.ring.n_written >= 2000:
            engine.stop()

    engine.run(duration_s=20.0, status_every_s=0.0, on_status=on_status)
    engine.finish()
    assert "tmseeg-processing" in threads
    st = engine.status()
    assert np.isfinite(st.processing_latency_ms_p99) and st.backlog_s == 0.0


class CountingStage:
    """A stage that records the size of every block it is given."""

    name = "counting"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def process(self, block):
        self.sizes.append(block.n_samples)
        return block

    def flush(self):
        return None

    def reset(self):
        pass


def test_the_processing_thread_waits_for_a_batch_of_at_least_min_batch():
    """A block taken from the queue waits (up to ``min_batch_s``) for the blocks behind it:
    the stages get one batch, not one block at a time; with nothing behind it, it goes on
    alone once the wait is over. 25 ms above 10^6 values per second, 10 ms below."""
    assert Engine(BlockSource(np.zeros((128, 1)), _meta(128, 20000.0), 1)).min_batch_s() == 0.025
    meta = _meta(4, 1000.0)
    blocks = list(blocks_from_array(np.zeros((4, 100)), meta, 1))  # 1-ms blocks
    engine = Engine(BlockSource(np.zeros((4, 1)), meta, 1), [CountingStage()], worker=True)
    assert engine.min_batch_s() == 0.01
    engine.MIN_BATCH_S = 1.0  # a long wait: the blocks below arrive well within it

    def arrive_later():
        time.sleep(0.02)
        for b in blocks[1:]:
            engine._queue.put(b)

    feeder = threading.Thread(target=arrive_later)
    feeder.start()
    joined, ahead = engine._coalesce(blocks[0])
    feeder.join()
    assert joined.n_samples == 100 and ahead is None  # one batch of all 100 blocks
    engine.MIN_BATCH_S = 0.05
    t0 = time.monotonic()
    alone, ahead = engine._coalesce(blocks[0])
    assert alone.n_samples == 1 and ahead is None and time.monotonic() - t0 >= 0.045


def test_read_ahead_keeps_the_order_raises_where_the_error_was_and_stops_when_closed():
    """A file's blocks read on a thread ahead of the stages: the same blocks in the same order,
    a read error raised at the block that failed (after the ones before it), and no thread
    left reading once the consumer lets go."""
    def blocks(fail_at=None):
        for i in range(50):
            if i == fail_at:
                raise OSError(f"read failed at block {i}")
            yield i

    assert list(read_ahead(blocks(), depth=3)) == list(range(50))
    got = []
    with pytest.raises(OSError, match="read failed at block 17"):
        for b in read_ahead(blocks(fail_at=17), depth=3):
            got.append(b)
    assert got == list(range(17))
    n_before = threading.active_count()
    gen = read_ahead(iter(range(10 ** 9)), depth=2)
    assert next(gen) == 0
    gen.close()
    deadline = time.monotonic() + 5.0
    while threading.active_count() > n_before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= n_before


def test_c_heap_counts_what_is_held_and_what_is_let_go():
    """``c_heap_mb`` (what bench_live prints per minute of a long run) follows a 64 MB array
    from allocation to release, and tells the heap kept from the memory in use; with
    ``limit_malloc_arenas`` (what live runs set) applied."""
    import sys

    from tmseeg.utils import c_heap_mb, limit_malloc_arenas

    before = c_heap_mb()
    if before is None:
        pytest.skip("no glibc 2.33+ here (mallinfo2)")
    assert sys.platform.startswith("linux")
    assert limit_malloc_arenas(2)
    held = np.ones(8 * 1024 * 1024)  # 64 MiB, written: resident and in use
    during = c_heap_mb()
    assert 60.0 < during[1] - before[1] < 75.0 and during[0] >= during[1]
    del held
    after = c_heap_mb()
    assert abs(after[1] - before[1]) < 8.0


def test_an_engine_without_a_display_ring_counts_samples_and_gaps_alike():
    """``buffer_s=0`` (an offline analysis: no monitor reads raw data) keeps no ring, and the
    status counts the samples, gaps included, as the ring would have."""
    meta = _meta()
    data = np.arange(4 * 1000, dtype=float).reshape(4, 1000)
    blocks = list(blocks_from_array(data, meta, 100))[:6]
    # 200 samples never arrive: announced for the first 50, not at all for the next 150
    late = blocks[5]
    blocks[5] = replace(late, first_sample=late.first_sample + 200,
                        events=[Event(sample=late.first_sample, label="gap", kind=EVENT_GAP,
                                      duration=50)])
    counts = {}
    for buffer_s in (0.0, 10.0):
        engine = Engine(BlocksSource(blocks, meta), buffer_s=buffer_s)
        while engine.step():
            pass
        counts[buffer_s] = engine.status().n_samples
        assert (engine.ring is None) == (buffer_s == 0)
    assert counts[0.0] == counts[10.0] == engine.ring.n_written == 800
