"""MEP measures, tracker, motor threshold and recruitment curve against the simulator's truth.

The simulator (``tmseeg.sim.model``) injects at each pulse an MEP of peak-to-peak
``mep_max_uv * sigmoid((I - mep_threshold_pct) / mep_slope_pct) * exp(v N(0,1)) * m`` and
records it (``truth.pulses[i].mep_ptp_uv``, ``.mep_latency_ms``). With the mu rhythm off the
state factor ``m`` is exactly 1, so the probability of an MEP >= 50 µV has the closed form

``P(I) = Phi((ln(mep_max * sigmoid((I - thr) / slope)) - ln 50) / v)``

and the true 50 %-probability intensity solves ``mep_max * sigmoid((I - thr)/slope) = 50``:
``I* = thr + slope * logit(50 / mep_max)`` (40.35 % MSO with the defaults 55, 4, 2000 µV).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import special, stats

from tmseeg.metrics.mep import MEPTracker, measure_mep
from tmseeg.metrics.motor import (fit_recruitment_curve, motor_threshold_ml,
                                  motor_threshold_relative_frequency)
from tmseeg.pipeline.epochs import Epocher
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import blocks_from_array

from mep_truth import recorded_p50_pct

SF = 5000.0
SPACING = 2500  # samples between pulses (0.5 s)
T_MS = np.arange(-1000, 501) / SF * 1000.0  # -200 .. 100 ms


def _simulate(intensities, seed=0, **cfg_kw):
    """EMG (and 2 EEG channels) with one pulse per intensity, every 0.5 s; mu off (m = 1)."""
    kw = dict(ch_names=("C3", "Cz"), sfreq=SF, schedule="external", blinks=False, alpha=False,
              mu=False, n_smooth_sources=0, seed=seed)
    kw.update(cfg_kw)
    sim = TMSEEGSimulator(SimConfig(**kw))
    for k, inten in enumerate(intensities):
        sim.request_pulse(SPACING * (k + 1), intensity_pct=float(inten))
    data, events = sim.generate(SPACING * (len(intensities) + 1))
    return sim, data, events


def _trace(data, sample):
    return data[-1, sample - 1000:sample + 501]


def true_p50_pct(thr=55.0, slope=4.0, mep_max=2000.0, criterion=50.0):
    """Intensity where P(ptp >= criterion) = 0.5 under the simulator's log-normal model."""
    return thr + slope * special.logit(criterion / mep_max)


def test_true_p50_formula_agrees_with_monte_carlo_of_the_model():
    # Monte Carlo of the documented model (not of the estimator): P(ptp >= 50) at I* is 0.5
    rng = np.random.default_rng(1)
    i_star = true_p50_pct()
    assert abs(i_star - 40.354) < 0.01
    for di, p_expected in ((0.0, 0.5), (1.4, stats.norm.cdf(1.4 / (4 * 0.35)))):
        inten = i_star + di
        med = 2000 * special.expit((inten - 55) / 4)
        p = np.mean(med * np.exp(0.35 * rng.standard_normal(200_000)) >= 50)
        # near threshold ln sigmoid(x) ~ x, so P(I) ~ Phi((I - I*) / (slope * v)) = Phi(z/1.4)
        assert abs(p - p_expected) < 0.01


def test_ptp_and_latency_match_injected_mep():
    rng = np.random.default_rng(3)
    intens = rng.uniform(44, 75, 80)
    sim, data, _ = _simulate(intens, seed=3)
    errs, lat_errs, n_big = [], [], 0
    for p in sim.truth.pulses:
        m = measure_mep(_trace(data, p.sample), T_MS)
        assert not m.rejected and not m.preinnervated and m.pre_rms_uv < 5
        err = m.ptp_uv - p.mep_ptp_uv
        # EMG noise is 3 µV RMS: the two extrema each move by ~N(0, 3) -> ~4 µV SD on the ptp
        assert abs(err) <= 0.02 * p.mep_ptp_uv + 12.0, (p, m)
        errs.append(err / p.mep_ptp_uv)
        if p.mep_ptp_uv >= 100:
            n_big += 1
            assert m.present
            lat_errs.append(m.latency_ms - p.mep_latency_ms)
            assert abs(m.latency_ms - p.mep_latency_ms) <= 2.0, (p, m)
    assert n_big >= 40
    assert abs(np.median(errs)) < 0.01
    # onset is found within a ms of the injected onset (the waveform starts ~cubically)
    assert np.median(np.abs(lat_errs)) < 1.0
    # the extrema: MEP is a 12-ms sine cycle (positive lobe first): max ~3 ms, min ~9 ms in
    m = measure_mep(_trace(data, sim.truth.pulses[int(np.argmax(intens))].sample), T_MS)
    p = sim.truth.pulses[int(np.argmax(intens))]
    assert 1.5 < m.max_latency_ms - p.mep_latency_ms < 4.5
    assert 7.5 < m.min_latency_ms - p.mep_latency_ms < 10.5


