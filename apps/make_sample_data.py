"""Write ``sample_data/``: a small simulated TMS-EEG recording (BrainVision) + its ground truth.

Run from the repository root::

    python apps/make_sample_data.py

It is deterministic: the same command writes byte-identical data files (the ``.vhdr`` carries
no date). The recording is 32 EEG channels (actiCAP 10-10 layout) + one EMG channel (right FDI),
2 kHz, 110 s, single TMS pulses over C3 every 2.0-2.5 s at 70 % MSO with every artifact on.

Why 2 kHz and 32 channels: the repository keeps the sample under 20 MB. 2 kHz (16-bit) resolves
the TEP (N15 onwards) and the MEP, and lets the pulse/decay artifacts be seen and removed, but it
renders the sub-millisecond pulse artifact in only ~10 samples; real TMS-EEG amplifiers sample at
5-20 kHz to keep it from aliasing and to interpolate tightly. ``tmseeg simulate`` streams the
full-rate version.

Format details: 16-bit integers with a per-channel resolution (0.1 µV where the channel's range
allows, coarser only on the channels under the coil whose pulse artifact reaches several mV), so
nothing clips. Pulses are BrainVision ``Stimulus`` markers with description ``TMS`` (MNE reads
them as ``"Stimulus/TMS"``), as ``tmseeg``'s own recorder writes them.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from tmseeg.sim.model import SimConfig, simulate_recording

NAME = "tmseeg_sample"
DURATION_S = 110.0
CONFIG = SimConfig(n_channels=32, sfreq=2000.0, seed=0, coil_site="C3", schedule="single",
                   isi_range_s=(2.0, 2.5), intensity_pct=70.0)
RESOLUTIONS_UV = (0.1, 0.2, 0.5, 1.0, 2.0)
COMMAND = "python apps/make_sample_data.py"


def _write_brainvision(raw, out: Path) -> Path:
    import pybv

    data_uv = raw.get_data() * 1e6
    peak = np.abs(data_uv).max(axis=1)
    res = np.array([next(r for r in RESOLUTIONS_UV if p / r < 32000) for p in peak])
    events = [{"onset": int(round(a["onset"] * raw.info["sfreq"])), "duration": 1,
               "description": a["description"], "type": "Comment"} for a in raw.annotations]
    with tempfile.TemporaryDirectory() as tmp:
        pybv.write_brainvision(data=raw.get_data(), sfreq=raw.info["sfreq"],
                               ch_names=raw.ch_names, fname_base=NAME, folder_out=tmp,
                               events=events, resolution=res, unit="µV", fmt="binary_int16",
                               overwrite=True)
        vmrk = Path(tmp) / f"{NAME}.vmrk"
        # pybv only writes free text as Comment markers: pulses become Stimulus,TMS
        lines = vmrk.read_text(encoding="utf-8").splitlines(keepends=True)
        lines = [ln.replace("=Comment,TMS,", "=Stimulus,TMS,") for ln in lines]
        vmrk.write_text("".join(lines), encoding="utf-8")
        for ext in (".vhdr", ".vmrk", ".eeg"):
            shutil.copy(Path(tmp) / f"{NAME}{ext}", out / f"{NAME}{ext}")
    return out / f"{NAME}.vhdr"


def _readme(truth, n_pulses: int, sizes: dict[str, int], digest: str) -> str:
    rows = "\n".join(
        f"| {name} | {pk['latency_ms']:.1f} | {pk['amplitude_uv']:+.2f} | "
        f"{pk['nominal_latency_ms']:.0f} | {pk['peak_uv']:+.0f} |"
        for name, pk in truth.peaks.items())
    files = "\n".join(f"| `{n}` | {s / 1e6:.2f} MB |" for n, s in sizes.items())
    ptp = np.array([p.mep_ptp_uv for p in truth.pulses])
    gains = np.array([p.tep_gain_effective for p in truth.pulses])
    cfg = CONFIG
    return f"""# Sample data: simulated TMS-EEG over left M1

A small, realistic-looking recording a new user can analyze or replay at once:

    tmseeg analyze sample_data/{NAME}.vhdr --out results/
    tmseeg replay sample_data/{NAME}.vhdr

