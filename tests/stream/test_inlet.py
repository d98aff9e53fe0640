"""LSL ingest on real loopback streams: resolve, pull, units, gaps, marker alignment."""
import threading
import time

import numpy as np
import pylsl
import pytest

from tmseeg.stream.inlet import (EEGInlet, LSLSource, SampleClock,
                                 StreamNotFoundError, resolve_stream, unit_scale_to_uv)


def make_outlet(name, n_ch, sfreq, source_id, unit="microvolts", fmt="float32"):
    info = pylsl.StreamInfo(name, "EEG", n_ch, sfreq, fmt, source_id)
    info.set_channel_labels([f"E{i}" for i in range(n_ch)])
    info.set_channel_types("eeg")
    info.set_channel_units(unit)
    return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)


def counter_chunk(start, n, n_ch):
    """Sample i, channel c holds i + c/100 (exact in float32 for i < 2**17)."""
    i = np.arange(start, start + n, dtype=np.float64)[:, None]
    return (i % 100000 + np.arange(n_ch)[None, :] / 100.0).astype(np.float32)


class Pusher(threading.Thread):
    """Pushes a counter signal with exact timestamps t0 + i/sfreq, paced to the clock."""

    def __init__(self, outlet, n_ch, sfreq, duration_s, chunk=5, t0=None, start_index=0):
        super().__init__(daemon=True)
        self.outlet, self.n_ch, self.sfreq = outlet, n_ch, sfreq
        self.n_total = int(duration_s * sfreq)
        self.chunk = chunk
        self.t0 = pylsl.local_clock() if t0 is None else t0
        self.i = start_index
        self.stop_at = start_index + self.n_total
        self.halt = threading.Event()

    def run(self):
        while self.i < self.stop_at and not self.halt.is_set():
            due = self.t0 + (self.i + self.chunk) / self.sfreq
            wait = due - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
            n = min(self.chunk, self.stop_at - self.i)
            ts = self.t0 + np.arange(self.i, self.i + n) / self.sfreq
            self.outlet.push_chunk(counter_chunk(self.i, n, self.n_ch), ts.tolist())
            self.i += n



def _drain(inlet, received, gaps, until, n_wanted=None, stop=lambda: False):
    """Pull ``inlet`` until ``until`` (monotonic s), ``n_wanted`` samples or ``stop()``:
    (first sample, first channel) of each chunk into ``received``, its gaps into ``gaps``."""
    while time.monotonic() < until and not stop():
        got = inlet.pull()
        if got is None:
            if n_wanted is not None and inlet.next_sample >= n_wanted:
                return
            time.sleep(0.002)
            continue
        received.append((inlet.next_sample - got[0].shape[0], got[0][:, 0].copy()))
        gaps.extend(got[2])

def test_missing_stream_names_what_is_visible(uid):
    out = make_outlet(f"present-{uid}", 2, 100, f"src-{uid}")
    t = time.monotonic()
    with pytest.raises(StreamNotFoundError) as err:
        resolve_stream(name=f"absent-{uid}", stype="EEG", timeout_s=0.8)
    assert time.monotonic() - t >= 0.75  # it looked for the stream as long as it was told
    msg = str(err.value)
    assert f"absent-{uid}" in msg and f"present-{uid}" in msg and "tmseeg simulate" in msg
    del out


def test_resolve_by_source_id_and_units(uid):
    out = make_outlet(f"eeg-{uid}", 4, 500, f"src-{uid}", unit="volts")
    info = resolve_stream(source_id=f"src-{uid}", stype=None, timeout_s=3)
    inlet = EEGInlet(info)
    assert inlet.meta.ch_names == ("E0", "E1", "E2", "E3")
    assert np.all(inlet.scales_to_uv == 1e6)
    out.push_chunk(np.full((10, 4), 2e-6, dtype=np.float32))
    deadline = time.monotonic() + 3
    got = None
    while got is None and time.monotonic() < deadline:
        got = inlet.pull()
        time.sleep(0.01)
    assert got is not None
    samples, ts, gaps = got
    np.testing.assert_allclose(samples, 2.0, rtol=1e-6)  # 2 µV after conversion
    assert gaps == []


