"""Connectivity accumulators: identical to MNE-Connectivity, right against simulator truth.

Measured when written (seeds fixed): mne-connectivity agreement <= 2e-15 absolute for every
method x mode x band; simulated C3 -> C4 beta coupling (coherence 0.8, lag 10 ms, 104 epochs,
average reference, pre-pulse windows): wPLI 0.91, debiased wPLI² 0.82, PLV 0.59, coherence
0.69 vs independent pairs 0.07-0.10 (chance wPLI 2/sqrt(pi N) = 0.11); lag 9.9 ms, phase 1.24 rad
(truth 1.26).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from tmseeg.metrics.connectivity import (DEFAULT_BANDS_HZ, METHODS, ConnectivityAccumulator,
                                         decimate_window)
from tmseeg.sim.model import SimConfig, TMSEEGSimulator

FS = 250.0


def _band_noise(rng, shape, band_hz, fs=FS):
    from scipy import signal

    sos = signal.butter(4, band_hz, btype="bandpass", fs=fs, output="sos")
    pad = 200
    x = signal.sosfilt(sos, rng.standard_normal(shape[:-1] + (shape[-1] + pad,)), axis=-1)
    x = x[..., pad:]
    return x / x.std()


@pytest.mark.parametrize("mode,bandwidth", [("multitaper", 4.0), ("multitaper", None),
                                            ("fourier", None)])
def test_matches_mne_connectivity(mode, bandwidth):
    """Same epochs, same settings: our running sums give MNE-Connectivity's numbers."""
    mne_con = pytest.importorskip("mne_connectivity")
    rng = np.random.default_rng(0)
    n_ep, n_ch, n_t = 40, 6, 123
    x = rng.standard_normal((n_ep, n_ch, n_t))
    x[:, 1] += 0.7 * np.roll(x[:, 0], 2, axis=-1)  # some lagged coupling so values differ
    x[:, 2] += 0.9 * x[:, 0]  # and some zero-lag mixing
    acc = ConnectivityAccumulator([f"c{i}" for i in range(n_ch)], FS, n_t, mode=mode,
                                  bandwidth_hz=bandwidth)
    for e in x:
        assert acc.add(e)
    fmin = [v[0] for v in DEFAULT_BANDS_HZ.values()]
    fmax = [v[1] for v in DEFAULT_BANDS_HZ.values()]
    with warnings.catch_warnings():  # "fmin < 5 cycles of the window": true for theta, expected
        warnings.simplefilter("ignore")
        ref = mne_con.spectral_connectivity_epochs(
            x, method=list(METHODS), mode=mode, sfreq=FS, fmin=fmin, fmax=fmax, faverage=True,
            mt_bandwidth=bandwidth, verbose=False)
    il = np.tril_indices(n_ch, -1)
    worst = 0.0
    for method, con in zip(METHODS, ref):
        dense = con.get_data("dense")  # (n, n, n_bands), lower triangle filled
        for bi, band in enumerate(DEFAULT_BANDS_HZ):
            ours = acc.band(method, band)
            np.testing.assert_allclose(ours[il], dense[..., bi][il], rtol=1e-9, atol=1e-12,
                                       err_msg=f"{method} {band} {mode}")
            np.testing.assert_allclose(ours, ours.T, atol=1e-12)  # symmetric
            worst = max(worst, float(np.max(np.abs(ours[il] - dense[..., bi][il]))))
    assert worst < 1e-12
    # the coupled pair is actually coupled (the comparison is not between two zero arrays)
    assert acc.band("wpli", "beta")[1, 0] > 0.5


def _coupled_epochs(n_seconds=260, seed=3):
    cfg = SimConfig(n_channels=32, sfreq=1000.0, coupling=True, include_emg=False,
                    pulse_artifact=False, decay_artifact=False, muscle_artifact=False,
                    blinks=False, seed=seed)
    sim = TMSEEGSimulator(cfg)
    data, events = sim.generate(int(n_seconds * cfg.sfreq))
    data = data - data.mean(axis=0)  # average reference, as the pipeline does
    # pre-pulse windows -500 .. -10 ms (491 samples at 1 kHz), decimated to 250 Hz with the
    # FIR path (these data are not low-passed)
    wins = [decimate_window(data[:, e.sample - 500:e.sample - 9], 4, lowpassed=False)
            for e in events if e.kind == "pulse"]
    return sim, list(sim.meta.ch_names), wins


