"""`tmseeg analyze` against the MNE pipeline an analyst would write, side by side (issue #3,
point 11): same recording, same steps, same answers, wall-clock time of each.

The analyst's pipeline (MNE, on the whole continuous recording):
``mne.preprocessing.fix_stim_artifact`` (linear, -2..10 ms) -> ``raw.filter`` (the same 1-100 Hz
Butterworth and 50/100 Hz notches, zero phase, as second-order sections) -> average reference
-> ``mne.Epochs`` (-500..500 ms, baseline -500..-10 ms, 150 µV peak-to-peak rejection) ->
``average`` -> GMFP (``evoked.data.std(axis=0)``).

tmseeg runs the same steps through its stage chain in 100 ms blocks, as it does live
(pulse-window interpolation, linear; average reference; zero-phase epoch filter on 500 ms of
padding; running average; GMFP), with the stages MNE has no counterpart for switched off
(decay removal, bad channels) and, separately, the whole default analysis (decay removal, bad
channels and every metric plug-in).

    python benchmarks/bench_analyze.py [--seconds 600] [--channels 64] [--sfreq 5000]
        [--repeats 3]

Prints the time of each (median of the repeats, and each run), the speed ratio, and how far the
two averaged TEPs are apart (largest difference over the largest value, correlation).

Whole processes (issue #16), each reading the same BrainVision file from disk:

    python benchmarks/bench_analyze.py --processes [--seconds 600] [--repeats 3]

alternates ``tmseeg analyze FILE --out DIR`` (every default output, report included),
``tmseeg analyze FILE --out DIR --no-report`` and ``benchmarks/analyst_mne.py`` (the analyst's
MNE script, ERSP and wPLI included), and prints each one's wall time and peak memory (median,
each run), the ratios, and the recording's float32 size.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import mne
import numpy as np

from tmseeg.config import load_config, planning_cut_window
from tmseeg.pipeline.filters import design_bandpass, design_notch
from tmseeg.report.analyze import run_session
from tmseeg.sim.accuracy import simulated_recording
from tmseeg.sim.model import SimConfig

PLUGINS = ("mep", "pcist", "connectivity", "spread", "oscillations", "state")


def tmseeg_config(full: bool) -> dict:
    """The default configuration (``full``), or the steps the MNE pipeline also has."""
    if full:
        return load_config()
    over = {"interpolation": {"method": "linear"}, "decay": {"enabled": False},
            "bad_channels": {"detect": False}}
    over.update({name: {"enabled": False} for name in PLUGINS})
    return load_config(overrides=over)


def run_tmseeg(rec, cfg: dict):
    session = run_session(rec, cfg, keep_epochs=False)
    return session.tep.average_uv, session.tep.gmfp_uv, session.tep.n


def run_mne(raw: mne.io.BaseRaw, pulses: np.ndarray, cfg: dict):
    """The analyst's pipeline; ``raw`` is modified in place (pass a copy)."""
    f, e, i = cfg["filter"], cfg["epochs"], cfg["interpolation"]
    sf = raw.info["sfreq"]
    events = np.c_[pulses, np.zeros_like(pulses), np.ones_like(pulses)]
    mne.preprocessing.fix_stim_artifact(raw, events=events, event_id=1,
                                        tmin=planning_cut_window(cfg)[0] / 1e3,
                                        tmax=planning_cut_window(cfg)[1] / 1e3, mode="linear",
                                        picks="eeg")
    sos = np.vstack([design_bandpass(sf, f["l_freq_hz"], f["h_freq_hz"], f["order"]),
                     design_notch(sf, f["notch_hz"], f["notch_harmonics"])])
    raw.filter(None, None, picks="eeg", method="iir", iir_params={"sos": sos, "padlen": int(sf)}, phase="zero",
               verbose="error")
    raw.set_eeg_reference("average", verbose="error")
    epochs = mne.Epochs(raw, events, event_id=1, tmin=e["tmin_ms"] / 1e3, tmax=e["tmax_ms"] / 1e3,
                        baseline=(e["baseline_ms"][0] / 1e3, e["baseline_ms"][1] / 1e3),
                        picks="eeg", reject=dict(eeg=e["reject_uv"] * 1e-6), preload=True,
                        verbose="error")
    evoked = epochs.average()
    return evoked.data * 1e6, evoked.data.std(axis=0) * 1e6, len(epochs)


