"""The live monitor in a real (offscreen) Qt window on a simulated amplifier over loopback LSL.

One window is shared by the tests of this module (in order): it must show the TEP the session
computes, keep acquisition at pace while the GUI is slowed on purpose, write non-blank PNGs,
reset, save the average, and close with the engine thread joined.
"""
import contextlib
import os
import subprocess
import sys
import time

import numpy as np
import pytest

pg = pytest.importorskip("pyqtgraph")

from tmseeg.gui.decimate import minmax_decimate_numpy  # noqa: E402
from tmseeg.gui.feed import LiveFeed  # noqa: E402
from tmseeg.gui.monitor import MonitorWindow  # noqa: E402
from tmseeg.config import load_config  # noqa: E402
from tmseeg.sim.amplifier import SimulatedAmplifier  # noqa: E402
from tmseeg.sim.model import SimConfig  # noqa: E402
from tmseeg.stream.inlet import LSLSource  # noqa: E402

pytestmark = pytest.mark.gui
SFREQ = 5000.0


def _spin(app, seconds, until=None):
    """Run the Qt event loop for ``seconds`` (or until ``until()`` is true)."""
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.005)
    return until() if until is not None else True


@pytest.fixture(scope="module")
def mon():
    import uuid
    name = f"mon-{uuid.uuid4().hex[:8]}"
    amp = SimulatedAmplifier(SimConfig(n_channels=32, sfreq=SFREQ, seed=3, include_emg=True,
                                       isi_range_s=(0.5, 0.7), first_pulse_s=0.6),
                             name=name, listen_triggers=False)
    amp.start()
    # keep every epoch: the test is about display, not rejection
    cfg = load_config(None, {"epochs": {"reject_uv": 0.0}, "bad_channels": {"bads": ["Oz"]}})
    src = LSLSource.resolve(name=name, timeout_s=10, marker_name=f"{name}-markers",
                            marker_timeout_s=10)
    feed = LiveFeed(src, config=cfg, roi=["C3", "FC1", "CP1", "CP5", "FC5"])
    app = pg.mkQApp()
    win = MonitorWindow(feed, window_s=4.0, n_buckets=800)
    win.resize(1400, 900)
    win.show()
    win.start()
    yield app, win, feed, amp
    win.close()
    amp.stop()


def _n_avg(feed):
    with feed.lock:
        return 0 if feed.session.tep is None else feed.session.tep.n


def _consistent_frame(app, win, feed):
    """Draw until the frame shows the feed's current version; return the TEP state then."""
    for _ in range(50):
        win.frame()
        with feed.lock:
            if win._version == feed.version and feed.session.tep is not None:
                tep = feed.session.tep
                return tep.roi_average_uv, tep.average_uv, tep.n
        app.processEvents()
    raise AssertionError("display never caught up with the feed")


