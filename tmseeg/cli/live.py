"""The live commands: ``demo``, ``run``, ``record`` and ``monitor``, and the wiring they share.

Each builds its session and engine through :class:`tmseeg.engine.Engine` (the one driver) and
adds what a terminal session needs: a status line, a recording, the metrics outlet, a
closed-loop protocol.
"""
from __future__ import annotations

import logging
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


def _open_source(args):
    from tmseeg.config import input_overrides, load_config
    from tmseeg.stream.inlet import LSLSource
    from tmseeg.stream.montage import use_montage

    # the stream's channel names are tidied against the montage in use: set it first
    cfg = load_config(getattr(args, "config", None), input_overrides(args))
    use_montage(cfg.channels.montage)
    return LSLSource.resolve(name=args.stream, stype=args.stream_type, source_id=args.source_id,
                             marker_name=args.markers, with_markers=not args.no_markers,
                             timeout_s=args.timeout, info_name=args.pulse_info)


def run_engine(source, duration_s: float | None, record_dir: str | None,
                status_every_s: float = 1.0, config: str | None = None,
                roi: list[str] | None = None, publish: bool = True, runner=None,
                overrides: dict | None = None) -> int:
    """The live engine: stages + epochs + TEP on ``source``, metrics on LSL, optional recording.

    ``runner`` (a :class:`~tmseeg.closedloop.runner.ProtocolRunner`) closes the loop: it gets
    every block and every pulse row, and its line joins the status.
    """
    from tmseeg.engine import Engine
    from tmseeg.io.recorder import RawRecorderSink
    from tmseeg.config import load_config
    from tmseeg.session import TEPSession

    session = TEPSession(load_config(config, overrides), source.meta, roi=roi)
    sinks = []
    recorder = None
    if record_dir is not None:
        from tmseeg.io.recorder import BrainVisionRecorder
        recorder = BrainVisionRecorder(Path(record_dir), source.meta)
        sinks.append(RawRecorderSink(recorder))
        print(f"recording to {recorder.path} ({_free_space(recorder)})")
    outlet = None
    if publish:
        from tmseeg.io.metrics_outlet import MetricsOutlet
        stream_id = source.meta.source_id or source.meta.name
        outlet = MetricsOutlet(source_id=f"tmseeg-metrics-{stream_id}")
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
    from tmseeg.io.recorder import free_space_note
    note, short = free_space_note(recorder.path.parent, recorder.meta)
    if short:
        log.warning("%s has only %s: the recording will stop when the disk is full. Free "
                    "space, or record to another folder.", recorder.path.parent, note)
    return note


def _close_logged(recorder) -> None:
    """Close a recording; a write failure while closing is said as an error, not raised
    (what was recorded stays)."""
    from tmseeg.io.recorder import RecordingError
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


# -- commands --------------------------------------------------------------------------------

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
        return run_engine(source, args.duration, args.record, status_every_s=1.0,
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
    rc = run_engine(source, args.duration, args.record, config=args.config, roi=roi,
                     runner=runner, overrides=input_overrides(args))
    if bids_dir is not None:
        finish_bids_record(args, analyze=True)
    return rc


def cmd_record(args) -> int:
    from tmseeg.stream.lslconfig import use_loopback_only
    if args.loopback:
        use_loopback_only(force=True)
    from tmseeg.io.recorder import BrainVisionRecorder
    from tmseeg.study.cli import bids_record_dir, finish_bids_record

    bids_dir = bids_record_dir(args)  # --bids-root: raw copy in ROOT/sourcedata/tmseeg/...
    if bids_dir is not None:
        args.out = str(bids_dir)
    if args.out is None:
        raise ValueError("record needs --out DIR (or --bids-root ROOT --subject LABEL)")
    from tmseeg.io.recorder import RecordingError
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