def _timed_process(cmd: list[str], log_path: Path) -> tuple[float, float]:
    """Run ``cmd``; return its wall time (s) and its own peak resident memory (MB).

    ``posix_spawn``, not fork: a forked child's peak memory would start at this process's.
    """
    t0 = time.perf_counter()
    with open(log_path, "wb") as log_file, open(os.devnull, "wb") as null:
        pid = os.posix_spawn(cmd[0], cmd, dict(os.environ), file_actions=[
            (os.POSIX_SPAWN_DUP2, null.fileno(), 1), (os.POSIX_SPAWN_DUP2, log_file.fileno(), 2)])
        _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n"
                           f"{log_path.read_text(errors='replace')[-2000:]}")
    return seconds, usage.ru_maxrss / 1024.0  # Linux: kB


def write_file(vhdr: Path, args) -> None:
    """The simulated recording (all artifacts, no EMG) as float32 BrainVision."""
    import pybv

    rec, truth = simulated_recording(
        SimConfig(n_channels=args.channels, sfreq=args.sfreq, seed=1, include_emg=False),
        args.seconds)
    vhdr.parent.mkdir(parents=True, exist_ok=True)
    pybv.write_brainvision(data=rec.data_uv * 1e-6, sfreq=rec.meta.sfreq,
                           ch_names=list(rec.meta.ch_names), fname_base=vhdr.stem,
                           folder_out=str(vhdr.parent), unit="µV", fmt="binary_float32",
                           events=[dict(onset=int(p.sample), description=1, type="Stimulus")
                                   for p in truth.pulses])