def test_shows_tep_after_pulses(mon):
    app, win, feed, amp = mon
    assert _spin(app, 30, lambda: _n_avg(feed) >= 4), "no 4 epochs averaged within 30 s"
    roi_uv, avg_uv, n = _consistent_frame(app, win, feed)
    x, y = win.roi_curve.getData()
    np.testing.assert_array_equal(x, feed.session.tep.times_ms)
    np.testing.assert_allclose(y, roi_uv)  # the plotted ROI TEP is the session's, sample exact
    assert np.abs(y).max() > 0.5
    # butterfly: min/max envelope of every channel's average, NaN-separated
    bx, by = win.butterfly_curve.getData()
    n_ch, n_t = avg_uv.shape
    bucket = max(1, n_t // 1000)
    ref = minmax_decimate_numpy(avg_uv, bucket)
    np.testing.assert_allclose(by.reshape(n_ch, -1)[:, :-1], ref)
    assert win.tep_info.text().startswith(f"TEP: {n} epochs averaged")
    # GMFP, peaks, per-pulse panels, single-trial image and MEP are drawn from the same state
    np.testing.assert_allclose(win.gmfp_curve.getData()[1], feed.session.tep.gmfp_uv)
    assert win.snap.trial_image_uv.shape[0] == n
    assert len(win.early_kept.data) >= n
    labelled = [k for k, lab in win.peak_labels.items() if lab.isVisible()]
    assert labelled, "no TEP peak labelled"
    assert win.mep_curve.getData()[1] is not None and len(win.mep_amp.data) >= 1
    # raw display: the bad channel (configured) is drawn in the bad colour, with its reason
    oz = feed.meta.ch_names.index("Oz")
    bad_y = win.raw_bad_curve.getData()[1].reshape(feed.meta.n_channels, -1)
    assert np.isfinite(bad_y[oz]).sum() > 100 and np.isnan(bad_y[oz - 1]).all()
    assert "BAD" in win.raw_channel_info(-oz) and "configuration" in win.raw_channel_info(-oz)
    # scalp map at a clicked latency = the precomputed interpolation of the average there
    win.set_latency(30.0)
    i = int(np.argmin(np.abs(win.snap.times_ms - 30.0)))
    np.testing.assert_allclose(win.topo_image.image, win.topo.image(win.snap.average_uv[:, i]),
                               equal_nan=True)


def test_session_quality_panel_and_why_of_a_pulse(mon):
    """The quality panel's lights on the running session (a channel configured bad is named
    with the electrode to fix, in the warning colour), and clicking a pulse says why it is in
    the average and draws its own single trial."""
    from tmseeg.gui.quality import COLOURS, WARN

    app, win, feed, amp = mon
    assert _spin(app, 30, lambda: _n_avg(feed) >= 4)
    _consistent_frame(app, win, feed)
    lights = {x.name: x for x in win.update_quality(feed.status())}
    assert {"stream", "bad channels", "pulse/decay artifact", "muscle artifact",
            "early TEP at the ROI", "rejected pulses", "trials to SNR"} <= set(lights)
    bad = lights["bad channels"]
    assert bad.level == WARN and bad.value.startswith("1: Oz") and "fix electrode Oz" in bad.advice
    r, g, b = COLOURS[WARN]
    html = win.quality_label.text()
    assert f"rgb({r},{g},{b})" in html and "fix electrode Oz" in html
    # reject_uv 0: only a pulse too early for its pre-window is rejected
    kept = win.snap.kept
    assert lights["rejected pulses"].value.startswith(f"{int((~kept).sum())} of {kept.size}")
    assert lights["stream"].level in ("ok", "warn", "wait") and "Hz" in lights["stream"].value
    assert "kept" in win.early_plot.titleLabel.text
    text = win.show_pulse(1)
    assert text.startswith("pulse 1 at ") and text.endswith("kept in the average"), text
    times, trace, row = feed.pulse_trial(1)
    np.testing.assert_allclose(win.trial_curve.getData()[1], trace)
    assert row["pulse_index"] == 1 and row["kept"]
    win.frame()  # a new frame keeps the chosen pulse until "L"
    np.testing.assert_allclose(win.trial_curve.getData()[1], trace)
    assert win._pulse_tip(1.0, 3.0, 1).startswith("pulse 1: kept")
    win.latest_trial()
    assert win.selected_pulse is None and win.pulse_label.text() == ""


@pytest.mark.slow  # real time on LSL
def test_slow_gui_never_holds_back_acquisition(mon):
    """A 200-ms frame (5 fps) must not slow the engine: samples and epochs keep pace."""
    app, win, feed, amp = mon
    def epochs_behind():
        """Pulses of the simulator's truth older than 1.1 s, minus pulses epoched so far."""
        done_by = amp.simulator.n_generated - int(1.1 * SFREQ)
        return sum(1 for p in amp.truth.pulses if p.sample < done_by) - len(feed.session.pulses)

    _spin(app, 0.5)
    lag0 = epochs_behind()  # the pipeline's own hold-back (filters, bad-channel windows)
    during_frames = []  # samples the engine took in while the GUI thread was busy drawing

    def slow_frame():
        n_before = feed.engine.ring.n_written
        time.sleep(0.2)
        during_frames.append(feed.engine.ring.n_written - n_before)

    win.before_frame.append(slow_frame)
    try:
        t0, f0 = time.monotonic(), win.n_frames
        p0 = len(feed.session.pulses)
        _spin(app, 5.0)
        t1 = time.monotonic()
        lag1 = epochs_behind()
    finally:
        win.before_frame.clear()
    assert (win.n_frames - f0) / (t1 - t0) < 6  # the display really was slow (<= 5 fps)
    # acquisition runs on its own thread: a GUI that held it would take in nothing while a
    # frame is drawn; here it took samples in during every 200-ms frame
    assert len(during_frames) >= 5 and min(during_frames) > 0, during_frames
    print(f"samples taken in per 200-ms frame: min {min(during_frames)}, "
          f"median {int(np.median(during_frames))} (real time: {int(0.2 * SFREQ)})")
    assert len(feed.session.pulses) - p0 >= 5  # ~0.6 s ISI over 5 s
    assert lag1 <= lag0 + 1, f"epochs fell behind: {lag0} -> {lag1}"


def test_snapshot_png_not_blank(mon, tmp_path):
    app, win, feed, amp = mon
    win.frame()
    path = win.save_snapshot(tmp_path / "snap.png")
    from pyqtgraph.Qt import QtGui
    img = QtGui.QImage(str(path))
    assert img.width() >= 1000 and img.height() >= 600
    img = img.convertToFormat(QtGui.QImage.Format.Format_Grayscale8)
    ptr = img.constBits()
    a = np.frombuffer(ptr, dtype=np.uint8, count=img.sizeInBytes()).reshape(
        img.height(), img.bytesPerLine())[:, :img.width()].astype(float)
    assert a.var() > 100, f"snapshot looks blank (pixel variance {a.var():.1f})"
    left = a[:, : a.shape[1] // 3]  # the raw EEG traces are there: many dark pixels
    assert (left < 100).mean() > 0.02


def test_save_average_fif_and_npz(mon, tmp_path):
    import mne
    app, win, feed, amp = mon
    for _ in range(5):  # epochs keep arriving: compare with a snapshot of the same average
        p = win.save_average(tmp_path / "live-ave.fif")
        ev = mne.read_evokeds(p, verbose="error")[0]
        snap = feed.snapshot()
        if ev.nave == snap.n_averaged:
            break
    assert ev.nave == snap.n_averaged and ev.data.shape == snap.average_uv.shape
    np.testing.assert_allclose(ev.data * 1e6, np.nan_to_num(snap.average_uv), atol=1e-3)
    q = win.save_average(tmp_path / "live.npz")
    z = np.load(q)
    assert z["average_uv"].shape == snap.average_uv.shape
    assert (tmp_path / "live.json").exists()


def test_roi_choice_and_reset(mon):
    app, win, feed, amp = mon
    win.set_roi(["Cz", "C4"])
    _consistent_frame(app, win, feed)
    avg = win.snap.average_uv
    idx = [feed.meta.ch_names.index(c) for c in ("Cz", "C4")]
    np.testing.assert_allclose(win.roi_curve.getData()[1], avg[idx].mean(axis=0))
    win.set_roi(["C3", "FC1", "CP1", "CP5", "FC5"])
    win.reset()
    assert _n_avg(feed) == 0
    assert win.roi_curve.getData()[0] is None or len(win.roi_curve.getData()[0]) == 0
    assert len(win.early_kept.data) == 0
    win.frame()
    assert win.snap.n_averaged == 0 and win.snap.pulse_index.size <= 1
    assert _spin(app, 10, lambda: _n_avg(feed) >= 1)  # it averages again after the reset
    roi_uv, _, n = _consistent_frame(app, win, feed)
    np.testing.assert_allclose(win.roi_curve.getData()[1], roi_uv)
    assert n < 5


def test_pause_keeps_acquiring_and_close_joins_engine(mon):
    app, win, feed, amp = mon
    win.toggle_pause()
    x_before = win.raw_curve.getData()[1].copy()
    n0 = feed.engine.ring.n_written
    _spin(app, 1.0)
    assert feed.engine.ring.n_written - n0 > 0.8 * SFREQ
    np.testing.assert_array_equal(win.raw_curve.getData()[1], x_before)  # display frozen
    assert "PAUSED" in win.status_label.text()
    win.toggle_pause()
    win.close()
    assert not feed.running and not feed._thread.is_alive()


@pytest.mark.slow  # real time on LSL
def test_cli_monitor_headless_snapshots(tmp_path, uid):
    """`tmseeg monitor --snapshot-every` writes PNGs with no display."""
    name = f"monc-{uid}"
    amp = SimulatedAmplifier(SimConfig(n_channels=32, sfreq=2000.0, seed=4,
                                       isi_range_s=(0.6, 0.8), first_pulse_s=0.5),
                             name=name, listen_triggers=False)
    amp.start()
    import pylsl
    assert pylsl.resolve_byprop("name", f"{name}-markers", timeout=15), "simulator not up"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    try:
        out = subprocess.run(
            [sys.executable, "-m", "tmseeg.cli", "monitor", "--stream", name, "--markers",
             f"{name}-markers", "--duration", "5", "--snapshot-every", "2",
             "--snapshot-dir", str(tmp_path)], capture_output=True, text=True, timeout=60,
            env=env)
    finally:
        amp.stop()
    assert out.returncode == 0, out.stderr[-2000:]
    pngs = sorted(tmp_path.glob("monitor-*.png"))
    assert len(pngs) >= 2, out.stdout
    assert all(p.stat().st_size > 20000 for p in pngs)
    assert "final:" in out.stdout


def test_attached_monitor_draws_the_engines_roi_tep(uid):
    """`monitor --attach`: the ROI TEP and GMFP arrive on tmseeg-metrics and are drawn.

    A real engine (in this process, publishing ``tmseeg-metrics`` as ``tmseeg run`` does) and
    an :class:`AttachedFeed` in its window follow the same amplifier over loopback LSL; the
    attached curve must be the engine's own running ROI average at the published time points
    (every k-th sample: the epoch filter low-passed it), within the 0.001 µV rounding.
    """
    from tmseeg.gui.feed import AttachedFeed

    name = f"att-{uid}"
    amp = SimulatedAmplifier(SimConfig(n_channels=32, sfreq=SFREQ, seed=5, isi_range_s=(0.5, 0.6),
                                       first_pulse_s=0.4), name=name, listen_triggers=False)
    amp.start()
    cfg = load_config(None, {"epochs": {"reject_uv": 0.0}})
    engine = LiveFeed(LSLSource.resolve(name=name, timeout_s=10, marker_name=f"{name}-markers",
                                        marker_timeout_s=10),
                      config=cfg, roi=["C3", "FC1", "CP1"], publish=True)
    sent = {}  # n averaged -> the engine's full-rate ROI average and GMFP when it published

    def remember(update):  # engine thread, right before the outlet sends this update
        tep = engine.session.tep
        sent[tep.n] = (tep.times_ms.copy(), tep.roi_average_uv, tep.gmfp_uv)
    # first in line: after the outlet, the attached window could read an update (the first
    # ones come in a burst once the first pulses' decisions are made) before it is remembered
    engine.session.listeners.insert(0, remember)
    engine.start()
    win = None
    try:
        attached = AttachedFeed(LSLSource.resolve(name=name, timeout_s=10, with_markers=False),
                                metrics_source_id=engine.outlet.outlet.get_info().source_id(),
                                timeout_s=10)
        app = pg.mkQApp()
        win = MonitorWindow(attached, window_s=2.0, n_buckets=400)
        win.start()
        assert _spin(app, 15, lambda: win.snap is not None and win.snap.n_averaged >= 2), \
            "no averaged TEP reached the attached monitor within 15 s"
        s = win.snap
        t_full, roi_full, gmfp_full = sent[s.n_averaged]
        step = int(round(np.diff(s.times_ms[:2])[0] * SFREQ / 1000.0))
        assert step == 5 and s.times_ms.size == t_full[::step].size  # 1 kHz from 5 kHz
        np.testing.assert_allclose(s.times_ms, t_full[::step], atol=1e-9)
        np.testing.assert_allclose(s.roi_average_uv, roi_full[::step], rtol=0, atol=5e-4 + 1e-9)
        np.testing.assert_allclose(s.gmfp_uv, gmfp_full[::step], rtol=0, atol=5e-4 + 1e-9)
        assert s.roi == ["C3", "FC1", "CP1"] and np.abs(s.roi_average_uv).max() > 0.5
        # the window really draws them: ROI TEP and GMFP curves hold the data, peaks labelled
        x, y = win.roi_curve.getData()
        assert x is not None and len(x) == s.times_ms.size
        np.testing.assert_array_equal(y, s.roi_average_uv)
        assert len(win.gmfp_curve.getData()[1]) == s.times_ms.size
        assert any(lab.isVisible() for lab in win.peak_labels.values()), "no TEP peak labelled"
        bx = win.butterfly_curve.getData()[0]
        assert bx is None or len(bx) == 0  # the per-channel average is not sent
        assert "ROI TEP and GMFP at 1000 Hz" in win.tep_info.text()
    finally:
        if win is not None:
            win.close()
        engine.stop()
        amp.stop()


def test_curve_encoding_decimates_without_aliasing():
    """Every k-th sample after the epoch low-pass; block means when there is no low-pass."""
    import json

    from tmseeg.io.metrics_outlet import curve_decimation, decode_curves, encode_curves
    from tmseeg.utils import jsonable

    assert curve_decimation(5000.0, 80.0) == (5, "subsample")
    assert curve_decimation(5000.0, 500.0) == (4, "subsample")  # keeps >= 2.5 x the low-pass
    assert curve_decimation(20000.0, 80.0) == (20, "subsample")
    assert curve_decimation(5000.0, None) == (5, "mean")
    t = np.arange(-2500, 2501) / 5.0  # ms at 5 kHz
    x = np.sin(2 * np.pi * t / 37.0) * 7.0
    x[10] = np.nan
    msg = json.loads(json.dumps(jsonable(encode_curves(t, {"roi_average_uv": x}, 5000.0, 0.0,
                                                       n_averaged=3, roi=["C3"]))))
    times, uv = decode_curves(msg)
    assert msg["method"] == "mean" and msg["n"] == 1000 and msg["n_averaged"] == 3
    np.testing.assert_allclose(times, t[:5000].reshape(-1, 5).mean(axis=1), atol=1e-9)
    ref = x[:5000].reshape(-1, 5).mean(axis=1)
    assert np.isnan(uv["roi_average_uv"][2]) and np.isnan(ref[2])
    np.testing.assert_allclose(uv["roi_average_uv"], ref, rtol=0, atol=5e-4 + 1e-12)


def test_mep_panel_says_the_threshold_and_the_hotspot(mon):
    """During a threshold hunt or a motor map the MEP panel's title gives what the MEP
    plug-in concluded so far (drawn from a snapshot carrying its summary)."""
    from tmseeg.gui.feed import MonitorSnapshot

    app, win, feed, amp = mon
    snap = MonitorSnapshot(version=-5)
    snap.mep_ptp_uv = np.array([20.0, 80.0, 300.0])
    snap.metrics = {"mep": {"motor_threshold_ml_pct": 41.24,
                            "motor_threshold_ml_ci_pct": [39.9, 42.6],
                            "hotspot": {"hotspot": "-40,10,62", "p_best": 0.93, "sites": []}}}
    win._draw_mep(snap)
    title = win.mep_amp_plot.titleLabel.text
    assert "MT 41.2 % MSO [39.9, 42.6]" in title and "hotspot -40,10,62 (best in 93 %)" in title
    snap.metrics = {"mep": {"motor_threshold": None}}
    win._draw_mep(snap)
    assert win.mep_amp_plot.titleLabel.text.endswith("per pulse")


@contextlib.contextmanager
def _window_on(rec, n_pulses: int):
    """A monitor on a recording (a source of the one driver, read as fast as it goes), drawn
    once every pulse but the last (its epoch runs past the end) is in the session."""
    from tmseeg.engine import RecordingSource

    feed = LiveFeed(RecordingSource(rec), config=load_config(None), roi=["C3", "FC1", "CP1"])
    app = pg.mkQApp()
    win = MonitorWindow(feed, window_s=4.0, n_buckets=400)
    win.show()
    win.start()
    try:
        assert _spin(app, 90, lambda: len(feed.session.pulses) >= n_pulses - 1)
        _consistent_frame(app, win, feed)
        yield app, win, feed
    finally:
        win.close()


def test_a_rejected_pulse_says_why_and_shows_its_trial(tmp_path):
    """A recording (as a source of the one driver) with a 600 µV jolt on C3 in the epoch
    of one pulse: its point is a rejected cross, the panel's title counts it by reason, the
    quality panel names the reason, and clicking it says "REJECTED — amplitude ..." with its
    own single trial, jolt included."""
    from tmseeg.sim.accuracy import simulated_recording

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=4,
                                               muscle_artifact=False, blinks=False), 14.0)
    k = 3
    jolt = truth.pulses[k].sample + 200  # 100 ms after the pulse
    c3 = rec.meta.ch_names.index("C3")
    rec.data_uv[c3, jolt:jolt + 20] += 600.0
    with _window_on(rec, len(truth.pulses)) as (app, win, feed):
        row = feed.session.pulses[k]
        assert not row["kept"] and row["reason"].startswith("amplitude")
        assert k in [int(p.data()) for p in win.early_rej.points()]
        assert "1 rejected: amplitude 1" in win.early_plot.titleLabel.text
        rej = {x.name: x for x in win.update_quality(None)}["rejected pulses"]
        assert rej.value.startswith(f"1 of {len(feed.session.pulses)}: amplitude 1")
        text = win.show_pulse(k)
        assert f"pulse {k} at" in text and "REJECTED — amplitude" in text, text
        times, trace = win.trial_curve.getData()
        at = int(np.argmin(np.abs(times - 100.0)))
        assert np.nanmax(trace[max(0, at - 10):at + 10]) > 100.0  # its own jolt (ROI mean)


