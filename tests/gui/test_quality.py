"""The session-quality lights against values whose truth is known: line noise of a known
share, decay left after the cut, muscle and early TEP of known size, bad channels, rejections,
stream health; each level follows the documented threshold."""
import math

import numpy as np
import pytest

from tmseeg.engine import EngineStatus
from tmseeg.gui.feed import MonitorSnapshot
from tmseeg.gui.quality import (BAD, OK, THRESHOLDS, WAIT, WARN, line_noise_pct, reason_counts,
                                session_quality)

SF = 5000.0
TIMES = np.arange(-200.0, 500.0, 1000.0 / SF)


def _status(**kw):
    base = dict(stream="amp", n_channels=64, sfreq_hz=SF, rate_hz=SF, n_samples=10 ** 6,
                n_pulses=30, n_gaps=0, n_missing=0, transport_latency_ms=1.0,
                processing_latency_ms_p50=0.2, processing_latency_ms_p99=0.6, elapsed_s=100.0)
    base.update(kw)
    return EngineStatus(**base)


def _snap(avg=None, n=40, kept=None, reasons=None, bads=None, decay=None, cut=(-2.0, 12.0)):
    s = MonitorSnapshot(version=1, n_averaged=n, times_ms=TIMES, roi_average_uv=avg,
                        bads=bads or {}, cut_window_ms=cut, n_eeg=60,
                        target_snr=3.0, trials_needed=float(n + 25))
    s.kept = np.ones(n, bool) if kept is None else np.asarray(kept, bool)
    s.reasons = reasons if reasons is not None else [""] * s.kept.size
    s.pulse_index = np.arange(s.kept.size, dtype=float)
    s.decay_max_uv = np.full(s.kept.size, 300.0) if decay is None else np.asarray(decay)
    return s


def _light(lights, name):
    return next(x for x in lights if x.name == name)


def _tep(rng, early_uv=8.0, noise_uv=0.3, decay_uv=0.0, muscle_uv=0.0):
    """A ROI average: baseline noise, an N15-P30-N45 of ``early_uv`` ptp, a decay left after
    the cut, a 150 Hz muscle burst over 8-25 ms."""
    t = TIMES
    x = rng.normal(0, noise_uv, t.size)
    x += early_uv / 2 * np.sin(2 * np.pi * (t - 15) / 30.0) * ((t > 15) & (t < 60))
    x += decay_uv * np.exp(-(t - 12.0) / 5.0) * (t > 12)
    x += muscle_uv * np.sin(2 * np.pi * 150 * t / 1000.0) * ((t > 8) & (t < 25))
    return x


def test_line_noise_share_is_the_true_share():
    """White noise plus a 50 Hz sine: the measured share is the sine's power (plus the noise
    within 1 Hz of 50/100 Hz) over all 1-100 Hz power, within a point."""
    rng = np.random.default_rng(0)
    n = int(2 * SF)
    t = np.arange(n) / SF
    sd = 10.0
    for amp in (0.0, 3.0, 10.0, 40.0):
        x = rng.normal(0, sd, (16, n)) + amp * np.sin(2 * np.pi * 50.0 * t)
        # white noise power in the 0.5-Hz bins of 1-100 Hz (199 bins) and of 49-51, 99-101 Hz
        noise_band = sd ** 2 * 99.5 / (SF / 2)
        near = sd ** 2 * 5.0 / (SF / 2)
        truth = 100 * (amp ** 2 / 2 + near) / (amp ** 2 / 2 + noise_band)
        pct, hz = line_noise_pct(x, SF)
        assert pct == pytest.approx(truth, abs=2.5), (amp, pct, truth)
        if amp >= 10:
            assert hz == 50.0
    x = rng.normal(0, sd, (8, n)) + 30 * np.sin(2 * np.pi * 60.0 * t)
    assert line_noise_pct(x, SF)[1] == 60.0
    assert math.isnan(line_noise_pct(x[:, :100], SF)[0])  # too short to say


