"""The ``tmseeg`` command.

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
import time
from pathlib import Path

from tmseeg import __version__

log = logging.getLogger("tmseeg")


class StatusPrinter:
    """Prints engine status: one rewritten line on a terminal, one line per update otherwise."""

    def __init__(self, stream=None) -> None:
        stream = sys.stdout if stream is None else stream  # the current stdout, not import-time
        self.stream = stream
        self.tty = stream.isatty()
        self._drawn = False

    def __call__(self, status, tep: dict | None = None, extra: str | None = None) -> None:
        text = status.line()
        if tep is not None:
            text += "\n  " + tep_line(tep)
        if extra:  # e.g. the closed-loop line
            text += "\n  " + extra
        if self.tty:  # rewrite the lines in place
            up = 3 if extra else 2
            self.stream.write((f"\x1b[{self._drawn}F" if self._drawn else "") + "\x1b[J" + text
                              + "\n" + ("" if tep is not None else "\n"))
            self._drawn = up
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        self.stream.flush()


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
                   choices=["markers", "trigger", "data", "markers+data"],
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


def _open_source(args):
    from tmseeg.config import input_overrides, load_config
    from tmseeg.stream.inlet import LSLSource
    from tmseeg.stream.montage import use_montage

    # the stream's channel names are tidied against the montage in use: set it first
    cfg = load_config(getattr(args, "config", None), input_overrides(args))
    use_montage(cfg["channels"]["montage"])
    return LSLSource.resolve(name=args.stream, stype=args.stream_type, source_id=args.source_id,
                             marker_name=args.markers, with_markers=not args.no_markers,
                             timeout_s=args.timeout, info_name=args.pulse_info)


def _run_engine(source, duration_s: float | None, record_dir: str | None,
                status_every_s: float = 1.0, config: str | None = None,
                roi: list[str] | None = None, publish: bool = True, runner=None,
                overrides: dict | None = None) -> int:
    """The live engine: stages + epochs + TEP on ``source``, metrics on LSL, optional recording.

    ``runner`` (a :class:`~tmseeg.closedloop.runner.ProtocolRunner`) closes the loop: it gets
    every block and every pulse row, and its line joins the status.
    """
    from tmseeg.engine import Engine
    from tmseeg.config import load_config
    from tmseeg.session import TEPSession

    session = TEPSession(load_config(config, overrides), source.meta, roi=roi)
    sinks = []
    recorder = None
    if record_dir is not None:
        from tmseeg.stream.recorder import BrainVisionRecorder
        recorder = BrainVisionRecorder(Path(record_dir), source.meta)
        sinks.append(RawRecorderSink(recorder))
        print(f"recording to {recorder.path} ({_free_space(recorder)})")
    outlet = None
    if publish:
        from tmseeg.stream.metrics_outlet import MetricsOutlet
        outlet = MetricsOutlet(source_id=f"tmseeg-metrics-{source.meta.source_id or source.meta.name}")
        session.listeners.append(outlet)
    if runner is not None:  # closed loop: raw blocks in, pulse rows from the session
        runner.attach(session)
        sinks.append(runner)
    # stages, epochs and plug-ins on a processing thread: acquisition, recording and the
    # protocol's trigger decisions never wait for a decay fit or a summary
    engine = Engine.for_session(source, session, sinks=sinks, worker=True)
    printer = StatusPrinter()

    def on_status(status) -> None:
        extra = [runner.status_line()] if runner is not None else []
        if recorder is not None and recorder.failed:  # said once; shown while it lasts
            extra.append(f"RECORDING STOPPED ({recorder.error.strerror}): "
                         f"{recorder.n_samples_dropped} samples not recorded so far")
        printer(status, session.tep_summary(), " | ".join(extra) or None)
        if outlet is not None:
            outlet.send_status(status)

    try:
        engine.run(duration_s=duration_s, status_every_s=status_every_s, on_status=on_status)
    except KeyboardInterrupt:
        pass
    finally:
        printer.done()
        # what is queued is processed, held-back samples released, epochs cut short marked
        # incomplete
        if not engine.finish(drain_timeout_s=30.0):
            log.error("processing did not finish within 30 s of the end; the last blocks "
                      "are not in the results")
        if runner is not None:
            runner.close()
        if recorder is not None:
            _close_recorder(recorder)
        if outlet is not None:
            outlet.close()
        source.close()
    print("final: " + engine.status().line())
    print("       " + tep_line(session.tep_summary()))
    if runner is not None:
        print("       " + runner.status_line())
    if recorder is not None and recorder.failed:
        print("       " + recorder.outcome(), file=sys.stderr)
        return 1  # the session ran, but its recording is incomplete
    return 0


def _free_space(recorder) -> str:
    """The free space note of a recording (a warning when it holds under 30 minutes)."""
    from tmseeg.stream.recorder import free_space_note
    note, short = free_space_note(recorder.path.parent, recorder.meta)
    if short:
        log.warning("%s has only %s: the recording will stop when the disk is full. Free "
                    "space, or record to another folder.", recorder.path.parent, note)
    return note


def _close_logged(recorder) -> None:
    """Close a recording; a write failure while closing is said as an error, not raised
    (what was recorded stays)."""
    from tmseeg.stream.recorder import RecordingError
    try:
        recorder.close()
    except RecordingError as err:
        log.error("%s", err)


def _close_recorder(recorder) -> None:
    """Close a recording and say what it holds (and lacks, after a write failure)."""
    _close_logged(recorder)
    if recorder.failed:
        print(f"recording closed after a failure: {recorder.path}", file=sys.stderr)
    else:
        print(f"recording closed: {recorder.outcome()}")


def _check_record_folder(out: str, option: str) -> None:
    """Fail before any work when the folder a recording named by ``--out``/``--record`` goes
    to (a .vhdr's parent) cannot take it."""
    from tmseeg.utils import writable_dir
    path = Path(out)
    writable_dir(path.parent if path.suffix.lower() == ".vhdr" else path, option)


def tep_line(tep: dict) -> str:
    """The running TEP in one line: epochs, SNR, trials needed, early and N100 peaks at the ROI."""
    if not tep.get("n_averaged"):
        return "TEP: waiting for the first complete epoch"
    snr, need = tep.get("snr"), tep.get("trials_needed")
    parts = [f"TEP: {tep['n_averaged']} epochs ({tep.get('n_rejected', 0)} rejected)",
             f"ROI {','.join(tep.get('roi', []))}",
             f"SNR {snr:.2f}" if snr is not None else "SNR n/a"]
    if need is not None:
        parts.append(f"~{need:.0f} epochs for SNR {tep['target_snr']:g}")
    for name in ("P30", "N45", "N100"):
        p = tep.get("peaks", {}).get(name, {})
        if p.get("found"):
            parts.append(f"{name} {p['amplitude_uv']:+.1f} uV @ {p['latency_ms']:.0f} ms")
    return " | ".join(parts)


class RawRecorderSink:
    """Engine sink that records every raw block (as acquired) to a recorder.

    A write failure (disk full) is said once, as an error; the recorder has stopped at a whole
    sample and counts what it could not record, and the engine goes on processing.
    """

    def __init__(self, recorder) -> None:
        self.recorder = recorder

    def on_raw(self, raw) -> None:
        """On the acquisition thread, as each block arrives (never behind processing)."""
        from tmseeg.stream.recorder import RecordingError
        try:
            self.recorder.write(raw)
        except RecordingError as err:
            log.error("%s The analysis goes on without recording.", err)

    def on_block(self, raw, processed) -> None:
        """Nothing: the raw block was written by :meth:`on_raw`."""


# -- commands -------------------------------------------------------------------------------

def cmd_demo(args) -> int:
    from tmseeg.stream.lslconfig import use_loopback_only
    use_loopback_only(force=True)  # the demo's streams stay on this machine
    from tmseeg.sim.amplifier import SimulatedAmplifier
    from tmseeg.sim.model import SimConfig
    from tmseeg.stream.inlet import LSLSource

    from tmseeg.config import load_config
    load_config(args.config)  # a bad configuration fails before anything starts
    if args.record is not None:  # so does a folder the recording cannot go to
        _check_record_folder(args.record, "--record")
    protocol = getattr(args, "protocol", None)
    if protocol is not None:  # closed loop: only the protocol's pulses fire
        from tmseeg.closedloop.protocol import load_protocol
        load_protocol(protocol)  # a broken protocol file fails before anything starts
        args.schedule = "external"
    config = SimConfig(n_channels=args.channels, sfreq=args.sfreq, seed=args.seed,
                       schedule=args.schedule)
    name = f"tmseeg-demo-{int(time.time() * 1000) % 100000}"
    print(f"tmseeg {__version__} demo: simulated {config.n_channels}-channel TMS-EEG amplifier at "
          f"{config.sfreq:g} Hz ({config.schedule} pulses) on loopback LSL as {name!r}; "
          f"Ctrl-C to stop")
    amp = SimulatedAmplifier(config, name=name,
                             trigger_stream_name=getattr(args, "trigger_stream", "tmseeg-triggers"))
    amp.start()
    runner = None
    try:
        source = LSLSource.resolve(name=name, timeout_s=10, marker_name=f"{name}-markers")
        if protocol is not None:
            runner = _make_runner(args, source, amplifier=amp)
        elif _monitor_wanted(args):  # a display, or snapshots requested: the live monitor
            return _monitor_on(source, args, publish=True)
        return _run_engine(source, args.duration, args.record, status_every_s=1.0,
                           config=args.config, runner=runner)
    except KeyboardInterrupt:
        return 0
    finally:
        amp.stop()
        print(f"simulator stopped after {amp.simulator.n_generated} samples, "
              f"{len(amp.truth.pulses)} pulses")
        if runner is not None:
            from tmseeg.closedloop.runner import truth_line
            print(truth_line(runner, amp))


def _make_runner(args, source, amplifier=None):
    """The closed-loop runner of `run/demo --protocol FILE.py`."""
    from tmseeg.closedloop.runner import build_runner
    out = args.trigger_output
    if out == "lsl" and getattr(args, "trigger_stream", "tmseeg-triggers") != "tmseeg-triggers":
        out = f"lsl:{args.trigger_stream}"
    runner = build_runner(args.protocol, source.meta, out, amplifier=amplifier,
                          log_path=getattr(args, "trigger_log", None),
                          isolate=not getattr(args, "protocol_in_process", False))
    print(f"closed loop: protocol {runner.name} ({args.protocol}), triggers -> "
          f"{', '.join(o.name for o in runner.outputs)}; every request passes the safety guard")
    return runner


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


def _monitor_wanted(args) -> bool:
    """`tmseeg demo`: the monitor opens on a display unless --headless, or for snapshots."""
    from tmseeg.gui.app import gui_available, has_display
    want = bool(getattr(args, "snapshot_every", None)) or (
        has_display() and not getattr(args, "headless", False))
    if want:
        ok, why = gui_available()
        if not ok:
            print(f"monitor unavailable, running headless: {why}", file=sys.stderr)
            return False
    return want


def _monitor_on(source, args, publish: bool = False) -> int:
    """The live monitor with the engine in-process (a thread) on ``source``."""
    from tmseeg.gui.app import run_monitor
    from tmseeg.gui.feed import LiveFeed
    roi = args.roi.split(",") if getattr(args, "roi", None) else None
    feed = LiveFeed(source, config=getattr(args, "config", None), roi=roi, publish=publish)
    return run_monitor(feed, duration_s=args.duration,
                       snapshot_every_s=getattr(args, "snapshot_every", None),
                       snapshot_dir=getattr(args, "snapshot_dir", "."),
                       headless=getattr(args, "headless", False))


def cmd_monitor(args) -> int:
    from tmseeg.gui.app import gui_available
    from tmseeg.stream.lslconfig import use_loopback_only
    ok, why = gui_available()
    if not ok:
        raise RuntimeError(why)
    if args.loopback:
        use_loopback_only(force=True)
    if not args.attach:
        return _monitor_on(_open_source(args), args, publish=args.publish)
    from tmseeg.gui.app import run_monitor
    from tmseeg.gui.feed import AttachedFeed
    feed = AttachedFeed(_open_source(args), metrics_source_id=args.metrics_source_id,
                        timeout_s=args.timeout)
    return run_monitor(feed, duration_s=args.duration, snapshot_every_s=args.snapshot_every,
                       snapshot_dir=args.snapshot_dir, headless=args.headless)


def _monitor_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("monitor")
    g.add_argument("--headless", action="store_true",
                   help="no window (offscreen); with --snapshot-every, PNGs are still written")
    g.add_argument("--snapshot-every", type=float, default=None, metavar="S",
                   help="write a PNG of the monitor every S seconds (works without a display)")
    g.add_argument("--snapshot-dir", default=".", metavar="DIR", help="where PNGs go")


def cmd_run(args) -> int:
    from tmseeg.config import input_overrides
    from tmseeg.stream.lslconfig import use_loopback_only
    if args.loopback:
        use_loopback_only(force=True)
    roi = args.roi.split(",") if args.roi else None
    from tmseeg.study.cli import bids_record_dir, finish_bids_record
    bids_dir = bids_record_dir(args)  # --bids-root: record there, write BIDS at the end
    if bids_dir is not None:
        args.record = str(bids_dir)
    protocol = getattr(args, "protocol", None)
    if protocol is not None:
        from tmseeg.closedloop.protocol import load_protocol
        load_protocol(protocol)  # a broken protocol file fails before streams are opened
    if args.record is not None:  # before the streams are opened: fail before any work
        _check_record_folder(args.record, "--record")
    source = _open_source(args)
    runner = _make_runner(args, source) if protocol is not None else None
    rc = _run_engine(source, args.duration, args.record, config=args.config, roi=roi,
                     runner=runner, overrides=input_overrides(args))
    if bids_dir is not None:
        finish_bids_record(args, analyze=True)
    return rc


def cmd_record(args) -> int:
    from tmseeg.stream.lslconfig import use_loopback_only
    if args.loopback:
        use_loopback_only(force=True)
    from tmseeg.stream.recorder import BrainVisionRecorder
    from tmseeg.study.cli import bids_record_dir, finish_bids_record

    bids_dir = bids_record_dir(args)  # --bids-root: raw copy in ROOT/sourcedata/tmseeg/...
    if bids_dir is not None:
        args.out = str(bids_dir)
    if args.out is None:
        raise ValueError("record needs --out DIR (or --bids-root ROOT --subject LABEL)")
    from tmseeg.stream.recorder import RecordingError
    _check_record_folder(args.out, "--out")  # before the stream is opened
    source = _open_source(args)
    recorder = BrainVisionRecorder(Path(args.out), source.meta, overwrite=args.overwrite)
    print(f"recording {source.meta.name!r} ({source.meta.n_channels} ch @ "
          f"{source.meta.sfreq:g} Hz) to {recorder.path} ({_free_space(recorder)}); "
          "Ctrl-C to stop")
    t_end = None if args.duration is None else time.monotonic() + args.duration
    try:
        while t_end is None or time.monotonic() < t_end:
            block = source.read()  # an outage is said by the inlet as it starts and ends
            if block is None:
                time.sleep(0.002)
                continue
            recorder.write(block)
    except KeyboardInterrupt:
        pass
    except RecordingError as err:  # nothing more can be recorded: stop, say what is kept
        log.error("%s", err)
    finally:
        _close_logged(recorder)
        source.close()
    stats = source.eeg.stats
    outages = (f"; the stream was gone {stats.n_outages} time(s), {stats.n_missing} samples "
               f"({stats.n_missing / source.meta.sfreq:.1f} s) missing, marked as gaps"
               if stats.n_outages or stats.n_missing else "")
    if recorder.failed:
        print(recorder.outcome() + outages, file=sys.stderr)
        return 1
    print(recorder.outcome() + outages)
    if bids_dir is not None:
        finish_bids_record(args, recorder.path)
    return 0


def cmd_analyze(args) -> int:
    import json

    from tmseeg.config import input_overrides
    from tmseeg.report.analyze import analyze_file
    from tmseeg.study.cli import is_bids_request, run_bids_analyze
    if is_bids_request(args):
        return run_bids_analyze(args)
    if args.out is None:
        raise ValueError(f"--out DIR is required when analyzing one file ({args.file}); "
                         "only a BIDS dataset root has a default (derivatives/tmseeg)")
    roi = args.roi.split(",") if args.roi else None
    summary = analyze_file(args.file, args.out, config=args.config, roi=roi,
                           progress=not args.no_progress, report=not args.no_report,
                           overrides=input_overrides(args))
    peaks = {k: (round(v["latency_ms"], 1), round(v["amplitude_uv"], 2))
             for k, v in summary["peaks"].items() if v.get("found")}
    print(f"{summary['n_pulses']} pulses, {summary['n_kept']} kept, {summary['n_rejected']} "
          f"rejected {summary['rejection_reasons'] or ''}")
    print(f"coil site {summary['coil_site']}, ROI {','.join(summary['roi'])}; SNR "
          f"{summary['snr']}; peaks (latency ms, amplitude uV): {json.dumps(peaks)}")
    written = ["summary.json", "pulses.csv"] + ([] if args.no_report else ["report.html"]) + (
        ["*-epo.fif", "*-ave.fif"] if summary["n_pulses"] else [])
    print(f"outputs in {args.out}: {', '.join(written)}")
    return 0


def cmd_config(args) -> int:
    from tmseeg.config import DEFAULT_CONFIG_TOML, ConfigError, load_config
    if args.check:
        cfg = load_config(args.check)  # keys, types and the pipeline's own rules
        if args.no_rehearsal:
            print(f"{args.check}: valid keys and values (not rehearsed)")
            return 0
        from tmseeg.report.rehearse import rehearse_config
        try:
            done = rehearse_config(cfg, n_channels=args.channels, sfreq_hz=args.sfreq)
        except (OSError, ValueError, RuntimeError, LookupError) as err:
            # said by main() like every documented error; a KeyError's text is its quoted key
            why = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ConfigError(f"{args.check}: a session would refuse this configuration: "
                              f"{why}") from err
        print(f"{args.check}: valid; {done.line()}. Channel names are checked against the "
              "stream when a session starts.")
        return 0
    sys.stdout.write(DEFAULT_CONFIG_TOML)
    return 0


def cmd_bench(args) -> int:
    from tmseeg.bench import main as bench_main
    return bench_main(args.duration)


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

    from tmseeg.stream import replay
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


if __name__ == "__main__":
    raise SystemExit(main())
