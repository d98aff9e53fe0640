"""Filter stages: block-split invariance, gap recovery, pulse protection, zero-phase mode."""
import numpy as np
import pytest
from scipy import signal

from tmseeg.pipeline.base import Chain, concat_blocks
from tmseeg.pipeline.filters import (
    BandpassFilter, NotchFilter, design_bandpass, sosfilt_nan, sosfiltfilt_nan,
)
from tmseeg.stream.block import Block, Event, StreamMeta, blocks_from_array, EVENT_PULSE

SF = 1000.0


def _meta(n_eeg=4, emg=True):
    names = [f"E{i}" for i in range(n_eeg)] + (["EMG"] if emg else [])
    types = ["eeg"] * n_eeg + (["emg"] if emg else [])
    return StreamMeta(names, SF, types)


def _random_splits(data, meta, rng, events=()):
    n = data.shape[1]
    cuts = np.sort(rng.choice(np.arange(1, n), size=40, replace=False))
    edges = np.concatenate(([0], cuts, [n]))
    out = []
    evs = sorted(events, key=lambda e: e.sample)
    for a, b in zip(edges[:-1], edges[1:]):
        out.append(Block(data[:, a:b].copy(), int(a), np.arange(a, b) / SF, meta,
                         [e for e in evs if a <= e.sample < b]))
    return out


def _run(stage, blocks):
    outs = [stage.process(b) for b in blocks]
    rest = stage.flush()
    if rest is not None:
        outs.append(rest)
    return concat_blocks([o for o in outs if o.n_samples])


def test_causal_block_splits_equal_one_sosfilt():
    rng = np.random.default_rng(0)
    meta = _meta()
    data = rng.standard_normal((5, 5000)) * 20 + 3000.0  # big DC offset, like a real amplifier
    for stage in (BandpassFilter(1.0, 100.0), NotchFilter(50.0)):
        out = _run(stage, _random_splits(data, meta, rng))
        sos = stage.design(SF)
        zi = signal.sosfilt_zi(sos)[:, None, :] * data[:4, :1][None]
        ref, _ = signal.sosfilt(sos, data[:4], axis=-1, zi=zi)
        assert out.first_sample == 0 and out.n_samples == 5000
        np.testing.assert_allclose(out.data[:4], ref, rtol=0, atol=1e-10)
        # EMG untouched (picks="eeg")
        np.testing.assert_array_equal(out.data[4], data[4])


def test_steady_state_start_has_no_dc_transient():
    meta = _meta(2, emg=False)
    data = np.full((2, 3000), -25000.0)  # 25 mV offset, constant
    out = _run(BandpassFilter(1.0, 100.0), list(blocks_from_array(data, meta, 37)))
    assert np.abs(out.data).max() < 1e-6
    # a naive zero-state start would ring at thousands of uV
    naive = signal.sosfilt(design_bandpass(SF, 1.0, 100.0), data[0])
    assert np.abs(naive).max() > 1000


def _amp(x, f):
    """Amplitude of the f-Hz sinusoid in x (exact FFT bin: 10 s at 1 kHz)."""
    spec = np.abs(np.fft.rfft(x)) * 2 / x.size
    return spec[int(round(f * x.size / SF))]


def test_frequency_response_passes_band_and_removes_line():
    meta = _meta(1, emg=False)
    t = np.arange(20000) / SF
    x = (10 * np.sin(2 * np.pi * 10 * t) + 10 * np.sin(2 * np.pi * 50 * t)
         + 10 * np.sin(2 * np.pi * 100 * t))[None]
    notch = _run(NotchFilter(50.0, harmonics=2), list(blocks_from_array(x, meta, 50))).data[0, 10000:]
    assert abs(_amp(notch, 10) - 10) < 0.2          # passband untouched within 2 %
    assert _amp(notch, 50) < 0.1 and _amp(notch, 100) < 0.1  # line and harmonic < 1 %
    bp = _run(BandpassFilter(1.0, 30.0), list(blocks_from_array(x, meta, 50))).data[0, 10000:]
    # each sinusoid comes out scaled by the designed |H(f)| (4th-order Butterworth edges)
    sos = design_bandpass(SF, 1.0, 30.0, 4)
    for f in (10, 50, 100):
        _, h = signal.sosfreqz(sos, worN=[f], fs=SF)
        assert abs(_amp(bp, f) - 10 * abs(h[0])) < 0.01 * 10
    assert abs(_amp(bp, 10) - 10) < 0.3 and _amp(bp, 50) < 1.3 and _amp(bp, 100) < 0.1