@pytest.mark.parametrize("scale, warned", [(1e-6, True), (1.0, False)])
def test_volts_without_a_declared_unit_are_flagged(uid, scale, warned, caplog):
    """A player that streams volts and declares no unit: the inlet says so (values would be
    read as µV, 1e6 too small); plain µV data without a unit raise nothing."""
    info = pylsl.StreamInfo(f"nounit-{uid}", "EEG", 3, 500, "float32", f"nu-{uid}")
    info.set_channel_labels(["C3", "Cz", "C4"])
    out = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    inlet = EEGInlet(resolve_stream(source_id=f"nu-{uid}", stype=None, timeout_s=3))
    rng = np.random.default_rng(0)
    out.push_chunk((rng.standard_normal((400, 3)) * 10 * scale).astype(np.float32))
    deadline, n = time.monotonic() + 5, 0
    with caplog.at_level("WARNING"):
        while n < 400 and time.monotonic() < deadline:
            got = inlet.pull()
            n += 0 if got is None else len(got[0])
            time.sleep(0.01)
    assert n == 400
    assert bool(inlet.unit_warning) is warned
    assert ("looks like volts" in caplog.text) is warned


def test_reference_suffixed_labels_are_tidied_like_files(uid):
    """A stream labelled ``EEG C3-REF`` gets the names its recording would get (live ==
    offline); the EMG channel and a label that is no electrode keep theirs (the latter, typed
    EEG by the stream, is no electrode: typed misc, as a file's would be)."""
    labels = ["EEG C3-REF", "EEG Cz-REF", "Fp1-A1", "EMG-REF", "Status"]
    info = pylsl.StreamInfo(f"eeg-{uid}", "EEG", len(labels), 500, "float32", f"src-{uid}")
    info.set_channel_labels(labels)
    info.set_channel_types(["eeg", "eeg", "eeg", "emg", "eeg"])
    info.set_channel_units("microvolts")
    out = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=60)
    src = LSLSource(EEGInlet(resolve_stream(name=f"eeg-{uid}", timeout_s=3)))
    meta = src.meta
    assert meta.ch_names == ("C3", "Cz", "Fp1", "EMG-REF", "Status")
    # "Status" came typed EEG but has no electrode position: left out of the spatial steps
    assert meta.ch_types == ("eeg", "eeg", "eeg", "emg", "misc")
    assert meta.original_names == tuple(labels)
    assert meta.renamed == {"EEG C3-REF": "C3", "EEG Cz-REF": "Cz", "Fp1-A1": "Fp1"}
    out.push_chunk(np.zeros((10, len(labels)), dtype=np.float32))
    deadline = time.monotonic() + 3
    block = None
    while block is None and time.monotonic() < deadline:
        block = src.read()
        time.sleep(0.01)
    assert block is not None and block.meta.ch_names[0] == "C3"
    src.close()
    del out


def test_channel_count_mismatch_is_refused(uid):
    out = make_outlet(f"eeg-{uid}", 8, 500, f"src-{uid}")
    info = resolve_stream(name=f"eeg-{uid}", timeout_s=3)
    with pytest.raises(ValueError, match="channel-count mismatch"):
        EEGInlet(info, expected_channels=64)
    del out


@pytest.mark.parametrize("unit,scale", [("microvolts", 1.0), ("mV", 1e3), ("V", 1e6),
                                        ("-6", 1.0), ("-3", 1e3), (None, 1.0)])
def test_unit_scale(unit, scale):
    assert unit_scale_to_uv(unit) == pytest.approx(scale)


def test_sample_clock_dejitters_and_inverts():
    rng = np.random.default_rng(0)
    sfreq = 1000.0
    true_rate = sfreq * (1 + 20e-6)  # amplifier clock 20 ppm fast
    clock = SampleClock(sfreq)
    for start in range(0, 20000, 50):
        idx = np.arange(start, start + 50)
        t = 100.0 + idx / true_rate + rng.normal(0, 0.002, 50)  # 2 ms jitter
        clock.update(idx, t)
    est = clock.time_of([20000])[0]
    assert abs(est - (100.0 + 20000 / true_rate)) < 2e-4
    assert clock.sample_of(100.0 + 12345 / true_rate) == 12345


