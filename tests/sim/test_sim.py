"""The simulator is the ground truth of every other test: check it against independent numbers."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import signal

from tmseeg.sim.config import CAPS, SimConfig
from tmseeg.sim.model import TMSEEGSimulator, simulate_recording
from tmseeg.sim.truth import GroundTruth

SMALL = ("Fp1", "Fp2", "FC3", "C5", "C3", "C1", "CP3", "Cz", "C4", "Oz")


def quiet(**kw) -> SimConfig:
    """Everything off except what a test switches on."""
    base = dict(ch_names=SMALL, sfreq=1000.0, noise_uv=0.0, smooth_uv=0.0, n_smooth_sources=0,
                alpha=False, mu=False, blinks=False, line_noise_hz=0.0, pulse_artifact=False,
                decay_artifact=False, muscle_artifact=False, emg_noise_uv=0.0)
    base.update(kw)
    return SimConfig(**base)


def circ_diff(a, b):
    return np.angle(np.exp(1j * (a - b)))


# ------------------------------------------------------------------------------------------------
def test_deterministic_and_chunking_invariant():
    cfg = SimConfig(n_channels=32, sfreq=2000.0, seed=3, isi_range_s=(0.5, 0.9), first_pulse_s=0.2)
    whole, ev_whole = TMSEEGSimulator(cfg).generate(9000)
    sim = TMSEEGSimulator(cfg)
    rng = np.random.default_rng(1)
    parts, evs = [], []
    while sim.n_generated < 9000:
        n = int(min(rng.choice([1, 7, 40, 333, 2500]), 9000 - sim.n_generated))
        d, e = sim.generate(n)
        parts.append(d)
        evs += e
    assert np.array_equal(np.concatenate(parts, axis=1), whole)  # bit for bit
    assert [(e.sample, e.label) for e in evs] == [(e.sample, e.label) for e in ev_whole]
    assert len(ev_whole) >= 6
    other, _ = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=2000.0, seed=4)).generate(9000)
    assert not np.allclose(other, whole)
    # layout: EEG rows in cap order, then EMG
    assert sim.meta.ch_names == CAPS[32] + ("EMG",)
    assert sim.meta.ch_types[-1] == "emg" and set(sim.meta.ch_types[:-1]) == {"eeg"}
    # background amplitude is EEG-like: 10-40 µV RMS between pulses, after high-pass
    b, a = signal.butter(2, 1.0, "highpass", fs=2000.0)
    eeg = signal.filtfilt(b, a, whole[:32, :350])
    rms = np.sqrt((eeg ** 2).mean())
    assert 5.0 < rms < 40.0


@pytest.mark.parametrize("schedule", ["single", "paired", "train-1hz", "train-10hz", "itbs",
                                      "ctbs", "external"])
def test_schedule_timing(schedule):
    fs = 1000.0
    cfg = quiet(schedule=schedule, isi_range_s=(2.0, 3.0), ipi_ms=3.0, include_emg=False,
                first_pulse_s=0.5)
    sim = TMSEEGSimulator(cfg)
    dur = 42.0 if schedule in ("train-10hz", "itbs") else 12.0
    _, events = sim.generate(int(dur * fs))
    s = np.array([e.sample for e in events if e.kind == "pulse"])
    assert np.array_equal(s, sim.truth.pulse_samples())
    if schedule == "external":
        assert s.size == 0
        return
    assert s[0] == 500
    d = np.diff(s)
    if schedule == "single":
        assert np.all((d >= 2000) & (d <= 3000)) and d.std() > 100  # random, within the range
    elif schedule == "paired":
        assert np.all(d[0::2] == 3) and np.all((d[1::2] >= 1997) & (d[1::2] <= 2997))
        inten = [p.intensity_pct for p in sim.truth.pulses]
        assert inten[0::2] == [pytest.approx(0.8 * 55.0)] * len(inten[0::2])
        assert set(inten[1::2]) == {70.0}
    elif schedule == "train-1hz":
        assert np.all(d == 1000)
    elif schedule == "train-10hz":
        assert np.sum(d == 100) == 2 * 39 and np.sum(d == 26100) == 1 and len(s) == 80
    elif schedule in ("itbs", "ctbs"):
        bursts = s.reshape(-1, 3)
        assert np.all(np.diff(bursts, axis=1) == 20)  # 50 Hz within a burst
        onsets = np.diff(bursts[:, 0])
        if schedule == "ctbs":
            assert np.all(onsets == 200) and len(s) == 3 * 58  # 0.5 .. 12 s at 5 Hz
        else:  # 10 bursts (2 s) then 8 s off: next train 10 s after the last one began
            assert np.all(onsets[:9] == 200) and onsets[9] == 10000 - 9 * 200
            # trains at 0.5, 10.5, 20.5, 30.5 s, and 8 bursts of the one at 40.5 s before 42 s
            assert len(s) == 3 * 10 * 4 + 3 * 8


def test_mu_phase_truth_matches_source_and_data():
    fs = 1000.0
    cfg = SimConfig(n_channels=64, sfreq=fs, seed=5, schedule="external")
    sim = TMSEEGSimulator(cfg)
    data, _ = sim.generate(int(60 * fs))
    truth = sim.truth
    phase = truth.mu_phase(0, data.shape[1])
    # 1) the Hilbert phase of the noise-free source A cos(phi) is the stored phase
    src = truth.mu_source(0, data.shape[1])
    h = np.angle(signal.hilbert(src))
    inner = slice(2000, -2000)
    err = np.abs(circ_diff(h[inner], phase[inner]))
    assert np.median(err) < 0.03 and np.percentile(err, 95) < 0.15
    # 2) ...and it is what the EEG shows: band-passed C3 surface Laplacian
    ix = sim.meta.index(["C3", "FC3", "CP3", "C1", "C5"])
    lap = data[ix[0]] - data[ix[1:]].mean(0)
    sos = signal.butter(3, [8.0, 13.0], "bandpass", fs=fs, output="sos")
    est = np.angle(signal.hilbert(signal.sosfiltfilt(sos, lap)))
    dphi = circ_diff(est[inner], phase[inner])
    plv = np.abs(np.mean(np.exp(1j * dphi)))
    assert plv > 0.75 and abs(np.angle(np.mean(np.exp(1j * dphi)))) < 0.25
    # and a far channel (Oz, alpha) does not track it
    oz = signal.sosfiltfilt(sos, data[sim.meta.index("Oz")[0]])
    plv_oz = np.abs(np.mean(np.exp(1j * circ_diff(np.angle(signal.hilbert(oz))[inner],
                                                   phase[inner]))))
    assert plv_oz < 0.3
    # frequency drifts around 10.8 Hz, envelope waxes and wanes around 6 µV
    inst_f = np.diff(np.unwrap(phase)) * fs / (2 * np.pi)
    assert 10.3 < inst_f.mean() < 11.3 and 0.05 < inst_f.std() < 1.0
    amp = truth.mu_amplitude(0, data.shape[1])
    assert 4.0 < amp.mean() < 8.0 and amp.max() / amp.min() > 3
    with pytest.raises(ValueError, match="generated"):
        truth.mu_phase(0, data.shape[1] + 1)


def test_tep_is_linear_template_times_gain():
    fs = 1000.0
    cfg = quiet(schedule="single", isi_range_s=(0.7, 0.9), mu=True, seed=2,
                phase_dependency=0.3, power_dependency=0.2)
    sim = TMSEEGSimulator(cfg)
    data, _ = sim.generate(int(80 * fs))
    truth = sim.truth
    t = truth.tep_times_ms
    i0 = int(round(t[0] * fs / 1000))
    # the mu background is the only non-TEP signal: remove it with the known source
    mu = sim._mu_topo[:, None] * truth.mu_source(0, data.shape[1])[None, :]
    tep_only = data[: sim.n_eeg] - mu
    pulses = [p for p in truth.pulses if p.sample + i0 >= 0 and p.sample + i0 + t.size
              <= data.shape[1]]
    assert len(pulses) >= 80
    worst = 0.0
    for p in pulses:  # ISI >= 700 ms > window (600 ms): no overlap between trials
        ep = tep_only[:, p.sample + i0: p.sample + i0 + t.size]
        worst = max(worst, np.abs(ep - truth.tep_template_uv * p.tep_gain_effective).max())
    assert worst < 1e-9
    # gains follow the documented phase model: slope of gain on cos(phase) ~ 0.3
    g = np.array([p.tep_gain_effective for p in truth.pulses])
    c = np.cos([p.mu_phase_rad for p in truth.pulses])
    slope = np.polyfit(c, g, 1)[0]
    assert 0.15 < slope < 0.45
    # the ROI average of the template has the six named peaks with the documented signs
    roi = truth.tep_roi_uv()
    for name, pk in truth.peaks.items():
        j = np.argmin(np.abs(t - pk["latency_ms"]))
        assert roi[j] == pytest.approx(pk["amplitude_uv"])
        assert np.sign(pk["amplitude_uv"]) == (-1 if name[0] == "N" else 1)
        assert abs(pk["latency_ms"] - pk["nominal_latency_ms"]) <= 3.0
    assert truth.roi[0] == "C3" and len(truth.roi) == 5


def test_tep_recovered_by_averaging_noisy_trials():
    fs = 1000.0
    cfg = SimConfig(n_channels=32, sfreq=fs, seed=8, isi_range_s=(0.8, 1.0),
                    pulse_artifact=False, decay_artifact=False, muscle_artifact=False,
                    blinks=False, line_noise_hz=0.0, phase_dependency=0.0, power_dependency=0.0,
                    tep_jitter=0.1)
    sim = TMSEEGSimulator(cfg)
    data, events = sim.generate(int(250 * fs))
    t = sim.truth.tep_times_ms
    i0 = int(round(t[0] * fs / 1000))
    sos = signal.butter(2, [1.0, 45.0], "bandpass", fs=fs, output="sos")
    filt = signal.sosfiltfilt(sos, data[:32], axis=1)
    eps = np.stack([filt[:, e.sample + i0: e.sample + i0 + t.size] for e in events
                    if e.sample + i0 + t.size <= data.shape[1]])
    eps -= eps[:, :, t < 0].mean(axis=2, keepdims=True)
    avg = eps.mean(0)
    roi = sim.meta.index(sim.truth.roi)
    ref = signal.sosfiltfilt(sos, sim.truth.tep_template_uv, axis=1)
    ref -= ref[:, t < 0].mean(1, keepdims=True)
    g = np.mean([p.tep_gain_effective for p in sim.truth.pulses[: len(eps)]])
    assert len(eps) > 200 and 0.95 < g < 1.05
    r = np.corrcoef(avg[roi].mean(0), ref[roi].mean(0) * g)[0, 1]
    assert r > 0.9
    for name in ("N45", "N100", "P180"):
        j = np.argmin(np.abs(t - sim.truth.peaks[name]["latency_ms"]))
        assert avg[roi, j].mean() == pytest.approx(ref[roi, j].mean() * g, abs=1.5)


def test_mep_ptp_in_emg_equals_truth():
    fs = 2000.0
    cfg = SimConfig(n_channels=32, sfreq=fs, seed=11, isi_range_s=(0.6, 0.8))
    sim = TMSEEGSimulator(cfg)
    data, events = sim.generate(int(20 * fs))
    emg = data[-1]
    checked = 0
    for p in sim.truth.pulses:
        w = emg[p.sample + int(0.015 * fs): p.sample + int(0.06 * fs)]
        if w.size < int(0.045 * fs):
            continue
        assert np.ptp(w) == pytest.approx(p.mep_ptp_uv, abs=25.0, rel=0.01)
        onset = np.flatnonzero(np.abs(emg[p.sample + 30:] - 0) > 40)[0] + 30
        assert abs(onset / fs * 1000 - p.mep_latency_ms) < 2.5
        checked += 1
    assert checked >= 20
    ptps = np.array([p.mep_ptp_uv for p in sim.truth.pulses])
    assert ptps.std() / ptps.mean() > 0.2  # trial-to-trial variability is present


def test_mep_recruitment_is_sigmoid():
    fs = 2000.0
    cfg = quiet(sfreq=fs, schedule="external", mep_variability=0.0, phase_dependency=0.0,
                power_dependency=0.0, mep_threshold_pct=55.0, mep_slope_pct=4.0,
                mep_max_uv=1500.0)
    sim = TMSEEGSimulator(cfg)
    intensities = [35, 45, 50, 55, 60, 65, 80]
    for k, inten in enumerate(intensities):
        sim.request_pulse(int((0.5 + k) * fs), inten)
    data, _ = sim.generate(int(len(intensities) * fs + fs))
    for k, inten in enumerate(intensities):
        s = int((0.5 + k) * fs)
        ptp = np.ptp(data[-1, s: s + int(0.06 * fs)])
        expected = 1500.0 / (1 + np.exp(-(inten - 55.0) / 4.0))
        assert ptp == pytest.approx(expected, rel=1e-6)
    assert not data[:, :1000].any()  # quiet config: nothing before the first pulse
    assert np.abs(data[:-1]).max() < 20  # only the TEP (tens of µV at most) on the EEG


def test_request_pulse_markers_and_gain():
    cfg = quiet(schedule="external")
    sim = TMSEEGSimulator(cfg)
    sim.generate(100)
    assert sim.request_pulse() == 100
    assert sim.request_pulse(250, 40.0, label="probe") == 250
    with pytest.raises(ValueError, match="already generated"):
        sim.request_pulse(99)
    with pytest.raises(ValueError, match="0-100"):
        sim.request_pulse(400, 150.0)
    sim.mark_block("pre")
    _, ev = sim.generate(200)
    assert [(e.sample, e.label, e.kind) for e in ev] == [
        (100, "pre", "marker"), (100, "TMS", "pulse"), (250, "probe", "pulse")]
    assert ev[2].extra["intensity_pct"] == 40.0
    sim.set_tep_gain(2.0)
    sim.request_pulse(500)
    sim.generate(300)
    g = [p.tep_gain_effective for p in sim.truth.pulses]
    assert g[2] == pytest.approx(2 * g[0], rel=0.5) and g[2] > 1.4
    assert sim.truth.markers == [(100, "pre")]
    with pytest.raises(ValueError, match="gain"):
        sim.set_tep_gain(-1)


@pytest.mark.parametrize("kw, match", [
    (dict(n_channels=40), "32, 64"), (dict(schedule="weekly"), "schedule"),
    (dict(coil_site="X9"), "10-05"), (dict(sfreq=100.0), "sfreq"),
    (dict(intensity_pct=120.0), "intensity"), (dict(noisy_channels=("Q1",)), "noisy"),
])
def test_config_errors_name_the_problem(kw, match):
    with pytest.raises(ValueError, match=match):
        SimConfig(**kw)


def test_simulate_recording_into_mne_and_truth_roundtrip(tmp_path):
    import mne

    cfg = SimConfig(n_channels=32, sfreq=1000.0, seed=9, isi_range_s=(1.0, 1.5),
                    noisy_channels=("T7",))
    raw, truth = simulate_recording(cfg, 12.0, markers=[(0.0, "pre"), (6.0, "post")])
    assert raw.n_times == 12000 and raw.info["sfreq"] == 1000.0
    assert raw.get_channel_types()[-1] == "emg" and raw.ch_names[-1] == "EMG"
    sim_data, _ = TMSEEGSimulator(cfg).generate(12000)
    assert np.allclose(raw.get_data(), sim_data * 1e-6, rtol=0, atol=1e-15)  # volts
    tms = [a for a in raw.annotations if a["description"] == "TMS"]
    assert len(tms) == len(truth.pulses) >= 7
    assert np.allclose([a["onset"] for a in tms], [p.time_s for p in truth.pulses])
    assert [a["description"] for a in raw.annotations if a["description"] != "TMS"] == \
        ["pre", "post"]
    ev, ev_id = mne.events_from_annotations(raw, verbose="error")
    assert np.array_equal(ev[ev[:, 2] == ev_id["TMS"], 0], truth.pulse_samples())
    pos = raw.get_montage().get_positions()["ch_pos"]
    assert np.linalg.norm(pos["C3"]) > 0.05
    # the noisy channel really is noisy
    t7 = raw.get_data(picks=["T7"])[0] * 1e6
    c4 = raw.get_data(picks=["C4"])[0] * 1e6
    assert np.std(np.diff(t7)) > 5 * np.std(np.diff(c4))
    # truth save / load
    jpath = truth.save(tmp_path / "truth")
    back = GroundTruth.load(jpath)
    assert back.pulses == truth.pulses and back.markers == truth.markers == [(0, "pre"),
                                                                            (6000, "post")]
    assert np.array_equal(back.mu_phase(0, 12000), truth.mu_phase(0, 12000))
    assert np.array_equal(back.tep_template_uv, truth.tep_template_uv)
    assert back.peaks == truth.peaks and back.roi == truth.roi
    assert json.loads(jpath.read_text())["config"]["seed"] == 9
    assert SimConfig.from_dict(back.config) == cfg


def test_lsl_amplifier_realtime(uid, tmp_path):
    import pylsl

    from tmseeg.sim.amplifier import SimulatedAmplifier

    fs = 2000.0
    cfg = SimConfig(n_channels=32, sfreq=fs, seed=21, isi_range_s=(0.4, 0.6), first_pulse_s=0.3)
    trig_info = pylsl.StreamInfo(f"trig-{uid}", "Markers", 1, pylsl.IRREGULAR_RATE,
                                 pylsl.cf_string, f"trig-{uid}")
    trig = pylsl.StreamOutlet(trig_info)
    amp = SimulatedAmplifier(cfg, name=f"sim-{uid}", source_id=f"src-{uid}",
                             trigger_stream_name=f"trig-{uid}", truth_path=tmp_path / "truth.json")
    amp.start()
    try:
        eeg_info = pylsl.resolve_byprop("source_id", f"src-{uid}", timeout=5.0)
        mk_info = pylsl.resolve_byprop("name", f"sim-{uid}-markers", timeout=5.0)
        assert eeg_info and mk_info
        eeg_in = pylsl.StreamInlet(eeg_info[0], max_buflen=10)
        full = eeg_in.info(timeout=5.0)  # the XDF channel description travels with the stream
        assert full.get_channel_labels() == list(CAPS[32]) + ["EMG"]
        assert full.get_channel_units()[0] == "microvolts"
        assert full.get_channel_types()[-1] == "EMG" and full.channel_format() == pylsl.cf_float32
        mk_in = pylsl.StreamInlet(mk_info[0])
        eeg_in.open_stream(timeout=5.0)
        mk_in.open_stream(timeout=5.0)
        assert trig.wait_for_consumers(5.0)
        chunks, stamps, markers = [], [], []
        sent = False
        t_end = pylsl.local_clock() + 2.5
        while pylsl.local_clock() < t_end:
            d, ts = eeg_in.pull_chunk(timeout=0.0, max_samples=4096)
            if ts:
                chunks.append(np.asarray(d))
                stamps += ts
            m, mts = mk_in.pull_chunk(timeout=0.0)
            markers += list(zip([x[0] for x in m], mts))
            if not sent and pylsl.local_clock() > t_end - 1.5:
                target = pylsl.local_clock() + 0.3
                trig.push_sample(["not json at all"])
                trig.push_sample([json.dumps({"accepted": False, "target_time_s": target,
                                              "label": "NO"})])
                trig.push_sample([json.dumps({"accepted": True, "target_time_s": target,
                                              "intensity_pct": 60.0, "label": "TRIG"})])
                sent = True
            time.sleep(0.01)
    finally:
        sender = amp._thread
        amp.stop()
    # stop() ends the sender thread (it does not wait for the stream to drain)
    assert sender is not None and not sender.is_alive()
    data = np.concatenate(chunks)
    stamps = np.array(stamps)
    n = len(stamps)
    assert n >= 0.8 * 2.5 * fs and n <= amp.n_sent
    # exact timestamps, in order, without gaps (from the sample pushed after we connected)
    first = amp.sample_at(stamps[0])
    assert np.max(np.abs(stamps - (amp.t0_s + (first + np.arange(n)) / fs))) < 1e-6
    assert 0 <= first < 2.0 * fs
    # the streamed values are the model's (float32), up to the triggered pulse
    trig_pulses = [p for p in amp.truth.pulses if p.label == "TRIG"]
    assert len(trig_pulses) == 1 and amp.n_triggers == 1
    tp = trig_pulses[0]
    ref, _ = TMSEEGSimulator(cfg).generate(tp.sample)
    m = tp.sample - first
    assert m > 0.5 * fs
    assert np.array_equal(data[:m], ref[:, first:].T.astype(np.float32))
    # the trigger fired at the requested time (within one sample)
    assert abs(tp.sample - amp.sample_at(target)) <= 1 and tp.intensity_pct == 60.0
    # every marker's timestamp maps onto a true pulse sample (no marker lost once connected)
    got = [(lab, amp.sample_at(ts)) for lab, ts in markers]
    want = [(p.label, p.sample) for p in amp.truth.pulses]
    assert len(got) >= 3 and got[0] in want
    k = want.index(got[0])
    assert got == want[k: k + len(got)] and len(got) >= len(want) - k - 1
    for lab, ts in markers:
        assert abs((ts - amp.t0_s) * fs - round((ts - amp.t0_s) * fs)) < 1e-3
    assert ("TRIG", tp.sample) in got
    back = GroundTruth.load(tmp_path / "truth.json")
    assert [p.sample for p in back.pulses] == [p.sample for p in amp.truth.pulses]


def test_sample_data_matches_its_truth():
    from pathlib import Path

    import mne

    root = Path(__file__).resolve().parents[2] / "sample_data"
    vhdr = root / "tmseeg_sample.vhdr"
    if not vhdr.exists():
        pytest.skip("sample_data not generated (python apps/make_sample_data.py)")
    raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    truth = GroundTruth.load(root / "tmseeg_sample_truth.json")
    onsets = [int(round(a["onset"] * raw.info["sfreq"])) for a in raw.annotations
              if a["description"] == "Stimulus/TMS"]
    assert len(onsets) >= 40 and onsets == list(truth.pulse_samples())
    assert raw.info["sfreq"] >= 2000 and raw.ch_names == truth.ch_names
    # the stored data are the simulator's, within the 16-bit quantisation
    cfg = SimConfig.from_dict(truth.config)
    ref, _ = TMSEEGSimulator(cfg).generate(20000)
    got = raw.get_data(stop=20000) * 1e6
    assert np.max(np.abs(got - ref)) < 1.01  # at most half the coarsest resolution step (2 µV)
    assert np.median(np.abs(got - ref)) < 0.06


def test_cli_streams_for_a_duration(uid, tmp_path, capsys):
    import argparse

    from tmseeg.sim import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--channels", "32", "--sfreq", "1000", "--duration", "1.5",
                              "--isi", "0.2,0.3", "--name", f"cli-{uid}", "--triggers",
                              f"trig-{uid}", "--truth", str(tmp_path / "t.json"), "--no-emg"])
    assert cli.config_from_args(args).isi_range_s == (0.2, 0.3)
    assert cli.run(args) == 0
    out = capsys.readouterr().out
    truth = GroundTruth.load(tmp_path / "t.json")
    assert f"{len(truth.pulses)} pulses" in out and len(truth.pulses) >= 2
    assert "EMG" not in truth.ch_names and 1300 <= truth.n_generated <= 1700
    with pytest.raises(SystemExit):
        parser.parse_args(["--isi", "3,1"])


def test_background_is_pink_and_spatially_smooth():
    from tmseeg.sim.config import _distance_cm, _unit

    # per-channel noise alone: 1/f power (log-log slope -1 from 1 to 100 Hz), 6 µV RMS
    cfg = SimConfig(ch_names=("C3", "Cz", "C4", "Oz"), sfreq=1000.0, schedule="external",
                    n_smooth_sources=0, alpha=False, mu=False, blinks=False, line_noise_hz=0.0,
                    include_emg=False)
    d, _ = TMSEEGSimulator(cfg).generate(120000)
    f, p = signal.welch(d, fs=1000.0, nperseg=8000)
    m = (f >= 1) & (f <= 100)
    slope = np.polyfit(np.log10(f[m]), np.log10(p[:, m].mean(0)), 1)[0]
    assert -1.1 < slope < -0.9
    assert np.allclose(d.std(1), 6.0, rtol=0.1)
    # full background: neighbours correlate, distant channels hardly; 10-20 µV RMS
    cfg = SimConfig(sfreq=500.0, schedule="external", blinks=False, line_noise_hz=0.0)
    sim = TMSEEGSimulator(cfg)
    d, _ = sim.generate(30000)
    c = np.corrcoef(d[:64])
    u = _unit(sim.meta.ch_names[:64])
    dist = np.array([_distance_cm(u, v) for v in u])
    assert c[(dist > 0) & (dist < 4)].mean() > 0.6 and abs(c[dist > 12].mean()) < 0.25
    assert 10.0 < d[:64].std(1).mean() < 20.0
