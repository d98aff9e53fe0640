"""The naive TMS-EEG script an analyst writes with MNE-Python today.

read -> pick EEG -> events (annotations / stim channel / crude detection)
-> fix_stim_artifact(-2..10 ms, linear) -> 1-100 Hz Butterworth (IIR, zero
phase) -> notch -> average reference -> epochs -200..500 ms, baseline
-200..-5 ms, no rejection -> average -> ROI mean (uV).
"""
from __future__ import annotations

import numpy as np


def _find_pulses_from_data(raw, refractory_s: float = 1.0):
    """Crude detection: threshold on |diff| of the channel mean."""
    x = raw.get_data(picks="eeg").mean(axis=0)
    d = np.abs(np.diff(x))
    thr = max(0.02 * d.max(), 20.0 * np.median(d))
    cand = np.where(d > thr)[0]
    out, last = [], -np.inf
    ref = int(refractory_s * raw.info["sfreq"])
    for c in cand:
        if c - last >= ref:
            out.append(c + 1)
            last = c
    return np.array(out, int)


def run_baseline(data_path, meta: dict, roi: list):
    import mne
    raw = mne.io.read_raw(data_path, preload=True, verbose="error")
    # analysts usually know which leads are not EEG
    types = {n: t for n, t in zip(meta.get("ch_names", []),
                                  meta.get("ch_types", []))
             if t != "eeg" and n in raw.ch_names}
    if types:
        raw.set_channel_types(types, on_unit_change="ignore", verbose="error")

    mk = meta.get("markers", {}) or {}
    mode = mk.get("mode")
    if mode == "stim" or ("STI 014" in raw.ch_names and mode != "annot"):
        events = mne.find_events(raw, stim_channel="STI 014",
                                 shortest_event=1, verbose="error")
    elif mode == "annot" and len(raw.annotations):
        label = mk.get("label")
        ev, ev_id = mne.events_from_annotations(raw, verbose="error")
        code = ev_id.get(label)
        if code is None:   # fall back to any annotation
            code = list(ev_id.values())[0]
        events = ev[ev[:, 2] == code]
    else:
        s = _find_pulses_from_data(raw)
        events = np.c_[s + raw.first_samp, np.zeros(len(s), int),
                       np.ones(len(s), int)]
    events = events.astype(int)
    events[:, 2] = 1

    raw.pick("eeg")
    mne.preprocessing.fix_stim_artifact(raw, events=events, event_id=1,
                                        tmin=-0.002, tmax=0.010, mode="linear")
    raw.filter(1.0, 100.0, method="iir",
               iir_params=dict(order=4, ftype="butter"), phase="zero",
               verbose="error")
    lf = float(meta.get("line_freq", 50))
    freqs = np.arange(lf, min(raw.info["sfreq"] / 2.0, 100.0 + 1), lf)
    if len(freqs):
        raw.notch_filter(freqs, verbose="error")
    raw.set_eeg_reference("average", projection=False, verbose="error")
    epochs = mne.Epochs(raw, events, event_id=1, tmin=-0.2, tmax=0.5,
                        baseline=(-0.2, -0.005), reject=None, preload=True,
                        verbose="error")
    evoked = epochs.average()
    picks = [c for c in roi if c in evoked.ch_names]
    roi_tep = evoked.copy().pick(picks).data.mean(axis=0) * 1e6
    return evoked.times.copy(), roi_tep, len(epochs)
