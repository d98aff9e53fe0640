"""Morlet ERSP / ITC / natural frequency (tmseeg.metrics.oscillations) against known answers.

Measured when written (``pytest tests/metrics/test_oscillations.py -q -s``), 32 ch / 1 kHz simulator,
~64 pulses, evoked oscillation 15 µV at C3, tau 80 ms: natural frequency 19 Hz for 18 Hz and
29 Hz for 29 Hz (ROI); ITC at the injected frequency 50-150 ms ~0.5-0.7 (ROI mean) vs ~0.1 in
the baseline; without the oscillation the ROI natural frequency is 33-37 Hz (the TEP's sharp
early components), so the recovery is not an accident of the grid.
"""

import numpy as np
import pytest

from tmseeg.metrics import oscillations as osc
from tmseeg.config import load_config
from tmseeg.engine import BlocksSource, Engine, events_as_markers
from tmseeg.session import TEPSession
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import blocks_from_array
from tmseeg.io.files import Recording


def _cfg(**osc_over):
    return load_config(None, {"oscillations": osc_over, "decay": {"enabled": False},
                              "connectivity": {"enabled": False},
                              "spread": {"enabled": False}})


def _run(freq_hz, amp_uv=15.0, duration_s=130.0, seed=0):
    scfg = SimConfig(n_channels=32, sfreq=1000.0, include_emg=False, decay_artifact=False,
                     isi_range_s=(1.8, 2.2), seed=seed, evoked_oscillation_hz=freq_hz,
                     evoked_oscillation_uv=amp_uv)
    sim = TMSEEGSimulator(scfg)
    data, events = sim.generate(int(duration_s * scfg.sfreq))
    rec = Recording(data, sim.meta, events)
    cfg = _cfg()
    session = TEPSession(cfg, sim.meta)
    metric = [m for m in session.metrics if m.name == "oscillations"]
    if not metric:
        metric = [osc.OscillationMetric(cfg, session.context)]
        session.metrics.append(metric[0])
    blocks = blocks_from_array(rec.data_uv, rec.meta, 100, events=events_as_markers(rec.events))
    Engine.for_session(BlocksSource(blocks, rec.meta), session).run_to_end()
    return sim, session, metric[0]


@pytest.fixture(scope="module")
def runs():
    return {f: _run(f) for f in (18.0, 29.0)}


def test_wavelet_unit_cosine_and_fft_equals_direct():
    fs = 250.0
    freqs = osc.morlet_frequencies(4, 45, 42)
    nc = osc.morlet_n_cycles(freqs)
    assert nc[0] == 3.0 and nc[-1] == 22.5 and freqs[1] - freqs[0] == 1.0
    tr = osc.MorletTransform(freqs, nc, fs, n_out=100)
    t = (np.arange(tr.n_in) - tr.half) / fs
    k = 14  # 18 Hz
    x = np.vstack([3.0 * np.cos(2 * np.pi * freqs[k] * t + 0.7),
                   np.random.default_rng(1).standard_normal(tr.n_in)])
    c = tr.transform(x)
    # a cosine of amplitude 3 gives |c| = 3 and the cosine phase at each output time
    np.testing.assert_allclose(np.abs(c[0, k]), 3.0, rtol=1e-3)
    want = np.angle(np.exp(1j * (2 * np.pi * freqs[k] * t[tr.half:tr.half + 100] + 0.7)))
    assert np.max(np.abs(np.angle(np.exp(1j * (np.angle(c[0, k]) - want))))) < 1e-3
    ref = osc.morlet_tfr_numpy(x, tr.wavelets, tr.half, tr.half + 100)
    np.testing.assert_allclose(c, ref, rtol=0, atol=1e-10 * np.abs(ref).max())


def test_the_transform_in_chunks_of_channels_gives_the_same_bits():
    """The inverse FFTs run a few channels at a time (``CHUNK_BYTES``: a bounded transient
    instead of every channel's spectra at once); each channel's coefficients are its own."""
    fs = 250.0
    freqs = osc.morlet_frequencies(4, 45, 42)
    tr = osc.MorletTransform(freqs, osc.morlet_n_cycles(freqs), fs, n_out=250)
    x = np.random.default_rng(3).standard_normal((64, tr.n_in)) * 20.0
    whole = tr.transform(x)
    for chunk_bytes in (1, 3 * freqs.size * tr.nfft * 16, 2 ** 40):
        tr.CHUNK_BYTES = chunk_bytes
        np.testing.assert_array_equal(tr.transform(x), whole)


