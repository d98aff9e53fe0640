"""Run the pipeline over every matching recording of a BIDS dataset, locally or on Dask.

One :class:`SessionJob` per recording; :func:`run_job` analyzes it (exactly
:func:`tmseeg.report.analyze.analyze_file`) into
``<bids_root>/derivatives/tmseeg/sub-XX/[ses-YY/]eeg/<basename>/`` and never raises: a
recording that cannot be read or analyzed returns ``status="failed"`` with the error message,
and its log file keeps the traceback. :func:`run_batch` plans the jobs, skips finished ones
(resumable), runs the rest

- in local processes (:class:`concurrent.futures.ProcessPoolExecutor`, ``jobs`` workers,
  ``spawn`` start method), or
- on a Dask distributed cluster (``scheduler="tcp://host:port"``; the workers must be able to
  import tmseeg and see the dataset path),

then writes the group table and the group report (:mod:`tmseeg.study.group`).

Resuming: a session is finished when its output folder holds a ``summary.json`` whose
``config_hash`` and ``tmseeg_version`` equal the current ones; it is skipped unless ``force``.
Outputs are written to ``<dir>.partial`` and renamed when complete, so an interrupted batch
never leaves a half-written session that looks finished.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

from tmseeg import __version__
from tmseeg.config import config_hash, load_config
from tmseeg.study.bids import (StudyError, derivatives_root, entities_of, entity_label,
                               find_recordings, session_output_dir,
                               write_derivatives_description)

log = logging.getLogger(__name__)

#: statuses a job can end with
STATUS_OK, STATUS_SKIPPED, STATUS_FAILED = "ok", "skipped", "failed"


@dataclass
class SessionJob:
    """Everything a worker needs to analyze one recording (plain data: picklable).

    Parameters
    ----------
    data_file : str
        The recording's data file inside the BIDS dataset.
    entities : dict
        ``subject``, ``session``, ``task``, ``run`` (None where absent).
    out_dir : str
        Final output folder of this recording.
    log_file : str
        Log of this job (appended).
    config : str or None
        TOML configuration file.
    overrides : dict or None
        Configuration overrides.
    roi : list of str or None
        ROI channels (None: the detected coil site and neighbours).
    report : bool
        Write the per-session ``report.html``.
    blas_threads : int or None
        Limit of BLAS/OpenMP threads inside the job (None: library default). One per job
        avoids oversubscription when several jobs share the cores.
    """

    data_file: str
    entities: dict
    out_dir: str
    log_file: str
    config: str | None = None
    overrides: dict | None = None
    roi: list[str] | None = None
    report: bool = True
    blas_threads: int | None = 1


@dataclass
class JobResult:
    """How one job ended.

    Parameters
    ----------
    entities : dict
        ``subject``, ``session``, ``task``, ``run``.
    status : str
        ``"ok"``, ``"skipped"`` (finished earlier with the same config and version) or
        ``"failed"``.
    message : str
        The error (failed) or a short note.
    out_dir : str
        Output folder (holds ``summary.json`` unless failed).
    log_file : str
        The job's log.
    elapsed_s : float
        Wall time of the job in its worker (0 when skipped).
    worker : str
        Host and process id that ran it.
    """

    entities: dict
    status: str
    message: str
    out_dir: str
    log_file: str
    elapsed_s: float = 0.0
    worker: str = ""


@dataclass
class BatchResult:
    """What :func:`run_batch` did.

    Attributes
    ----------
    results : list of JobResult
        One per matching recording, in dataset order.
    table_path : Path
        The group table (CSV).
    report_path : Path or None
        The group report (HTML) when written.
    derivatives : Path
        ``<bids_root>/derivatives/tmseeg``.
    rows : list of dict
        The group table's rows.
    elapsed_s : float
        Wall time of the whole batch.
    """

    results: list[JobResult]
    table_path: Path
    report_path: Path | None
    derivatives: Path
    rows: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0

    def counts(self) -> dict[str, int]:
        """Number of jobs per status."""
        out: dict[str, int] = {}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out


def is_finished(out_dir: str | Path, cfg_hash: str, version: str = __version__) -> bool:
    """True when ``out_dir/summary.json`` was written for this config hash and version."""
    path = Path(out_dir) / "summary.json"
    if not path.is_file():
        return False
    try:
        s = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    # the configuration asked for (analyze may switch the pulse source and say so)
    done_hash = s.get("requested_config_hash", s.get("config_hash"))
    return done_hash == cfg_hash and s.get("tmseeg_version") == version


def run_job(job: SessionJob) -> JobResult:
    """Analyze one recording; never raises (errors become ``status="failed"``).

    Parameters
    ----------
    job : SessionJob

    Returns
    -------
    JobResult
    """
    import socket

    from tmseeg.report.analyze import analyze_file
    from tmseeg.study.bids import read_bids_recording

    t0 = time.perf_counter()
    out = Path(job.out_dir)
    partial = out.with_name(out.name + ".partial")
    log_path = Path(job.log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("tmseeg")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    jlog = logging.getLogger("tmseeg.study.job")
    jlog.info("start %s (%s) on %s -> %s", job.data_file, job.entities, worker, out)
    limiter = None
    if job.blas_threads:
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=int(job.blas_threads))
        except ImportError:  # optional: only a speed matter
            limiter = None
    try:
        if partial.exists():
            shutil.rmtree(partial)
        recording = read_bids_recording(job.data_file)
        summary = analyze_file(job.data_file, partial, config=job.config, roi=job.roi,
                               progress=False, overrides=job.overrides, report=job.report,
                               recording=recording)
        if out.exists():
            shutil.rmtree(out)
        os.replace(partial, out)
        elapsed = time.perf_counter() - t0
        msg = f"{summary['n_pulses']} pulses, {summary['n_kept']} kept"
        jlog.info("done in %.2f s: %s", elapsed, msg)
        return JobResult(job.entities, STATUS_OK, msg, str(out), str(log_path), elapsed, worker)
    except Exception as exc:  # one bad recording must not stop the study
        elapsed = time.perf_counter() - t0
        msg = f"{type(exc).__name__}: {exc}"
        jlog.error("FAILED after %.2f s: %s\n%s", elapsed, msg, traceback.format_exc())
        shutil.rmtree(partial, ignore_errors=True)
        return JobResult(job.entities, STATUS_FAILED, msg, str(out), str(log_path), elapsed,
                         worker)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def plan_jobs(bids_root: str | Path, subjects=None, sessions=None, tasks=None, runs=None,
              config: str | Path | None = None, overrides: dict | None = None,
              roi: Sequence[str] | None = None, report: bool = True,
              out_root: str | Path | None = None) -> list[SessionJob]:
    """One :class:`SessionJob` per matching recording (see :func:`run_batch` for arguments)."""
    deriv = Path(out_root) if out_root is not None else derivatives_root(bids_root)
    jobs = []
    for bp in find_recordings(bids_root, subjects, sessions, tasks, runs):
        out = session_output_dir(deriv, bp)
        jobs.append(SessionJob(
            data_file=str(bp.fpath), entities=entities_of(bp), out_dir=str(out),
            log_file=str(deriv / "logs" / f"{out.name}.log"),
            config=None if config is None else str(config), overrides=overrides,
            roi=None if roi is None else list(roi), report=report))
    return jobs


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm
    return tqdm(total=total, unit="session", desc=desc, disable=not enabled, mininterval=0.5)


def _run_local(jobs: list[SessionJob], n_jobs: int, on_done: Callable[[JobResult], None]
               ) -> dict[int, JobResult]:
    """Jobs in a process pool; jobs lost to a dying worker are retried once each, alone."""
    results: dict[int, JobResult] = {}
    pending = list(range(len(jobs)))
    for attempt in range(2):
        broken: list[int] = []
        workers = max(1, min(n_jobs, len(pending))) if attempt == 0 else 1
        if not pending:
            break
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(run_job, jobs[i]): i for i in pending}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    broken.append(i)
                    continue
                except Exception as exc:  # pickling problems and the like
                    res = _failed(jobs[i], f"{type(exc).__name__}: {exc}")
                results[i] = res
                on_done(res)
        if attempt == 1:
            for i in broken:
                res = _failed(jobs[i], "the worker process died while analyzing this "
                              "recording (crash or out of memory); see the log, try it alone "
                              "with `tmseeg analyze`")
                results[i] = res
                on_done(res)
        pending = broken
    return results


def _run_dask(jobs: list[SessionJob], scheduler, on_done: Callable[[JobResult], None]
              ) -> dict[int, JobResult]:
    """Jobs on a Dask distributed cluster (``scheduler``: address or a ``Client``)."""
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise StudyError("--scheduler needs dask.distributed: pip install 'tmseeg[dask]'"
                         ) from exc
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except OSError as exc:
        raise StudyError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc}); start "
                         "one with `dask scheduler` (and `dask worker ADDRESS`) or fix "
                         "--scheduler") from exc
    results: dict[int, JobResult] = {}
    try:
        futures = client.map(run_job, jobs, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in dask_completed(futures):
            i = index[fut.key]
            try:
                res = fut.result()
            except Exception as exc:  # the worker died (KilledWorker) or similar
                res = _failed(jobs[i], f"Dask worker failed: {type(exc).__name__}: {exc}")
            results[i] = res
            on_done(res)
    finally:
        if own:
            client.close()
    return results


def _failed(job: SessionJob, msg: str) -> JobResult:
    Path(job.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(job.log_file, "a", encoding="utf-8") as fh:
        fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR tmseeg.study.batch: {msg}\n")
    return JobResult(job.entities, STATUS_FAILED, msg, job.out_dir, job.log_file)


def run_batch(bids_root: str | Path, subjects: str | Sequence[str] | None = None,
              sessions: str | Sequence[str] | None = None,
              tasks: str | Sequence[str] | None = None,
              runs: str | Sequence[str] | None = None, config: str | Path | None = None,
              overrides: dict | None = None, roi: Sequence[str] | None = None,
              n_jobs: int = 1, scheduler: Any = None, force: bool = False,
              report: bool = True, group_report: bool = True, progress: bool = True,
              out_root: str | Path | None = None) -> BatchResult:
    """Analyze every matching recording of a BIDS dataset and write the group outputs.

    Parameters
    ----------
    bids_root : path
        BIDS dataset root.
    subjects, sessions, tasks, runs : str or list of str, optional
        Entity filters (None = all).
    config : path, optional
        Pipeline configuration (TOML).
    overrides : dict, optional
        Configuration overrides (same structure as the TOML).
    roi : list of str, optional
        ROI channels for every session (default: detected per session).
    n_jobs : int
        Local worker processes (ignored with ``scheduler``).
    scheduler : str or distributed.Client, optional
        Dask scheduler address (``tcp://127.0.0.1:8786``) or a client: run there instead.
    force : bool
        Re-run finished sessions too.
    report : bool
        Per-session ``report.html``.
    group_report : bool
        Write ``group_report.html``.
    progress : bool
        Progress bar (tqdm).
    out_root : path, optional
        Derivatives folder (default ``<bids_root>/derivatives/tmseeg``).

    Returns
    -------
    BatchResult

    Raises
    ------
    StudyError
        Not a BIDS dataset, nothing matches, bad ``n_jobs``, unreachable scheduler.
    """
    from tmseeg.study.group import build_group_table, write_group_report, write_group_table

    t0 = time.perf_counter()
    if int(n_jobs) < 1:
        raise StudyError(f"--jobs must be >= 1, got {n_jobs}")
    cfg = load_config(config, overrides)  # a bad configuration fails before any work
    cfg_hash = config_hash(cfg)
    jobs = plan_jobs(bids_root, subjects, sessions, tasks, runs, config, overrides, roi,
                     report, out_root)
    deriv = Path(out_root) if out_root is not None else derivatives_root(bids_root)
    write_derivatives_description(deriv, cfg, source_root=bids_root)
    results: dict[int, JobResult] = {}
    todo: list[int] = []
    for i, job in enumerate(jobs):
        if not force and is_finished(job.out_dir, cfg_hash):
            results[i] = JobResult(job.entities, STATUS_SKIPPED,
                                   "finished earlier with the same configuration and version",
                                   job.out_dir, job.log_file)
        else:
            todo.append(i)
    bar = _progress(len(jobs), progress, "sessions")
    bar.update(len(jobs) - len(todo))

    def on_done(res: JobResult) -> None:
        bar.update(1)
        if res.status == STATUS_FAILED:
            bar.write(f"FAILED {entity_label(res.entities)}: {res.message} (log: {res.log_file})")

    try:
        if todo:
            sub = [jobs[i] for i in todo]
            if scheduler is not None:
                done = _run_dask(sub, scheduler, on_done)
            else:
                done = _run_local(sub, int(n_jobs), on_done)
            for k, res in done.items():
                results[todo[k]] = res
    finally:
        bar.close()
    ordered = [results[i] for i in range(len(jobs))]
    rows = build_group_table(ordered)
    table = write_group_table(rows, deriv / "group_table.csv")
    (deriv / "batch_status.json").write_text(json.dumps(
        {"config_hash": cfg_hash, "tmseeg_version": __version__,
         "results": [asdict(r) for r in ordered]}, indent=2))
    report_path = write_group_report(ordered, rows, deriv / "group_report.html") \
        if group_report else None
    return BatchResult(ordered, table, report_path, deriv, rows, time.perf_counter() - t0)