def test_no_mep_below_threshold_and_pulse_artifact_ignored():
    # at 20 % MSO the MEP is ~ 2000 * sigmoid(-8.75) = 0.3 µV: only noise and the pulse artifact
    sim, data, _ = _simulate([20.0] * 10 + [90.0] * 10, seed=4)
    for p in sim.truth.pulses[:10]:
        tr = _trace(data, p.sample)
        # the artifact is large (up to 200 µV x I/100 at 0-6 ms) but outside the window
        assert np.abs(tr[(T_MS >= 0) & (T_MS < 3)]).max() > 10
        m = measure_mep(tr, T_MS)
        assert not m.present and m.ptp_uv < 30 and math.isnan(m.latency_ms) and not m.rejected
    for p in sim.truth.pulses[10:]:
        m = measure_mep(_trace(data, p.sample), T_MS)
        assert m.present and abs(m.ptp_uv / p.mep_ptp_uv - 1) < 0.02


def test_preinnervation_flagged_only_on_tonic_bursts():
    sim, data, _ = _simulate([65.0] * 30, seed=5)
    rng = np.random.default_rng(5)
    burst = set(range(0, 30, 3))
    for k in burst:  # tonic voluntary EMG: 150-300 Hz-ish band noise, 40 µV RMS, -300..-2 ms
        s = sim.truth.pulses[k].sample
        n = int(0.298 * SF)
        x = np.convolve(rng.standard_normal(n + 20), np.ones(8) / 8, mode="same")[10:n + 10]
        data[-1, s - int(0.3 * SF):s - int(0.3 * SF) + n] += 40.0 * x / x.std()
    tracker = MEPTracker()
    for k, p in enumerate(sim.truth.pulses):
        m = tracker.add(emg_uv=_trace(data, p.sample), times_ms=T_MS, intensity_pct=65.0,
                        sample=p.sample)
        assert m.preinnervated == (k in burst), (k, m.pre_rms_uv)
        assert m.rejected == (k in burst)
        if k in burst:
            assert m.reason.startswith("pre-innervation") and 30 < m.pre_rms_uv < 50
    s = tracker.summary()
    assert s["n_pulses"] == 30 and s["n_rejected"] == 10 and s["n_preinnervated"] == 10
    acc = [p.mep_ptp_uv for k, p in enumerate(sim.truth.pulses) if k not in burst]
    assert abs(s["median_ptp_uv"] / np.median(acc) - 1) < 0.02
    assert abs(s["mean_ptp_uv"] / np.mean(acc) - 1) < 0.02
    # a ptp criterion can be added; a lower RMS limit flags everything (the knob works)
    m = measure_mep(_trace(data, sim.truth.pulses[1].sample), T_MS, preinnervation_rms_uv=1.0)
    assert m.preinnervated


def test_tracker_through_epocher_with_emg_picks():
    intens = np.tile(np.arange(40.0, 62.0, 2.0), 3)
    sim, data, events = _simulate(intens, seed=6)
    ep = Epocher(tmin_ms=-200, tmax_ms=100, baseline_ms=(-200, -5), reject_uv=None, picks="emg")
    tracker = MEPTracker()
    for block in blocks_from_array(data, sim.meta, 250, events):
        for epoch in ep.push(block):
            tracker.add(epoch)
    for epoch in ep.flush():
        tracker.add(epoch)
    assert tracker.n_pulses == len(intens)
    for row, p in zip(tracker.rows, sim.truth.pulses):
        assert row["sample"] == p.sample and row["intensity_pct"] == p.intensity_pct
        assert abs(row["mep_ptp_uv"] - p.mep_ptp_uv) <= 0.02 * p.mep_ptp_uv + 12.0
    assert set(tracker.rows[0]) == set(MEPTracker.columns)
    i, a = tracker.pairs()
    assert i.size == len(intens)
    json.dumps(tracker.summary())  # JSON-ready (no NaN, no numpy types)