It comes from tmseeg's simulator (`tmseeg.sim`), so every number in it is known: the file
`{NAME}_truth.json` (+ `{NAME}_truth.npz`) holds what was injected. Load it with
`tmseeg.sim.GroundTruth.load("sample_data/{NAME}_truth.json")`.

Made by (deterministic; rerunning rewrites identical data files):

    {COMMAND}

## What is in it

- **{len(truth.ch_names) - 1} EEG channels** (actiCAP-style 10-10 layout, names as in MNE's
  10-05 montage) + **1 EMG channel** `EMG` (type emg, right FDI), all in µV.
- **{cfg.sfreq:g} Hz**, {DURATION_S:g} s, BrainVision 16-bit integers with per-channel
  resolution (0.1 µV where possible; coarser only on channels whose pulse artifact needs the
  range), so nothing clips.
- **{n_pulses} TMS pulses** over **{cfg.coil_site}** at {cfg.intensity_pct:g} % MSO, ISI uniform in
  {cfg.isi_range_s[0]:g}-{cfg.isi_range_s[1]:g} s, first at {cfg.first_pulse_s:g} s. Markers are
  BrainVision `Stimulus,TMS` (MNE annotation `Stimulus/TMS`).
- Everything on: 1/f background with spatially smooth components, posterior alpha, a sensorimotor
  mu rhythm under C3 with known phase, blinks on Fp1/Fp2, 50 Hz line noise, pulse artifact
  (mV, ~6 ms), decay artifact (50-800 µV, tau 5-40 ms plus a slow 60-150 ms term on some
  channels), TMS-evoked muscle burst (~5-15 ms), the TEP, and MEPs on the EMG channel
  (mean peak-to-peak {ptp.mean():.0f} µV, range {ptp.min():.0f}-{ptp.max():.0f} µV).
- The TEP depends on the mu phase and power at each pulse (depth {cfg.phase_dependency:g} and
  {cfg.power_dependency:g}); per-pulse factors (`tep_gain_effective`) average {gains.mean():.3f}
  (SD {gains.std():.3f}).

Why 2 kHz: to stay under 20 MB. It resolves the TEP (N15 onward) and the MEP, but draws the
sub-millisecond pulse artifact with only a few samples; real TMS-EEG amplifiers sample at
5-20 kHz (`tmseeg simulate` streams at 5 kHz by default).

## True TEP peaks

Region of interest (coil site and nearest neighbours): {", ".join(truth.roi)}.
Values are the ROI average of the noise-free template at gain 1 (what an ideal average of
artifact-free trials would show, before filtering), and the component's nominal latency and
peak amplitude at its own topographic maximum.

| peak | ROI latency (ms) | ROI amplitude (µV) | nominal latency (ms) | topography peak (µV) |
|------|------------------|--------------------|----------------------|----------------------|
{rows}

Multiply the ROI amplitudes by the mean `tep_gain_effective` ({gains.mean():.3f}) for the expected
average over these {n_pulses} pulses.

## Files

| file | size |
|------|------|
{files}

SHA-256 of `{NAME}.eeg`: `{digest}`
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "sample_data"),
                        help="output folder (default: the repository's sample_data/)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw, truth = simulate_recording(CONFIG, DURATION_S)
    vhdr = _write_brainvision(raw, out)
    truth_json = truth.save(out / f"{NAME}_truth.json")
    n_pulses = sum(a["description"] == "TMS" for a in raw.annotations)
    files = [vhdr, vhdr.with_suffix(".vmrk"), vhdr.with_suffix(".eeg"), truth_json,
             truth_json.with_suffix(".npz")]
    sizes = {f.name: f.stat().st_size for f in files}
    digest = hashlib.sha256(vhdr.with_suffix(".eeg").read_bytes()).hexdigest()
    (out / "README.md").write_text(_readme(truth, n_pulses, sizes, digest), encoding="utf-8")
    total = sum(sizes.values())
    print(f"wrote {vhdr} ({n_pulses} pulses, {raw.n_times / raw.info['sfreq']:g} s, "
          f"{len(raw.ch_names)} ch) and the ground truth; {total / 1e6:.1f} MB in all")
    if total > 20e6:
        print("warning: sample data exceed 20 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
