"""The ``tmseeg`` command: its parser and entry point.

Subcommands (each documented in the README and by ``tmseeg COMMAND --help``):

``demo``      simulated amplifier + stimulator on loopback LSL, the engine, a live status line
``simulate``  the simulated TMS-EEG amplifier alone, as LSL streams
``replay``    a recording (FIF, BrainVision, EDF/BDF, EEGLAB, XDF) as live LSL streams
``record``    record LSL EEG + markers to BrainVision, crash-safe
``run``       the engine on live LSL streams (headless), metrics on ``tmseeg-metrics``
``monitor``   the live monitor (engine in-process, or ``--attach`` to a running ``run``)
``analyze``   the same pipeline over a recording: summary.json, pulses.csv, report.html
``config``    print (or check) the pipeline configuration
``bench``     ingest benchmark (LSL pull + ring buffer vs np.roll)
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from tmseeg import __version__
from tmseeg.cli.live import cmd_demo, cmd_monitor, cmd_record, cmd_run
from tmseeg.cli.offline import cmd_analyze, cmd_bench, cmd_config
from tmseeg.pipeline.config import PULSE_SOURCES
from tmseeg.utils import single_threaded_blas


def _install_sigterm_as_interrupt() -> None:
    """SIGTERM (e.g. from a process manager) ends as cleanly as Ctrl-C."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not in the main thread
        pass


def _source_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input streams")
    g.add_argument("--stream", default=None, help="EEG stream name (default: any of type EEG)")
    g.add_argument("--stream-type", default=None,
                   help="EEG stream type (default: EEG when no --stream or --source-id is given; "
                   "a named stream is used whatever its type)")
    g.add_argument("--source-id", default=None, help="EEG stream source id")
    g.add_argument("--markers", default=None,
                   help="marker stream name (default: '<eeg name>-markers', else any Markers)")
    g.add_argument("--no-markers", action="store_true", help="do not read a marker stream")
    g.add_argument("--pulse-info", default=None, metavar="NAME",
                   help="LSL stream (any type) of per-pulse metadata, one JSON object per pulse, "
                   "e.g. {\"intensity_pct\": 55, \"coil_x_mm\": -38.2}: each joins the pulse "
                   "nearest in time (within [pulses] table_tolerance_ms) and is recorded")
    g.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for the EEG stream (default: 10)")


def _input_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pulse-pattern", default=None, metavar="REGEX",
                   help="marker/annotation labels that are TMS pulses (case-insensitive "
                   "regex, e.g. '^R128$'; numeric markers and stim-channel events are labelled "
                   "by their code, e.g. '^1$'); named groups become per-pulse columns, e.g. "
                   "'TMS/(?P<intensity_pct>\\d+)'; overrides [pulses] pattern")
    p.add_argument("--pulse-source", default=None,
                   choices=PULSE_SOURCES,
                   help="where the pulses come from; overrides [pulses] source")
    p.add_argument("--pulse-table", default=None, metavar="FILE.csv",
                   help="per-pulse metadata (intensity_pct, coil position, condition ...): "
                   "joined by its time_s column, else in order; its columns go into "
                   "pulses.csv and the plug-ins; overrides [pulses] table")
    p.add_argument("--montage", default=None, metavar="NAME|FILE",
                   help="electrode positions: an MNE built-in montage (GSN-HydroCel-129, "
                   "easycap-M1 ...) or a file (.elc .sfp .bvef .loc .csd .txt ...); overrides "
                   "[channels] montage")
    p.add_argument("--channel-types", default=None, metavar="NAME=TYPE,...",
                   help="channel types the file or stream does not give, e.g. "
                   "'Aux1=emg,Aux2=misc' (eeg, emg, eog, ecg, misc, stim); adds to "
                   "[channels] types")


def _protocol_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("closed loop")
    g.add_argument("--protocol", metavar="FILE.py", default=None,
                   help="closed-loop protocol (a tmseeg.closedloop.Protocol subclass; "
                   "FILE.py:Class picks one), e.g. apps/protocol_mu_phase.py")
    g.add_argument("--trigger-output", default="lsl", metavar="lsl|serial:/dev/ttyX|sim",
                   help="where accepted triggers go (default lsl: the tmseeg-triggers stream; "
                   "serial:PORT[@BAUD[:BYTE]] a TTL byte; sim: the demo's simulator in-process)")
    g.add_argument("--trigger-stream", default="tmseeg-triggers", metavar="NAME",
                   help="name of the LSL trigger stream (default tmseeg-triggers)")
    g.add_argument("--trigger-log", default=None, metavar="FILE",
                   help="append every trigger decision as a JSON line")
    g.add_argument("--protocol-in-process", action="store_true",
                   help="run the protocol's callbacks in tmseeg's own process (about 0.6 ms "
                   "less latency; a callback that holds the interpreter then stops acquisition "
                   "too). Default: a process of its own, killed at a callback's deadline")