def test_clean_session_is_green_and_each_problem_turns_its_light():
    rng = np.random.default_rng(1)
    good = session_quality(_snap(_tep(rng)), _status(), (2.0, 50.0))
    assert {x.name: x.level for x in good} == {
        "stream": OK, "line noise": OK, "bad channels": OK, "pulse/decay artifact": OK,
        "muscle artifact": OK, "early TEP at the ROI": OK, "rejected pulses": OK,
        "trials to SNR": WARN}, [(x.name, x.level, x.value) for x in good]
    assert "25 more for SNR 3" in _light(good, "trials to SNR").value

    lights = session_quality(_snap(_tep(rng, decay_uv=60.0)))
    decay = _light(lights, "pulse/decay artifact")
    assert decay.level == BAD and "µV left at the ROI 12-22 ms" in decay.value
    assert "impedance" in decay.advice
    # under a decay left over, the muscle and early-TEP lights do not judge
    assert [_light(lights, k).level for k in ("muscle artifact", "early TEP at the ROI")] == \
        [WARN, WARN] and "not judged" in _light(lights, "muscle artifact").value
    small = _light(session_quality(_snap(_tep(rng, decay_uv=15.0))), "pulse/decay artifact")
    assert small.level == WARN  # 15 µV at 12 ms: between 10 and 30

    muscle = _light(session_quality(_snap(_tep(rng, muscle_uv=20.0))), "muscle artifact")
    assert muscle.level == BAD and "temporal muscles" in muscle.advice
    assert _light(session_quality(_snap(_tep(rng, muscle_uv=3.0))),
                  "muscle artifact").level == OK  # 3 µV: an early TEP's size, not muscle

    none = _light(session_quality(_snap(_tep(rng, early_uv=0.0))), "early TEP at the ROI")
    assert none.level == BAD and "coil position" in none.advice
    few = _light(session_quality(_snap(_tep(rng), n=4)), "early TEP at the ROI")
    assert few.level == WAIT

    noisy = _light(session_quality(_snap(_tep(rng)), None, (45.0, 50.0)), "line noise")
    assert noisy.level == BAD and "45 % of EEG power at 50 Hz" in noisy.value


def test_bad_channels_rejections_and_stream_say_what_to_do():
    rng = np.random.default_rng(2)
    bads = {"Fp1": "noisy (RMS 80 uV typical, ...)", "T7": "flat (RMS 0.1 uV < 0.5 uV)"}
    light = _light(session_quality(_snap(_tep(rng), bads=bads)), "bad channels")
    assert light.level == WARN and light.value.startswith("2: Fp1 (noisy), T7 (flat")
    assert light.advice.startswith("fix electrodes Fp1, T7")
    many = {f"E{i}": "flat" for i in range(10)}  # 10 of 60: beyond 10 %
    assert _light(session_quality(_snap(_tep(rng), bads=many)), "bad channels").level == BAD

    reasons = ["", "amplitude: ptp 210 uV > 150 uV at Fp1", "amplitude: ptp 190 uV > 150 uV",
               "NaN in data (gap or NaN samples) on 2 channel(s)", ""]
    kept = [r == "" for r in reasons]
    rej = _light(session_quality(_snap(_tep(rng), kept=kept, reasons=reasons)),
                 "rejected pulses")
    assert rej.level == BAD and rej.value == "3 of 5: amplitude 2, NaN in data (gap or NaN " \
        "samples) on 2 channel(s) 1"
    assert "amplitude limit" in rej.advice
    assert reason_counts(reasons) == [("amplitude", 2),
                                      ("NaN in data (gap or NaN samples) on 2 channel(s)", 1)]

    gone = _light(session_quality(_snap(None), _status(no_data_s=4.0)), "stream")
    assert gone.level == BAD and "no data for 4 s" in gone.value
    gaps = _light(session_quality(_snap(None), _status(n_gaps=2)), "stream")
    assert gaps.level == WARN and "lost" in gaps.advice
    slow = _light(session_quality(_snap(None), _status(rate_hz=SF * 0.85)), "stream")
    assert slow.level == BAD  # 15 % off nominal
    late = _light(session_quality(_snap(None), _status(transport_latency_ms=120.0)), "stream")
    assert late.level == WARN and "latency 120 ms" in late.value and "late" in late.advice
    behind = _light(session_quality(_snap(None), _status(update_latency_ms_p99=7000.0)),
                    "stream")
    assert behind.level == BAD and "updates p99 7000 ms" in behind.value
    assert THRESHOLDS["rate_error_pct"] == (2.0, 10.0)
