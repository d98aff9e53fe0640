"""One code path: a file replayed over LSL into the live engine gives the offline numbers."""

import numpy as np
import pytest

from tmseeg.engine import BlocksSource, Engine
from tmseeg.config import load_config
from tmseeg.report.analyze import run_session
from tmseeg.session import TEPSession
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import blocks_from_array
from tmseeg.io.files import read_recording
from tmseeg.io.recorder import BrainVisionRecorder


@pytest.fixture(scope="module")
def recording_path(tmp_path_factory):
    """A 14-s simulated TMS-EEG recording (all artifacts on) written as BrainVision."""
    sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=5000.0, seed=11,
                                    isi_range_s=(0.9, 1.2)))
    path = tmp_path_factory.mktemp("parity") / "parity.vhdr"
    data, events = sim.generate(int(14.0 * sim.meta.sfreq))
    with BrainVisionRecorder(path, sim.meta) as rec:
        for block in blocks_from_array(data, sim.meta, 250, events=events):
            rec.write(block)
    return path


def test_live_replay_equals_offline_analysis(recording_path, live_replay):
    cfg = load_config()
    offline = run_session(read_recording(recording_path), cfg, keep_epochs=False)
    live = live_replay(recording_path, cfg)
    assert len(offline.pulses) >= 10
    assert [p["sample"] for p in live.pulses] == [p["sample"] for p in offline.pulses]
    assert [p["kept"] for p in live.pulses] == [p["kept"] for p in offline.pulses]
    for a, b in zip(live.pulses, offline.pulses):
        for key in ("early_tep_ptp_uv", "max_ptp_uv", "snr_after"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, nan_ok=True), key
    assert live.tep.n == offline.tep.n > 0
    scale = np.abs(offline.tep.average_uv).max()
    np.testing.assert_allclose(live.tep.average_uv, offline.tep.average_uv,
                               rtol=1e-6, atol=1e-6 * scale)
    assert live.stages.coil.site == offline.stages.coil.site


def test_offline_result_does_not_depend_on_block_size(recording_path):
    cfg = load_config()
    rec = read_recording(recording_path)
    a = run_session(rec, cfg, keep_epochs=False, block_ms=100.0)
    b = run_session(rec, cfg, keep_epochs=False, block_ms=3.7)
    assert [p["sample"] for p in a.pulses] == [p["sample"] for p in b.pulses]
    np.testing.assert_allclose(a.tep.average_uv, b.tep.average_uv, rtol=1e-9, atol=1e-9)


def test_a_gap_in_the_stream_is_named_as_a_live_offline_difference(recording_path):
    """Samples lost on the way live cannot be in the recording's analysis the same way: the
    session says so on every update it publishes (the metrics stream) and in its summary."""
    from dataclasses import replace

    from tmseeg.stream.block import EVENT_GAP, Event

    rec = read_recording(recording_path)
    session = TEPSession(load_config(), rec.meta)
    updates = []
    session.listeners.append(updates.append)
    blocks = list(blocks_from_array(rec.data_uv, rec.meta, 250, events=rec.events))
    lost = blocks.pop(10)  # 50 ms never arrived
    nxt = blocks[10]
    blocks[10] = replace(nxt, events=[Event(sample=lost.first_sample, label="gap", kind=EVENT_GAP,
                                            duration=lost.n_samples)] + list(nxt.events))
    Engine.for_session(BlocksSource(blocks, rec.meta), session).run_to_end()
    assert session.pulses and updates
    named = [u.get("live_offline_differences") for u in updates]
    assert all(n == ["1 gaps in the input stream (250 samples lost): the recording and this run "
                     "saw different data there"] for n in named), named[:2]
    assert session.live_offline_differences() == named[-1]
    clean = run_session(rec, load_config(), keep_epochs=False)
    assert clean.live_offline_differences() == []


@pytest.mark.parametrize("check_markers", [True, False])
def test_late_markers_within_the_allowance_give_the_on_time_numbers(recording_path,
                                                                    check_markers):
    """Live, a pulse marker arrives after its sample (a marker stream lags the EEG). Within the
    allowance (``[interpolation] max_delay_ms``) it is cut, fitted and averaged as if on time:
    the checking pulse source's hold covers it (the interpolation stage adds only the
    marker-to-pulse shift; without the check it waits the whole allowance), and the decay
    stage behind them waits for nothing (the waits no longer add up along the chain)."""
    from dataclasses import replace

    # each marker arrives with the first 5-ms block after its sample + 50 ms: 50-55 ms late
    late_ms, block_ms = 50.0, 5.0
    assert late_ms + block_ms <= load_config()["interpolation"]["max_delay_ms"]

    rec = read_recording(recording_path)
    cfg = load_config(overrides={"pulses": {"check_markers": check_markers}})
    on_time = run_session(rec, cfg, keep_epochs=False)
    lag = int(round(late_ms * rec.meta.sfreq / 1000.0))
    blocks = list(blocks_from_array(rec.data_uv, rec.meta,
                                    int(round(block_ms * rec.meta.sfreq / 1000.0))))
    starts = np.array([b.first_sample for b in blocks])
    moved: dict[int, list] = {}
    for ev in rec.events:  # each event arrives with the first block after sample + lag
        k = min(int(np.searchsorted(starts, ev.sample + lag)), len(blocks) - 1)
        moved.setdefault(k, []).append(ev)
    blocks = [replace(b, events=moved.get(k, [])) for k, b in enumerate(blocks)]
    late = TEPSession(cfg, rec.meta)
    Engine.for_session(BlocksSource(blocks, rec.meta), late).run_to_end()

    interp = next(s for s in late.stages.chain.stages if s.name == "interp")
    assert interp.n_late == 0
    assert not [f for f in late.stages.decay.fits if "late" in f["reason"]]
    assert len(on_time.pulses) >= 10
    assert [p["sample"] for p in late.pulses] == [p["sample"] for p in on_time.pulses]
    assert [p["kept"] for p in late.pulses] == [p["kept"] for p in on_time.pulses]
    scale = np.abs(on_time.tep.average_uv).max()
    np.testing.assert_allclose(late.tep.average_uv, on_time.tep.average_uv,
                               rtol=1e-9, atol=1e-9 * scale)


