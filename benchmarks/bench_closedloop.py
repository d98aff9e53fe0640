"""Closed-loop timing and accuracy on loopback LSL against the simulated amplifier.

1. Latency, sample arrival -> trigger sent: the simulator streams 64 ch at 5 kHz in 1-ms chunks;
   a protocol asks for a pulse on every block (C3 Laplacian + AR phase estimate included, or no
   estimator); every request passes the SafetyGuard and every decision, accepted or refused, is
   pushed on the tmseeg-triggers LSL stream. Latency = LSL time after the push minus the LSL
   time at which the block was pulled (``received_s``). Targets: p50 < 1 ms, p99 < 3 ms.
2. The fast path: a protocol's ``on_early_tep`` gets each pulse's early TEP; the time from
   60 ms after the pulse (its LSL time) to the callback, and from the arrival of the block that
   completed the cut. Target: < 150 ms.
3. Phase accuracy: apps/protocol_mu_phase.py (trough target, 20 ms delay compensated) closes the
   loop through the simulator; the true mu phase at every fired pulse (ground truth) gives the
   circular mean and SD of the error. Target SD <= 40 deg.

Usage: python benchmarks/bench_closedloop.py [latency_s=15] [phase_s=60] [seed=3]
"""
from __future__ import annotations

import math
import sys
import time
import uuid

from tmseeg.stream.lslconfig import use_loopback_only

use_loopback_only(force=True)

import numpy as np  # noqa: E402

from tmseeg.closedloop import Protocol, ProtocolRunner, load_protocol  # noqa: E402
from tmseeg.closedloop.runner import circular_stats_deg  # noqa: E402
from tmseeg.closedloop.triggers import LSLTriggerOutput  # noqa: E402
from tmseeg.engine import Engine  # noqa: E402
from tmseeg.sim.amplifier import SimulatedAmplifier  # noqa: E402
from tmseeg.sim.model import SimConfig  # noqa: E402
from tmseeg.stream.inlet import LSLSource  # noqa: E402

FS = 5000.0


class EveryBlockAR(Protocol):
    channels, estimator, delay_ms = "C3 Laplacian", "ar", 20.0

    def on_block(self, state):
        return state.trigger(10.0, label="TMS bench") if state.phase is not None else None


class EveryBlockPlain(Protocol):
    def on_block(self, state):
        return state.trigger(10.0, label="TMS bench", after_ms=20.0)


class EarlyEverySecond(Protocol):
    """A pulse every ~1.2 s (the simulator fires it), and each pulse's early TEP from the fast
    path: how long after 60 ms post-pulse it reaches the protocol."""

    channels = "C3"
    guard = {"min_interval_s": 1.2}

    def setup(self, info):
        self.after_60_ms: list[float] = []  # callback start - (pulse time + 60 ms), LSL clock
        self.after_ready_ms: list[float] = []  # callback start - arrival of the last block

    def on_block(self, state):
        return state.trigger(10.0, label="TMS bench", after_ms=20.0)

    def on_early_tep(self, early):
        self.after_60_ms.append((early.now_s - early.time_s - 0.060) * 1e3)
        self.after_ready_ms.append((early.now_s - early.tep.ready_s) * 1e3)


def _loop(protocol, seconds, seed, chunk_ms, listen, n_channels=64, isolate=None):
    uid = uuid.uuid4().hex[:8]
    trig = f"bench-trig-{uid}"
    amp = SimulatedAmplifier(SimConfig(n_channels=n_channels, sfreq=FS, seed=seed,
                                       schedule="external", include_emg=False),
                             name=f"bench-cl-{uid}", chunk_ms=chunk_ms,
                             trigger_stream_name=trig, listen_triggers=listen)
    amp.start()
    try:
        src = LSLSource.resolve(name=f"bench-cl-{uid}", marker_name=f"bench-cl-{uid}-markers",
                                timeout_s=20, marker_timeout_s=20)
        runner = ProtocolRunner(protocol, src.meta, outputs=[LSLTriggerOutput(trig)],
                                max_records=10 ** 6, isolate=isolate)
        engine = Engine(src, sinks=[runner])
        engine.run(duration_s=seconds)
        time.sleep(0.2)
        runner.close()
        src.close()
    finally:
        amp.stop()
    return runner, amp


def pct(x) -> str:
    a = np.asarray(x)
    return (f"median {np.median(a):6.3f}  p95 {np.percentile(a, 95):6.3f}  "
            f"p99 {np.percentile(a, 99):6.3f} ms  (n={a.size})")


def main(latency_s: float = 15.0, phase_s: float = 60.0, seed: int = 3) -> int:
    print(f"closed-loop benchmark: simulated 64 ch @ {FS:g} Hz on loopback LSL, 1-ms chunks")
    for proto, where in [(p, w) for p in (EveryBlockPlain, EveryBlockAR)
                         for w in ("in the engine's process",
                                   "in its own process (run/demo --protocol)")]:
        isolate = f"{__file__}:{proto.__name__}" if "own" in where else None
        runner, _ = _loop(proto, latency_s, seed, chunk_ms=1.0, listen=False, isolate=isolate)
        recs = list(runner.records)
        lat = [r["latency_ms"] for r in recs]
        dec = [(r["decision_time_s"] - r["received_s"]) * 1e3 for r in recs]
        snd = [(r["sent_s"] - r["decision_time_s"]) * 1e3 for r in recs]
        print(f"\n{proto.__name__}, {where}: {len(recs)} decisions "
              f"({runner.counts.get('ok', 0)} accepted,"
              f" {len(recs) - runner.counts.get('ok', 0)} refused by the guard), "
              f"{runner.n_calls['on_block']} calls")
        print(f"  arrival -> trigger sent  {pct(lat)}")
        print(f"  arrival -> decision      {pct(dec)}")
        print(f"  decision -> sent (LSL)   {pct(snd)}")

    runner, amp = _loop(EarlyEverySecond, max(latency_s, 30.0), seed, chunk_ms=1.0,
                        listen=True)
    proto = runner.protocol
    print(f"\nfast path (on_early_tep, in the engine's process): {len(amp.truth.pulses)} pulses "
          f"fired, {len(proto.after_60_ms)} early TEPs delivered")
    if proto.after_60_ms:
        print(f"  pulse + 60 ms -> protocol called   {pct(proto.after_60_ms)}  (target < 150)")
        print(f"  last block's arrival -> called      {pct(proto.after_ready_ms)}")

    MuPhase = load_protocol("apps/protocol_mu_phase.py")

    class Bench(MuPhase):
        warmup_s, isi_s = 5.0, (1.7, 2.0)

    runner, amp = _loop(Bench, phase_s, seed, chunk_ms=5.0, listen=True, n_channels=32)
    ph = [p.mu_phase_rad for p in amp.truth.pulses]
    mean, sd = circular_stats_deg(ph, math.pi)
    acc = runner.accepted[:len(amp.truth.pulses)]
    lag = [(amp.t0_s + p.sample / FS - r["target_time_s"]) * 1e3
           for p, r in zip(amp.truth.pulses, acc)]
    print(f"\nmu-phase protocol ({phase_s:g} s, 32 ch, trough target, 20 ms delay): "
          f"{len(ph)} pulses fired by the simulator")
    print(f"  true phase - target: circular mean {mean:+.1f} deg, circular SD {sd:.1f} deg "
          f"(target SD <= 40)")
    if lag:
        print(f"  fired - requested target: max |{np.abs(lag).max():.3f}| ms")
    print(f"  {runner.status_line()}")
    return 0


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    raise SystemExit(main(*(args[:2]), *([int(args[2])] if len(args) > 2 else [])))