def test_blocks_overlay_with_their_effect_size():
    """Markers "pre" and "post" split the session: the butterfly overlays each block's ROI
    average (the plasticity plug-in's exact block averages), and the legend gives the post
    block's early-TEP change against pre with Hedges' g and its CI."""
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.stream.block import Event

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=6,
                                               muscle_artifact=False, blinks=False,
                                               isi_range_s=(0.9, 1.1)), 26.0)
    half = int(13.0 * rec.meta.sfreq)
    rec.events = sorted(list(rec.events) + [Event(sample=200, label="pre"),
                                            Event(sample=half, label="post")],
                        key=lambda e: e.sample)
    with _window_on(rec, len(truth.pulses)) as (app, win, feed):
        blocks = next(m for m in feed.session.metrics if m.name == "plasticity")
        assert set(win.block_curves) == {"pre", "post"}
        for label, curve in win.block_curves.items():
            np.testing.assert_allclose(curve.getData()[1], blocks.teps[label].roi_average_uv)
        texts = win.block_labels(win.snap)
        assert texts["pre"] == f"pre ({blocks.teps['pre'].n}): baseline"
        assert texts["post"].startswith(f"post ({blocks.teps['post'].n}): early TEP ")
        assert ", g " in texts["post"] and "[" in texts["post"], texts
        legend = [lab.text for _, lab in win.block_legend.items]
        assert legend == [texts["pre"], texts["post"]]
