"""The closed-loop fast path: each pulse's early TEP 60 ms after the pulse (issue #16).

The runner is fed the simulator's recording block by block, as the engine's raw hook feeds it
(``on_raw``); the early TEP of every pulse is checked against the simulator's truth. The
latency on a live LSL stream is measured in ``benchmarks/bench_closedloop.py``.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from tmseeg.closedloop import EarlyTEP, Protocol, ProtocolRunner
from tmseeg.closedloop.earlytep import EarlyTEPCutter
from tmseeg.closedloop.protocol import ProtocolConfigError
from tmseeg.sim.accuracy import simulated_recording, true_roi_tep
from tmseeg.sim.model import SimConfig
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, Event, StreamMeta, blocks_from_array


@pytest.fixture(scope="module")
def clean_recording():
    """150 s, 32 ch at 2 kHz, pulse artifact and TEP, no decay or muscle artifact, no markers."""
    return simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=3,
                                         decay_artifact=False, muscle_artifact=False,
                                         include_emg=False, blinks=False), 150.0, label=None)


def _collect(rec, roi, events, expect, block_size=20):
    class Collect(Protocol):
        early_tep_channels = {n: 1.0 / len(roi) for n in roi}

        def setup(self, info):
            self.got: list[EarlyTEP] = []

        def on_early_tep(self, early):
            self.got.append(early)

    protocol = Collect()
    runner = ProtocolRunner(protocol, rec.meta)
    try:
        for block in blocks_from_array(rec.data_uv, rec.meta, block_size, events=events):
            runner.on_raw(block)
        deadline = time.monotonic() + 20.0
        while len(getattr(protocol, "got", [])) < expect and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        runner.close()
    return protocol.got, runner


def test_each_pulse_gets_its_early_tep_locked_to_the_artifact(clean_recording):
    rec, truth = clean_recording
    late = 8  # markers 4 ms after the pulse: the artifact's onset is found in the data
    events = [Event(sample=p.sample + late, label="TMS", kind=EVENT_MARKER)
              for p in truth.pulses]
    got, runner = _collect(rec, truth.roi, events, expect=len(events))
    assert len(got) == len(truth.pulses) >= 50
    assert [g.sample for g in got] == [p.sample for p in truth.pulses]
    assert all(g.tep.onset_found and g.tep.requested_sample == g.sample + late for g in got)
    assert not runner.errors
    # the average of the single-pulse early TEPs against the truth (interpolated pulse window,
    # no filter: the fast path filters nothing); with the markers' 4 ms left in, r is ~0.6
    tep = got[0].tep
    t = tep.times_ms
    assert t[0] == pytest.approx(-100.0) and t[-1] == pytest.approx(60.0)
    eeg = [rec.meta.ch_names[i] for i in rec.meta.picks("eeg")]
    truth_uv = true_roi_tep(truth, eeg, truth.roi, t, band_pass=False)
    mean_uv = np.mean([g.tep.roi_uv for g in got], axis=0)
    early = (t >= 15) & (t <= 60)
    assert np.corrcoef(mean_uv[early], truth_uv[early])[0, 1] >= 0.85
    # each cut is average referenced and baseline corrected
    assert np.abs(tep.data_uv.mean(axis=0)).max() < 1e-9
    base = (t >= -100) & (t < -5)
    assert np.abs(tep.data_uv[:, base].mean(axis=1)).max() < 1e-9
    # the pulse window is a straight line, the artifact gone
    cut = (t >= -2) & (t <= 10)
    second_diff = np.diff(tep.data_uv[:, cut], n=2, axis=1)
    assert np.abs(second_diff).max() < 1e-9
    assert got[0].ptp_uv() == pytest.approx(np.ptp(tep.roi_uv[early]))
    assert np.allclose(tep.gmfp_uv, tep.data_uv.std(axis=0))


def test_the_early_tep_is_ready_as_soon_as_the_stream_holds_60_ms_after_the_pulse(
        clean_recording):
    rec, truth = clean_recording
    pulse = truth.pulses[3].sample
    cutter = EarlyTEPCutter(rec.meta)
    cutter.add_pulse(pulse, "marker")
    need = pulse + cutter.n_tol + cutter.n_post  # the onset search may move it by the tolerance
    for block in blocks_from_array(rec.data_uv[:, :need + 50], rec.meta, 1):
        done = cutter.process(block)
        if block.stop_sample - 1 < need:
            assert not done
        else:
            assert [d.sample for d in done] == [pulse]
            break
    assert (need - pulse) / rec.meta.sfreq * 1000 == pytest.approx(80.0)


def test_a_trigger_time_is_moved_to_the_artifact_and_a_marker_wins(clean_recording):
    rec, truth = clean_recording
    a, b = truth.pulses[5].sample, truth.pulses[6].sample
    cutter = EarlyTEPCutter(rec.meta)
    cutter.add_pulse(a - 30, "trigger")  # sent 15 ms before the pulse came
    cutter.add_pulse(b + 10, "trigger")
    cutter.add_pulse(b + 2, "marker")  # the same pulse: one early TEP, the marker's
    out = []
    for block in blocks_from_array(rec.data_uv[:, :b + 2000], rec.meta, 100):
        out += cutter.process(block)
    assert [(d.sample, d.source, d.requested_sample) for d in out] == [
        (a, "trigger", a - 30), (b, "marker", b + 2)]


def test_no_artifact_in_reach_keeps_the_marker_and_a_gap_drops_what_waits(clean_recording):
    rec, truth = clean_recording
    quiet = truth.pulses[2].sample + 1000  # 0.5 s after a pulse: no artifact near
    cutter = EarlyTEPCutter(rec.meta)
    cutter.add_pulse(quiet, "marker")
    out = []
    for block in blocks_from_array(rec.data_uv[:, :quiet + 400], rec.meta, 50):
        out += cutter.process(block)
    assert len(out) == 1 and out[0].sample == quiet and not out[0].onset_found
    # a gap between the marker and the end of its data: nothing is cut across it
    pulse = truth.pulses[4].sample
    cutter = EarlyTEPCutter(rec.meta)
    cutter.add_pulse(pulse, "marker")
    blocks = list(blocks_from_array(rec.data_uv[:, :pulse + 400], rec.meta, 50))
    out = []
    for block in blocks:
        if block.first_sample <= pulse + 20 < block.stop_sample:
            continue  # these samples never arrive
        out += cutter.process(block)
    assert out == [] and cutter.n_lost == 1


def test_runner_gap_event_drops_the_waiting_pulse(clean_recording):
    rec, truth = clean_recording
    pulse = truth.pulses[1].sample
    events = [Event(sample=pulse, label="TMS", kind=EVENT_MARKER),
              Event(sample=pulse + 40, label="gap", kind=EVENT_GAP)]
    got, runner = _collect(rec.__class__(data_uv=rec.data_uv[:, :pulse + 1000], meta=rec.meta),
                           truth.roi, events, expect=0)
    assert got == [] and runner.early.n_lost == 1


def test_the_fast_path_refuses_what_it_cannot_do():
    meta = StreamMeta(("C3", "C4", "EMG"), 1000.0, ("eeg", "eeg", "emg"))

    class Early(Protocol):
        def on_early_tep(self, early):
            return None

    with pytest.raises(ProtocolConfigError, match="at least 3"):
        ProtocolRunner(Early, meta)

    class BadRoi(Early):
        early_tep_channels = "Cz"

    meta3 = StreamMeta(("C3", "C4", "Pz", "EMG"), 1000.0, ("eeg", "eeg", "eeg", "emg"))
    with pytest.raises(ProtocolConfigError, match="on_early_tep"):
        ProtocolRunner(BadRoi, meta3)
    plain = ProtocolRunner(Protocol, meta3)  # not asked for: no fast path, no cost
    assert plain.early is None
    plain.close()
    with pytest.raises(ValueError, match="baseline"):
        EarlyTEPCutter(meta3, baseline_ms=(-100.0, 0.0))


def test_the_fast_path_reaches_a_protocol_in_its_own_process(clean_recording, tmp_path):
    rec, truth = clean_recording
    out = tmp_path / "early.txt"
    path = tmp_path / "early_protocol.py"
    path.write_text(
        "from tmseeg.closedloop import Protocol\n\n"
        "class Early(Protocol):\n"
        "    channels = 'C3'\n"
        "    def on_early_tep(self, early):\n"
        f"        with open({str(out)!r}, 'a') as f:\n"
        "            f.write(f'{early.sample} {early.ptp_uv():.6f}\\n')\n")
    from tmseeg.closedloop import load_protocol

    cls = load_protocol(str(path))
    runner = ProtocolRunner(cls, rec.meta, isolate=f"{path}:Early")
    pulses = truth.pulses[:3]
    events = [Event(sample=p.sample, label="TMS", kind=EVENT_MARKER) for p in pulses]
    try:
        for block in blocks_from_array(rec.data_uv[:, :pulses[-1].sample + 400], rec.meta, 20,
                                       events=events):
            runner.on_raw(block)
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and (
                not out.exists() or len(out.read_text().splitlines()) < len(pulses)):
            time.sleep(0.05)
    finally:
        runner.close()
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [int(s) for s, _ in lines] == [p.sample for p in pulses]
    assert all(float(v) > 0 for _, v in lines)