def test_matches_mne_tfr_array_morlet():
    """ITC and dB ERSP equal MNE's (same Morlet definition; normalisation cancels)."""
    from mne.time_frequency import tfr_array_morlet

    fs, n_ep = 250.0, 12
    freqs = osc.morlet_frequencies(6, 40, 8, spacing="log")
    nc = osc.morlet_n_cycles(freqs)
    tr = osc.MorletTransform(freqs, nc, fs, n_out=60)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n_ep, 3, tr.n_in)).cumsum(axis=2) * 0.1 \
        + rng.standard_normal((n_ep, 3, tr.n_in))
    ours = np.stack([tr.transform(e) for e in x])
    mne_c = tfr_array_morlet(x, fs, freqs, n_cycles=nc, zero_mean=True, output="complex",
                             verbose="error")[..., tr.half:tr.half + 60]
    itc_o = np.abs(np.mean(ours / np.abs(ours), axis=0))
    itc_m = np.abs(np.mean(mne_c / np.abs(mne_c), axis=0))
    np.testing.assert_allclose(itc_o, itc_m, atol=1e-9)
    po, pm = (np.mean(np.abs(a) ** 2, axis=0) for a in (ours, mne_c))
    np.testing.assert_allclose(10 * np.log10(po / po[..., :10].mean(-1, keepdims=True)),
                               10 * np.log10(pm / pm[..., :10].mean(-1, keepdims=True)),
                               atol=1e-9)


def test_compiled_power_and_phasor_sums_are_numpys_to_the_bit():
    """The compiled accumulation does numpy's operations in numpy's order: the same sums,
    bit for bit; a zero coefficient adds power 0 and no phasor; shapes that disagree are
    refused by name."""
    from tmseeg._ext.tfr import add_power_phasors

    rng = np.random.default_rng(2)
    coefs = (rng.standard_normal((3, 5, 7)) + 1j * rng.standard_normal((3, 5, 7))) * 1e3
    coefs[1, 2, 3] = 0.0
    power, phasor = rng.standard_normal((3, 5, 7)), rng.standard_normal((3, 5, 7)) * (1 + 1j)
    want_power = power + (coefs.real * coefs.real + coefs.imag * coefs.imag)
    inv = np.sqrt(coefs.real * coefs.real + coefs.imag * coefs.imag)
    np.divide(1.0, inv, out=inv, where=inv > 0)
    want_phasor = phasor.copy()
    want_phasor.real += coefs.real * inv
    want_phasor.imag += coefs.imag * inv
    add_power_phasors(coefs.view(np.float64), power, phasor.view(np.float64))
    np.testing.assert_array_equal(power, want_power)
    np.testing.assert_array_equal(phasor, want_phasor)
    with pytest.raises(ValueError, match="disagree in shape"):
        add_power_phasors(coefs.view(np.float64), power[:2], phasor.view(np.float64))


