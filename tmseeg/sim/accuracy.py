"""What the pipeline should recover: the simulator's true TEP seen through the pipeline's own
by-design linear steps, and per-peak errors of a recovered TEP against it.

Used by the accuracy tests (``tests/report/test_analyze.py``) and ``benchmarks/bench_tep_accuracy.py``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tmseeg.config import Config, planning_cut_window

__all__ = ["simulated_recording", "true_roi_tep", "peak_errors"]


def simulated_recording(config, seconds: float, label: str | None = "TMS"):
    """A simulated session as :func:`tmseeg.io.files.read_recording` would give it.

    Parameters
    ----------
    config : tmseeg.sim.config.SimConfig
    seconds : float
    label : str or None
        Marker label put at every true pulse (None: no markers).

    Returns
    -------
    recording : tmseeg.io.files.Recording
        Data in µV, the simulator's channel names and types, one marker per pulse.
    truth : tmseeg.sim.truth.GroundTruth
    """
    from tmseeg.sim.model import simulate_recording
    from tmseeg.stream.block import EVENT_MARKER, Event, StreamMeta
    from tmseeg.io.files import Recording

    raw, truth = simulate_recording(config, seconds)
    meta = StreamMeta(tuple(raw.ch_names), raw.info["sfreq"], tuple(raw.get_channel_types()),
                      name="sim")
    events = ([] if label is None else
              [Event(sample=p.sample, label=label, kind=EVENT_MARKER) for p in truth.pulses])
    return Recording(data_uv=raw.get_data() * 1e6, meta=meta, events=events), truth


def true_roi_tep(truth, eeg_names: Sequence[str], roi: Sequence[str], times_ms: np.ndarray,
                 cfg: Config | None = None, band_pass: bool = True) -> np.ndarray:
    """The noise-free ROI TEP as the pipeline must see it.

    The truth template, average-referenced, ROI-averaged and scaled by the mean per-pulse gain,
    then put through the two linear operations the pipeline applies by design: the pulse
    window is interpolated (what lies inside it is gone for any method) and the epoch is
    band-passed zero-phase. Neither shifts a latency; the band-pass does lower sharp peaks
    (``band_pass=False`` gives the unfiltered truth an outside check would use).

    Parameters
    ----------
    truth : tmseeg.sim.truth.GroundTruth
    eeg_names : sequence of str
        The EEG channels of the recovered TEP.
    roi : sequence of str
        Its ROI.
    times_ms : ndarray
        Its time axis.
    cfg : dict, optional
        Pipeline configuration (default: the defaults).
    band_pass : bool
        Put the truth through the epoch band-pass too (False: interpolation only).

    Returns
    -------
    ndarray, shape (n_times,)
    """
    from tmseeg.pipeline.interpolation import interpolate_pulses
    from tmseeg.config import load_config
    from tmseeg.session import epoch_filter

    cfg = cfg or load_config()
    tpl = truth.tep_template_uv - truth.tep_template_uv.mean(axis=0, keepdims=True)
    names = [n.lower() for n in eeg_names]
    idx = [names.index(r.lower()) for r in roi]
    gain = np.mean([p.tep_gain_effective for p in truth.pulses])
    sf = 1000.0 / np.median(np.diff(times_ms))
    pad = int(round(cfg.filter.epoch_pad_ms * sf / 1000))
    after = int(round(cfg.filter.epoch_pad_after_ms * sf / 1000))
    t_pad = np.arange(-pad, len(times_ms) + after) * (1000.0 / sf) + times_ms[0]
    roi_true = np.interp(t_pad, truth.tep_times_ms, tpl[idx].mean(axis=0) * gain,
                         left=0.0, right=0.0)[None]
    i = cfg.interpolation
    pulse = int(np.argmin(np.abs(t_pad)))
    roi_true = interpolate_pulses(roi_true, [pulse], sf, planning_cut_window(cfg), i.method,
                                  i.fit_ms)
    if band_pass:
        roi_true = epoch_filter(cfg)(roi_true, sf)
    return roi_true[0, pad:pad + len(times_ms)]


def peak_errors(tep, truth, cfg: Config | None = None, band_pass: bool = True) -> dict[str, dict]:
    """Each peak of a :class:`~tmseeg.metrics.tep.RunningTEP` against the truth
    (``band_pass``: as in :func:`true_roi_tep`).

    Returns
    -------
    dict
        Peak name -> ``latency_ms``, ``true_latency_ms``, ``amplitude_uv``,
        ``true_amplitude_uv``, ``error_pct`` (relative amplitude error) and ``found``.
    """
    from tmseeg.metrics.tep import find_peak

    ref = true_roi_tep(truth, tep.ch_names, tep.roi, tep.times_ms, cfg, band_pass)
    got = tep.peaks()
    out = {}
    for name, win in tep.peak_windows_ms.items():
        want = find_peak(ref, tep.times_ms, win, name[0])
        amp, amp_true = got[name]["amplitude_uv"], want["amplitude_uv"]
        out[name] = {"latency_ms": got[name]["latency_ms"],
                     "true_latency_ms": want["latency_ms"],
                     "amplitude_uv": amp, "true_amplitude_uv": amp_true,
                     "error_pct": 100.0 * (amp / amp_true - 1.0), "found": got[name]["found"]}
    return out