def test_nan_gap_resets_state_and_filter_recovers():
    rng = np.random.default_rng(1)
    meta = _meta(3, emg=False)
    data = rng.standard_normal((3, 6000)) * 10 + 500.0
    data[:, 2000:2300] = np.nan          # stream gap on all channels
    data[1, 4000:4100] = np.nan          # one channel drops out briefly
    stage = BandpassFilter(1.0, 100.0)
    out = _run(stage, _random_splits(data, meta, rng))
    assert np.isnan(out.data[:, 2000:2300]).all()
    assert np.isfinite(out.data[:, 2300:]).sum() == 3 * 3700 - 100
    # equals the whole-array reference that restarts from steady state after each gap
    np.testing.assert_allclose(out.data, sosfilt_nan(stage.design(SF), data), atol=1e-10)
    # after the gap the output equals a fresh filter started on the post-gap data
    fresh = _run(BandpassFilter(1.0, 100.0), list(blocks_from_array(data[:, 2300:4000], meta, 100)))
    np.testing.assert_allclose(out.data[:, 2300:4000], fresh.data, atol=1e-10)


def test_missing_samples_between_blocks_reset_state():
    rng = np.random.default_rng(2)
    meta = _meta(2, emg=False)
    data = rng.standard_normal((2, 4000)) * 10 + 300
    blocks = list(blocks_from_array(data, meta, 100))
    del blocks[10:15]  # samples 1000..1499 never arrived
    stage = BandpassFilter(1.0, 100.0)
    outs = [stage.process(b) for b in blocks]
    after = np.concatenate([o.data for o in outs[10:]], axis=1)
    fresh = _run(BandpassFilter(1.0, 100.0), list(blocks_from_array(data[:, 1500:], meta, 100)))
    np.testing.assert_allclose(after, fresh.data, atol=1e-10)


def test_protect_window_keeps_pulse_out_of_state():
    rng = np.random.default_rng(3)
    meta = _meta(2, emg=False)
    clean = np.cumsum(rng.standard_normal((2, 4000)), axis=1)
    spiky = clean.copy()
    pulses = [1000, 2500]
    for p in pulses:
        spiky[:, p - 1:p + 8] += 50000.0  # residual pulse artifact of 50 mV inside (-2, 10) ms
    evs = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    kw = dict(l_freq_hz=1.0, h_freq_hz=100.0, protect_window_ms=(-2.0, 10.0))
    a = _run(BandpassFilter(**kw), _random_splits(spiky, meta, rng, evs))
    b = _run(BandpassFilter(**kw), _random_splits(clean, meta, rng, evs))
    # outside the protected windows the artifact left no trace at all
    mask = np.ones(4000, bool)
    for p in pulses:
        mask[p - 2:p + 11] = False
    np.testing.assert_allclose(a.data[:, mask], b.data[:, mask], atol=1e-9)
    # and without protection the same spike rings for hundreds of ms
    c = _run(BandpassFilter(1.0, 100.0), _random_splits(spiky, meta, rng, evs))
    d = _run(BandpassFilter(1.0, 100.0), _random_splits(clean, meta, rng, evs))
    assert np.abs(c.data[:, 1100:1400] - d.data[:, 1100:1400]).max() > 100


