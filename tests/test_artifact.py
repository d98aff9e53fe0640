"""Pulse-window interpolation (Cython kernel + live stage) and decay-artifact removal."""
from __future__ import annotations

import numpy as np
import pytest

from tmseeg._ext.interp import interp_span
from tmseeg.pipeline.artifact import (
    PulseInterpolation,
    interpolate_pulses,
    plan_spans,
)
from tmseeg.pipeline.base import concat_blocks
from tmseeg.stream.block import EVENT_PULSE, Block, Event, StreamMeta, blocks_from_array

SFREQ = 5000.0


# --------------------------------------------------------------------------- references
def ref_interp_span(data, rows, start, stop, n_left, n_right, order):
    """Plain numpy reference: least-squares polynomial on the side samples (raw sample times)."""
    idx = np.r_[start - n_left:start, stop:stop + n_right]
    x = idx.astype(float)
    y = data[np.ix_(rows, idx)].T  # (n_fit, n_rows)
    coef = np.polynomial.polynomial.polyfit(x - start, y, order)
    xs = np.arange(start, stop, dtype=float) - start
    fill = np.polynomial.polynomial.polyval(xs, coef)  # (n_rows, n_gap)
    data[np.ix_(rows, np.arange(start, stop))] = fill


def ref_interpolate_offline(data, pulses, w0, w1, n_fit, order):
    """Independent whole-array reference of the span rules: windows [p+w0, p+w1]; merge when
    they overlap or the clean gap is < n_fit; fit n_fit samples each side (clipped at edges)."""
    out = data.copy()
    n = data.shape[1]
    wins = sorted((p + w0, p + w1 + 1) for p in sorted(set(pulses)))
    merged = []
    for a, b in wins:
        if merged and a - merged[-1][1] < n_fit:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    rows = np.arange(data.shape[0])
    for a, b in merged:
        a, b = max(a, 0), min(b, n)
        if b <= a:
            continue
        nl, nr = min(n_fit, a), min(n_fit, n - b)
        o = 0 if nl == 0 or nr == 0 else min(order, nl + nr - 1)
        ref_interp_span(out, rows, a, b, nl, nr, o)
    return out


def make_meta(n_ch, extra_stim=False):
    names = [f"E{i}" for i in range(n_ch)]
    types = ["eeg"] * n_ch
    if extra_stim:
        names.append("STI")
        types.append("stim")
    return StreamMeta(ch_names=names, sfreq=SFREQ, ch_types=types, name="test")