def _threshold_data(seed, n_per=10, levels=np.arange(34.0, 49.0)):
    intens = np.repeat(levels, n_per)
    intens = np.random.default_rng(seed).permutation(intens)
    sim, data, _ = _simulate(intens, seed=seed)
    amps = np.array([measure_mep(_trace(data, p.sample), T_MS).ptp_uv for p in sim.truth.pulses])
    return intens, amps, sim


def test_recorded_threshold_sits_below_noise_free_threshold_by_the_noise_bias():
    rec, model = recorded_p50_pct(), true_p50_pct()
    assert 0.3 < model - rec < 0.9  # 39.75 vs 40.35 % MSO
    # without noise the Monte Carlo reproduces the closed form
    assert abs(recorded_p50_pct(noise_uv=0.0) - model) < 0.05


@pytest.mark.parametrize("seed", [11, 12, 13, 15])
def test_motor_threshold_both_methods_near_true_p50(seed):
    """Tolerances: the true psychometric curve is ~Phi((I - I*) / 1.4) (slope x v = 4 x 0.35),
    so within +-2.5 % MSO of I* the MEP probability goes from 4 % to 96 %. The relative-frequency
    rule picks the lowest 1-%-step intensity with >= 5/10 MEPs: binomial scatter of 10 trials
    moves it by about +-1 step, so 2 % MSO. The ML fit uses all 150 trials: SE ~0.3 % MSO, so
    0.8 % MSO of the recorded-amplitude truth (I* = 39.75, see :func:`recorded_p50_pct`) and
    1.2 % MSO of the noise-free model's 40.35. A method thresholding at half the maximum (55) or
    fitting the mean amplitude curve with a wrong criterion would be off by several % MSO."""
    truth_rec, truth_model = recorded_p50_pct(), true_p50_pct()
    intens, amps, sim = _threshold_data(seed)
    rf = motor_threshold_relative_frequency(intens, amps)
    assert abs(rf.mt_pct - truth_rec) <= 2.0 and abs(rf.mt_pct - truth_model) <= 2.0, rf
    assert rf.reliable and not rf.warnings
    assert all(r["n_trials"] == 10 for r in rf.table)
    ml = motor_threshold_ml(intens, amps)
    assert abs(ml.mt_pct - truth_rec) <= 0.8, ml
    assert abs(ml.mt_pct - truth_model) <= 1.2, ml
    assert ml.ci_pct[0] - 0.2 <= truth_rec <= ml.ci_pct[1] + 0.2
    assert 0.1 < ml.se_pct < 0.8
    # the spread estimates slope x v = 1.4 % MSO (Gaussian psychometric function)
    assert 0.6 < ml.spread_pct < 2.8
    lg = motor_threshold_ml(intens, amps, model="logistic")
    assert abs(lg.mt_pct - truth_rec) <= 0.8
    # with the noise-free amplitudes the estimate moves to the model's threshold
    clean = np.array([p.mep_ptp_uv for p in sim.truth.pulses])
    assert abs(motor_threshold_ml(intens, clean).mt_pct - truth_model) <= 0.8
    # a different criterion moves the threshold where the model says (100 µV: ~ +2.8 % MSO)
    ml100 = motor_threshold_ml(intens, amps, criterion_uv=100.0)
    assert abs(ml100.mt_pct - recorded_p50_pct(criterion=100.0)) <= 1.0


def test_ml_threshold_ci_coverage_is_honest():
    """On synthetic Bernoulli data with known MT the 95 % Wald interval covers ~95 %."""
    rng = np.random.default_rng(0)
    hits = 0
    n_rep = 100
    for _ in range(n_rep):
        i = rng.uniform(35, 55, 60)
        y = rng.uniform(size=60) < stats.norm.cdf((i - 45.0) / 3.0)
        res = motor_threshold_ml(i, np.where(y, 100.0, 10.0))
        hits += res.ci_pct[0] <= 45.0 <= res.ci_pct[1]
    assert 0.87 <= hits / n_rep <= 0.995  # binomial SD of 100 reps ~2.2 %