def test_gap_is_recorded_when_stream_vanishes_and_returns(uid):
    sfreq, n_ch, src = 1000.0, 4, f"src-{uid}"
    out = make_outlet(f"eeg-{uid}", n_ch, sfreq, src)
    inlet = EEGInlet(resolve_stream(name=f"eeg-{uid}", timeout_s=3))
    t0 = pylsl.local_clock()
    p = Pusher(out, n_ch, sfreq, 1.5, t0=t0)
    p.start()
    received = []
    gaps = []

    def drain(until, n_wanted=None, stop=lambda: False):
        _drain(inlet, received, gaps, until, n_wanted, stop)

    drain(time.monotonic() + 10, n_wanted=1500)
    p.join()
    assert inlet.next_sample == 1500
    p.outlet = None
    del out  # the amplifier software dies ...
    time.sleep(1.0)
    out2 = make_outlet(f"eeg-{uid}", n_ch, sfreq, src)  # ... and comes back, same source id
    restart_index = int(round((pylsl.local_clock() - t0) * sfreq))
    p2 = Pusher(out2, n_ch, sfreq, 1.0, t0=t0, start_index=restart_index)
    p2.start()
    # liblsl's recovery re-resolves the source id: it takes a few seconds
    drain(time.monotonic() + 15, n_wanted=p2.stop_at)
    p2.join()
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    assert gap.sample == 1500
    # the inlet reconnects after the restart, so it misses the new stream's first samples
    # too: the gap runs to the first sample it actually got, and indices stay true
    s_after, v_after = [(s, v) for s, v in received if s >= 1500][0]
    assert abs(gap.sample + gap.duration - s_after) == 0
    assert s_after >= restart_index
    assert v_after[0] == pytest.approx(s_after % 100000, abs=2)
    assert gap.duration >= 900  # at least the 1 s during which nothing was streaming
    del out2


def test_markers_align_to_samples(uid):
    sfreq, n_ch = 5000.0, 8
    out = make_outlet(f"eeg-{uid}", n_ch, sfreq, f"src-{uid}")
    minfo = pylsl.StreamInfo(f"eeg-{uid}-markers", "Markers", 1, 0, "string", f"m-{uid}")
    mout = pylsl.StreamOutlet(minfo)
    t0 = pylsl.local_clock() + 0.3
    p = Pusher(out, n_ch, sfreq, 3.0, t0=t0)
    src = LSLSource.resolve(name=f"eeg-{uid}", timeout_s=3, marker_timeout_s=2)
    assert src.markers is not None and src.markers.name == f"eeg-{uid}-markers"
    # no sample may be lost to a connection still being set up (the test counts them all)
    assert out.wait_for_consumers(5.0) and mout.wait_for_consumers(5.0)
    p.start()
    marker_samples = [2500, 7777, 12001]
    sent = 0
    events = []
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (p.is_alive() or src.eeg.next_sample < p.stop_at):
        if sent < len(marker_samples) and p.i > marker_samples[sent] - 500:
            mout.push_sample(["TMS"], t0 + marker_samples[sent] / sfreq)
            sent += 1
        block = src.read()
        if block is None:
            time.sleep(0.001)
            continue
        seen.append(block.data[0])
        events.extend(block.events)
    data = np.concatenate(seen)
    # no lost or reordered samples
    np.testing.assert_array_equal(data, np.arange(len(data)) % 100000)
    got = [e.sample for e in events if e.label == "TMS"]
    assert len(got) == 3
    assert all(abs(g - m) <= 1 for g, m in zip(got, marker_samples)), got


def test_many_outlets_alive_at_once_stay_visible(uid):
    """liblsl's default port range (32) hides the 33rd outlet alive on a machine; a long test
    run, or a lab with several amplifiers, players and engines, reaches that. The loopback
    configuration widens the range."""
    held = [pylsl.StreamOutlet(pylsl.StreamInfo(f"many-{uid}-{i}", "Misc", 1, 10.0, "float32",
                                                f"many-{uid}-{i}")) for i in range(40)]
    infos = pylsl.resolve_bypred(f"starts-with(name, 'many-{uid}-')", minimum=40, timeout=10)
    assert len({i.name() for i in infos}) == 40
    del held


