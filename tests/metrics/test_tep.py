"""RunningTEP against ground truth: running moments, GMFP/LMFP, peaks, SNR and trials needed."""
import math

import numpy as np
import pytest
from scipy import signal

from tmseeg.metrics.tep import DEFAULT_PEAK_WINDOWS, RunningTEP, find_peak, gmfp
from tmseeg.pipeline.epochs import Epoch
from tmseeg.stream.block import Event, EVENT_PULSE

SF = 1000.0
TIMES = np.arange(-500, 501) * 1.0
NAMES = ("FC1", "C3", "CP1", "Cz", "C4", "Fz", "Pz", "Oz")
ROI = ["FC1", "C3", "CP1"]
#: component -> (latency ms, amplitude uV at the ROI, width sigma ms)
COMPONENTS = {"N15": (15, -5.0, 2.0), "P30": (30, 5.0, 3.0), "N45": (46, -6.0, 4.0),
              "P60": (65, 4.0, 5.0), "N100": (110, -8.0, 8.0), "P180": (190, 6.0, 10.0)}


def _template():
    """(n_ch, n_times) TEP: ROI channels carry the components, others a weaker inverted copy."""
    wave = np.zeros_like(TIMES)
    for lat, amp, sd in COMPONENTS.values():
        wave += amp * np.exp(-0.5 * ((TIMES - lat) / sd) ** 2)
    weights = np.array([0.9, 1.0, 0.9, 0.4, -0.2, -0.3, -0.4, -0.5])
    return weights[:, None] * wave[None, :]


def _noise(rng, n_ep, sd_uv, fc_hz=45.0):
    b, a = signal.butter(2, fc_hz, fs=SF)
    x = signal.lfilter(b, a, rng.standard_normal((n_ep, len(NAMES), TIMES.size + 200)), axis=-1)[..., 200:]
    x *= sd_uv / x.std()
    return x


def _epochs(n_ep, sd_uv, seed, template=None, fc_hz=45.0):
    rng = np.random.default_rng(seed)
    template = _template() if template is None else template
    noise = _noise(rng, n_ep, sd_uv, fc_hz)
    out = []
    for k in range(n_ep):
        x = template + noise[k]
        x = x - x[:, (TIMES >= -500) & (TIMES <= -10)].mean(axis=1, keepdims=True)  # baseline
        out.append(Epoch(Event(1000 * k, "TMS", EVENT_PULSE), x, TIMES, NAMES, 1000 * k - 500, SF))
    return out


