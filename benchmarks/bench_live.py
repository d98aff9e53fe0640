"""The live engine on a real LSL stream, with and without its processing thread (issue #16).

The simulated amplifier sends 1-ms chunks on loopback LSL from a process of its own (as an
amplifier's LSL app does; ``--amp-in-process`` shares this one); ``tmseeg run``'s engine (every
default stage and metric plug-in) reads it for ``--seconds``. Printed for each mode: the
acquisition thread's work per block (median / p95 / p99: pull to the end of what that thread
does), the time from a block's arrival to the end of its processing (update latency), the
largest backlog, the samples not processed, samples lost on the way, the transport latency
(arrival minus the newest sample's time stamp, sampled twice a second) and the resident memory
after the first minute and at the end (issue #19 point 7: 128 ch / 20 kHz for 10 minutes).

    python benchmarks/bench_live.py [--channels 128] [--sfreq 5000] [--seconds 60]
                                    [--modes worker,single]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tep_accuracy import _overrides  # noqa: E402  (one parser for --set)

from tmseeg.engine import Engine
from tmseeg.config import load_config
from tmseeg.session import TEPSession
from tmseeg.sim.amplifier import SimulatedAmplifier
from tmseeg.sim.model import SimConfig
from tmseeg.stream.inlet import LSLSource
from tmseeg.stream.lslconfig import use_loopback_only
from tmseeg.utils import c_heap_mb, single_threaded_blas


def _rss_mb() -> float:
    """Resident memory of this process (MB), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


class _Latencies:
    """The engine's per-block latency record (it calls ``append``), in a preallocated array."""

    def __init__(self, capacity: int) -> None:
        self._ms = np.ones(capacity)  # ones, not empty: its pages are resident from the start
        self._n = 0

    def append(self, value_ms: float) -> None:
        if self._n < self._ms.size:
            self._ms[self._n] = value_ms
            self._n += 1

    def __iter__(self):  # the engine's status: the last 2000 blocks, as its own record
        return iter(self._ms[max(0, self._n - 2000):self._n])

    def values(self) -> np.ndarray:
        return self._ms[:self._n].copy()


class _AmplifierProcess:
    """The simulated amplifier in a process of its own, as a real amplifier's LSL app is: its
    work and its interpreter lock are not the engine's (in the same process it takes ~5-20 %
    of a core and competes with the engine's threads for the lock)."""

    CODE = ("import sys, time\n"
            "from tmseeg.sim.amplifier import SimulatedAmplifier\n"
            "from tmseeg.sim.model import SimConfig\n"
            "ch, fs, name = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]\n"
            "amp = SimulatedAmplifier(SimConfig(n_channels=ch, sfreq=fs, seed=2), name=name,\n"
            "                         chunk_ms=1.0, listen_triggers=False)\n"
            "amp.start()\n"
            "sys.stdin.read()  # until the benchmark closes the pipe\n"
            "amp.stop()\n")

    def __init__(self, channels: int, sfreq: float, name: str) -> None:
        import subprocess
        self._proc = subprocess.Popen([sys.executable, "-c", self.CODE, str(channels),
                                       str(sfreq), name], stdin=subprocess.PIPE)

    def stop(self) -> None:
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except Exception:
            self._proc.kill()