def test_accumulator_equals_batch_and_noise_itc_is_rayleigh():
    fs = 250.0
    freqs = osc.morlet_frequencies(4, 45, 42)
    nc = osc.morlet_n_cycles(freqs)
    tr = osc.MorletTransform(freqs, nc, fs, n_out=50)
    times = np.arange(50) * 4.0 - 100.0
    base = np.zeros((freqs.size, 50), bool)
    base[:, :10] = True
    acc = osc.RunningTFR(["a", "b", "c", "d"], freqs, times, base)
    rng = np.random.default_rng(5)
    n = 60
    eps = rng.standard_normal((n, 4, tr.n_in)) * 10.0
    for e in eps:
        acc.add(tr.transform(e))
    # batch: direct convolution of all epochs at once, then mean power / mean phasor
    allc = np.stack([osc.morlet_tfr_numpy(e, tr.wavelets, tr.half, tr.half + 50) for e in eps])
    p = np.mean(np.abs(allc) ** 2, axis=0)
    itc = np.abs(np.mean(allc / np.abs(allc), axis=0))
    np.testing.assert_allclose(acc.mean_power_uv2(), p, rtol=1e-10)
    np.testing.assert_allclose(acc.itc(), itc, rtol=0, atol=1e-10)
    ersp = 10 * np.log10(p / p[..., :10].mean(-1, keepdims=True))
    np.testing.assert_allclose(acc.ersp_db(), ersp, atol=1e-10)
    roi = np.array([0, 2])
    pr = p[roi].mean(0)
    np.testing.assert_allclose(acc.ersp_db(roi),
                               10 * np.log10(pr / pr[:, :10].mean(-1, keepdims=True)),
                               atol=1e-10)
    # white noise: ITC is the Rayleigh mean sqrt(pi / 4N) (about 0.114 here), not 0
    chance = osc.rayleigh_itc_mean(n)
    m = float(acc.itc().mean())
    print(f"\nnoise ITC mean {m:.4f}, Rayleigh expectation {chance:.4f}")
    assert abs(m - chance) < 0.08 * chance
    # noise ERSP averages ~0 dB
    assert abs(float(acc.ersp_db().mean())) < 0.5


@pytest.mark.parametrize("freq", [18.0, 29.0])
def test_natural_frequency_recovered(runs, freq):
    sim, session, metric = runs[freq]
    s = metric.summary()
    truth = sim.truth.evoked_oscillation
    assert truth["freq_hz"] == freq
    at = s["at_natural_frequency"]
    print(f"\n{freq:g} Hz: natural {s['natural_frequency_hz']:g} Hz, n={s['n_epochs']}, "
          f"ITC post {at['itc_post_mean']:.2f} base {at['itc_baseline_mean']:.2f}, "
          f"ERSP post {at['ersp_post_mean_db']:.2f} dB, skipped {s['skipped']}")
    assert s["n_epochs"] >= 50  # of 66: blinks on Fp1/Fp2 reject some (no longer bad channels)
    assert abs(s["natural_frequency_hz"] - freq) <= 1.5
    assert abs(s["natural_frequency_by_channel_hz"]["C3"] - freq) <= 1.5
    # ITC and ERSP at the injected frequency (not just at whatever was found)
    m = metric.roi_maps()
    k = int(np.argmin(np.abs(m["freqs_hz"] - freq)))
    t = m["times_ms"]
    post = (t >= 50) & (t <= 150)
    c3 = metric.epocher.ch_names.index("C3")
    itc_c3 = metric.tfr.itc()[c3, k]
    assert itc_c3[post].mean() > 0.5, itc_c3[post].mean()
    assert m["itc"][k, post].mean() > 0.45
    assert m["itc"][k, metric.baseline[k]].mean() < 0.2
    assert m["ersp_db"][k, post].mean() > 1.0
    # the pulse window never enters a baseline; contaminated cells are marked
    assert np.all(metric.baseline_end_ms <= -2.0 - metric.support_ms + 1e-9)
    assert metric.contaminated[:, (t > 0) & (t < 10)].all()
    assert not metric.contaminated[:, t < -400].any()


def test_without_oscillation_natural_frequency_is_elsewhere():
    """Same seed, no evoked oscillation: the ROI natural frequency is not near 18 Hz."""
    _, _, metric = _run(0.0, duration_s=70.0)
    s = metric.summary()
    assert abs(s["natural_frequency_hz"] - 18.0) > 3.0, s["natural_frequency_hz"]


def test_bad_config_errors():
    c = _cfg(freq_max_hz=120.0)
    meta = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=1000.0)).meta
    with pytest.raises(ValueError, match="Nyquist"):
        osc.OscillationMetric(c, TEPSession(_cfg(), meta).context)
    with pytest.raises(ValueError, match="baseline"):
        osc.OscillationMetric(_cfg(baseline_ms=[-400.0, -150.0], tf_window_ms=[-400.0, 500.0]),
                              TEPSession(_cfg(), meta).context)
