"""Batch throughput: sessions per minute with 1 and 2 local processes and on a local Dask
cluster (scheduler + 2 worker processes on loopback), on generated BIDS sessions.

    python benchmarks/bench_batch.py [--sessions 4] [--block-s 20] [--report]

Each session: 32 EEG ch + EMG at 1 kHz, a ``pre`` and a ``post`` block of ``--block-s``
seconds (single pulses every 1-1.4 s). Every configuration re-runs all sessions (``force``);
the first Dask run includes worker start-up imports, as a real batch would.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--block-s", type=float, default=20.0)
    ap.add_argument("--report", action="store_true", help="also write per-session report.html")
    args = ap.parse_args()

    import distributed

    from tmseeg.study.batch import run_batch
    from tmseeg.study.demo import DemoSession, make_demo_study

    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    root = tmp / "bids"
    try:
        t0 = time.perf_counter()
        make_demo_study(root, [DemoSession(f"{i + 1:02d}", "1", seed=100 + i,
                                           gain_post=1.0 + 0.5 * (i % 2))
                               for i in range(args.sessions)], block_s=args.block_s)
        print(f"generated {args.sessions} BIDS sessions ({2 * args.block_s:g} s each, 32 ch, "
              f"1 kHz) in {time.perf_counter() - t0:.1f} s")
        figures = {}
        for label, kw in (("1 local process", {"n_jobs": 1}),
                          ("2 local processes", {"n_jobs": 2})):
            res = run_batch(root, force=True, report=args.report, group_report=False,
                            progress=False, **kw)
            assert res.counts() == {"ok": args.sessions}, res.counts()
            figures[label] = (res.elapsed_s, [r.elapsed_s for r in res.results])
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      host="127.0.0.1", dashboard_address=None) as cluster:
            for label in ("Dask 2 workers (cold)", "Dask 2 workers (warm)"):
                res = run_batch(root, scheduler=cluster.scheduler_address, force=True,
                                report=args.report, group_report=False, progress=False)
                assert res.counts() == {"ok": args.sessions}, res.counts()
                figures[label] = (res.elapsed_s, [r.elapsed_s for r in res.results])
        t0 = time.perf_counter()
        res = run_batch(root, n_jobs=2, report=False, group_report=True, progress=False)
        resume_s = time.perf_counter() - t0
        print(f"\n{'configuration':26s} {'wall s':>8s} {'sessions/min':>13s} "
              f"{'per-session s (median)':>23s}")
        for label, (wall, per) in figures.items():
            per = sorted(per)
            print(f"{label:26s} {wall:8.1f} {args.sessions / wall * 60:13.1f} "
                  f"{per[len(per) // 2]:23.2f}")
        print(f"resume (all {res.counts().get('skipped', 0)} skipped) + group table + report: "
              f"{resume_s:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