def test_a_named_marker_stream_of_any_type_is_used_and_a_missing_one_is_said(uid, caplog):
    """Players name their marker streams as they like (mne-lsl's annotations, a stimulator's
    own type): ``--markers NAME`` finds it whatever its type. Without a marker stream of type
    Markers, a warning names the streams that are there and the option to use."""
    import logging

    out = make_outlet(f"eeg-{uid}", 4, 1000.0, f"src-{uid}")
    ainfo = pylsl.StreamInfo(f"stim-{uid}", "Annotations", 1, 0, "string", f"a-{uid}")
    aout = pylsl.StreamOutlet(ainfo)
    src = LSLSource.resolve(name=f"eeg-{uid}", marker_name=f"stim-{uid}", timeout_s=3,
                            marker_timeout_s=2)
    assert src.markers is not None and src.markers.name == f"stim-{uid}"
    src.close()
    with caplog.at_level(logging.WARNING):
        src = LSLSource.resolve(name=f"eeg-{uid}", timeout_s=3, marker_timeout_s=0.5)
    assert src.markers is None
    said = [r.getMessage() for r in caplog.records if "no marker stream" in r.getMessage()]
    assert len(said) == 1 and f"'stim-{uid}' (Annotations)" in said[0] \
        and "--markers NAME" in said[0], said
    src.close()
    del out, aout


@pytest.mark.slow  # real time on LSL
def test_mne_lsl_player_annotations_are_found_and_are_the_pulse_markers(tmp_path, uid):
    """mne-lsl's ``PlayerLSL`` (the usual Python LSL player) streams a recording's
    annotations on a second stream, ``<name>-annotations`` of type ``annotations``, one-hot
    over the descriptions, and gives the data stream no type when the file holds EEG and EMG.
    Both are found from the player's name alone, and each annotation arrives as a marker on
    the sample it annotates (the data around it are the file's)."""
    import mne
    from mne_lsl.player import PlayerLSL

    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rec, truth = simulated_recording(SimConfig(ch_names=("F3", "Fz", "F4", "C3", "Cz", "C4"),
                                               sfreq=1000.0, seed=2, muscle_artifact=False),
                                     14.0, None)
    sfreq = rec.meta.sfreq
    info = mne.create_info(list(rec.meta.ch_names), sfreq, list(rec.meta.ch_types))
    assert "emg" in rec.meta.ch_types
    raw = mne.io.RawArray(rec.data_uv * 1e-6, info, verbose="error")
    onsets = np.array([p.sample for p in truth.pulses])
    rests = onsets + int(0.25 * sfreq)
    raw.set_annotations(mne.Annotations(
        onset=np.r_[onsets, rests] / sfreq, duration=0.0,
        description=["TMS"] * len(onsets) + ["rest"] * len(rests)))
    fname = tmp_path / "player_raw.fif"
    raw.save(fname, verbose="error")
    player = PlayerLSL(fname, chunk_size=20, name=f"mnelsl-{uid}", source_id=f"p-{uid}",
                       n_repeat=1).start()
    try:
        src = LSLSource.resolve(name=f"mnelsl-{uid}", timeout_s=5, marker_timeout_s=3)
        assert src.markers is not None and src.markers.name == f"mnelsl-{uid}-annotations"
        assert src.meta.ch_types[-1] == "emg"
        events, chunks = [], []
        deadline = time.monotonic() + 25.0
        while time.monotonic() < deadline and sum(c.shape[1] for c in chunks) < 12 * sfreq:
            block = src.read()
            if block is None:
                time.sleep(0.002)
                continue
            events += block.events
            chunks.append(block.data)
        src.close()
    finally:
        player.stop()
    data = np.hstack(chunks)
    tms = [e.sample for e in events if e.label == "TMS"]
    rest = [e.sample for e in events if e.label == "rest"]
    assert len(tms) >= len(onsets) - 2 >= 2 and len(rest) >= len(tms) - 1
    # the stream started somewhere in the file: the data say where
    start = next(k for k in range(rec.n_samples - 50)
                 if np.allclose(rec.data_uv[:, k:k + 50], data[:, :50], atol=1e-2))
    np.testing.assert_allclose(data, rec.data_uv[:, start:start + data.shape[1]], atol=1e-2)
    # each marker on its annotated sample, give or take one: mne-lsl 1.14 stamps the
    # annotations one sample away from the data samples they annotate (the same on all)
    errors = {int((t + start) - onsets[np.argmin(np.abs(onsets - (t + start)))]) for t in tms}
    errors |= {int((r + start) - rests[np.argmin(np.abs(rests - (r + start)))]) for r in rest}
    assert len(errors) == 1 and abs(errors.pop()) <= 1


