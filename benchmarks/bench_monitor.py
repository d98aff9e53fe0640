"""Frames per second of the live monitor at 64 ch / 5 kHz with the pipeline running.

A simulated amplifier streams on loopback LSL, the engine runs in its thread (stages, epochs,
running TEP, plug-in metrics), and the monitor (offscreen Qt) redraws as fast as it can: each
frame decimates the new raw samples, redraws 64 raw traces, and redraws the TEP panels when a
new epoch arrived. Prints fps and per-frame time median / p95 / p99, and the engine's
processing latency meanwhile.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_monitor.py [--seconds 20] [--channels 64]
"""
import argparse
import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402

from tmseeg.stream.lslconfig import use_loopback_only  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sfreq", type=float, default=5000.0)
    ap.add_argument("--snapshot", default=None, help="also save a PNG at the end")
    args = ap.parse_args()
    use_loopback_only(force=True)
    import pyqtgraph as pg

    from tmseeg.gui.feed import LiveFeed
    from tmseeg.gui.monitor import MonitorWindow
    from tmseeg.sim.amplifier import SimulatedAmplifier
    from tmseeg.sim.model import SimConfig
    from tmseeg.stream.inlet import LSLSource

    name = f"bench-monitor-{os.getpid()}"
    amp = SimulatedAmplifier(SimConfig(n_channels=args.channels, sfreq=args.sfreq, seed=0,
                                       include_emg=True, isi_range_s=(0.8, 1.2)),
                             name=name, listen_triggers=False)
    amp.start()
    src = LSLSource.resolve(name=name, timeout_s=10, marker_name=f"{name}-markers",
                            marker_timeout_s=10)
    feed = LiveFeed(src)
    app = pg.mkQApp()
    win = MonitorWindow(feed, fps=1000.0)  # no cap: measure what a frame costs
    win.resize(1600, 1000)
    win.show()
    feed.start()
    t_warm = time.monotonic() + 2.0
    while time.monotonic() < t_warm:
        app.processEvents()
        win.frame()
    win.frame_ms.clear()
    n0, t0 = win.n_frames, time.monotonic()
    frames = []
    while time.monotonic() - t0 < args.seconds:
        app.processEvents()  # paint happens here
        a = time.perf_counter()
        win.frame()
        app.processEvents()
        frames.append((time.perf_counter() - a) * 1e3)
    elapsed = time.monotonic() - t0
    st = feed.status()
    if args.snapshot:
        win.save_snapshot(args.snapshot)
    n_avg = win.snap.n_averaged if win.snap is not None else 0
    win.close()
    amp.stop()
    f = np.array(frames)
    print(f"monitor {args.channels} ch @ {args.sfreq:g} Hz, {args.seconds:g} s, offscreen, "
          f"pipeline running ({st.n_pulses} pulses, {n_avg} averaged)")
    print(f"  {len(f) / elapsed:.1f} frames/s; frame (update + paint) median "
          f"{np.median(f):.1f} ms, p95 {np.percentile(f, 95):.1f} ms, "
          f"p99 {np.percentile(f, 99):.1f} ms, max {f.max():.1f} ms")
    print(f"  engine meanwhile: {st.rate_hz:.0f} Hz, processing latency p50 "
          f"{st.processing_latency_ms_p50:.2f} ms, p99 {st.processing_latency_ms_p99:.1f} ms, "
          f"gaps {st.n_gaps}")


if __name__ == "__main__":
    main()
