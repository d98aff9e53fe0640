"""Command-line parts of the study tools, used by :mod:`tmseeg.cli`.

- ``tmseeg analyze BIDS_ROOT [--subject 01 ...] [--session ...] [--task ...] [--run ...]
  [--jobs N | --scheduler ADDRESS] [--force] [--out DIR]``: the batch over a BIDS dataset
  (:func:`tmseeg.study.batch.run_batch`); ``--out`` defaults to
  ``BIDS_ROOT/derivatives/tmseeg``.
- ``tmseeg record --bids-root ROOT --subject 01 [--session ..] [--task tms] [--run ..]`` and
  ``tmseeg run --record DIR --bids-root ROOT --subject 01 ...``: the crash-safe BrainVision
  recording goes to ``ROOT/sourcedata/tmseeg/<basename>/`` and, when the recording ends, is
  written to the dataset as BIDS (:func:`tmseeg.study.bids.write_bids`). After ``run`` the
  same pipeline reruns offline on the recording (it gives the live numbers, sample for
  sample) into ``ROOT/derivatives/tmseeg/...``, and its per-pulse rows join ``events.tsv``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_bids_filter_arguments(p: argparse.ArgumentParser) -> None:
    """``analyze``: entity filters and batch options (used when FILE is a BIDS root)."""
    g = p.add_argument_group("BIDS dataset (FILE is a BIDS root)")
    g.add_argument("--subject", action="append", default=None,
                   help="only this subject label (repeat or comma-separate for several)")
    g.add_argument("--session", action="append", default=None, help="only this session")
    g.add_argument("--task", action="append", default=None, help="only this task")
    g.add_argument("--run", action="append", default=None, help="only this run")
    g.add_argument("--jobs", type=int, default=1, help="local worker processes (default 1)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the sessions on this Dask scheduler (tcp://host:port)")
    g.add_argument("--force", action="store_true",
                   help="re-analyze sessions already finished with this config and version")
    g.add_argument("--no-group-report", action="store_true", help="skip group_report.html")


def add_bids_record_arguments(p: argparse.ArgumentParser) -> None:
    """``record`` / ``run``: write the recording to a BIDS dataset when it ends."""
    g = p.add_argument_group("BIDS output")
    g.add_argument("--bids-root", default=None, metavar="ROOT",
                   help="write the recording to this BIDS dataset (raw copy kept in "
                   "ROOT/sourcedata/tmseeg)")
    g.add_argument("--subject", default=None, help="BIDS subject label (with --bids-root)")
    g.add_argument("--session", default=None, help="BIDS session label")
    g.add_argument("--task", default="tms", help="BIDS task label (default tms)")
    g.add_argument("--run", default=None, help="BIDS run index")
    g.add_argument("--stim-intensity", type=float, default=None, metavar="PCT",
                   help="stimulator output, %% of maximum, for the BIDS sidecar")
    g.add_argument("--stim-protocol", default=None,
                   help="stimulation protocol/schedule name for the BIDS sidecar")


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v for item in values for v in item.split(",") if v]


def is_bids_request(args) -> bool:
    """True when ``tmseeg analyze`` was given a BIDS root (a folder with
    ``dataset_description.json``)."""
    from tmseeg.study.bids import is_bids_root
    return is_bids_root(args.file)


def run_bids_analyze(args) -> int:
    """``tmseeg analyze BIDS_ROOT ...``: the batch; prints one line per session and totals."""
    from tmseeg.config import input_overrides
    from tmseeg.study.batch import run_batch

    roi = args.roi.split(",") if args.roi else None
    res = run_batch(args.file, subjects=_split(args.subject), sessions=_split(args.session),
                    tasks=_split(args.task), runs=_split(args.run), config=args.config,
                    roi=roi, n_jobs=args.jobs, scheduler=args.scheduler, force=args.force,
                    report=not args.no_report, group_report=not args.no_group_report,
                    progress=not args.no_progress, out_root=args.out,
                    overrides=input_overrides(args))
    for r in res.results:
        ent = " ".join(f"{k}={v}" for k, v in r.entities.items() if v)
        print(f"{r.status:8s} {ent}: {r.message}")
    counts = res.counts()
    n_done = counts.get("ok", 0)
    rate = n_done / res.elapsed_s * 60 if n_done and res.elapsed_s > 0 else 0.0
    print(f"{len(res.results)} sessions: {counts} in {res.elapsed_s:.1f} s"
          + (f" ({rate:.1f} sessions/min)" if n_done else ""))
    print(f"group table: {res.table_path}")
    if res.report_path is not None:
        print(f"group report: {res.report_path}")
    return 1 if counts.get("failed") else 0


def bids_record_dir(args) -> Path | None:
    """Where ``record``/``run`` write the raw BrainVision files when ``--bids-root`` is set."""
    if getattr(args, "bids_root", None) is None:
        return None
    from tmseeg.study.bids import StudyError, bids_path_for
    if not args.subject:
        raise StudyError("--bids-root needs --subject LABEL (e.g. --subject 01)")
    bp = bids_path_for(args.bids_root, args.subject, args.session, args.task, args.run)
    base = bp.copy().update(suffix=None, extension=None, datatype=None).basename
    return Path(args.bids_root) / "sourcedata" / "tmseeg" / base


def finish_bids_record(args, vhdr: Path | None = None, analyze: bool = False):
    """Write the finished recording to the BIDS dataset; with ``analyze``, also run the
    pipeline on it into the derivatives and add the per-pulse columns to ``events.tsv``.

    Returns
    -------
    mne_bids.BIDSPath
    """
    from tmseeg.study.bids import (bids_path_for, derivatives_root, session_output_dir,
                                   write_bids, write_derivatives_description)
    from tmseeg.io.files import read_recording

    folder = bids_record_dir(args)
    if vhdr is None:
        found = sorted(folder.glob("*.vhdr"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise FileNotFoundError(f"no recording in {folder} to write to {args.bids_root}")
        vhdr = found[-1]
    recording = read_recording(vhdr)
    stim = {k: v for k, v in (("intensity_pct", args.stim_intensity),
                              ("schedule", args.stim_protocol)) if v is not None}
    pulses, coil, roi = None, None, None
    if analyze:
        from tmseeg.config import input_overrides
        from tmseeg.config import load_config
        from tmseeg.report.analyze import analyze_file
        bp = bids_path_for(args.bids_root, args.subject, args.session, args.task, args.run)
        deriv = derivatives_root(args.bids_root)
        overrides = input_overrides(args)  # the offline rerun uses what the live run used
        write_derivatives_description(deriv, load_config(getattr(args, "config", None),
                                                         overrides), args.bids_root)
        out = session_output_dir(deriv, bp)
        summary = analyze_file(vhdr, out, config=getattr(args, "config", None),
                               roi=args.roi.split(",") if getattr(args, "roi", None) else None,
                               progress=False, report=False, recording=recording,
                               overrides=overrides)
        pulses, coil, roi = out / "pulses.csv", summary["coil_site"], summary["roi"]
    written = write_bids(recording, args.bids_root, subject=args.subject, session=args.session,
                         task=args.task, run=args.run, pulses=pulses, stimulation=stim,
                         coil_site=coil, roi=roi)
    print(f"BIDS: {written.fpath}")
    return written