def test_running_mean_and_variance_equal_numpy_and_rejected_skipped():
    eps = _epochs(40, 10.0, 0)
    eps[5].rejected, eps[5].reason = True, "amplitude"
    eps[9].data_uv[2, 100] = np.nan
    tep = RunningTEP(NAMES, TIMES, ROI)
    added = [tep.add(e) for e in eps]
    assert sum(added) == 38 and tep.n == 38 and tep.n_skipped == 2
    arr = np.stack([e.data_uv for i, e in enumerate(eps) if i not in (5, 9)])
    np.testing.assert_allclose(tep.average_uv, arr.mean(0), atol=1e-10)
    np.testing.assert_allclose(tep.variance_uv2, arr.var(0, ddof=1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tep.sem_uv, arr.std(0, ddof=1) / np.sqrt(38), rtol=1e-9)
    np.testing.assert_allclose(tep.roi_average_uv, arr.mean(0)[[0, 1, 2]].mean(0), atol=1e-10)
    tep.reset()
    assert tep.n == 0 and np.isnan(tep.average_uv).all()


def test_nan_on_bad_channel_keeps_the_epoch_per_element_counts():
    eps = _epochs(30, 10.0, 7)
    for k in range(0, 30, 3):  # Oz (index 7) and C3 (ROI) dead with NaN in every third epoch
        eps[k].data_uv[[1, 7]] = np.nan
        eps[k].bads = ("C3", "Oz")
    tep = RunningTEP(NAMES, TIMES, ROI)
    assert all(tep.add(e) for e in eps) and tep.n == 30
    arr = np.stack([e.data_uv for e in eps])
    np.testing.assert_allclose(tep.average_uv, np.nanmean(arr, 0), atol=1e-10)
    np.testing.assert_allclose(tep.variance_uv2, np.nanvar(arr, 0, ddof=1), rtol=1e-9, atol=1e-9)
    roi = np.nanmean(arr[:, [0, 1, 2]], axis=1).mean(0)  # ROI mean over finite ROI channels
    np.testing.assert_allclose(tep.roi_average_uv, roi, atol=1e-10)
    # NaN on a channel that is not marked bad: the epoch is skipped
    e = _epochs(1, 10.0, 8)[0]
    e.data_uv[4, 10] = np.nan
    assert not tep.add(e) and tep.n == 30


def test_gmfp_and_lmfp_equal_direct_formulas():
    eps = _epochs(10, 5.0, 1)
    tep = RunningTEP(NAMES, TIMES, ROI)
    for e in eps:
        tep.add(e)
    v = np.stack([e.data_uv for e in eps]).mean(0)
    k = v.shape[0]
    direct = np.sqrt(((v - v.mean(0)) ** 2).sum(0) / k)  # Lehmann & Skrandies 1980
    np.testing.assert_allclose(tep.gmfp_uv, direct, atol=1e-12)
    np.testing.assert_allclose(gmfp(v + 123.0), direct, atol=1e-9)  # reference-free
    roi = v[[0, 1, 2]]
    np.testing.assert_allclose(tep.lmfp_uv, np.sqrt((roi ** 2).mean(0)), atol=1e-12)


def test_peaks_recovered_from_noisy_average():
    eps = _epochs(200, 3.0, 2)
    tep = RunningTEP(NAMES, TIMES, ROI)
    for e in eps:
        tep.add(e)
    truth_roi = _template()[[0, 1, 2]].mean(0)
    pk = tep.peaks()
    assert set(pk) == set(DEFAULT_PEAK_WINDOWS)
    for name, (lat, amp, sd) in COMPONENTS.items():
        # ground truth of the clean ROI trace (components overlap a little)
        true = find_peak(truth_roi, TIMES, DEFAULT_PEAK_WINDOWS[name], name[0])
        assert abs(true["latency_ms"] - lat) <= 2
        assert pk[name]["found"], (name, pk[name])
        assert abs(pk[name]["latency_ms"] - true["latency_ms"]) <= 2, (name, pk[name], true)
        assert abs(pk[name]["amplitude_uv"] - true["amplitude_uv"]) <= 0.1 * abs(true["amplitude_uv"]), \
            (name, pk[name], true)
        assert np.sign(pk[name]["amplitude_uv"]) == np.sign(amp)
    # GMFP peak of N100 at the N100 latency (the biggest, widest component)
    assert abs(pk["N100"]["gmfp_latency_ms"] - 110) <= 3


def test_peak_on_window_edge_is_not_found():
    trace = -TIMES.copy()  # monotonically falling: every window's minimum is its last sample
    r = find_peak(trace, TIMES, (85, 140), "N")
    assert r["latency_ms"] == 140 and not r["found"]
    r = find_peak(trace, TIMES, (85, 140), "P")
    assert r["latency_ms"] == 85 and not r["found"]
    bump = -np.exp(-0.5 * ((TIMES - 100) / 5) ** 2)
    r = find_peak(bump, TIMES, (85, 140), "N")
    assert r["found"] and r["latency_ms"] == 100 and r["amplitude_uv"] == pytest.approx(-1)
    assert not find_peak(np.full_like(TIMES, np.nan), TIMES, (85, 140), "N")["found"]


def test_peak_latency_on_a_noisy_broad_peak_comes_from_its_top_not_one_sample():
    """A broad P180-like peak (sigma 28 ms) under noise of a running average: the extreme
    sample wanders far along the flat top, the vertex of the fitted top stays close. On a
    skewed, noise-free peak the vertex stays within a fraction of a millisecond."""
    rng = np.random.default_rng(7)
    t = np.arange(-100.0, 400.0, 0.2)  # 5 kHz
    clean = 5.0 * np.exp(-0.5 * ((t - 185.0) / 28.0) ** 2)
    err_sample, err_vertex = [], []
    for _ in range(200):
        noise = np.convolve(rng.standard_normal(t.size), np.ones(25) / 25, "same") * 1.5
        y = clean + noise  # ~0.3 uV of smooth noise
        err_sample.append(find_peak(y, t, (150, 250), "P", refine_fraction=0)["latency_ms"] - 185)
        err_vertex.append(find_peak(y, t, (150, 250), "P")["latency_ms"] - 185)
    err_sample, err_vertex = np.abs(err_sample), np.abs(err_vertex)
    # measured: extreme sample median 4.2 / p90 8.8 ms, vertex 1.4 / 3.3 ms
    assert np.median(err_vertex) < 0.5 * np.median(err_sample)
    assert np.percentile(err_vertex, 90) < 0.5 * np.percentile(err_sample, 90)
    # skewed (gamma-shaped) components in the default windows, noise-free: the vertex stays
    # within 0.5 ms of the true maximum (measured 0.05-0.43 ms, largest for the broad P180)
    for name, mode in (("N15", 15.0), ("P30", 30.0), ("N45", 45.0), ("P60", 62.0),
                       ("N100", 105.0), ("P180", 185.0)):
        for k in (3.0, 8.0):
            tt = np.clip(t, 0, None) / (mode / k)
            g = np.where(t > 0, (tt / k) ** k * np.exp(k - tt), 0.0) * (-1 if name[0] == "N" else 1)
            r = find_peak(g, t, DEFAULT_PEAK_WINDOWS[name], name[0])
            assert r["found"] and abs(r["latency_ms"] - mode) < 0.5, (name, k, r)
            assert abs(r["amplitude_uv"]) == pytest.approx(1.0, abs=1e-3)


def test_single_trial_early_is_roi_peak_to_peak():
    eps = _epochs(3, 0.0, 3)  # noise-free
    tep = RunningTEP(NAMES, TIMES, ROI)
    x = eps[0].data_uv[[0, 1, 2]].mean(0)[(TIMES >= 15) & (TIMES <= 60)]
    assert tep.single_trial_early_uv(eps[0]) == pytest.approx(x.max() - x.min())
    # in this template: P30 (~+4.4 at ROI) to N45 (~-5.1): about 9-10 uV
    assert 8 < tep.single_trial_early_uv(eps[0]) < 11


def _crossing(ns, snrs, target):
    above = np.flatnonzero(snrs >= target)
    return int(ns[above[0]]) if above.size else None


def test_snr_and_trials_needed_match_measured_crossing():
    """Predict from the first 40 trials the N at which SNR reaches 3; compare with reality.

    Broadband noise (0-200 Hz) so that the pre window holds many independent samples: the
    prediction is only as good as the variance and power estimates it is built from (with
    45 Hz noise and 15 trials single predictions were off by up to 4x; see the report).
    """
    errors = []
    for seed in range(10):
        eps = _epochs(300, 20.0, 10 + seed, fc_hz=200.0)
        tep = RunningTEP(NAMES, TIMES, ROI)
        for e in eps[:40]:
            tep.add(e)
        predicted = tep.trials_needed(3.0)
        for e in eps[40:]:
            tep.add(e)
        ns, snrs = tep.snr_history()
        measured = _crossing(ns, snrs, 3.0)
        assert measured is not None and measured > 80  # a real extrapolation (2x or more)
        errors.append(predicted / measured - 1)
    errors = np.array(errors)
    # a single 40-trial prediction is within ~20 % typically, 45 % at worst; no bias
    assert np.median(np.abs(errors)) < 0.2, errors
    assert abs(np.median(errors)) < 0.15, errors
    assert np.abs(errors).max() < 0.45, errors


def test_trials_needed_formula_exact_on_known_powers():
    """With the noise variances and signal power known, N* follows the stated formula."""
    eps = _epochs(400, 25.0, 30)
    tep = RunningTEP(NAMES, TIMES, ROI)
    for e in eps:
        tep.add(e)
    truth_roi = _template()[[0, 1, 2]].mean(0)
    post = (TIMES >= 15) & (TIMES <= 250)
    s_true = np.mean(truth_roi[post] ** 2)
    # the debiased signal power estimates the true one within 10 %
    assert abs(tep.signal_power_uv2() / s_true - 1) < 0.1
    v_pre, v_post = tep.noise_variances_uv2()
    assert tep.trials_needed(4.0) == pytest.approx((16 * v_pre - v_post) / tep.signal_power_uv2())
    # and the predicted SNR at N = 400 matches the measured one within 10 %
    assert abs(tep.predicted_snr(400) / tep.snr() - 1) < 0.1
    # pure noise: no signal, no finite estimate
    flat = RunningTEP(NAMES, TIMES, ROI)
    for e in _epochs(50, 25.0, 31, template=np.zeros((8, TIMES.size))):
        flat.add(e)
    assert flat.trials_needed(3.0) > 1000 or math.isinf(flat.trials_needed(3.0))


def test_bad_configuration_errors():
    with pytest.raises(KeyError):
        RunningTEP(NAMES, TIMES, ["C5"])
    with pytest.raises(ValueError):
        RunningTEP(NAMES, TIMES, ROI, peak_windows_ms={"X50": (40, 60)})


def test_simulated_session_peaks_match_injected_truth():
    """Artifact-free simulated session, 100 pulses -> reference -> Epocher -> RunningTEP.

    Truth and data are both on the average reference: the simulator's template (its own
    reference-free model) is re-referenced with the same :func:`average_reference`, and scaled
    by the mean per-pulse gain the simulator applied to the averaged pulses (mu-phase/power
    modulation and jitter make it differ from 1). The background is halved and the TEP gain
    is 4 so that 100 trials resolve the smallest peak (N15, ~1.2 uV at the ROI at gain 1) to
    better than 15 %; at the default background the ROI noise after 100 trials (~1 uV) is as
    large as the N15 itself. Pulse markers are delivered one block late.
    """
    from tmseeg.pipeline.reference import AverageReference, average_reference
    from tmseeg.pipeline.epochs import Epocher
    from tmseeg.sim.model import SimConfig, TMSEEGSimulator
    from tmseeg.stream.block import Block

    sf = 5000.0
    cfg = SimConfig(n_channels=32, sfreq=sf, seed=1, pulse_artifact=False, decay_artifact=False,
                    muscle_artifact=False, blinks=False, isi_range_s=(1.0, 1.3), tep_gain=4.0,
                    noise_uv=3.0, smooth_uv=6.0, alpha_uv=4.0, mu_amplitude_uv=3.0)
    sim = TMSEEGSimulator(cfg)
    ref = AverageReference()
    epocher = Epocher(tmin_ms=-400, tmax_ms=400, baseline_ms=(-400, -10), reject_uv=150)
    tep, start, late, bs = None, 0, [], 487
    while tep is None or tep.n < 100:
        data, events = sim.generate(bs)
        block = Block(data, start, np.arange(start, start + bs) / sf, sim.meta, late)
        late = [e for e in events if e.kind == EVENT_PULSE]
        start += bs
        for ep in epocher.push(ref.process(block)):
            assert not ep.rejected, ep.reason
            if tep is None:
                tep = RunningTEP(ep.ch_names, ep.times_ms, sim.truth.roi)
            if tep.n < 100:
                tep.add(ep)
    truth = sim.truth
    assert "EMG" not in tep.ch_names and len(tep.ch_names) == 32
    gain = np.mean([p.tep_gain_effective for p in truth.pulses[:100]])
    template = average_reference(truth.tep_template_uv) * gain
    eeg = truth.eeg_names
    roi_truth = template[[eeg.index(r) for r in truth.roi]].mean(0)
    pk = tep.peaks()
    for name, win in DEFAULT_PEAK_WINDOWS.items():
        true = find_peak(roi_truth, truth.tep_times_ms, win, name[0])
        assert true["found"] and pk[name]["found"], name
        # P180 is 28 ms wide (sigma): 2 ms off its apex changes it by 0.1 %, far below the
        # noise, so its latency is only defined to a few ms
        tol_ms = 6.0 if name == "P180" else 2.0
        assert abs(pk[name]["latency_ms"] - true["latency_ms"]) <= tol_ms, (name, pk[name], true)
        assert abs(pk[name]["amplitude_uv"] / true["amplitude_uv"] - 1) < 0.15, (name, pk[name], true)
    # GMFP of the average vs GMFP of the truth at the N100 (largest global component)
    g_true = gmfp(template)
    i100 = np.argmin(np.abs(truth.tep_times_ms - pk["N100"]["gmfp_latency_ms"]))
    assert abs(pk["N100"]["gmfp_uv"] / g_true[i100] - 1) < 0.15