def synth_artifacts(n_ch, n, pulses, seed=0, decay_uv=300.0, tau_ms=8.0, spike_uv=5000.0):
    """Noise + 10 Hz 'alpha' + per pulse: a huge 2 ms spike and an exponential decay."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SFREQ
    data = 5.0 * rng.standard_normal((n_ch, n))
    data += 20.0 * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (n_ch, 1)))
    gains = rng.uniform(0.3, 1.0, n_ch)
    for p in pulses:
        seg = slice(p, min(n, p + 10))
        data[:, seg] += spike_uv * gains[:, None]
        k = np.arange(p, n)
        data[:, p:] += decay_uv * gains[:, None] * np.exp(-(k - p) / (tau_ms * SFREQ / 1000))
    return data


def feed(stage, data, meta, events, rng, max_block=500):
    """Feed data in random block sizes (1..max_block); return the concatenated output."""
    out = []
    start = 0
    n = data.shape[1]
    ordered = sorted(events, key=lambda e: e.sample)
    while start < n:
        size = int(rng.integers(1, max_block + 1))
        stop = min(n, start + size)
        evs = [e for e in ordered if start <= e.sample < stop]
        blk = Block(data=np.ascontiguousarray(data[:, start:stop]), first_sample=start,
                    timestamps=np.arange(start, stop) / meta.sfreq, meta=meta, events=evs)
        res = stage.process(blk)
        if res.n_samples or res.events:
            out.append(res)
        start = stop
    rest = stage.flush()
    if rest is not None and (rest.n_samples or rest.events):
        out.append(rest)
    return concat_blocks(out)


# --------------------------------------------------------------------------- kernel
@pytest.mark.parametrize("order,n_left,n_right", [(3, 5, 5), (3, 2, 7), (1, 1, 1), (1, 4, 4),
                                                   (0, 3, 0), (2, 0, 6), (3, 20, 20)])
def test_kernel_matches_numpy_reference(order, n_left, n_right):
    rng = np.random.default_rng(order * 100 + n_left)
    data = rng.standard_normal((16, 400)) * 50 + np.linspace(-200, 300, 400)
    rows = np.array([0, 3, 4, 9, 15], dtype=np.intp)
    ref = data.copy()
    start, stop = 120, 181
    interp_span(data, rows, start, stop, n_left, n_right, order)
    ref_interp_span(ref, rows, start, stop, n_left, n_right, order)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(data, ref, rtol=0, atol=1e-9 * scale)
    # rows not listed and samples outside the span are untouched, bit for bit
    untouched = np.ones(data.shape, bool)
    untouched[np.ix_(rows, np.arange(start, stop))] = False
    assert np.array_equal(data[untouched], ref[untouched])


def test_kernel_linear_is_line_between_edges_and_cubic_recovers_cubic():
    data = np.zeros((2, 100))
    data[0] = np.arange(100.0) * 2.0 + 7.0
    data[1, :] = 1e4  # a big artifact everywhere ...
    data[1, 39] = 10.0  # ... except the two edge samples
    data[1, 61] = 54.0
    interp_span(data, np.array([0, 1], dtype=np.intp), 40, 61, 1, 1, 1)
    np.testing.assert_allclose(data[0, 40:61], np.arange(40, 61) * 2.0 + 7.0, atol=1e-9)
    np.testing.assert_allclose(data[1, 40:61], 10.0 + (np.arange(40, 61) - 39) * 44.0 / 22,
                               atol=1e-9)
    x = np.arange(300.0)
    cub = np.vstack([1e-4 * (x - 150) ** 3 - 0.02 * (x - 150) ** 2 + 3 * x - 40])
    spoiled = cub.copy()
    spoiled[:, 100:160] = -9999.0
    interp_span(spoiled, np.array([0], dtype=np.intp), 100, 160, 6, 6, 3)
    np.testing.assert_allclose(spoiled, cub, atol=1e-7)


def test_kernel_rejects_bad_arguments():
    data = np.zeros((3, 50))
    rows = np.array([0], dtype=np.intp)
    with pytest.raises(ValueError):
        interp_span(data, rows, 10, 20, 1, 1, 3)  # cubic from 2 samples
    with pytest.raises(ValueError):
        interp_span(data, rows, 2, 20, 5, 5, 3)  # left fit before sample 0
    with pytest.raises(ValueError):
        interp_span(data, rows, 10, 48, 5, 5, 3)  # right fit beyond the end
    with pytest.raises(IndexError):
        interp_span(data, np.array([3], dtype=np.intp), 10, 20, 5, 5, 3)


# --------------------------------------------------------------------------- span planning
def test_plan_spans_merges_bursts_and_never_fits_inside_other_windows():
    w0, w1, n_fit = -10, 50, 5
    # paired pulses 15 samples apart (overlap), a pulse whose window leaves a 3-sample gap
    # (< n_fit -> merged) twice; then a pair leaving 6 clean samples (kept apart)
    pulses = [1000, 1015, 1078, 1200, 1264]
    spans = plan_spans(pulses, w0, w1, n_fit, 3, 0, 5000)
    assert [(s.start, s.stop) for s in spans] == [(990, 1129), (1190, 1315)]
    pulses = [1000, 1067]
    spans = plan_spans(pulses, w0, w1, n_fit, 3, 0, 5000)
    assert [(s.start, s.stop) for s in spans] == [(990, 1051), (1057, 1118)]
    # fit stretches stay in the 6 clean samples between the windows
    assert spans[0].stop + spans[0].n_right <= spans[1].start
    assert spans[1].start - spans[1].n_left >= spans[0].stop
    # edges: window clipped at 0 and at the end; one-sided spans hold the mean (degree 0)
    spans = plan_spans([3, 4990], w0, w1, n_fit, 3, 0, 5000)
    assert (spans[0].start, spans[0].n_left, spans[0].n_right, spans[0].order) == (0, 0, 5, 0)
    assert (spans[1].stop, spans[1].n_left, spans[1].n_right, spans[1].order) == (5000, 5, 0, 0)


# --------------------------------------------------------------------------- offline/online
SCHEDULES = {
    "single": [1000, 3500, 6000],
    "rtms_10hz": [1000 + 500 * k for k in range(10)],
    "itbs_50hz": [1000 + 1000 * b + 100 * k for b in range(3) for k in range(3)],
    "paired_3ms": [1500, 1515, 6500, 6515],
    "edges": [3, 400, 6996],
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("method", ["cubic", "linear"])
def test_offline_matches_reference_and_removes_artifact(name, method):
    pulses = SCHEDULES[name]
    n = 7000
    data = synth_artifacts(8, n, pulses, decay_uv=0.0)
    clean = synth_artifacts(8, n, [], decay_uv=0.0)
    w0, w1 = -10, 50  # -2 .. +10 ms at 5 kHz
    n_fit, order = (5, 3) if method == "cubic" else (1, 1)
    out = interpolate_pulses(data, pulses, SFREQ, (-2.0, 10.0), method, 1.0)
    ref = ref_interpolate_offline(data, pulses, w0, w1, n_fit, order)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    # the 5000 uV spikes are gone: what is left in the windows is EEG-sized
    assert np.abs(data).max() > 2000
    assert np.abs(out - clean).max() < 150, np.abs(out - clean).max()
    # outside the windows nothing changed
    mask = np.ones(n, bool)
    for p in pulses:
        mask[max(0, p + w0):p + w1 + 1] = False
    assert np.array_equal(out[:, mask], data[:, mask])


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("method,max_block", [("cubic", 500), ("cubic", 7), ("linear", 60)])
def test_live_random_blocks_equal_offline_exactly(name, method, max_block):
    pulses = SCHEDULES[name]
    n = 7000
    meta = make_meta(6, extra_stim=True)
    data = np.vstack([synth_artifacts(6, n, pulses, seed=3), np.zeros((1, n))])
    data[6, pulses] = 1.0
    events = [Event(sample=p, label="TMS", kind=EVENT_PULSE) for p in pulses]
    events.append(Event(sample=2500, label="note", kind="marker"))
    rng = np.random.default_rng(len(name) + max_block)
    stage = PulseInterpolation(window_ms=(-2.0, 10.0), method=method, fit_ms=1.0)
    out = feed(stage, data, meta, events, rng, max_block)
    assert out.first_sample == 0 and out.n_samples == n
    offline = interpolate_pulses(data, pulses, SFREQ, (-2.0, 10.0), method, 1.0,
                                 rows=np.arange(6))
    assert np.array_equal(out.data, offline)  # bit for bit
    assert np.array_equal(out.data[6], data[6])  # the stim channel is not touched
    np.testing.assert_array_equal(out.timestamps, np.arange(n) / SFREQ)
    assert sorted(e.sample for e in out.events) == sorted(e.sample for e in events)
    assert stage.n_late == 0


def test_live_holdback_is_bounded_and_late_pulses_are_reported(caplog):
    n = 20000
    pulses = [5000, 10000]
    meta = make_meta(4)
    data = synth_artifacts(4, n, pulses)
    stage = PulseInterpolation(window_ms=(-2.0, 10.0), fit_ms=1.0)
    held = []
    for blk in blocks_from_array(data, meta, 50,
                                 [Event(p, "TMS", EVENT_PULSE) for p in pulses]):
        out = stage.process(blk)
        held.append(blk.stop_sample - out.stop_sample)
    # quiet: fit (5) + pre-window (10) samples; around a pulse at most window + fit + block
    assert max(held) <= 10 + 50 + 5 + 50 + 1
    assert min(held) >= 15
    # a pulse announced 20 ms after its sample cannot be cut any more: it is reported
    stage = PulseInterpolation(window_ms=(-2.0, 10.0))
    late = Event(5000, "TMS", EVENT_PULSE)
    for blk in blocks_from_array(data, meta, 50):
        if blk.first_sample == 5100:
            blk.events.append(late)
        stage.process(blk)
    assert stage.n_late == 1
    assert "arrived after" in caplog.text
    # ... unless the stage was told markers can lag that much
    stage = PulseInterpolation(window_ms=(-2.0, 10.0), max_delay_ms=25.0)
    outs = []
    for blk in blocks_from_array(data, meta, 50):
        if blk.first_sample == 5100:
            blk.events.append(late)
        outs.append(stage.process(blk))
    outs.append(stage.flush())
    got = concat_blocks([o for o in outs if o is not None])
    assert stage.n_late == 0
    assert np.array_equal(got.data, interpolate_pulses(data, [5000], SFREQ))