def test_relative_frequency_flags_too_few_trials_and_unbracketed_threshold():
    i = np.array([40, 40, 40, 42, 42, 42, 44, 44, 44], float)
    a = np.array([10, 20, 30, 60, 10, 70, 80, 90, 100], float)
    rf = motor_threshold_relative_frequency(i, a)
    assert rf.mt_pct == 42.0 and not rf.reliable
    assert any("fewer than 10 trials" in w for w in rf.warnings)
    assert any("next lower tested intensity is 40" in w for w in rf.warnings)
    rf = motor_threshold_relative_frequency([50] * 10 + [52] * 10, [60] * 20)
    assert rf.mt_pct == 50.0 and not rf.reliable
    assert any("lowest tested intensity already met" in w for w in rf.warnings)
    rf = motor_threshold_relative_frequency([30] * 10, [5] * 10)
    assert math.isnan(rf.mt_pct) and "above the highest" in rf.warnings[0]
    # a lone lucky intensity below failures does not define MT
    i = np.repeat([40.0, 41.0, 42.0, 43.0], 10)
    a = np.concatenate([[60] * 5 + [0] * 5, [60] * 2 + [0] * 8, [60] * 6 + [0] * 4, [60] * 9 + [0]])
    assert motor_threshold_relative_frequency(i, a).mt_pct == 42.0
    with pytest.raises(ValueError, match="outside the tested range; test higher"):
        motor_threshold_ml([30.0] * 10, [1.0] * 10)
    with pytest.raises(ValueError, match="pair up"):
        motor_threshold_relative_frequency([1, 2], [1.0])


def test_recruitment_curve_recovers_boltzmann_parameters():
    """I50 = 55, k = 4, plateau = 2000 x exp(0.35^2/2) = 2126 µV (mean of the log-normal).

    Single trials scatter by 35 % (log-normal), so one fit of 168 trials has SE ~0.9 % MSO on
    I50: each fit must lie within 3 SE of the truth with SE < 1.2, and the mean over four
    independent sessions within 1 % MSO (I50), 1 % MSO (k) and 7 % (plateau)."""
    levels = np.arange(40.0, 82.0, 2.0)
    target_max = 2000 * math.exp(0.35 ** 2 / 2)
    fits = []
    for seed in (21, 22, 23, 24):
        intens = np.random.default_rng(seed).permutation(np.repeat(levels, 8))
        sim, data, _ = _simulate(intens, seed=seed)
        amps = np.array([measure_mep(_trace(data, p.sample), T_MS).ptp_uv
                         for p in sim.truth.pulses])
        rc = fit_recruitment_curve(intens, amps)
        assert rc.se["i50_pct"] < 1.2 and rc.se["slope_pct"] < 1.0, rc
        assert abs(rc.i50_pct - 55.0) < 3 * rc.se["i50_pct"], rc
        assert abs(rc.slope_pct - 4.0) < 3 * rc.se["slope_pct"], rc
        assert abs(rc.mep_max_uv - target_max) < 3 * rc.se["mep_max_uv"], rc
        assert not rc.warnings
        fits.append((rc.i50_pct, rc.slope_pct, rc.mep_max_uv))
    i50, k, mmax = np.mean(fits, axis=0)
    assert abs(i50 - 55.0) < 1.0 and abs(k - 4.0) < 1.0 and abs(mmax / target_max - 1) < 0.07
    assert abs(rc.predict(rc.i50_pct) - rc.mep_max_uv / 2) < 1e-9
    # only the rising part (no plateau tested): the fit says it extrapolates
    low = intens <= 48
    rc2 = fit_recruitment_curve(intens[low], amps[low])
    assert rc2.warnings and "does not saturate" in rc2.warnings[0]


def test_measure_mep_bad_input_errors_name_the_fix():
    t = np.arange(-100, 100, 0.2)
    x = np.zeros_like(t)
    with pytest.raises(ValueError, match="inside the pulse artifact"):
        measure_mep(x, t, window_ms=(2, 50))
    with pytest.raises(ValueError, match="must end before the pulse"):
        measure_mep(x, t, pre_window_ms=(-50, 5))
    with pytest.raises(ValueError, match="does not cover"):
        measure_mep(x, t, pre_window_ms=(-300, -200))
    with pytest.raises(ValueError, match="same length"):
        measure_mep(x[:-1], t)
    x[600] = np.nan  # +20 ms
    m = measure_mep(x, t)
    assert m.rejected and "non-finite" in m.reason
    tr = MEPTracker(channel="EMG2")
    with pytest.raises(ValueError, match="give an epoch"):
        tr.add(emg_uv=x)