def run(channels: int, sfreq: float, seconds: float, worker: bool,
        overrides: dict | None = None, amp_in_process: bool = False) -> dict:
    name = f"bench-live-{uuid.uuid4().hex[:6]}"
    if amp_in_process:
        amp = SimulatedAmplifier(SimConfig(n_channels=channels, sfreq=sfreq, seed=2),
                                 name=name, chunk_ms=1.0, listen_triggers=False)
        amp.start()
    else:  # the child inherits the loopback-only LSL configuration (LSLAPICFG)
        amp = _AmplifierProcess(channels, sfreq, name)
    try:
        source = LSLSource.resolve(name=name, timeout_s=10)
        cfg = load_config(overrides=overrides or None)
        session = TEPSession(cfg, source.meta)
        # when each pulse's TEP update goes out: how far the stream had come past its epoch's
        # last sample (samples acquired by then; the stream arrives in real time, transport
        # latency below); as `run` has listeners (the metrics stream, the monitor), the
        # session publishes per pulse
        n_tmax = cfg["epochs"]["tmax_ms"] * sfreq / 1000.0
        after_epoch_ms: list[float] = []

        def on_update(update: dict) -> None:
            if update.get("type") == "pulse":
                past = engine.ring.n_written - 1 - (update["pulse"]["sample"] + n_tmax)
                after_epoch_ms.append(past * 1000.0 / sfreq)

        session.listeners.append(on_update)
        engine = Engine.for_session(source, session, worker=worker)
        # every block, not the last 2000, in memory taken before the run (a growing list
        # would itself be the memory growth a long run measures)
        engine._latencies_ms = _Latencies(int(seconds * 1000 * 1.5) + 10_000)
        backlog = [0.0]
        transport: list[float] = []
        rss_at = {}  # whole minutes since the start -> resident MB at its first status
        rss_in = {}  # whole minutes -> every status's resident MB (one every 0.5 s)
        heap_at = {}  # whole minutes -> the C heap (MB from the system, MB in use) then

        def on_status(st):
            backlog[0] = max(backlog[0], st.backlog_s)
            transport.append(st.transport_latency_ms)
            minute = int(st.elapsed_s // 60)
            if minute >= 1:
                rss = _rss_mb()
                if minute not in rss_at:
                    heap_at[minute] = c_heap_mb()
                rss_at.setdefault(minute, rss)
                rss_in.setdefault(minute, []).append(rss)

        t0 = time.monotonic()
        engine.run(duration_s=seconds, status_every_s=0.5, on_status=on_status)
        engine.drain(60.0)
        wall = time.monotonic() - t0
        st = engine.status()
        acq = engine._latencies_ms.values()
        source.close()
    finally:
        amp.stop()
    tr = np.array([x for x in transport if np.isfinite(x)])
    return {"acq": np.percentile(acq, [50, 95, 99, 100]), "n_blocks": acq.size,
            "transport": np.percentile(tr, [50, 99, 100]) if tr.size else [np.nan] * 3,
            "rss_first_min_mb": rss_at.get(1, np.nan), "rss_end_mb": _rss_mb(),
            "rss_5_min_mb": rss_at.get(5, np.nan), "rss_by_minute_mb": rss_at,
            "rss_median_by_minute_mb": {m: float(np.median(v)) for m, v in rss_in.items()},
            "rss_range_by_minute_mb": {m: (min(v), max(v)) for m, v in rss_in.items()},
            "c_heap_by_minute_mb": heap_at,
            "update": (st.update_latency_ms_p50, st.update_latency_ms_p99),
            "after_epoch_ms": np.array(after_epoch_ms), "backlog_s": backlog[0], "skipped": st.n_skipped_samples, "gaps": st.n_gaps,
            "samples": st.n_samples, "pulses": len(session.pulses), "wall_s": wall,
            "busy_s": engine.processing_busy_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--sfreq", type=float, default=5000.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--modes", default="worker,single",
                    help="worker (the processing thread, as run/demo/monitor), single (all on "
                    "the acquisition thread), comma-separated")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="configuration override (e.g. decay.fit_window_ms=10,300)")
    ap.add_argument("--amp-in-process", action="store_true",
                    help="run the simulated amplifier in this process (sharing the engine's "
                         "interpreter, as the figures before 2026-12-07 did) instead of its own")
    a = ap.parse_args()
    use_loopback_only(force=True)
    single_threaded_blas()  # as every tmseeg command runs (tmseeg.cli.parser.main)
    logging.getLogger("tmseeg").setLevel(logging.ERROR)
    print(f"{a.channels} ch, {a.sfreq:g} Hz, 1-ms chunks, {a.seconds:g} s, every default stage "
          f"and plug-in; overrides {a.set or 'none'}; the simulated amplifier "
          f"{'in this process' if a.amp_in_process else 'in a process of its own'}")
    for worker in [m == "worker" for m in a.modes.split(",")]:
        r = run(a.channels, a.sfreq, a.seconds, worker, _overrides(a.set), a.amp_in_process)
        label = "processing thread" if worker else "all on the acquisition thread"
        print(f"{label:30s} acquisition per block median {r['acq'][0]:.3f} / p95 "
              f"{r['acq'][1]:.3f} / p99 {r['acq'][2]:.3f} / max {r['acq'][3]:.1f} ms "
              f"({r['n_blocks']} blocks); "
              f"update latency p50 {r['update'][0]:.1f} / p99 {r['update'][1]:.1f} ms "
              f"(last 2000 blocks); largest backlog {r['backlog_s']:.2f} s; not processed "
              f"{r['skipped']} samples; gaps {r['gaps']}; {r['pulses']} pulses; transport "
              f"latency median {r['transport'][0]:.1f} / p99 {r['transport'][1]:.1f} / max "
              f"{r['transport'][2]:.1f} ms; RSS {r['rss_first_min_mb']:.0f} MB after 1 min, "
              f"{r['rss_end_mb']:.0f} MB at the end")
        stream_s = r["samples"] / a.sfreq
        print(f"{'':30s} processing busy {r['busy_s']:.1f} s for {stream_s:.1f} s of stream "
              f"({100 * r['busy_s'] / stream_s:.0f} %): real-time headroom "
              f"{stream_s / max(r['busy_s'], 1e-9):.1f}x")
        steady = r["after_epoch_ms"][5:]  # the first pulses wait for the start-up decisions
        if steady.size:
            print(f"{'':30s} TEP update after the epoch's end (stream time): median "
                  f"{np.median(steady):.0f} / p95 {np.percentile(steady, 95):.0f} / max "
                  f"{steady.max():.0f} ms over {steady.size} pulses (all but the first 5; "
                  f"those: max {r['after_epoch_ms'][:5].max():.0f} ms)")
        if a.seconds > 600:  # a long run (issue #16: flat memory over an hour)
            growth = 100.0 * (r["rss_end_mb"] / r["rss_5_min_mb"] - 1.0)
            minutes = sorted(r["rss_by_minute_mb"].items())
            last_m, last_mb = minutes[-1]
            in_run = [v for m, v in minutes if m >= 5]
            by_min = ", ".join(f"{m}: {v:.0f}" for m, v in minutes if m % 10 == 0 or m == 5)
            # the end is after the final drain, whose summaries over every epoch (spread's
            # bootstrap, ...) allocate once more: the minutes before it say whether it grows
            print(f"{'':30s} RSS after 5 min {r['rss_5_min_mb']:.0f} MB; during the run "
                  f"{min(in_run):.0f}-{max(in_run):.0f} MB, at minute {last_m} {last_mb:.0f} MB "
                  f"({100.0 * (last_mb / r['rss_5_min_mb'] - 1.0):+.1f} %); after the final "
                  f"drain {r['rss_end_mb']:.0f} MB ({growth:+.1f} %) (by minute: {by_min})")
            # one sample a minute lands anywhere in a pulse's allocations: the median of the
            # minute's 120 samples says where memory sits, the range how far it swings
            med = sorted(r["rss_median_by_minute_mb"].items())
            base = dict(med).get(5, np.nan)
            later = [v for m, v in med if m >= 5]
            swing = max(hi - lo for m, (lo, hi) in r["rss_range_by_minute_mb"].items()
                        if m >= 5)
            print(f"{'':30s} RSS median of each minute (120 samples): minute 5 {base:.0f} MB, "
                  f"from then on {min(later):.0f}-{max(later):.0f} MB "
                  f"({100.0 * (min(later) / base - 1.0):+.1f} .. "
                  f"{100.0 * (max(later) / base - 1.0):+.1f} %), last minute {med[-1][1]:.0f} MB "
                  f"({100.0 * (med[-1][1] / base - 1.0):+.1f} %); largest swing within a "
                  f"minute {swing:.0f} MB (by minute: "
                  + ", ".join(f"{m}: {v:.0f}" for m, v in med if m % 5 == 0) + ")")
            heap = {m: v for m, v in r["c_heap_by_minute_mb"].items() if v is not None}
            if heap:  # glibc: is a rise held memory (in use) or memory kept free (heap)?
                print(f"{'':30s} C heap (glibc, from the system / in use; one sample at each "
                      "minute's start): " + ", ".join(
                          f"{m}: {v[0]:.0f}/{v[1]:.0f}" for m, v in sorted(heap.items())
                          if m % 5 == 0) + " MB")


if __name__ == "__main__":
    main()