def test_a_stream_back_with_a_new_source_id_is_followed(uid, caplog):
    """The amplifier program restarts (or a new device comes up) under the same name and type
    but a new source id, which liblsl's own recovery never finds: the outage is shown while it
    lasts (a warning, rate 0, seconds without data), the inlet follows the new stream, and the
    samples missing meanwhile are one gap, with true sample indices after it. A stream of the
    same name with other channels is not followed, and a warning says why."""
    import logging

    sfreq, n_ch = 1000.0, 4
    out = make_outlet(f"eeg-{uid}", n_ch, sfreq, f"old-{uid}")
    inlet = EEGInlet(resolve_stream(name=f"eeg-{uid}", timeout_s=3))
    t0 = pylsl.local_clock()
    p = Pusher(out, n_ch, sfreq, 1.0, t0=t0)
    p.start()
    received, gaps = [], []

    def drain(until, n_wanted=None, stop=lambda: False):
        _drain(inlet, received, gaps, until, n_wanted, stop)

    with caplog.at_level(logging.WARNING, logger="tmseeg.stream.inlet"):
        drain(time.monotonic() + 10, n_wanted=1000)
        p.join()
        assert inlet.next_sample == 1000 and inlet.stats.rate_hz > 500
        p.outlet = None
        del out  # the amplifier program dies
        t_gone = time.monotonic()
        drain(t_gone + 30, stop=lambda: inlet.stats.no_data_s > 0)
        print(f"the outage was said {time.monotonic() - t_gone:.2f} s after the stream died")
        # shown while it lasts: rate 0, seconds without data, one warning
        assert inlet.stats.rate_hz == 0.0 and inlet.stats.no_data_s > 1.0
        gone = [r.getMessage() for r in caplog.records if "sent nothing" in r.getMessage()]
        assert len(gone) == 1 and f"eeg-{uid}" in gone[0]
        # a stream of the same name with another layout is refused, and said so
        wrong = make_outlet(f"eeg-{uid}", n_ch + 2, sfreq, f"wrong-{uid}")
        drain(time.monotonic() + 10,
              stop=lambda: any("not followed" in r.getMessage() for r in caplog.records))
        assert inlet.stats.n_reconnects == 0
        refused = [r.getMessage() for r in caplog.records if "not followed" in r.getMessage()]
        assert len(refused) == 1 and "6 channels, not 4" in refused[0]
        # the program comes back with a new source id
        out2 = make_outlet(f"eeg-{uid}", n_ch, sfreq, f"new-{uid}")
        restart_index = int(round((pylsl.local_clock() - t0) * sfreq))
        # pushed until the inlet has followed and drawn 0.5 s from it: an inlet gets only what
        # is pushed after it subscribes, so a fixed 1 s push raced the reconnect on a busy machine
        p2 = Pusher(out2, n_ch, sfreq, 20.0, t0=t0, start_index=restart_index)
        p2.start()
        def half_a_second_drawn():
            after = [s for s, _ in received if s >= 1000]
            return bool(after) and after[-1] >= after[0] + 500

        drain(time.monotonic() + 20, stop=half_a_second_drawn)
        p2.halt.set()
        p2.join()
    assert inlet.source_id == f"new-{uid}" and inlet.stats.n_reconnects == 1
    assert inlet.stats.no_data_s == 0.0 and inlet.stats.n_outages == 1
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    assert gap.sample == 1000
    s_after, v_after = [(s, v) for s, v in received if s >= 1000][0]
    assert gap.sample + gap.duration == s_after
    # the same clock on both sides here: the indices after the gap are the true ones
    assert s_after >= restart_index
    assert v_after[0] == pytest.approx(s_after % 100000, abs=2)
    assert gap.duration >= 0.9 * (restart_index - 1000)
    back = [r.getMessage() for r in caplog.records if "data again" in r.getMessage()]
    assert len(back) == 1 and "recorded as a gap" in back[0]
    inlet.close()
    del out2, wrong