@pytest.fixture(scope="module")
def coupled():
    sim, names, wins = _coupled_epochs()
    truth = sim.truth.coupling
    band = {"beta": tuple(truth["band_hz"]), "alpha": (8.0, 12.0)}
    acc = ConnectivityAccumulator(names, FS, wins[0].shape[1], bands_hz=band, bandwidth_hz=4.0)
    for w in wins:
        acc.add(w)
    return sim, names, acc


def test_simulated_coupling_recovered(coupled):
    sim, names, acc = coupled
    truth = sim.truth.coupling
    assert truth["lag_ms"] == 10.0 and truth["strength"] == 0.8
    i, j, k = (names.index(truth["sites"][r]) for r in ("leader", "follower", "independent"))
    n = acc.n_epochs
    assert n >= 90
    chance_wpli = 2 / math.sqrt(math.pi * n)  # E[wPLI] without coupling (derivation below)
    wpli = acc.band("wpli", "beta")
    plv = acc.band("plv", "beta")
    coh = acc.band("coh", "beta")
    dwpli = acc.band("wpli2_debiased", "beta")
    # coupled pair: far above chance
    assert wpli[i, j] > 0.8, wpli[i, j]
    assert dwpli[i, j] > 0.65, dwpli[i, j]
    assert plv[i, j] > 0.45 and coh[i, j] > 0.55, (plv[i, j], coh[i, j])
    # independent pairs: at the chance level (bias of plain wPLI; debiased ~0)
    for a, b in ((i, k), (j, k)):
        assert wpli[a, b] < 1.6 * chance_wpli, (wpli[a, b], chance_wpli)
        assert abs(dwpli[a, b]) < 0.06
        assert plv[a, b] < 0.2 and coh[a, b] < 0.2
    # lag: phase of the mean cross-spectrum = 2 pi f lag (leader leads: positive)
    phase, lag_ms = acc.phase_lag_ms(i, j, "beta")
    f_c = 0.5 * sum(truth["band_hz"])
    assert abs(lag_ms - truth["lag_ms"]) < 1.5, lag_ms
    assert abs(phase - 2 * math.pi * f_c * truth["lag_ms"] / 1e3) < 0.25, phase
    # the reverse pair has the opposite sign
    assert acc.phase_lag_ms(j, i, "beta")[1] == pytest.approx(-lag_ms)
    # the coupling is only in its band: alpha wPLI for the pair is not elevated like beta
    assert acc.band("wpli", "alpha")[i, j] < 0.5 * wpli[i, j]


def test_noise_free_coherence_equals_injected_strength():
    """Sources alone (no background): channel coherence = the injected coherence 0.8."""
    cfg = SimConfig(n_channels=32, sfreq=500.0, coupling=True, include_emg=False,
                    pulse_artifact=False, decay_artifact=False, muscle_artifact=False,
                    blinks=False, alpha=False, mu=False, line_noise_hz=0.0, noise_uv=0.0,
                    smooth_uv=0.0, n_smooth_sources=0, tep_gain=0.0, schedule="external",
                    seed=5)
    sim = TMSEEGSimulator(cfg)
    data, _ = sim.generate(int(300 * cfg.sfreq))
    names = list(sim.meta.ch_names)
    i, j = names.index("C3"), names.index("C4")
    n_t = 250  # 0.5 s windows, back to back
    acc = ConnectivityAccumulator(["C3", "C4"], cfg.sfreq, n_t,
                                  bands_hz={"beta": (15.0, 25.0)}, bandwidth_hz=4.0)
    for s in range(0, data.shape[1] - n_t, n_t):
        acc.add(data[[i, j], s:s + n_t])
    coh = acc.band("coh", "beta")[0, 1]
    # topography leakage of each source into the other site is -0.05 (DoG surround): the
    # expected channel coherence is within ~0.03 of 0.8; estimation error at N=600 ~0.01
    assert coh == pytest.approx(0.8, abs=0.04), coh