def test_zero_phase_holds_until_flush_and_matches_filtfilt():
    rng = np.random.default_rng(4)
    meta = _meta(3)
    data = rng.standard_normal((4, 3000)) * 10
    data[:, 1500:1520] = np.nan
    evs = [Event(700, "TMS", EVENT_PULSE)]
    stage = BandpassFilter(1.0, 40.0, mode="zero_phase")
    outs = [stage.process(b) for b in blocks_from_array(data, meta, 250, evs)]
    assert all(o.n_samples == 0 for o in outs)
    rest = stage.flush()
    assert rest.first_sample == 0 and rest.n_samples == 3000
    assert [e.sample for e in rest.pulses()] == [700]
    sos = stage.design(SF)
    np.testing.assert_allclose(rest.data[:3, :1500], signal.sosfiltfilt(sos, data[:3, :1500]),
                               atol=1e-9)
    np.testing.assert_allclose(rest.data[:3], sosfiltfilt_nan(sos, data[:3]), atol=1e-12)
    np.testing.assert_array_equal(rest.data[3], data[3])
    np.testing.assert_allclose(stage.apply_array(data[:3], SF), rest.data[:3], atol=1e-12)
    # zero phase: a symmetric pulse stays centred
    imp = np.zeros((1, 2001))
    imp[0, 1000] = 1.0
    y = BandpassFilter(1.0, 40.0, mode="zero_phase").apply_array(imp, SF)[0]
    assert np.argmax(y) == 1000
    np.testing.assert_allclose(y[1000 - 50:1000], y[1001:1051][::-1], atol=1e-3 * y.max())
    yc = BandpassFilter(1.0, 40.0).apply_array(imp, SF)[0]  # causal: delayed and lopsided
    assert np.argmax(yc) > 1005


def test_zero_phase_through_chain_flush():
    rng = np.random.default_rng(5)
    meta = _meta(2, emg=False)
    data = rng.standard_normal((2, 2000))
    chain = Chain([BandpassFilter(1.0, 40.0, mode="zero_phase")])
    for b in blocks_from_array(data, meta, 100):
        assert chain.process(b).n_samples == 0
    out = list(chain.flush())
    assert len(out) == 1 and out[0].n_samples == 2000


def test_bad_parameters_raise_clear_errors():
    meta = _meta(1, emg=False)
    b = Block(np.zeros((1, 10)), 0, np.arange(10) / SF, meta)
    with pytest.raises(ValueError, match="Nyquist"):
        BandpassFilter(1.0, 600.0).process(b)
    with pytest.raises(ValueError, match="mode"):
        BandpassFilter(mode="acausal")
    st = BandpassFilter()
    st.process(b)
    with pytest.raises(ValueError, match="already filtered"):
        st.process(b)


def test_epoch_filter_drops_a_low_pass_the_sampling_rate_cannot_carry(caplog):
    """A 100 Hz low-pass on data sampled at 200 Hz (Nyquist 100 Hz): no crash, no low-pass,
    a warning that says so; the high-pass still works."""
    from tmseeg.pipeline.filters import EpochFilter

    filt = EpochFilter(1.0, 100.0, order=4, notch_hz=50.0)
    t = np.arange(0, 4.0, 1 / 200.0)
    x = np.vstack([np.sin(2 * np.pi * 0.1 * t) * 50 + np.sin(2 * np.pi * 20 * t)])
    with caplog.at_level("WARNING"):
        out = filt(x, 200.0)
    assert "no low-pass" in caplog.text
    mid = slice(200, 600)
    assert np.std(out[0, mid] - np.sin(2 * np.pi * 20 * t[mid])) < 0.2  # 20 Hz kept, drift gone


def test_epoch_filter_keeps_tep_latencies_where_a_causal_filter_shifts_them():
    """The TEP path filters each padded epoch forward and backward: no latency shift."""
    from tmseeg.pipeline.filters import EpochFilter, design_bandpass, sosfilt_nan

    sf = 5000.0
    t_ms = np.arange(-1000, 1000, 1000 / sf)
    wave = -6 * np.exp(-0.5 * ((t_ms - 100) / 15) ** 2) + 4 * np.exp(-0.5 * ((t_ms - 185) / 25) ** 2)
    data = np.vstack([wave, 0.5 * wave])
    filt = EpochFilter(1.0, 80.0, order=2, notch_hz=50.0, pad_ms=500.0)
    out = filt(data, sf)
    causal = sosfilt_nan(design_bandpass(sf, 1.0, 80.0, 4), data)
    win = (t_ms > 60) & (t_ms < 140)
    lat_zero = t_ms[win][np.argmin(out[0, win])]
    lat_causal = t_ms[win][np.argmin(causal[0, win])]
    assert abs(lat_zero - 100.0) <= 0.4
    assert lat_causal - 100.0 > 2.0  # what the live path would report with causal filters
    core = np.abs(t_ms) < 500
    assert np.corrcoef(out[0, core], wave[core])[0, 1] > 0.98


