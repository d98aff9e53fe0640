"""Pulse detection: markers, trigger channel, and the pulse artifact in the data."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tmseeg.pipeline.base import Chain, concat_blocks
from tmseeg.pipeline.pulses import (
    DEFAULT_PULSE_PATTERN,
    DataPulses,
    MarkerPulses,
    PulsePlausibility,
    TriggerChannelPulses,
)
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import EVENT_MARKER, EVENT_PULSE, Block, Event, StreamMeta

SFREQ = 5000.0


def run_blocks(stage, data, meta, events=(), rng=None, max_block=400):
    """Feed ``data`` in random block sizes; return the concatenated output block."""
    rng = rng or np.random.default_rng(0)
    ordered = sorted(events, key=lambda e: e.sample)
    outs, start, n = [], 0, data.shape[1]
    while start < n:
        stop = min(n, start + int(rng.integers(1, max_block + 1)))
        evs = [e for e in ordered if start <= e.sample < stop]
        blk = Block(np.ascontiguousarray(data[:, start:stop]), start,
                    np.arange(start, stop) / meta.sfreq, meta, evs)
        outs.append(stage.process(blk))
        start = stop
    rest = stage.flush()
    if rest is not None:
        outs.append(rest)
    outs = [o for o in outs if o.n_samples or o.events]
    return concat_blocks(outs)


def pulse_samples(block):
    return sorted(e.sample for e in block.events if e.kind == EVENT_PULSE)


def simulate(schedule, seconds, seed=1, **kw):
    sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=SFREQ, seed=seed, schedule=schedule,
                                    **kw))
    data, events = sim.generate(int(seconds * SFREQ))
    return sim, data, events


# --------------------------------------------------------------------------- markers
@pytest.mark.parametrize("label", ["TMS", "tms", "TMS pulse", "tms_pulse", "pulse",
                                   "Stimulus/S  1", "S  1", "S1"])
def test_default_pattern_matches_common_pulse_labels(label):
    assert MarkerPulses().matches(label)


@pytest.mark.parametrize("label", ["pre", "post", "New Segment/", "boundary", "Comment/rest",
                                   "Stimulus/S 12", "bad_segment"])
def test_default_pattern_ignores_other_markers(label):
    assert not MarkerPulses().matches(label)


def test_marker_pulses_convert_and_shift_keeping_other_events():
    meta = StreamMeta([f"E{i}" for i in range(3)], SFREQ)
    evs = [Event(100, "pre"), Event(1000, "R128", time_s=0.2), Event(2000, "Stimulus/S  1"),
           Event(3000, "gap", kind="gap", duration=5)]
    blk = Block(np.zeros((3, 4000)), 0, np.arange(4000) / SFREQ, meta, list(evs))
    out = MarkerPulses(pattern=r"R128|S\s*1$", offset_ms=-3.0).process(blk)
    kinds = {(e.sample, e.kind) for e in out.events}
    assert kinds == {(100, EVENT_MARKER), (985, EVENT_PULSE), (1985, EVENT_PULSE),
                     (3000, "gap")}
    p = [e for e in out.events if e.kind == EVENT_PULSE][0]
    assert p.extra["marker_sample"] == 1000 and p.label == "R128"
    assert p.time_s == pytest.approx(0.197)
    assert out.data is blk.data  # no copy of the samples
    with pytest.raises(ValueError, match="not a valid regex"):
        MarkerPulses(pattern="(")
    assert DEFAULT_PULSE_PATTERN and re.compile(DEFAULT_PULSE_PATTERN)


# --------------------------------------------------------------------------- trigger channel
def test_trigger_channel_edges_across_random_blocks():
    n = 30000
    meta = StreamMeta(["C3", "C4", "STI"], SFREQ, ["eeg", "eeg", "stim"])
    data = np.random.default_rng(1).standard_normal((3, n))
    data[2] = 0.0
    onsets = [1000, 1100, 5000, 5012, 20000, 29999]  # 5012: bounce inside refractory (2.4 ms)
    for s in onsets:
        data[2, s:s + 5] = 1.0  # 1 ms TTL
    for seed in range(4):
        out = run_blocks(TriggerChannelPulses("STI", refractory_ms=5.0), data, meta,
                         rng=np.random.default_rng(seed), max_block=50)
        assert pulse_samples(out) == [1000, 1100, 5000, 20000, 29999]
    out = run_blocks(TriggerChannelPulses("sti", edge="falling", refractory_ms=5.0), data, meta)
    assert pulse_samples(out) == [1005, 1105, 5005, 20005]  # 5017 within refractory
    # analog trigger in µV with a threshold
    analog = data.copy()
    analog[2] = 20.0 * np.random.default_rng(2).standard_normal(n) + 5e6 * (data[2] > 0)
    out = run_blocks(TriggerChannelPulses("STI", threshold=2.5e6, refractory_ms=5.0), analog,
                     meta)
    assert pulse_samples(out) == [1000, 1100, 5000, 20000, 29999]
    with pytest.raises(KeyError, match="not in stream"):
        TriggerChannelPulses("TRIG").process(Block(data[:, :10], 0, np.arange(10) / SFREQ,
                                                   meta))


def test_trigger_pulse_replaces_lagging_marker_pulse():
    n = 20000
    meta = StreamMeta(["C3", "STI"], SFREQ, ["eeg", "stim"])
    data = np.zeros((2, n))
    data[1, 5000:5005] = 1
    data[1, 15000:15005] = 1
    # marker pulses 2 ms late; one is in the same block, one arrives a block later
    events = [Event(5010, "TMS", kind=EVENT_PULSE), Event(15010, "TMS", kind=EVENT_PULSE)]
    blocks = [(0, 5008), (5008, 15005), (15005, n)]
    stage = TriggerChannelPulses("STI")
    outs = []
    for a, b in blocks:
        evs = [e for e in events if a <= e.sample < b]
        outs.append(stage.process(Block(data[:, a:b], a, np.arange(a, b) / SFREQ, meta, evs)))
    out = concat_blocks(outs)
    assert pulse_samples(out) == [5000, 15000]
    dup = sorted((e.sample, e.extra["duplicate_of"]) for e in out.events
                 if e.kind == EVENT_MARKER)
    assert dup == [(5010, 5000), (15010, 15000)]


# --------------------------------------------------------------------------- data
@pytest.mark.parametrize("schedule,seconds,kw", [
    ("train-1hz", 6, {}),
    ("single", 12, {}),
    ("train-10hz", 5.5, {}),
    ("itbs", 3.2, {}),
    ("paired", 12, {"ipi_ms": 3.0}),
    ("paired", 12, {"ipi_ms": 1.2}),
])
def test_data_pulses_find_every_simulated_pulse_exactly(schedule, seconds, kw):
    sim, data, _ = simulate(schedule, seconds, **kw)
    truth = [p.sample for p in sim.truth.pulses]
    assert len(truth) >= 5
    stage = DataPulses()
    out = run_blocks(stage, data, sim.meta, rng=np.random.default_rng(len(truth)))
    found = pulse_samples(out)
    assert len(found) == len(truth), (found, truth)  # every pulse, no false positive
    assert np.max(np.abs(np.array(found) - np.array(truth))) <= 1  # onset within 1 sample
    assert out.n_samples == data.shape[1] and out.first_sample == 0
    assert np.array_equal(out.data, data)  # detection never changes the samples
    assert stage.n_detected == len(truth)


def test_data_pulses_no_false_positives_on_blinks_line_noise_pops():
    sim, data, _ = simulate("external", 20, seed=4, blink_rate_hz=2.0, line_noise_hz=60.0,
                            noisy_channels=("Fp1", "O2"), noisy_channel_uv=80.0)
    data = data.copy()
    # an electrode pop: a 500 µV step on one channel
    data[5, 40000:] += 500.0
    # a 10 Hz 100 µV oscillation burst on a quarter of the channels (alpha-like, steep-ish)
    t = np.arange(5000) / SFREQ
    data[:8, 60000:65000] += 100 * np.sin(2 * np.pi * 10 * t)
    assert np.abs(np.diff(data[0])).max() > 0  # sanity
    out = run_blocks(DataPulses(), data, sim.meta)
    assert pulse_samples(out) == []


def test_data_pulses_saturation_and_split_jump():
    sim, data, _ = simulate("train-1hz", 5, seed=2)
    truth = [p.sample for p in sim.truth.pulses]
    data = data.copy()
    rail = 800.0
    for s in truth:
        # amplifier stuck at the rails for 6 ms, then an abrupt return (opposite jump)
        seg = data[:, s:s + 30]
        data[:, s:s + 30] = np.where(np.abs(seg[:, :1]) > rail, np.sign(seg[:, :1]) * rail, seg)
        # the pulse falls between samples: a third of the first jump lands one sample early
        data[:, s - 1] += (data[:, s] - data[:, s - 1]) / 3
    out = run_blocks(DataPulses(), data, sim.meta)
    found = np.array(pulse_samples(out))
    assert found.size == len(truth)
    assert np.all(np.abs(found - np.array(truth)) <= 1)


def test_data_pulses_fixed_threshold_and_min_channels():
    sim, data, _ = simulate("train-1hz", 4, seed=3)
    truth = [p.sample for p in sim.truth.pulses]
    out = run_blocks(DataPulses(threshold_uv_per_ms=2000.0, min_channels=3), data, sim.meta)
    assert pulse_samples(out) == truth
    # an absurd threshold finds nothing; min_channels larger than the channel count is refused
    out = run_blocks(DataPulses(threshold_uv_per_ms=1e9), data, sim.meta)
    assert pulse_samples(out) == []
    with pytest.raises(ValueError, match="min_channels"):
        DataPulses(channels=["C3", "C4"], min_channels=3).process(
            Block(data[:, :10], 0, np.arange(10) / SFREQ, sim.meta))


def test_jump_kernel_matches_the_numpy_definition_at_any_block_size():
    """The compiled per-sample statistics (channels over threshold, jump size over the voting
    channels) equal their numpy definition, NaN samples and dead channels included, and do
    not depend on where the blocks split the data (live 1-ms blocks against a file's)."""
    from tmseeg._ext.jumps import jump_stats

    rng = np.random.default_rng(3)
    x = rng.normal(0, 20, (12, 900))
    x[:, 300:305] += rng.normal(0, 1, 12)[:, None] * 3000  # a pulse
    x[2, 100:140] = np.nan
    rows = np.array([0, 2, 3, 5, 7, 8, 11], dtype=np.intp)
    thr = rng.uniform(20, 60, rows.size)
    thr[4] = np.inf  # a dead channel: no vote
    scale = 5.0
    xr = x[rows]
    d = np.diff(np.concatenate([xr[:, :1], xr], axis=1), axis=1) * scale
    with np.errstate(invalid="ignore"):
        want_count = (np.abs(d) > thr[:, None]).sum(axis=0)
    want_norm = np.sqrt(np.nansum(d[np.isfinite(thr)] ** 2, axis=0))
    for step in (1, 7, 900):
        count, norm = [], []
        prev = xr[:, 0].copy()
        for a in range(0, x.shape[1], step):
            part = x[:, a:a + step]  # a strided view, as a reader's block can be
            c, n = np.empty(part.shape[1], np.int32), np.empty(part.shape[1])
            jump_stats(part, rows, prev, scale, thr, c, n)
            prev = part[rows, -1].copy()
            count.append(c)
            norm.append(n)
        np.testing.assert_array_equal(np.concatenate(count), want_count)
        np.testing.assert_allclose(np.concatenate(norm), want_norm, rtol=1e-12)
    assert want_count[300] == rows.size - 1 and want_norm[300] > 1000
    with pytest.raises(ValueError, match="one value per row"):
        jump_stats(x, rows, prev[:3], scale, thr, count[0], norm[0])


def test_marker_plus_data_keeps_one_pulse_at_the_data_onset():
    sim, data, events = simulate("single", 12, seed=5)
    truth = [p.sample for p in sim.truth.pulses]
    lag = 15  # markers 3 ms late, as plain markers (an LSL marker stream)
    markers = [Event(e.sample + lag, "TMS", kind=EVENT_MARKER) for e in events
               if e.kind == EVENT_PULSE]
    chain = Chain([MarkerPulses(), DataPulses(merge_ms=5.0)])
    rng = np.random.default_rng(9)
    outs, start, n = [], 0, data.shape[1]
    ordered = sorted(markers, key=lambda e: e.sample)
    while start < n:
        stop = min(n, start + int(rng.integers(1, 300)))
        evs = [e for e in ordered if start <= e.sample < stop]
        outs.append(chain.process(Block(data[:, start:stop], start,
                                        np.arange(start, stop) / SFREQ, sim.meta, evs)))
        start = stop
    outs += list(chain.flush())
    out = concat_blocks([o for o in outs if o.n_samples or o.events])
    assert pulse_samples(out) == truth
    demoted = sorted(e.sample for e in out.events if e.extra.get("duplicate_of") is not None)
    assert demoted == [s + lag for s in truth]


def test_data_pulses_during_calibration_and_at_20khz_through_the_chain():
    """A pulse inside the 500 ms calibration stretch is still found (the stretch is held back
    and released with its pulses); at 20 kHz / 64 ch, iTBS onsets stay within one sample, and
    the detection -> interpolation -> decay chain accepts the held-back blocks."""
    from tmseeg.pipeline.interpolation import PulseInterpolation
    from tmseeg.pipeline.decay import DecayRemoval

    sim, data, _ = simulate("single", 0.9, seed=3, first_pulse_s=0.2)
    out = run_blocks(DataPulses(), data, sim.meta, max_block=20)
    assert pulse_samples(out) == [p.sample for p in sim.truth.pulses] == [1000]
    fs = 20000.0
    sim = TMSEEGSimulator(SimConfig(n_channels=64, sfreq=fs, seed=3, schedule="itbs"))
    data, _ = sim.generate(int(1.5 * fs))
    chain = Chain([DataPulses(), PulseInterpolation(), DecayRemoval(fit_window_ms=(10, 150))])
    outs = []
    for start in range(0, data.shape[1], 20):
        outs.append(chain.process(Block(data[:, start:start + 20], start,
                                        np.arange(start, start + 20) / fs, sim.meta)))
    outs += list(chain.flush())
    out = concat_blocks([o for o in outs if o.n_samples or o.events])
    truth = np.array([p.sample for p in sim.truth.pulses])
    found = np.array(pulse_samples(out))
    assert truth.size == 9 and found.size == truth.size
    assert np.abs(found - truth).max() <= 1
    assert out.n_samples == data.shape[1]
    eeg = sim.meta.picks("eeg")
    assert np.abs(out.data[eeg]).max() < 0.2 * np.abs(data[eeg]).max()  # artifacts cut


def test_unmatched_markers_warn_once_naming_the_label(caplog):
    meta = StreamMeta(["C3", "C4"], 1000.0, ["eeg", "eeg"])
    stage = MarkerPulses()
    blocks = [Block(np.zeros((2, 100)), 100 * i, np.arange(100) / 1000.0, meta,
                    events=[Event(sample=100 * i + 5, label="R128", kind=EVENT_MARKER)])
              for i in range(5)]
    with caplog.at_level("WARNING", logger="tmseeg.pipeline.pulses"):
        out = [stage.process(b) for b in blocks]
    warnings = [r.getMessage() for r in caplog.records if "none is a TMS pulse" in r.getMessage()]
    assert len(warnings) == 1 and "'R128' x3" in warnings[0] and "'^R128$'" in warnings[0]
    assert not any(e.kind == EVENT_PULSE for b in out for e in b.events)
    named = MarkerPulses(pattern="^R128$")
    assert all(e.kind == EVENT_PULSE for b in blocks for e in named.process(b).events)


def test_numeric_marker_stream_gives_code_labels(uid):
    """Trigger boxes and stimulator bridges often send int32 markers: accepted, labelled by
    their code, and a pattern such as ^1$ makes them pulses."""
    import time

    import pylsl

    from tmseeg.stream.inlet import LSLSource, marker_label

    assert marker_label(1) == "1" and marker_label(2.0) == "2" and marker_label("TMS") == "TMS"
    sfreq, n_ch = 1000.0, 4
    info = pylsl.StreamInfo(f"num-{uid}", "EEG", n_ch, sfreq, "float32", f"num-src-{uid}")
    out = pylsl.StreamOutlet(info)
    mout = pylsl.StreamOutlet(pylsl.StreamInfo(f"num-{uid}-markers", "Markers", 1, 0, "int32",
                                               f"num-m-{uid}"))
    src = LSLSource.resolve(name=f"num-{uid}", timeout_s=15, marker_timeout_s=10)
    assert src.markers is not None
    # the samples go out in the first ~20 ms: only once both inlets are connected (a clean
    # clone once lost them all to a connection still being set up)
    assert out.wait_for_consumers(5.0) and mout.wait_for_consumers(5.0)
    stage = MarkerPulses(pattern="^1$")
    t0 = pylsl.local_clock()
    labels, pulses = [], []
    deadline = time.monotonic() + 5
    pushed = 0
    while time.monotonic() < deadline and not pulses:
        if pushed < 1500:
            out.push_chunk(np.zeros((100, n_ch), np.float32).tolist(), t0 + (pushed + 99) / sfreq)
            pushed += 100
            if pushed == 500:
                mout.push_sample([1], t0 + 250 / sfreq)
        block = src.read()
        if block is None:
            time.sleep(0.01)
            continue
        labels += [e.label for e in block.events if e.kind == EVENT_MARKER]
        pulses += [e for e in stage.process(block).events if e.kind == EVENT_PULSE]
    src.close()
    assert len(pulses) == 1 and abs(pulses[0].sample - 250) <= 2, (labels, pulses)


# --------------------------------------------------------------------------- plausibility
def _pulse_events(samples, label="TMS"):
    return [Event(int(s), label, kind=EVENT_PULSE) for s in samples]


def test_plausibility_keeps_every_real_protocol():
    """Pairs 1 and 3 ms apart (1 ms is one sample at 1 kHz), quadripulse 1.5 ms, theta bursts
    (50 Hz), a 2-s 100 Hz train: nothing refused, nothing said."""
    for fs in (1000.0, 5000.0):
        ms = fs / 1000.0
        pulses = [1000, 1000 + round(1 * ms), 5000, 5000 + round(3 * ms)]
        pulses += [9000 + round(k * 1.5 * ms) for k in range(4)]
        pulses += [13000 + round((200 * b + 20 * k) * ms) for b in range(10) for k in range(3)]
        start = pulses[-1] + round(500 * ms)
        pulses += [start + round(10 * k * ms) for k in range(200)]
        n = pulses[-1] + 2000
        meta = StreamMeta(["C3", "C4"], fs, ["eeg", "eeg"])
        stage = PulsePlausibility()
        out = run_blocks(stage, np.zeros((2, n)), meta, _pulse_events(pulses))
        assert pulse_samples(out) == sorted(pulses), fs
        assert stage.n_refused == 0 and stage.messages() == []


def test_plausibility_refuses_a_flood_with_one_warning_per_second(caplog):
    """A marker loop at ~7.6 kHz for 2.5 s among real pulses 1 s apart: the flood is refused
    (its first marker, indistinguishable from a pulse, excepted), the real pulses before and
    after it are kept, and the log says so once per second of flood, with the count."""
    fs = 5000.0
    meta = StreamMeta(["C3", "C4"], fs, ["eeg", "eeg"])
    real = list(range(2500, 50000, 5000))
    flood = sorted({20200 + int(k * fs / 7600) for k in range(int(7600 * 2.5))})
    stage = PulsePlausibility()
    with caplog.at_level("WARNING", logger="tmseeg.pipeline.pulses"):
        out = run_blocks(stage, np.zeros((2, 50000)), meta,
                         _pulse_events(sorted(real + flood)))
        stage.flush()
    kept = pulse_samples(out)
    # inside the flood, or within a second after it (the flood fills the rate window)
    lost = [22500, 27500, 32500, 37500]
    assert kept == sorted(set(real) - set(lost) | {flood[0]})
    said = [r.getMessage() for r in caplog.records if "pulse plausibility" in r.getMessage()]
    assert len(said) == 4  # seconds 4-5, 5-6, 6-7 (flood) and 7-8 (37500) of the stream
    assert sum(r["n_refused"] for r in stage.refusals) == stage.n_refused
    assert stage.n_refused == len(flood) - 1 + len(lost)
    assert "refused 4800 pulse event(s) at 4-5 s" in said[0]
    assert "refused 1 pulse event(s) at 7-8 s (1 more than 100 pulses in a second" in said[3]
    assert "closer than 1 ms to the previous pulse" in said[0] and "'TMS'" in said[0]
    assert "min_interval_ms" in stage.messages()[0]


def test_plausibility_rate_limit_catches_a_flood_at_the_sample_rate():
    """At 1 kHz a marker on every sample is 1 ms apart, as a real pair: the rate limit
    (100 per second, refused ones counting) refuses all but the first 101."""
    fs = 1000.0
    meta = StreamMeta(["C3"], fs, ["eeg"])
    stage = PulsePlausibility()
    flood = list(range(3000, 6000))
    out = run_blocks(stage, np.zeros((1, 8000)), meta, _pulse_events(flood + [7500]))
    assert pulse_samples(out) == flood[:101] + [7500]
    assert stage.n_refused == len(flood) - 101
    with pytest.raises(ValueError, match="0 = off"):
        PulsePlausibility(min_interval_ms=-1)


def test_a_held_block_sends_a_late_event_with_the_sample_it_names():
    """A stage that holds samples (the pulse source, the cut window) sends an event that
    arrived after its sample with the held block that holds that sample, so the stages after
    it see it on time; an event whose sample already left goes with the block it came in."""
    from tmseeg.pipeline.base import HeldBlocks

    meta = StreamMeta(["C3"], 1000.0, ["eeg"])

    def block(first, events=()):
        return Block(np.zeros((1, 10)), first, np.arange(first, first + 10) / 1000.0, meta,
                     list(events))

    held = HeldBlocks()
    held.push(block(0))
    held.push(block(10))
    out = held.release(10)  # samples 0..9 leave
    assert out.events == []
    late = [Event(sample=3, label="left already", kind=EVENT_MARKER),
            Event(sample=14, label="late", kind=EVENT_MARKER),
            Event(sample=22, label="on time", kind=EVENT_MARKER)]
    held.push(block(20, late))
    first = held.release(20)
    assert [e.label for e in first.events] == ["late"]  # with sample 14's block
    second = held.release(30)
    assert [e.label for e in second.events] == ["left already", "on time"]


def test_late_markers_are_said_once_a_second_with_their_count(caplog):
    """A marker loop on a busy machine delivers thousands of markers after their pulse
    decisions: each is counted, and said at most once per second of stream (the first at once),
    not one line per marker (CI once printed 129 kB of them)."""
    import logging

    from tmseeg.pipeline.pulsesource import CheckedMarkerPulses

    fs, step = 1000.0, 50
    meta = StreamMeta(("C3", "C4", "Cz", "Pz"), fs, ("eeg",) * 4, name="late")
    stage = CheckedMarkerPulses(wait_ms=40.0, max_hold_s=2.0)
    rng = np.random.default_rng(0)
    n_late = 0
    with caplog.at_level(logging.WARNING, logger="tmseeg.pipeline.pulsesource"):
        for start in range(0, int(10 * fs), step):  # 10 s in 50-ms blocks
            events = []
            if start >= 2000:  # from 2 s on, 40 markers a block, each 300-350 ms late
                events = [Event(start - 300 - int(k), "TMS", kind=EVENT_MARKER)
                          for k in rng.integers(0, 50, 40)]
                n_late += len(events)
            stage.process(Block(rng.normal(0, 5, (4, step)), start,
                                np.arange(start, start + step) / fs, meta, events))
    said = [r.getMessage() for r in caplog.records if "after the pulse decisions" in r.getMessage()]
    assert stage.n_late_markers == n_late == 6400
    assert 7 <= len(said) <= 9, said  # the first, then one per second of the 8 s
    assert said[0].startswith("marker 'TMS' at sample")
    counts = [int(re.match(r"(\d+) markers arrived", s).group(1)) for s in said[1:]]
    assert 1 + sum(counts) <= n_late and all(c >= 700 for c in counts), counts