def test_chance_level_matches_analytic_bias():
    """Independent signals: mean wPLI = 2/sqrt(pi N), PLV = sqrt(pi / (4 N)), debiased ~ 0."""
    rng = np.random.default_rng(11)
    n_ch, n_t = 24, 125
    for n_ep in (25, 100):
        acc = ConnectivityAccumulator([str(c) for c in range(n_ch)], FS, n_t,
                                      bands_hz={"beta": (13.0, 30.0)}, bandwidth_hz=4.0)
        for _ in range(n_ep):
            acc.add(rng.standard_normal((n_ch, n_t)))
        iu = np.triu_indices(n_ch, 1)
        wpli = acc.spectral("wpli")[:, iu[0], iu[1]].mean()
        plv = acc.spectral("plv")[:, iu[0], iu[1]].mean()
        dw = acc.spectral("wpli2_debiased")[:, iu[0], iu[1]].mean()
        # Im S of independent complex Gaussians is Laplace-distributed: E|sum Im| / sum|Im|
        # ~ sqrt(2/pi) sqrt(N var) / (N E|Im|) = 2 / sqrt(pi N)
        assert wpli == pytest.approx(2 / math.sqrt(math.pi * n_ep), rel=0.1), (n_ep, wpli)
        assert plv == pytest.approx(math.sqrt(math.pi / (4 * n_ep)), rel=0.1), (n_ep, plv)
        assert abs(dw) < 0.02, dw


def test_volume_conduction_zero_lag_mixing():
    """One source seen by two channels at zero lag: PLV/coherence high, wPLI at chance."""
    rng = np.random.default_rng(2)
    n_ep, n_t = 100, 125
    acc = ConnectivityAccumulator(["x", "y"], FS, n_t, bands_hz={"alpha": (8.0, 12.0)},
                                  bandwidth_hz=4.0)
    for _ in range(n_ep):
        s = _band_noise(rng, (n_t,), (7.0, 13.0))
        x = s + 0.4 * rng.standard_normal(n_t)
        y = -0.8 * s + 0.4 * rng.standard_normal(n_t)  # opposite polarity: still zero lag
        acc.add(np.stack([x, y]))
    plv, coh = acc.band("plv", "alpha")[0, 1], acc.band("coh", "alpha")[0, 1]
    wpli, dw = acc.band("wpli", "alpha")[0, 1], acc.band("wpli2_debiased", "alpha")[0, 1]
    assert plv > 0.8 and coh > 0.8, (plv, coh)
    assert wpli < 1.6 * 2 / math.sqrt(math.pi * n_ep), wpli
    assert abs(dw) < 0.05


def test_nan_window_skipped_and_bad_input():
    acc = ConnectivityAccumulator(["a", "b"], FS, 125)
    x = np.random.default_rng(0).standard_normal((2, 125))
    assert acc.add(x)
    x[0, 3] = np.nan
    assert not acc.add(x)
    assert acc.n_epochs == 1 and acc.n_skipped == 1
    with pytest.raises(ValueError, match="expected shape"):
        acc.add(np.zeros((3, 125)))
    with pytest.raises(ValueError, match="Nyquist"):
        ConnectivityAccumulator(["a"], 60.0, 60, bands_hz={"gamma": (30.0, 45.0)})
    with pytest.raises(ValueError, match="no frequency bin"):
        ConnectivityAccumulator(["a"], FS, 30, bands_hz={"x": (4.5, 5.0)})
    with pytest.raises(ValueError, match="unknown connectivity method"):
        acc.spectral("granger")


def test_decimation_paths_agree():
    """Subsampling low-passed data and FIR decimation give the same connectivity."""
    from scipy import signal

    rng = np.random.default_rng(4)
    fs, step, n_ep = 5000.0, 20, 30
    sos = signal.butter(4, 80.0, fs=fs, output="sos")
    res = {}
    accs = {k: ConnectivityAccumulator(["a", "b", "c"], fs / step, 123,
                                       bands_hz={"beta": (13.0, 30.0)}, bandwidth_hz=4.0)
            for k in ("sub", "fir")}
    for _ in range(n_ep):
        s = rng.standard_normal((3, 2600))
        s[1] += np.roll(s[0], 40)  # 8 ms lag
        x = signal.sosfiltfilt(sos, s, axis=1)[:, 50:50 + 2441]
        accs["sub"].add(decimate_window(x, step, lowpassed=True))
        accs["fir"].add(decimate_window(x, step, lowpassed=False))
    for k, a in accs.items():
        res[k] = a.band("wpli", "beta")
    assert res["sub"][0, 1] > 0.6
    np.testing.assert_allclose(res["sub"], res["fir"], atol=0.05)