def _monitor_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("monitor")
    g.add_argument("--headless", action="store_true",
                   help="no window (offscreen); with --snapshot-every, PNGs are still written")
    g.add_argument("--snapshot-every", type=float, default=None, metavar="S",
                   help="write a PNG of the monitor every S seconds (works without a display)")
    g.add_argument("--snapshot-dir", default=".", metavar="DIR", help="where PNGs go")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmseeg",
        description="Real-time TMS-EEG acquisition and analysis over Lab Streaming Layer.")
    parser.add_argument("--version", action="version", version=f"tmseeg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="simulated TMS-EEG amplifier -> LSL -> engine, live status")
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds to run (default 20; 0 = until Ctrl-C)")
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--sfreq", type=float, default=5000.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", default="single",
                   help="pulse schedule: single, paired, train-1hz, train-10hz, itbs, ctbs")
    p.add_argument("--record", metavar="DIR", default=None, help="also record to BrainVision")
    p.add_argument("--config", default=None, help="pipeline configuration (TOML)")
    _monitor_arguments(p)
    _protocol_arguments(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("monitor", help="the live monitor: engine in-process on an LSL stream, "
                       "or --attach to a running `tmseeg run`")
    _source_arguments(p)
    _monitor_arguments(p)
    p.add_argument("--duration", type=float, default=None, help="seconds (default: until closed)")
    p.add_argument("--config", default=None, help="pipeline configuration (TOML)")
    p.add_argument("--roi", default=None, help="ROI channels, comma-separated")
    p.add_argument("--attach", action="store_true",
                   help="do not run the engine: follow `tmseeg run` via its tmseeg-metrics "
                   "stream (+ the EEG stream for the raw display)")
    p.add_argument("--metrics-source-id", default=None,
                   help="with --attach: source id of the tmseeg-metrics stream (default: any)")
    p.add_argument("--publish", action="store_true",
                   help="also publish tmseeg-metrics, as `tmseeg run` does")
    p.add_argument("--loopback", action="store_true", help="look for streams on this machine only")
    p.set_defaults(func=cmd_monitor)

    from tmseeg.sim import cli as sim_cli
    p = sub.add_parser("simulate", help="simulated TMS-EEG amplifier + stimulator on LSL")
    sim_cli.add_arguments(p)
    p.set_defaults(func=sim_cli.run)

    from tmseeg.io import replay
    p = sub.add_parser("replay", help="replay a recording as live LSL EEG + Markers streams")
    replay.add_arguments(p)
    p.set_defaults(func=replay.run)

    p = sub.add_parser("record", help="record LSL EEG + markers to BrainVision (crash-safe)")
    _source_arguments(p)
    p.add_argument("--out", default=None, help="output .vhdr file or directory (or --bids-root)")
    p.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing recording")
    p.add_argument("--loopback", action="store_true", help="look for streams on this machine only")
    from tmseeg.study.cli import add_bids_record_arguments
    add_bids_record_arguments(p)
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("run", help="the engine on live LSL streams (headless)")
    _source_arguments(p)
    p.add_argument("--duration", type=float, default=None, help="seconds (default: Ctrl-C)")
    p.add_argument("--record", metavar="DIR", default=None, help="record raw data to BrainVision")
    p.add_argument("--config", default=None, help="pipeline configuration (TOML)")
    p.add_argument("--roi", default=None, help="ROI channels, comma-separated (default: coil site"
                   " found from the pulse artifact + neighbours)")
    p.add_argument("--loopback", action="store_true", help="look for streams on this machine only")
    _input_arguments(p)
    _protocol_arguments(p)
    from tmseeg.study.cli import add_bids_record_arguments
    add_bids_record_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("analyze", help="run the pipeline over a recording; write summary.json, "
                       "pulses.csv, report.html, -epo.fif, -ave.fif")
    p.add_argument("file", help="recording: .fif, .vhdr, .edf, .bdf, .set or .xdf; or a BIDS "
                   "dataset root (every matching recording, see --subject ... --jobs)")
    p.add_argument("--out", default=None, help="output directory (required for a file; for a "
                   "BIDS root default ROOT/derivatives/tmseeg)")
    p.add_argument("--config", default=None, help="pipeline configuration (TOML)")
    p.add_argument("--roi", default=None, help="ROI channels, comma-separated")
    p.add_argument("--no-report", action="store_true", help="skip report.html (faster)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _input_arguments(p)
    from tmseeg.study.cli import add_bids_filter_arguments
    add_bids_filter_arguments(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("config", help="print the default pipeline configuration (TOML)")
    p.add_argument("--check", metavar="FILE", default=None,
                   help="validate a configuration file: its keys and values, then a rehearsal "
                        "on a short simulated recording (what a session would refuse)")
    p.add_argument("--channels", type=int, choices=(32, 64, 128), default=64,
                   help="EEG channels of the rehearsal's simulated cap")
    p.add_argument("--sfreq", type=float, default=5000.0,
                   help="sampling rate of the rehearsal (give your amplifier's)")
    p.add_argument("--no-rehearsal", action="store_true",
                   help="only the keys and values, no rehearsal (instant)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("bench", help="ingest benchmark: LSL pull + ring buffer vs np.roll")
    p.add_argument("--duration", type=float, default=4.0, help="seconds per LSL case")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "duration", None) == 0:
        args.duration = None
    _install_sigterm_as_interrupt()
    single_threaded_blas()  # for the whole command: live, the acquisition thread's core too
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError, RuntimeError, LookupError) as err:
        # the documented errors: say what is wrong and what to do, no traceback
        print(f"tmseeg {args.command}: error: {err}", file=sys.stderr)
        if args.verbose:
            raise
        return 1
