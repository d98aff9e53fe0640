"""Ingest benchmark: LSL pull + ring-buffer write per block, against ``np.roll`` buffering.

Run with ``tmseeg bench`` or ``python benchmarks/bench_ingest.py``. Figures printed are per
block (median / p95 / p99 in microseconds). Machines here are noisy: read the medians, and the
tails as an indication only.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from tmseeg.stream.lslconfig import use_loopback_only


def percentiles_us(samples_s) -> dict:
    """Median, p95 and p99 of durations given in seconds, returned in microseconds."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e6
    if a.size == 0:
        return {"n": 0, "median_us": float("nan"), "p95_us": float("nan"),
                "p99_us": float("nan")}
    return {"n": int(a.size), "median_us": float(np.median(a)),
            "p95_us": float(np.percentile(a, 95)), "p99_us": float(np.percentile(a, 99))}


def format_row(label: str, stats: dict) -> str:
    return (f"{label:<44s} n={stats['n']:6d}  median {stats['median_us']:9.1f} us  "
            f"p95 {stats['p95_us']:9.1f} us  p99 {stats['p99_us']:9.1f} us")


@dataclass
class IngestCase:
    n_channels: int
    sfreq_hz: float
    block_ms: float = 1.0
    buffer_s: float = 5.0


def bench_buffer_write(case: IngestCase, n_blocks: int = 2000) -> dict[str, dict]:
    """Buffer write alone (no LSL): Cython ring kernel vs ``np.roll`` + tail assignment."""
    from tmseeg.stream.ringbuffer import RingBuffer

    n = max(1, int(round(case.sfreq_hz * case.block_ms / 1e3)))
    cap = int(case.buffer_s * case.sfreq_hz)
    chunk = np.random.default_rng(0).normal(size=(n, case.n_channels)).astype(np.float32)
    ring = RingBuffer(case.n_channels, cap)
    rolled = np.zeros((case.n_channels, cap))
    t_ring, t_roll = [], []
    for _ in range(n_blocks):
        t = time.perf_counter()
        ring.write_samples(chunk, 1.0)
        t_ring.append(time.perf_counter() - t)
    for _ in range(min(n_blocks, 300)):  # np.roll is slow at high rates: fewer repeats
        t = time.perf_counter()
        rolled = np.roll(rolled, -n, axis=1)
        rolled[:, -n:] = chunk.T
        t_roll.append(time.perf_counter() - t)
    return {"ring (Cython kernel)": percentiles_us(t_ring),
            "np.roll + slice": percentiles_us(t_roll)}


def bench_lsl_ingest(case: IngestCase, duration_s: float = 4.0) -> dict[str, dict]:
    """Real loopback LSL: an outlet pushes 1-ms blocks in real time; the consumer pulls with
    ``timeout=0`` into a preallocated buffer and writes into (a) the ring, (b) an ``np.roll``
    buffer, alternating each block so both see the same conditions."""
    use_loopback_only()
    import pylsl

    from tmseeg.stream.ringbuffer import RingBuffer

    n = max(1, int(round(case.sfreq_hz * case.block_ms / 1e3)))
    cap = int(case.buffer_s * case.sfreq_hz)
    sid = f"bench-{time.time_ns()}"
    info = pylsl.StreamInfo("tmseeg-bench", "EEG", case.n_channels, case.sfreq_hz, "float32", sid)
    outlet = pylsl.StreamOutlet(info)
    inlet = pylsl.StreamInlet(pylsl.resolve_byprop("source_id", sid, timeout=5)[0])
    inlet.open_stream(timeout=5)
    chunk = np.random.default_rng(0).normal(size=(n, case.n_channels)).astype(np.float32)
    stop = threading.Event()

    def push():
        t0 = pylsl.local_clock()
        k = 0
        while not stop.is_set():
            due = t0 + (k + 1) * n / case.sfreq_hz
            while pylsl.local_clock() < due:
                time.sleep(0.0001)
            outlet.push_chunk(chunk)
            k += 1

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    dest = np.zeros((4 * n + 1024, case.n_channels), dtype=np.float32)
    ring = RingBuffer(case.n_channels, cap)
    rolled = np.zeros((case.n_channels, cap))
    t_ring, t_roll, latency = [], [], []
    use_ring = True
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        t = time.perf_counter()
        view, ts = inlet.pull_chunk(timeout=0.0, max_samples=dest.shape[0], dest_obj=dest,
                                    as_numpy=True)
        k = len(ts)
        if k == 0:
            continue
        if use_ring:
            ring.write_samples(view[:k], 1.0)
            t_ring.append(time.perf_counter() - t)
        else:
            rolled = np.roll(rolled, -k, axis=1)
            rolled[:, -k:] = view[:k].T
            t_roll.append(time.perf_counter() - t)
        latency.append(pylsl.local_clock() - ts[-1])
        use_ring = not use_ring
    stop.set()
    pusher.join()
    return {"LSL pull + ring write": percentiles_us(t_ring),
            "LSL pull + np.roll write": percentiles_us(t_roll),
            "push->pull latency": percentiles_us(latency)}


def main(duration_s: float = 4.0) -> int:
    """Print the ingest benchmark for 64 ch / 5 kHz and 128 ch / 20 kHz."""
    for case in (IngestCase(64, 5000.0), IngestCase(128, 20000.0)):
        print(f"== {case.n_channels} ch @ {case.sfreq_hz / 1e3:g} kHz, {case.block_ms:g} ms "
              f"blocks, {case.buffer_s:g} s buffer")
        for label, stats in bench_buffer_write(case).items():
            print(format_row("buffer write: " + label, stats))
        for label, stats in bench_lsl_ingest(case, duration_s).items():
            print(format_row(label, stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
