"""Pulse detection, the cut window and bad channels on recordings made outside ``tmseeg.sim``.

The recordings come from ``benchmarks/outside/tmsgen.py``, written from the literature's
descriptions of TMS-EEG artifacts by someone who never read tmseeg (it shares no code with
``tmseeg.sim``): ringing, saturation, decays of every kind and none, muscle, paired pulses,
marker lag, blinks, a bad electrode. Short versions (6 pulses) are made in memory.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.outside import tmsgen  # noqa: E402
from tmseeg.pipeline.artifact import PulseInterpolation  # noqa: E402
from tmseeg.pipeline.base import Chain, concat_blocks  # noqa: E402
from tmseeg.pipeline.channels import BadChannelDetector  # noqa: E402
from tmseeg.pipeline.cutwindow import CutWindow  # noqa: E402
from tmseeg.pipeline.pulses import DataPulses, MarkerPulses  # noqa: E402
from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Block, Event, StreamMeta  # noqa: E402

FAMILIES = list(tmsgen.FAMILIES)


@lru_cache(maxsize=None)
def recording(family: str, n_pulses: int = 6, seed: int = 1):
    return tmsgen.make_recording(family, n_pulses=n_pulses, seed=seed)


def meta_of(rec) -> StreamMeta:
    return StreamMeta(tuple(rec.ch_names), float(rec.sfreq), tuple(rec.ch_types), name=rec.name)


def feed(stage, rec, events=(), seed=0, max_block_ms=80.0, data=None):
    """Run ``stage`` over the recording in random block sizes; return the joined output."""
    data = np.asarray(rec.data_uv if data is None else data, dtype=np.float64)
    meta = meta_of(rec)
    rng = np.random.default_rng(seed)
    max_block = max(2, int(max_block_ms * rec.sfreq / 1000))
    ordered = sorted(events, key=lambda e: e.sample)
    outs, start, n = [], 0, data.shape[1]
    while start < n:
        stop = min(n, start + int(rng.integers(1, max_block)))
        evs = [e for e in ordered if start <= e.sample < stop]
        outs.append(stage.process(Block(data[:, start:stop], start,
                                        np.arange(start, stop) / rec.sfreq, meta, evs)))
        start = stop
    rest = stage.flush()
    outs += list(rest) if isinstance(rest, list) or hasattr(rest, "__next__") else [rest]
    return concat_blocks([o for o in outs if o is not None and (o.n_samples or o.events)])


def pulse_samples(block) -> np.ndarray:
    return np.array(sorted(e.sample for e in block.events if e.kind == EVENT_PULSE))


# ------------------------------------------------------------------------ one pulse is one pulse
@pytest.mark.parametrize("family", FAMILIES)
def test_data_detection_finds_each_physical_pulse_once(family):
    """Every artifact shape of the benchmark (biphasic, monophasic, ringing, saturation, decays,
    muscle, paired pulses 3 and 12 ms apart at 20 kHz): each physical pulse is found exactly
    once, at its onset (before this, ringing was found as two pulses ~1 ms apart)."""
    rec = recording(family)
    truth = np.asarray(rec.pulse_samples)
    found = pulse_samples(feed(DataPulses(), rec))
    assert found.size == truth.size, (family, found - truth[0], truth - truth[0])
    assert np.abs(found - truth).max() <= max(1, round(0.2e-3 * rec.sfreq)), found - truth


def test_ringing_is_not_split_even_when_it_rings_long():
    """A pulse whose ringing is made 3x longer and stronger still counts once; a second pulse
    1.5 ms after a pulse, on top of its ringing, is still found."""
    rec = recording("ringing_bv")
    fs = rec.sfreq
    data = np.array(rec.data_uv, dtype=np.float64)
    eeg = [i for i, t in enumerate(rec.ch_types) if t == "eeg"]
    t = np.arange(int(0.015 * fs)) / fs
    ring = np.exp(-t / 0.004) * np.sin(2 * np.pi * 2300 * t + 0.7)
    for p in rec.pulse_samples:
        jump = data[eeg, p + 2] - data[eeg, p - 2]
        data[np.ix_(eeg, np.arange(p + 2, p + 2 + t.size))] += 0.6 * jump[:, None] * ring
    found = pulse_samples(feed(DataPulses(), rec, data=data))
    assert np.array_equal(found.size, len(rec.pulse_samples)), found
    # a real second pulse 1.5 ms after the first, on top of the first one's ringing (as the
    # family has it): the same artifact (pulse, ringing, decay) again
    data = np.array(rec.data_uv, dtype=np.float64)
    artifact = data - np.asarray(rec.clean_uv, dtype=np.float64)
    second = [int(p + round(1.5e-3 * fs)) for p in rec.pulse_samples]
    n = int(0.05 * fs)
    for p, s in zip(rec.pulse_samples, second):
        data[eeg, s - 2:s - 2 + n] += artifact[eeg, p - 2:p - 2 + n]
    found = pulse_samples(feed(DataPulses(), rec, data=data))
    expected = np.sort(np.concatenate([rec.pulse_samples, second]))
    assert found.size == expected.size and np.abs(found - expected).max() <= 1, found


# ------------------------------------------------------------------------------ the cut window
def marker_events(rec):
    return [Event(int(s), str(label), kind=EVENT_MARKER) for s, label in rec.markers]


def test_cut_window_measured_on_the_benchmark_is_tesa_window_when_the_artifact_is_short():
    """The outside families' pulse artifacts (ringing included) end within a few ms: the window
    stays at its minimum, -2..10 ms, and the summary says what was measured."""
    rec = recording("ringing_bv")
    cut = CutWindow()
    feed(Chain([MarkerPulses(), cut]), rec, marker_events(rec))
    assert cut.window_ms == (-2.0, 10.0)
    assert len(cut.extents) == 5
    ends = [e.end_ms for e in cut.extents]
    assert 1.0 < np.median(ends) < 8.0, ends
    assert "measured on 5 pulses" in cut.reason


@pytest.mark.parametrize("kind", ["ringing", "rail"])
def test_cut_window_covers_an_artifact_longer_than_10_ms(kind):
    """An amplifier that rings for ~14 ms, or sits at its rail near the coil for 13 ms: the
    window is widened to cover it (+1 ms, on a 0.5 ms grid), and capped at 20 ms."""
    rec = recording("biphasic_exp_bv")
    fs = rec.sfreq
    data = np.array(rec.data_uv, dtype=np.float64)
    eeg = np.array([i for i, t in enumerate(rec.ch_types) if t == "eeg"])
    n = int(0.014 * fs)
    t = np.arange(n) / fs
    for p in rec.pulse_samples:
        if kind == "ringing":  # 1.5 kHz, 300 µV on every channel until ~14 ms
            data[np.ix_(eeg, np.arange(p + 1, p + 1 + n))] += 300 * np.sin(
                2 * np.pi * 1500 * t)[None, :] * np.linspace(1, 0.9, eeg.size)[:, None]
        else:  # the coil's 6 nearest channels at the rail from 0 to 13 ms
            coil = [rec.ch_names.index(c) for c in rec.roi]
            data[np.ix_(coil, np.arange(p, p + int(0.013 * fs)))] = 16000.0
    cut = CutWindow()
    feed(Chain([MarkerPulses(), cut]), rec, marker_events(rec), data=data)
    lo, hi = cut.window_ms
    assert lo == -2.0
    if kind == "ringing":
        assert 14.5 <= hi <= 16.0, cut.reason
    else:
        assert 13.5 <= hi <= 15.0 and "saturation" in cut.reason, cut.reason
    # the cap: an artifact of 40 ms is cut at 20 ms and the reason says so
    cut = CutWindow(max_window_ms=(-10.0, 12.0))
    feed(Chain([MarkerPulses(), cut]), rec, marker_events(rec), data=data)
    assert cut.window_ms[1] == 12.0 and "LONGER than the cap" in cut.reason


def test_fixed_window_is_never_measured():
    rec = recording("ringing_bv")
    cut = CutWindow(fixed_ms=(-3.0, 15.0))
    out = feed(Chain([MarkerPulses(), cut]), rec, marker_events(rec))
    assert cut.window_ms == (-3.0, 15.0) and not cut.extents and "fixed" in cut.reason
    assert out.n_samples == rec.data_uv.shape[1]


def test_marker_lag_is_corrected_to_the_artifact_onset():
    """fastslow_set's markers come 1.5 ms (+ jitter) after the pulse: the pulses go on to the
    artifact onset. paired_bv's markers sit on the test pulse, 3 or 12 ms after a conditioning
    pulse: nothing is moved (the nearest onset is the marker's own)."""
    rec = recording("fastslow_set")
    cut = CutWindow()
    out = feed(Chain([MarkerPulses(), cut]), rec, marker_events(rec))
    moved = pulse_samples(out)
    truth = np.asarray(rec.pulse_samples)
    lag = np.array([s for s, _ in rec.markers]) - truth
    assert lag.min() >= 10  # the markers really lag (>= 1 ms at 10 kHz)
    assert np.abs(moved - truth).max() <= 5, moved - truth  # within the 0.3 ms jitter
    assert 1.2 < cut.lag_ms < 2.0 and cut.summary()["marker_shift_samples"] < -10

    rec = recording("paired_bv")
    cut = CutWindow()
    out = feed(Chain([MarkerPulses(r"S\s*2"), cut]), rec, marker_events(rec))
    assert cut.lag_samples == 0
    assert np.array_equal(pulse_samples(out), np.array([s for s, _ in rec.markers]))


def test_cut_window_chain_live_equals_offline():
    """Decided from the first pulses and then fixed: any block sizes give the same samples."""
    rec = recording("saturation_fif")
    outs = []
    for seed, max_ms in ((1, 3.0), (2, 80.0), (3, 1000.0)):
        cut = CutWindow()
        chain = Chain([MarkerPulses(), cut, PulseInterpolation(window_from=cut)])
        outs.append(feed(chain, rec, marker_events(rec), seed=seed, max_block_ms=max_ms))
    for o in outs[1:]:
        assert o.first_sample == outs[0].first_sample
        np.testing.assert_array_equal(o.data, outs[0].data)
        assert [e.sample for e in o.events] == [e.sample for e in outs[0].events]


# ----------------------------------------------------------------------------- bad channels
@pytest.mark.parametrize("family", ["nodecay_edf", "life_nomarker_bv", "muscle_edf",
                                    "badchan_bv", "variable_decay_fif", "ringing_bv"])
def test_blinks_and_rhythms_are_not_bad_channels_an_electrode_fault_is(family):
    """Recordings with blinks, saccades, alpha and mu rhythms: no channel is marked bad; the
    faulty electrode of badchan_bv / variable_decay_fif is."""
    rec = recording(family, n_pulses=10)
    det = BadChannelDetector()
    events = [Event(int(s), "TMS", kind=EVENT_PULSE) for s in rec.pulse_samples]
    feed(det, rec, events)
    assert set(det.bads) == set(rec.bad_channels), det.bads


# ---------------------------------------------------------------------- first, do no harm
def as_tmseeg_recording(rec):
    from tmseeg.stream.io import Recording

    return Recording(data_uv=np.asarray(rec.data_uv, dtype=np.float64), meta=meta_of(rec),
                     events=marker_events(rec))


@pytest.mark.parametrize("family", ["nodecay_edf", "muscle_edf"])
def test_decay_removal_leaves_recordings_without_a_decay_alone(family):
    """No decay artifact in the recording (one with none at all, one with a strong TMS-evoked
    muscle burst): the default decay stage changes the early ROI TEP by less than 5 % of its
    RMS and keeps r >= 0.99 with what went in, measured from the same run."""
    from tmseeg.pipeline.config import load_config
    from tmseeg.report.analyze import decay_effect, run_session

    rec = recording(family, n_pulses=40, seed=2)
    session = run_session(as_tmseeg_recording(rec), load_config(), roi=list(rec.roi),
                          keep_epochs=False)
    effect = decay_effect(session)
    assert effect["pulses_averaged"] >= 15  # muscle bursts reject some
    assert effect["early_removed_rel"] < 0.05, effect
    assert effect["early_r_with_without"] >= 0.99, effect


def test_decay_is_removed_where_there_is_one():
    """And where there is a decay (fast + slow exponentials on many channels, 10 kHz), the
    stage acts on every pulse and the early TEP comes out close to the truth."""
    from benchmarks.outside import score as scoring
    from tmseeg.pipeline.config import load_config
    from tmseeg.report.analyze import decay_effect, run_session

    rec = recording("fastslow_set", n_pulses=30, seed=2)
    session = run_session(as_tmseeg_recording(rec), load_config(), roi=list(rec.roi),
                          keep_epochs=False)
    effect = decay_effect(session)
    assert effect["pulses_corrected"] == effect["pulses_averaged"] >= 20
    assert effect["early_removed_rel"] > 0.5  # the decay dwarfs the TEP here
    truth = {"clean_evoked_uv": rec.clean_evoked_uv, "times_s": rec.evoked_times_s,
             "ch_names": list(rec.ch_names), "ch_types": list(rec.ch_types),
             "bad_channels": list(rec.bad_channels)}
    got = scoring.score_tep(session.tep.times_ms / 1000.0, session.tep.roi_average_uv, truth,
                            list(rec.roi))
    assert got["r_early"] > 0.95, got



def test_cut_window_and_decay_configuration():
    """``window_ms = "auto"`` (default) measures the window; a list forces it; anything else is
    refused with the key named. The decay method must be one that exists."""
    from tmseeg.pipeline.config import ConfigError, fixed_cut_window, load_config
    from tmseeg.session import build_stages

    meta = meta_of(recording("ringing_bv"))
    cfg = load_config()
    assert cfg["interpolation"]["window_ms"] == "auto" and fixed_cut_window(cfg) is None
    assert build_stages(cfg, meta).cut_window.window_ms is None  # measured on the data
    fixed = load_config(overrides={"interpolation": {"window_ms": [-3, 15]}})
    assert fixed_cut_window(fixed) == (-3.0, 15.0)
    assert build_stages(fixed, meta).cut_window.window_ms == (-3.0, 15.0)
    for bad in ("long", [10, 2], [1, 2, 3]):
        with pytest.raises(ConfigError, match="interpolation.window_ms"):
            load_config(overrides={"interpolation": {"window_ms": bad}})
    with pytest.raises(ConfigError, match="decay.method"):
        load_config(overrides={"decay": {"method": "spatial"}})
