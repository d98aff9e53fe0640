"""Cleaning against the simulator's ground truth, and what it costs.

Prints, for muscle / decay artifacts on and off, the ROI TEP's agreement with the true TEP
(template, average reference, ROI mean, x mean tep_gain_effective, filtered like the epochs)
without cleaning and with each method (r over 12-250 ms and 12-60 ms, RMSE 12-60 ms, and the
error of the N15/P30/N45 peak amplitudes), then SOUND on injected channel noise, then the
per-block cost of applying the fitted filter.

    python benchmarks/bench_cleaning.py [--seconds 100] [--channels 32] [--muscle-uv 1000]

``--muscle-uv`` sets the coil-site peak of the simulated TMS-evoked muscle burst
(SimConfig.muscle_uv; 150 µV is the simulator default, real bursts over lateral sites reach
hundreds of µV to several mV).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from tmseeg.pipeline.cleaning import ArtifactCleaning, sound, sphere_leadfield
from tmseeg.config import load_config
from tmseeg.session import epoch_filter
from tmseeg.report.analyze import run_session
from tmseeg.sim.model import SimConfig, simulate_recording
from tmseeg.stream.block import EVENT_MARKER, Event, StreamMeta, blocks_from_array
from tmseeg.io.files import Recording

SF = 2000.0


def truth_tep(times, truth, names, gain):
    T = truth.tep_template_uv - truth.tep_template_uv.mean(0)
    tr = np.zeros((len(names), times.size))
    i0 = int(np.searchsorted(times, truth.tep_times_ms[0]))
    n = min(truth.tep_times_ms.size, times.size - i0)
    tr[:, i0:i0 + n] = T[:, :n] * gain
    pad = int(0.5 * SF)
    ef = epoch_filter(load_config())  # the pipeline's own TEP-path filter
    return ef(np.pad(tr, ((0, 0), (pad, pad))), SF)[:, pad:-pad]


def peak_errors(ra, rt, times):
    out = []
    for lo, hi, sign in ((10, 20, -1), (22, 38, 1), (38, 55, -1)):
        m = (times >= lo) & (times <= hi)
        i = np.argmax(sign * rt[m])
        out.append(abs(ra[m][i] - rt[m][i]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--muscle-uv", type=float, default=150.0)
    args = ap.parse_args()
    print(f"{args.channels} ch, {SF:g} Hz, {args.seconds:g} s, no amplitude rejection, "
          f"muscle burst {args.muscle_uv:g} uV at the coil")
    print(f"{'muscle':>6} {'decay':>5} {'methods':<20} {'r12-250':>7} {'r12-60':>6} "
          f"{'RMSE':>5} {'|dN15|':>6} {'|dP30|':>6} {'|dN45|':>6} {'fit s':>6}")
    for muscle, decay in ((True, False), (True, True), (False, False)):
        raw, truth = simulate_recording(SimConfig(
            n_channels=args.channels, sfreq=SF, seed=1, include_emg=False, blinks=False,
            muscle_artifact=muscle, decay_artifact=decay, muscle_uv=args.muscle_uv),
            args.seconds)
        names = raw.ch_names
        meta = StreamMeta(names, SF, ["eeg"] * len(names), "sim")
        rec = Recording(raw.get_data() * 1e6, meta,
                        [Event(p.sample, "TMS", EVENT_MARKER) for p in truth.pulses])
        gain = np.mean([p.tep_gain_effective for p in truth.pulses])
        for methods in ([], ["sspsir"], ["sound"], ["sound", "sspsir"], ["ica"]):
            cfg = load_config(overrides={"epochs": {"reject_uv": 0.0}, "cleaning": {
                "enabled": bool(methods), "methods": methods or ["sspsir"]}})
            t0 = time.perf_counter()
            s = run_session(rec, cfg, roi=truth.roi)
            dt = time.perf_counter() - t0
            times = s.tep.times_ms
            rt = truth_tep(times, truth, names, gain)[[names.index(c) for c in truth.roi]].mean(0)
            ra = s.tep.roi_average_uv
            m, me = (times >= 12) & (times <= 250), (times >= 12) & (times <= 60)
            pe = peak_errors(ra, rt, times)
            print(f"{str(muscle):>6} {str(decay):>5} {'+'.join(methods) or 'none':<20} "
                  f"{np.corrcoef(ra[m], rt[m])[0, 1]:7.3f} {np.corrcoef(ra[me], rt[me])[0, 1]:6.3f} "
                  f"{np.sqrt(np.mean((ra[me] - rt[me]) ** 2)):5.2f} "
                  f"{pe[0]:6.2f} {pe[1]:6.2f} {pe[2]:6.2f} {dt:6.1f}")

    print("\nSOUND on injected channel noise (50 uV white on C3, P4, F8), 20 s at 1 kHz")
    kw = dict(n_channels=args.channels, sfreq=1000.0, seed=3, include_emg=False,
              pulse_artifact=False, decay_artifact=False, muscle_artifact=False, blinks=False,
              line_noise_hz=0.0)
    noisy = ("C3", "P4", "F8")
    x = simulate_recording(SimConfig(noisy_channels=noisy, **kw), 20.0)[0]
    names = x.ch_names
    x = x.get_data() * 1e6
    c = simulate_recording(SimConfig(**kw), 20.0)[0].get_data() * 1e6
    x -= x.mean(0)
    c -= c.mean(0)
    L = sphere_leadfield(names)
    ni = [names.index(n) for n in noisy]
    ok = [i for i in range(len(names)) if i not in ni]
    for lam in (0.3, 1.0, 3.0):
        t0 = time.perf_counter()
        r = sound(x[:, :10000], L, lambda0=lam)
        dt = time.perf_counter() - t0
        rc = sound(c[:, :10000], L, lambda0=lam)
        y = r.matrix @ x
        before = np.sqrt(((x - c) ** 2).mean(1))
        after = np.sqrt(((y - c) ** 2).mean(1))
        spread = np.sqrt(((y - rc.matrix @ c) ** 2).mean(1))[ok]
        print(f"lambda0 {lam:3.1f}: noisy channels error {before[ni].round(1)} -> "
              f"{after[ni].round(1)} uV (x{np.mean(before[ni] / after[ni]):.1f} less); noise SD "
              f"{r.sigma_uv[ni].round(1)}; clean channels changed by the noise "
              f"{np.median(spread):.2f} uV median; {r.n_iter} iterations, {dt * 1e3:.0f} ms")

    print("\nper-block cost of the fitted filter (64 ch, 5 kHz, 1-ms blocks, sound+sspsir)")
    raw, truth = simulate_recording(SimConfig(n_channels=64, sfreq=5000.0, seed=1,
                                              include_emg=False), 30.0)
    meta = StreamMeta(raw.ch_names, 5000.0, ["eeg"] * 64, "sim")
    st = ArtifactCleaning(methods=["sound", "sspsir"], calibration_pulses=8,
                          during_calibration="pass")
    ev = [Event(p.sample, "TMS", "pulse") for p in truth.pulses]
    costs = []
    for b in blocks_from_array(raw.get_data() * 1e6, meta, 5, events=ev):
        t0 = time.perf_counter()
        st.process(b)
        if st.filter is not None:
            costs.append(time.perf_counter() - t0)
    costs = np.array(costs[10:]) * 1e6
    print(f"median {np.median(costs):.0f} us, p95 {np.percentile(costs, 95):.0f} us, "
          f"p99 {np.percentile(costs, 99):.0f} us per block ({len(costs)} blocks after the fit)")


if __name__ == "__main__":
    main()