def test_epocher_with_epoch_filter_crops_padding_and_waits_for_it():
    from tmseeg.pipeline.epochs import Epocher
    from tmseeg.pipeline.filters import EpochFilter

    sf = 1000.0
    meta = StreamMeta(("A", "B"), sf)
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 6000))
    events = [Event(sample=2500, label="TMS", kind=EVENT_PULSE)]
    filt = EpochFilter(1.0, 40.0, notch_hz=None, pad_ms=300.0)
    ep = Epocher(tmin_ms=-500, tmax_ms=500, baseline_ms=None, reject_uv=None, epoch_filter=filt)
    got = []
    for block in blocks_from_array(data, meta, 100, events=events):
        new = ep.push(block)
        if new:
            # emitted by the block that completes tmax + pad, not tmax alone
            assert block.stop_sample >= 2500 + 500 + 300 + 1
            assert block.first_sample < 2500 + 500 + 300 + 1
        got += new
    assert len(got) == 1 and got[0].data_uv.shape == (2, 1001)
    want = filt(data[:, 2500 - 800:2500 + 801], sf)[:, 300:1301]
    np.testing.assert_allclose(got[0].data_uv, want, atol=1e-12)


def test_zero_phase_filter_over_the_cores_equals_one_thread():
    """The epoch filter splits the channels over the cores: every channel's result is the
    single-threaded one, to the bit, on a whole cap and on a small array alike."""
    from tmseeg.pipeline import filters

    sos = np.vstack([design_bandpass(5000.0, 1.0, 100.0, 4),
                     filters.design_notch(5000.0, 50.0, 2)])
    x = np.random.default_rng(3).standard_normal((65, 4001)) * 20.0
    np.testing.assert_array_equal(filters._sosfiltfilt_rows(sos, x),
                                  signal.sosfiltfilt(sos, x, axis=-1))
    np.testing.assert_array_equal(filters.sosfiltfilt_nan(sos, x[:3, :500]),
                                  signal.sosfiltfilt(sos, x[:3, :500], axis=-1))


def test_row_split_work_runs_in_a_forked_child_too():
    """The channel-split helper's thread pool is not inherited by a forked child (its threads
    are not): the child makes its own instead of waiting forever on the parent's."""
    import multiprocessing

    from tmseeg.utils import map_rows

    x = np.ones((8, 50_000))
    assert map_rows(lambda rows: rows * 2, x).sum() == 2 * x.size  # the parent's pool exists

    def child(q):
        q.put(float(map_rows(lambda rows: rows * 3, x).sum()))

    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    p.join(20)
    alive = p.is_alive()
    if alive:
        p.kill()
    assert not alive and q.get(timeout=1) == 3 * x.size


def test_serial_rows_keeps_row_split_work_on_the_callers_thread():
    """Offline the session spreads its work over threads of its own; inside ``serial_rows``
    the row helper neither splits nor hands work to its pool (and splits again after)."""
    import threading

    from tmseeg.utils import over_rows, serial_rows

    seen = []

    def work(a, b):
        seen.append((a, b, threading.get_ident()))
        return b - a

    with serial_rows():
        assert over_rows(work, 8, 10**9) == [8]
    assert seen == [(0, 8, threading.get_ident())]
    seen.clear()
    parts = over_rows(work, 8, 10**9)
    if (__import__("os").cpu_count() or 1) >= 2:
        assert len(parts) >= 2 and sum(parts) == 8
        assert all(t != threading.get_ident() for *_, t in seen)
