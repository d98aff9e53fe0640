"""``tmseeg simulate``: stream a simulated TMS-EEG amplifier + stimulator over LSL.

The main ``tmseeg`` command calls :func:`add_arguments` to build the sub-command's options and
:func:`run` to execute it.
"""
from __future__ import annotations

import argparse
import signal as _signal
import sys
import time

from tmseeg.sim.config import SCHEDULES, SimConfig


def _isi(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.replace(",", " ").split()]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError(
            f"--isi {text!r}: give one interval or 'MIN,MAX' in seconds, e.g. --isi 2,3")
    return parts[0], parts[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` options to a (sub)parser."""
    parser.add_argument("--channels", type=int, default=64, choices=(32, 64, 128),
                        help="EEG channels (10-10 cap; default 64)")
    parser.add_argument("--sfreq", type=float, default=5000.0,
                        help="sampling rate in Hz (500-20000; default 5000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="single",
                        help="pulse schedule (default single; 'external' = only triggers)")
    parser.add_argument("--isi", type=_isi, default=(2.0, 3.0), metavar="MIN,MAX",
                        help="inter-stimulus interval range in s (default 2,3)")
    parser.add_argument("--intensity", type=float, default=70.0,
                        help="stimulator output in %% of maximum (default 70)")
    parser.add_argument("--tep-gain", type=float, default=1.0, help="TEP scale (default 1)")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds to stream (default: until Ctrl-C)")
    parser.add_argument("--no-emg", action="store_true", help="leave out the EMG channel")
    parser.add_argument("--no-artifacts", action="store_true",
                        help="no pulse, decay or muscle artifacts (clean TEPs)")
    parser.add_argument("--name", default="tmseeg-sim",
                        help="EEG stream name (markers: NAME-markers; default tmseeg-sim)")
    parser.add_argument("--triggers", default="tmseeg-triggers",
                        help="trigger stream name to obey (default tmseeg-triggers)")
    parser.add_argument("--truth", default=None, metavar="FILE",
                        help="write the ground truth to FILE (.json + .npz) on exit")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The :class:`SimConfig` the options describe."""
    off = bool(getattr(args, "no_artifacts", False))
    return SimConfig(
        n_channels=args.channels, sfreq=args.sfreq, seed=args.seed, schedule=args.schedule,
        isi_range_s=tuple(args.isi), intensity_pct=args.intensity, tep_gain=args.tep_gain,
        include_emg=not args.no_emg, pulse_artifact=not off, decay_artifact=not off,
        muscle_artifact=not off)


def run(args: argparse.Namespace) -> int:
    """Stream until ``--duration`` passes or Ctrl-C; print what was sent. Returns 0 on success."""
    from tmseeg.sim.amplifier import SimulatedAmplifier

    if args.duration is not None and not args.duration > 0:
        print(f"tmseeg simulate: --duration must be > 0 s, got {args.duration}", file=sys.stderr)
        return 2
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        print(f"tmseeg simulate: {err}", file=sys.stderr)
        return 2
    amp = SimulatedAmplifier(cfg, name=args.name, trigger_stream_name=args.triggers,
                             truth_path=args.truth)
    # SIGTERM stops as cleanly as Ctrl-C
    old = _signal.signal(_signal.SIGTERM, _raise_interrupt) if _is_main_thread() else None
    amp.start()
    n_ch = amp.simulator.meta.n_channels
    print(f"streaming {args.name!r} (EEG, {n_ch} ch, {cfg.sfreq:g} Hz, schedule {cfg.schedule}) "
          f"and {amp.marker_name!r} (Markers); listening for triggers on {args.triggers!r}. "
          + ("Ctrl-C to stop." if args.duration is None else f"{args.duration:g} s."),
          flush=True)
    interrupted = False
    try:
        end = None if args.duration is None else time.monotonic() + args.duration
        while end is None or time.monotonic() < end:
            time.sleep(0.05 if end is None else max(0.0, min(0.05, end - time.monotonic())))
            if not amp.running:
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            amp.stop()
        finally:
            if old is not None:
                _signal.signal(_signal.SIGTERM, old)
    sent_s = amp.n_sent / cfg.sfreq
    pulses = len(amp.truth.pulses)
    print(("\n" if interrupted else "")
          + f"sent {amp.n_sent} samples ({sent_s:.1f} s) x {n_ch} ch, {pulses} pulses, "
          f"{amp.n_triggers} triggers obeyed"
          + (f"; ground truth in {args.truth}" if args.truth else ""), flush=True)
    return 0


def _raise_interrupt(signum, frame):  # pragma: no cover - signal handler
    raise KeyboardInterrupt


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m tmseeg.sim.cli [options]``."""
    parser = argparse.ArgumentParser(prog="tmseeg simulate", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