def test_each_stage_waits_only_for_the_late_markers_no_stage_before_it_covers():
    from tmseeg.pipeline.pulsesource import CheckedMarkerPulses
    from tmseeg.session import late_marker_waits_ms

    cfg = load_config()
    allowance = cfg["interpolation"]["max_delay_ms"]
    source = CheckedMarkerPulses(wait_ms=allowance - 20.0)  # holds the whole allowance
    assert source.hold_ms == allowance
    # the source's hold covers the allowance: interpolation waits for the marker's shift only
    assert late_marker_waits_ms(cfg, source) == (source.tol_ms, 0.0)
    # markers used as they are: interpolation waits the whole allowance, decay behind it none
    assert late_marker_waits_ms(cfg, None) == (allowance, 0.0)
    # markers 5 ms after their pulse: their pulse is 5 ms before the sample the source held
    late = load_config(overrides={"pulses": {"marker_offset_ms": -5.0}})
    assert late_marker_waits_ms(late, source) == (source.tol_ms + 5.0, 0.0)
    # without interpolation the decay stage takes its place
    no_cut = load_config(overrides={"interpolation": {"enabled": False}})
    assert late_marker_waits_ms(no_cut, None) == (allowance, allowance)


def test_plugins_in_background_give_the_numbers_of_running_them_in_line(recording_path):
    """Offline, the oscillations plug-in decimates, filters and transforms each epoch on a
    thread of its own while the stages go on; its numbers are those of doing it in line (as
    live does), to the bit."""
    import json

    from tmseeg.engine import OFFLINE_BLOCK_MS, RecordingSource
    from tmseeg.utils import jsonable

    cfg = load_config()
    rec = read_recording(recording_path)
    background = run_session(rec, cfg, keep_epochs=False)
    inline = TEPSession(cfg, rec.meta, track_decay=True)
    Engine.for_session(RecordingSource(rec, block_ms=OFFLINE_BLOCK_MS), inline,
                       buffer_s=1.0).run_to_end()
    assert background.context.background and not inline.context.background
    a, b = background.metrics_summary(), inline.metrics_summary()
    assert a["oscillations"]["n_epochs"] >= 3
    assert json.dumps(jsonable(a), sort_keys=True) == json.dumps(jsonable(b), sort_keys=True)
    osc_a, osc_b = background.metric("oscillations"), inline.metric("oscillations")
    np.testing.assert_array_equal(osc_a.tfr.mean_power_uv2(), osc_b.tfr.mean_power_uv2())


def test_the_tep_update_goes_out_before_the_plugins_and_their_update_follows(recording_path):
    """Per pulse, listeners get the ``"pulse"`` update (the TEP path's row and summary) before
    the metric plug-ins take the epoch, then a ``"metrics"`` update with the whole row (the
    plug-ins' columns too) and their summaries."""
    rec = read_recording(recording_path)
    session = TEPSession(load_config(), rec.meta)
    updates = []
    session.listeners.append(updates.append)
    Engine.for_session(BlocksSource(list(blocks_from_array(rec.data_uv, rec.meta, 250,
                                                           events=rec.events)), rec.meta),
                       session).run_to_end()
    assert len(updates) == 2 * len(session.pulses) > 0
    plugin_columns = {c for m in session.metrics for c in m.columns}
    assert {"block", "prestim_phase_rad"} <= plugin_columns
    for k, row in enumerate(session.pulses):
        tep_update, metrics_update = updates[2 * k], updates[2 * k + 1]
        assert tep_update["type"] == "pulse" and metrics_update["type"] == "metrics"
        assert tep_update["pulse"]["pulse_index"] == metrics_update["pulse"]["pulse_index"] == k
        assert not plugin_columns & set(tep_update["pulse"])  # before the plug-ins
        assert plugin_columns <= set(metrics_update["pulse"]) and metrics_update["pulse"] == row
        assert "metrics" not in tep_update and set(metrics_update["metrics"]) == {
            m.name for m in session.metrics}
        assert tep_update["tep"] == metrics_update["tep"]
