"""TEP peaks against the simulator's truth over several seeds, with and without the decay
artifact: the accuracy figure of the whole default pipeline (issue #3, point 10).

One seed cannot tell a real gain from the scatter of a method: evaluate any change to the
artifact stages here, on 4+ seeds.

    python benchmarks/bench_tep_accuracy.py [--seeds 5,6,7,8] [--seconds 420] [--channels 32]
        [--no-decay] [--raw-truth] [--set decay.fit_window_ms=10,500 ...]

Prints, per seed, the relative amplitude error and the latency error of N15..P180 at the ROI
(around the detected coil site), then the median and the worst |error| per peak.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from tmseeg.config import load_config
from tmseeg.report.analyze import run_session
from tmseeg.sim.accuracy import peak_errors, simulated_recording
from tmseeg.sim.model import SimConfig


def _overrides(pairs: list[str]) -> dict:
    """``section.key=value`` (value as JSON, or a comma list of numbers) into a nested dict."""
    out: dict = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        section, name = key.split(".", 1)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = [float(v) for v in value.split(",")] if "," in value else value
        out.setdefault(section, {})[name] = parsed
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="5,6,7,8")
    ap.add_argument("--seconds", type=float, default=420.0)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--no-decay", action="store_true", help="simulate without decay artifact")
    ap.add_argument("--raw-truth", action="store_true",
                    help="compare with the unfiltered truth (not put through the epoch band-pass)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="pipeline configuration override (repeatable)")
    args = ap.parse_args()
    cfg = load_config(overrides=_overrides(args.set) or None)
    print(f"{args.channels} ch, 5 kHz, {args.seconds:g} s per seed, tep_gain 2.5, decay "
          f"{'off' if args.no_decay else 'on'}; overrides {args.set or 'none'}; truth "
          f"{'unfiltered' if args.raw_truth else 'band-passed like the epochs'}")
    table = []
    for seed in (int(s) for s in args.seeds.split(",")):
        rec, truth = simulated_recording(
            SimConfig(n_channels=args.channels, sfreq=5000.0, seed=seed, isi_range_s=(1.0, 1.2),
                      muscle_artifact=False, tep_gain=2.5, decay_artifact=not args.no_decay),
            args.seconds)
        t0 = time.perf_counter()
        session = run_session(rec, cfg, keep_epochs=False)
        errors = peak_errors(session.tep, truth, cfg, band_pass=not args.raw_truth)
        table.append(errors)
        cells = " | ".join(f"{k} {e['error_pct']:+4.0f}% {e['latency_ms'] - e['true_latency_ms']:+4.1f}"
                           for k, e in errors.items())
        print(f"seed {seed:3d} n={session.tep.n:4d} site {session.stages.coil.site:4s} | {cells} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    names = list(table[0])
    amp = np.array([[abs(t[k]["error_pct"]) for k in names] for t in table])
    lat = np.array([[abs(t[k]["latency_ms"] - t[k]["true_latency_ms"]) for k in names]
                    for t in table])
    print("|amplitude error| % median: " + "  ".join(f"{k} {v:.0f}" for k, v in
                                                      zip(names, np.median(amp, 0))))
    print("|amplitude error| % worst:  " + "  ".join(f"{k} {v:.0f}" for k, v in
                                                      zip(names, amp.max(0))))
    print("|latency error| ms worst:   " + "  ".join(f"{k} {v:.1f}" for k, v in
                                                      zip(names, lat.max(0))))


if __name__ == "__main__":
    main()