def run_processes(args) -> None:
    """tmseeg analyze and the analyst's MNE script as whole processes on one file."""
    folder = Path(args.data or Path.home() / ".cache" / "tmseeg-bench")
    stem = f"bench_{args.channels}ch_{args.sfreq:g}hz_{args.seconds:g}s"
    vhdr = folder / f"{stem}.vhdr"
    roi = "C3,FC1,FC5,CP1,CP5"  # around the simulator's coil site (C3), both sides alike
    if not vhdr.is_file():
        # written by a child process: this one stays small (see _timed_process)
        subprocess.run([sys.executable, __file__, "--write-file", str(vhdr), "--seconds",
                        str(args.seconds), "--channels", str(args.channels), "--sfreq",
                        str(args.sfreq)], check=True)
    vmrk = vhdr.with_suffix(".vmrk").read_text()
    n_pulses = vmrk.count("Stimulus,")
    size_mb = args.channels * args.seconds * args.sfreq * 4 / 2 ** 20
    out = folder / "runs"
    here = Path(__file__).resolve().parent
    tmseeg_cli = [sys.executable, "-c", "from tmseeg.cli import main; main()"]
    sides = {
        "tmseeg analyze": [*tmseeg_cli, "analyze", str(vhdr), "--out",
                           str(out / "tmseeg"), "--roi", roi],
        "tmseeg analyze --no-report": [*tmseeg_cli, "analyze", str(vhdr),
                                       "--out", str(out / "tmseeg-noreport"), "--roi", roi,
                                       "--no-report"],
        # the simulated decay artifact puts every epoch over 150 uV (the script removes no
        # decay): it keeps them all, or it would have nothing to compute ERSP and wPLI on
        "analyst's MNE script": [sys.executable, str(here / "analyst_mne.py"), str(vhdr),
                                 "--roi", roi, "--out", str(out / "mne"), "--reject-uv", "0"],
    }
    print(f"{args.channels} ch, {args.sfreq:g} Hz, {args.seconds:g} s, {n_pulses} pulses; "
          f"{vhdr} ({size_mb:.0f} MB as float32); {args.repeats} alternating runs each, whole "
          "processes (reading the file included)")
    wall: dict[str, list[float]] = {k: [] for k in sides}
    peak: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(args.repeats):
        for name, cmd in sides.items():
            s, mb = _timed_process(cmd, folder / "last-run.log")
            wall[name].append(s)
            peak[name].append(mb)
    med = {k: float(np.median(v)) for k, v in wall.items()}
    for k in sides:
        print(f"{k:28s} wall median {med[k]:6.1f} s (runs "
              + ", ".join(f"{x:.1f}" for x in wall[k])
              + f"); peak memory median {np.median(peak[k]):6.0f} MB "
              f"({np.median(peak[k]) / size_mb:.2f}x the recording)")
    mne_s = med["analyst's MNE script"]
    print(f"speed-up against the MNE script: {mne_s / med['tmseeg analyze']:.2f}x with the "
          f"report, {mne_s / med['tmseeg analyze --no-report']:.2f}x without")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--sfreq", type=float, default=5000.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--processes", action="store_true",
                    help="whole processes on a file (see the module description)")
    ap.add_argument("--data", default=None, help="where the --processes recording is written "
                    "(default ~/.cache/tmseeg-bench)")
    ap.add_argument("--write-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.getLogger("tmseeg").setLevel(logging.ERROR)
    if args.write_file:
        write_file(Path(args.write_file), args)
        return
    if args.processes:
        run_processes(args)
        return
    rec, truth = simulated_recording(
        SimConfig(n_channels=args.channels, sfreq=args.sfreq, seed=1, decay_artifact=False,
                  muscle_artifact=False, include_emg=False), args.seconds)
    pulses = np.array([p.sample for p in truth.pulses])
    print(f"{args.channels} ch, {args.sfreq:g} Hz, {args.seconds:g} s, {pulses.size} pulses "
          f"(recording in memory for both; times exclude reading the file)")
    info = mne.create_info(list(rec.meta.ch_names), rec.meta.sfreq, list(rec.meta.ch_types))
    same = tmseeg_config(full=False)
    times = {"mne": [], "tmseeg": [], "tmseeg full": []}
    for _ in range(args.repeats):
        raw = mne.io.RawArray(rec.data_uv * 1e-6, info, verbose="error")  # the copy MNE needs
        t0 = time.perf_counter()
        mne_avg, mne_gmfp, mne_n = run_mne(raw, pulses, same)
        times["mne"].append(time.perf_counter() - t0)
        del raw
        t0 = time.perf_counter()
        tm_avg, tm_gmfp, tm_n = run_tmseeg(rec, same)
        times["tmseeg"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_tmseeg(rec, tmseeg_config(full=True))
        times["tmseeg full"].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in times.items():
        print(f"{k:12s} median {med[k]:7.2f} s   runs " + ", ".join(f"{x:.2f}" for x in v))
    print(f"speed-up, same steps: {med['mne'] / med['tmseeg']:.1f}x; tmseeg's whole default "
          f"analysis (decay removal, bad channels, all metric plug-ins): "
          f"{med['mne'] / med['tmseeg full']:.1f}x")
    diff = np.abs(tm_avg - mne_avg).max() / np.abs(mne_avg).max()
    r = np.corrcoef(tm_avg.ravel(), mne_avg.ravel())[0, 1]
    gdiff = np.abs(tm_gmfp - mne_gmfp).max() / mne_gmfp.max()
    print(f"same answers: epochs averaged {tm_n} (tmseeg) vs {mne_n} (MNE); TEP largest "
          f"difference {100 * diff:.2f} % of its largest value, r = {r:.6f}; GMFP largest "
          f"difference {100 * gdiff:.2f} %")


if __name__ == "__main__":
    main()
