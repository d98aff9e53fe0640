"""The TMS-EEG analysis an analyst writes with MNE today, as one script on one file: the side
tmseeg is timed against in ``bench_analyze.py --processes`` (issue #16).

    python benchmarks/analyst_mne.py FILE --roi C3,FC1,FC5,CP1,CP5 [--out DIR]

read -> pulses from the annotations -> ``fix_stim_artifact`` (linear, -2..10 ms) -> 1-100 Hz
band-pass and 50/100 Hz notches -> average reference -> epochs (-0.5..0.5 s, baseline
-0.5..-0.01 s, 150 uV peak-to-peak rejection) -> average, GMFP, the TEP peaks of the ROI
(N15 .. P180) -> Morlet ERSP and ITC over the ROI (4-45 Hz) -> wPLI between all channels
(alpha and beta, 20-500 ms, epochs resampled to 250 Hz first, as mne-connectivity's examples
do). Writes the evoked and a JSON of the peaks; prints how many epochs were kept.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import mne
import numpy as np

PEAKS = {"N15": (0.010, 0.022, -1), "P30": (0.022, 0.040, 1), "N45": (0.038, 0.055, -1),
         "P60": (0.050, 0.075, 1), "N100": (0.080, 0.140, -1), "P180": (0.150, 0.250, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--roi", required=True)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--reject-uv", type=float, default=150.0, help="0: keep every epoch")
    a = ap.parse_args(argv)
    roi = a.roi.split(",")

    raw = mne.io.read_raw(a.file, preload=True, verbose="error")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    tms = {k: v for k, v in event_id.items() if "TMS" in k or "S  1" in k} or event_id
    events = events[np.isin(events[:, 2], list(tms.values()))]
    mne.preprocessing.fix_stim_artifact(raw, events=events, tmin=-0.002, tmax=0.010,
                                        mode="linear", picks="eeg")
    raw.filter(1.0, 100.0, picks="eeg", verbose="error")
    raw.notch_filter([50.0, 100.0], picks="eeg", verbose="error")
    raw.set_eeg_reference("average", verbose="error")
    epochs = mne.Epochs(raw, events, tmin=-0.5, tmax=0.5, baseline=(-0.5, -0.01), picks="eeg",
                        reject=dict(eeg=a.reject_uv * 1e-6) if a.reject_uv else None, preload=True, verbose="error")
    evoked = epochs.average()
    gmfp = evoked.data.std(axis=0)
    y = evoked.copy().pick(roi).data.mean(axis=0)
    peaks = {}
    for name, (t0, t1, sign) in PEAKS.items():
        m = (evoked.times >= t0) & (evoked.times <= t1)
        i = np.argmax(sign * y[m])
        peaks[name] = {"latency_ms": 1e3 * float(evoked.times[m][i]),
                       "amplitude_uv": 1e6 * float(y[m][i])}
    freqs = np.arange(4.0, 46.0, 1.0)
    power, itc = epochs.copy().pick(roi).compute_tfr(
        "morlet", freqs, n_cycles=freqs / 2.0, decim=20, average=True, return_itc=True,
        verbose="error")
    power.apply_baseline((-0.4, -0.1), mode="logratio", verbose="error")
    from mne_connectivity import spectral_connectivity_epochs

    low = epochs.copy().resample(250.0, verbose="error")
    con = spectral_connectivity_epochs(low, method="wpli", mode="multitaper",
                                       fmin=(8.0, 13.0), fmax=(13.0, 30.0), faverage=True,
                                       tmin=0.02, tmax=0.5, verbose="error")
    wpli = con.get_data(output="dense")
    result = {"n_epochs": len(epochs), "n_pulses": int(len(events)), "peaks": peaks,
              "gmfp_max_uv": 1e6 * float(gmfp.max()),
              "ersp_shape": list(power.data.shape), "itc_max": float(itc.data.max()),
              "wpli_max": float(np.nanmax(wpli))}
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        evoked.save(a.out / "analyst-ave.fif", overwrite=True, verbose="error")
        (a.out / "analyst.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("n_epochs", "n_pulses")}))


if __name__ == "__main__":
    main()
