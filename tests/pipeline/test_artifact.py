"""Pulse-window interpolation (Cython kernel + live stage) and decay-artifact removal."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from tmseeg._ext.expfit import lm_refine
from tmseeg._ext.interp import interp_span
from tmseeg.pipeline.interpolation import PulseInterpolation, interpolate_pulses, plan_spans
from tmseeg.pipeline.decay import (DecayFitter, DecayRemoval, decay_size_uv, fit_decay,
                                  steps_at_pulse)
from tmseeg.pipeline.base import Chain, concat_blocks
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

def _noisy_train(n_ch: int, n: int, seed: int, every: int = 5000):
    """Pulses every ``every`` samples (1 s) and 4 uV of white EEG: the rng, the pulses, the
    time axis (ms), the clean data and a copy to add the artifacts to."""
    rng = np.random.default_rng(seed)
    pulses = list(range(2000, n - 6000, every))
    clean = 4.0 * rng.standard_normal((n_ch, n))
    return rng, pulses, np.arange(n) / SFREQ * 1000, clean, clean.copy()



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


@pytest.mark.parametrize("max_block", [500, 7])
def test_recharge_artifact_is_cut_at_its_delay(max_block):
    """The stimulator's recharge, a 30 µV transient 80 ms after every pulse (here at 10 Hz, so
    it lies between pulses and next to the next pulse's window): cut at its delay, live in any
    blocks as on the whole recording, and gone; nothing else touched."""
    from tmseeg.pipeline.interpolation import RechargeInterpolation

    n = 12000
    pulses = [1000, 1500, 2000, 6000]  # 100 ms apart, then a single pulse
    rng = np.random.default_rng(5)
    clean = 1.0 * rng.standard_normal((4, n)) + 20.0 * np.sin(2 * np.pi * 10 * np.arange(n)
                                                               / SFREQ)
    data = clean.copy()
    delay = int(0.080 * SFREQ)
    k = np.arange(int(0.004 * SFREQ)) / SFREQ * 1000.0
    gains = np.array([1.0, -0.6, 0.3, 0.8])
    for p in pulses:
        data[:, p + delay:p + delay + k.size] += 30.0 * gains[:, None] * np.exp(-k / 1.0)
    events = [Event(sample=p, label="TMS", kind=EVENT_PULSE) for p in pulses]
    stage = RechargeInterpolation(delay_ms=80.0, window_ms=(-1.0, 5.0))
    out = feed(stage, data, make_meta(4), events, np.random.default_rng(max_block), max_block)
    offline = interpolate_pulses(data, pulses, SFREQ, (79.0, 85.0), "cubic", 1.0)
    assert np.array_equal(out.data, offline)  # bit for bit
    assert stage.name == "recharge" and stage.n_spans == len(pulses) and stage.n_late == 0
    cut = np.zeros(n, bool)
    for p in pulses:
        cut[p + delay - 5:p + delay + 26] = True
    assert np.array_equal(out.data[:, ~cut], data[:, ~cut])
    left, was = np.abs(out.data - clean)[:, cut].max(), np.abs(data - clean)[:, cut].max()
    assert was > 25.0 and left < 10.0, (was, left)
    with pytest.raises(ValueError, match="after the pulse"):
        RechargeInterpolation(delay_ms=0.5, window_ms=(-1.0, 5.0))


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


# --------------------------------------------------------------------------- decay fit
def ref_lm_refine(yb, t, log_tau, log_lo, log_hi, log_ratio, n_iter):
    """Plain numpy reference of the Levenberg-Marquardt kernel, vectorised across channels."""
    n_ch, nb = yb.shape
    K = log_tau.shape[1]

    def linear(lt):
        e = np.exp(-t[None, :, None] * np.exp(-lt)[:, None, :])
        a = np.concatenate([e, np.ones((n_ch, nb, 1))], axis=2)
        ata = np.einsum("cti,ctj->cij", a, a)
        ata += 1e-12 * np.trace(ata, axis1=1, axis2=2)[:, None, None] * np.eye(K + 1)
        coef = np.linalg.solve(ata, np.einsum("cti,ct->ci", a, yb)[..., None])[..., 0]
        res = yb - np.einsum("cti,ci->ct", a, coef)
        return coef, (res ** 2).sum(1), e, res

    def constrain(lt):
        lt = np.clip(lt, log_lo, log_hi)
        if K == 2:
            lt = np.sort(lt, axis=1)
            close = lt[:, 1] - lt[:, 0] < log_ratio
            mid = np.clip(lt[close].mean(1), log_lo + log_ratio / 2, log_hi - log_ratio / 2)
            lt[close, 0], lt[close, 1] = mid - log_ratio / 2, mid + log_ratio / 2
        return lt

    lt = log_tau.copy()
    coef, cost, e, res = linear(lt)
    lam = np.full(n_ch, 1e-3)
    eye = np.eye(2 * K + 1)
    for _ in range(n_iter):
        jac = np.concatenate([e, np.ones((n_ch, nb, 1)),
                              e * coef[:, None, :K] * (t[None, :, None] / np.exp(lt)[:, None, :])],
                             axis=2)
        jtj = np.einsum("cti,ctj->cij", jac, jac)
        jtr = np.einsum("cti,ct->ci", jac, res)
        damp = lam[:, None, None] * eye * np.einsum("cii->ci", jtj)[:, :, None] + 1e-12 * eye
        step = np.nan_to_num(np.linalg.solve(jtj + damp, jtr[..., None])[..., 0])
        trial = constrain(lt + step[:, K + 1:])
        c2, cost2, e2, res2 = linear(trial)
        better = cost2 < cost
        lt = np.where(better[:, None], trial, lt)
        coef = np.where(better[:, None], c2, coef)
        cost = np.where(better, cost2, cost)
        e = np.where(better[:, None, None], e2, e)
        res = np.where(better[:, None], res2, res)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    return lt, coef, cost


@pytest.mark.parametrize("K", [1, 2])
def test_lm_kernel_matches_numpy_reference(K):
    rng = np.random.default_rng(K)
    n_ch, nb = 24, 300
    t = np.arange(nb) * 2.6
    tau_f = rng.uniform(4, 40, n_ch)
    tau_s = rng.uniform(60, 300, n_ch)
    yb = rng.uniform(-500, 500, (n_ch, 1)) * np.exp(-t / tau_f[:, None])
    yb += rng.normal(0, 3, (n_ch, nb))
    if K == 2:
        yb += rng.uniform(-100, 100, (n_ch, 1)) * np.exp(-t / tau_s[:, None])
        start = np.log(np.column_stack([tau_f * rng.uniform(0.6, 1.5, n_ch),
                                        tau_s * rng.uniform(0.6, 1.5, n_ch)]))
    else:
        start = np.log(tau_f * rng.uniform(0.6, 1.5, n_ch))[:, None]
    lo, hi, ratio = np.log(2.0), np.log(500.0), np.log(2.0)
    ref_lt, ref_coef, ref_cost = ref_lm_refine(yb, t, start, lo, hi, ratio, 12)
    lt = np.ascontiguousarray(start.copy())
    coef = np.empty((n_ch, K + 1))
    cost = np.empty(n_ch)
    lm_refine(np.ascontiguousarray(yb), t, lt, coef, lo, hi, ratio, 12, cost)
    np.testing.assert_allclose(cost, ref_cost, rtol=1e-9)
    np.testing.assert_allclose(lt, ref_lt, rtol=0, atol=1e-7)
    np.testing.assert_allclose(coef, ref_coef, rtol=1e-7, atol=1e-7)
    # the refinement really improves on the start values
    _, _, start_cost = ref_lm_refine(yb, t, start, lo, hi, ratio, 0)
    assert np.all(cost <= start_cost) and np.median(start_cost) > 1.3 * nb * 9.0
    assert np.median(cost) < 1.1 * nb * 9.0  # down to the noise floor (sd 3)


def test_fit_decay_recovers_double_and_single_exponentials():
    fs = 5000.0
    t = np.arange(3950) / fs * 1000
    rng = np.random.default_rng(0)
    truth = [(300.0, 12.0, 100.0, 90.0, 5.0), (-80.0, 6.0, -40.0, 150.0, -20.0),
             (500.0, 25.0, 0.0, 100.0, 0.0)]
    y = np.vstack([a * np.exp(-t / ta) + b * np.exp(-t / tb) + c for a, ta, b, tb, c in truth])
    y += 2.0 * rng.standard_normal(y.shape)
    fit = fit_decay(y, fs, "double_exp")
    assert fit.ok.all()
    for ch, (a, ta, b, tb, c) in enumerate(truth[:2]):
        np.testing.assert_allclose(fit.tau_ms[ch], [ta, tb], rtol=0.08)
        np.testing.assert_allclose(fit.amps_uv[ch], [a, b], rtol=0.08)
        assert fit.r2[ch] > 0.99
    # the fitted decay matches the true one sample by sample (box-mean gain undone)
    true_exp = np.vstack([a * np.exp(-t / ta) + b * np.exp(-t / tb) for a, ta, b, tb, _ in truth])
    model = fit.model_uv(t.size, fs)
    assert np.abs(model[:2] - true_exp[:2]).max() < 3.0
    # a single decay fitted with two exponentials is still followed within ~1.5 %
    assert np.abs(model[2] - true_exp[2]).max() < 0.015 * 500
    single = fit_decay(y[2:], fs, "exp")
    assert single.tau_ms[0, 0] == pytest.approx(25.0, rel=0.02)
    assert single.amps_uv[0, 0] == pytest.approx(500.0, rel=0.02)


def test_fit_decay_is_as_good_as_scipy_curve_fit():
    """An independent optimiser (scipy least squares on all samples) finds no better fit."""
    from scipy.optimize import curve_fit

    fs = 5000.0
    n = 2000
    t = np.arange(n) / fs * 1000
    rng = np.random.default_rng(5)
    y = 200 * np.exp(-t / 9.0) + 60 * np.exp(-t / 70.0) + 3 + 4 * rng.standard_normal(n)
    fitter = DecayFitter(n, fs, 2, max_points=n)  # no box averaging: same cost as scipy
    fit = fitter.fit(y[None, :])
    ours = fit.model_uv(n, fs)[0] + fit.offset_uv[0]

    def f(tt, a, ta, b, tb, c):
        return a * np.exp(-tt / ta) + b * np.exp(-tt / tb) + c

    popt, _ = curve_fit(f, t, y, p0=[100, 5, 100, 50, 0], maxfev=20000)
    cost_ours = np.sum((y - ours) ** 2)
    cost_scipy = np.sum((y - f(t, *popt)) ** 2)
    assert cost_ours <= cost_scipy * (1 + 1e-6)


def test_fit_decay_flags_bad_fits_without_overflow():
    fs = 5000.0
    rng = np.random.default_rng(1)
    y = 5 * rng.standard_normal((3, 3000))
    y[1, 100] = np.nan
    y[2] = 0.0  # a flat (dead or saturated) channel
    with np.errstate(all="raise"):  # no overflow / invalid arithmetic surfaces
        fit = fit_decay(np.nan_to_num(y, nan=0.0), fs)
    assert np.all(np.isfinite(fit.tau_ms))
    assert np.all((fit.tau_ms >= 2.0 - 1e-9) & (fit.tau_ms <= 500.0 + 1e-9))
    fit = fit_decay(y, fs)
    assert not fit.ok[1] and not fit.ok[2]
    assert fit.snr[0] < 3.0  # noise only: no decay stands out
    with pytest.raises(ValueError):
        fit_decay(y, fs, model="triple")
    with pytest.raises(ValueError):
        DecayFitter(5, fs, 2)


# --------------------------------------------------------------------------- decay stage
def synth_decays(n_ch, n, pulses, seed=0, tep=None):
    """Noise + per pulse a double-exponential decay (channel taus fixed, amplitudes vary)."""
    rng = np.random.default_rng(seed)
    data = 3.0 * rng.standard_normal((n_ch, n))
    tau_f = rng.uniform(5, 30, n_ch)
    tau_s = rng.uniform(60, 150, n_ch)
    amp = rng.uniform(100, 600, n_ch) * rng.choice([-1, 1], n_ch)
    for p in pulses:
        k = np.arange(n - p) / SFREQ * 1000
        g = 1 + 0.1 * rng.standard_normal()
        data[:, p:] += g * amp[:, None] * (np.exp(-k / tau_f[:, None])
                                           + 0.4 * np.exp(-k / tau_s[:, None]))
        data[:, p:p + 20] += 4000.0  # the pulse artifact itself
        if tep is not None:
            m = min(tep.shape[1], n - p)
            data[:, p:p + m] += tep[:, :m]
    return data


@pytest.mark.parametrize("pulses", [
    [2000, 9000],  # single pulses
    [2000, 2500, 3000, 3500, 4000],  # 10 Hz train: fits clipped at the next pulse
    [2000, 2015, 9000, 9015],  # paired 3 ms: first of each pair is fitted with the second
    [2000, 2100, 2200, 7000, 7100, 7200],  # 50 Hz bursts
])
@pytest.mark.parametrize("fit_on", ["average", "trial"])
def test_decay_live_equals_offline_and_removes_the_decay(pulses, fit_on):
    n = 14000
    meta = make_meta(5)
    data = synth_decays(5, n, pulses, seed=len(pulses))
    clean = synth_decays(5, n, [], seed=len(pulses))
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    offline_stage = DecayRemoval(fit_window_ms=(10.0, 500.0), fit_on=fit_on)
    offline = feed(offline_stage, data, meta, events, np.random.default_rng(0), max_block=n)
    for max_block in (3, 400):
        live = feed(DecayRemoval(fit_window_ms=(10.0, 500.0), fit_on=fit_on), data, meta, events,
                    np.random.default_rng(max_block), max_block)
        assert live.n_samples == n and live.first_sample == 0
        np.testing.assert_allclose(live.data, offline.data, rtol=0, atol=1e-9)
        assert sorted(e.sample for e in live.events) == pulses
    # after the last pulse of each group the decay is gone (the TEP-free data are noise)
    last = [p for i, p in enumerate(pulses) if i + 1 == len(pulses) or pulses[i + 1] - p > 1000]
    for p in last:
        seg = slice(p + 60, p + 2500)  # 12 .. 500 ms
        before = np.abs(data[:, seg] - clean[:, seg]).max()
        after = np.sqrt(np.mean((offline.data[:, seg] - clean[:, seg]) ** 2))
        assert before > 100 and after < 3.0, (before, after)
    # every pulse has a record; skipped ones say why
    assert [r["sample"] for r in offline_stage.fits] == pulses
    for r in offline_stage.fits:
        assert r["fit"] is not None or "min_fit_ms" in r["reason"]


def test_decay_subtraction_has_no_step_and_reinterpolates_the_cut():
    n = 12000
    meta = make_meta(3)
    pulses = [2000]
    data = synth_decays(3, n, pulses, seed=7)
    stage = DecayRemoval(fit_window_ms=(10.0, 300.0), tail_uv=0.05)
    out = feed(stage, data, meta, [Event(2000, "TMS", EVENT_PULSE)], np.random.default_rng(1))
    corr = data - out.data
    fit = stage.fits[0]["fit"]
    assert fit.ok.all()
    # the correction decays to (nearly) zero where it stops: no step is left in the data
    nz = np.flatnonzero(np.abs(corr).max(axis=0) > 0)
    last = nz.max()
    assert last > 2000 + 1500  # it ran past the 300 ms fit window
    assert np.abs(corr[:, last]).max() < 0.1
    # the cut window was interpolated from the corrected data: no jump at its edges
    edge = out.data[:, 2000 + 51] - out.data[:, 2000 + 50]
    assert np.abs(edge).max() < 20
    assert np.abs(out.data[:, 1990:2052]).max() < 50  # the 4000 µV pulse artifact is gone


def test_decay_removal_leaves_data_without_decay_alone(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="tmseeg.pipeline.decay")
    n = 12000
    meta = make_meta(4)
    rng = np.random.default_rng(3)
    data = 5.0 * rng.standard_normal((4, n))
    stage = DecayRemoval(fit_window_ms=(10.0, 500.0), cut_window_ms=None)
    out = feed(stage, data, meta, [Event(3000, "TMS", EVENT_PULSE)], rng)
    assert np.array_equal(out.data, data)
    assert "not corrected" in stage.fits[0]["reason"]
    assert "not corrected" in caplog.text


# --------------------------------------------------------------------------- ground truth
@functools.lru_cache(maxsize=2)
def _tep_sim(seed, n_pulses, decay_artifact):
    from tmseeg.sim.model import SimConfig, TMSEEGSimulator

    cfg = SimConfig(n_channels=32, sfreq=SFREQ, seed=seed, schedule="single",
                    isi_range_s=(1.0, 1.2), muscle_artifact=False, decay_artifact=decay_artifact,
                    noise_uv=2.0, smooth_uv=3.0, alpha=False, mu=False, blinks=False)
    sim = TMSEEGSimulator(cfg)
    data, events = sim.generate(int((1.0 + 1.1 * n_pulses + 0.8) * SFREQ))
    data.setflags(write=False)
    return sim, data, events


def _tep_run(decay_removal, seed=1, n_pulses=60, decay_artifact=True, fit_on="average"):
    """Simulated single pulses (quiet background, no muscle artifact: not this stage's job),
    cleaned live in 500-sample blocks; returns (ROI average, template ROI, times, stage)."""
    sim, data, events = _tep_sim(seed, n_pulses, decay_artifact)
    stages = [PulseInterpolation()] + ([DecayRemoval(fit_on=fit_on)] if decay_removal else [])
    chain = Chain(stages)
    outs = [chain.process(b) for b in blocks_from_array(data, sim.meta, 500, events)]
    outs += list(chain.flush())
    out = concat_blocks([o for o in outs if o.n_samples or o.events])
    assert out.n_samples == data.shape[1]
    roi = sim.meta.index(sim.truth.roi)
    tt = sim.truth.tep_times_ms
    i0 = int(np.argmin(np.abs(tt)))
    eps = [out.data[roi, p.sample - i0:p.sample - i0 + tt.size].mean(axis=0)
           for p in sim.truth.pulses if p.sample - i0 + tt.size <= out.n_samples]
    avg = np.mean(eps, axis=0)
    avg -= avg[(tt >= -100) & (tt < -2)].mean()
    return avg, sim.truth.tep_roi_uv(), tt, stages[-1]


def _tep_scores(avg, tmpl, tt):
    sel = (tt >= 15) & (tt <= 60)
    a, b = avg[sel], tmpl[sel]
    r = float(np.corrcoef(a, b)[0, 1])
    rms_err = float(np.sqrt(np.mean((a - b) ** 2)))
    slope = float(np.cov(a, b)[0, 1] / np.var(b, ddof=1))
    return r, rms_err, slope


def test_early_tep_survives_interpolation_plus_decay_removal():
    """ROI average (5 channels nearest the coil) of 60 simulated pulses, 15-60 ms, compared
    with the injected template (its RMS there is 1.44 µV): Pearson r, RMS error after the
    -100..-2 ms baseline, and the regression slope of the average on the template (amplitude).

    Measured (seed 1): without decay removal r = 0.11, RMS error 111 µV (the TEP is buried
    under the decay); with it (default, taus from the running average) r = 0.915, RMS error
    0.58 µV, slope 0.87; with per-trial fits r = 0.88, 0.69 µV, slope 0.85. Seeds 2-4:
    average 0.948 / 0.930 / 0.946, per trial 0.937 / 0.892 / 0.927. Subtracting the *true*
    decay instead gives r = 0.99: the rest is TEP leaking into the fitted fast exponential
    (P30 is pulled down by ~1 µV), which no exponential fit can tell apart from the decay.
    """
    avg_raw, tmpl, tt, _ = _tep_run(decay_removal=False)
    r_raw, err_raw, _ = _tep_scores(avg_raw, tmpl, tt)
    assert r_raw < 0.3 and err_raw > 50.0, (r_raw, err_raw)
    avg, tmpl, tt, stage = _tep_run(decay_removal=True)
    r, err, slope = _tep_scores(avg, tmpl, tt)
    assert r > 0.9 and err < 0.7 and 0.75 < slope < 1.25, (r, err, slope)
    assert sum(f["fit"] is not None for f in stage.fits) >= 59
    avg, tmpl, tt, stage = _tep_run(decay_removal=True, fit_on="trial")
    r_trial, err_trial, slope_trial = _tep_scores(avg, tmpl, tt)
    assert r_trial > 0.85 and err_trial < 0.8 and 0.7 < slope_trial < 1.3, (r_trial, err_trial)


def test_decay_removal_spares_the_tep_when_there_is_no_decay():
    """Same simulation without a decay artifact: fits that find no decay standing out of the
    EEG are not used, so the TEP is what interpolation alone gives.

    Measured (seed 1): r = 0.981 with and without the stage; 74 of 1952 channel fits used
    (139 with per-trial fits).
    """
    avg0, tmpl, tt, _ = _tep_run(decay_removal=False, decay_artifact=False)
    avg, _, _, stage = _tep_run(decay_removal=True, decay_artifact=False)
    r0, err0, _ = _tep_scores(avg0, tmpl, tt)
    r, err, _ = _tep_scores(avg, tmpl, tt)
    assert r0 > 0.95
    assert abs(r - r0) < 0.01 and err < err0 + 0.1, (r, r0, err, err0)
    fits = [f["fit"] for f in stage.fits if f["fit"] is not None]
    used = sum(int(f.ok.sum()) for f in fits)
    assert used < 0.15 * sum(f.ok.size for f in fits)


def test_the_reference_electrodes_decay_is_left_to_the_average_reference():
    """The reference electrode sits on the skin too: its decay is in every channel, below the
    stage's 20 uV gate on most. Fitted in the recorded reference, it goes with the local
    decays of the channels near the coil but stays on the others, and the average reference
    then puts the difference back into every channel. ``fit_reference = "median"`` fits
    the channels' decays against the median of all channels (4 of 24 decay: the median is
    what they share), so after the average reference the local decays are gone and nothing
    else is touched."""
    n_ch, n = 24, 30000
    rng, pulses, t_ms, clean, data = _noisy_train(n_ch, n, 11)
    local = {0: (-600.0, 9.0), 1: (400.0, 14.0), 2: (250.0, 6.0), 3: (-150.0, 20.0)}
    for p in pulses:
        k = np.maximum(t_ms[p:] - t_ms[p], 0.0)
        g = 1 + 0.15 * rng.standard_normal()
        for ch, (amp, tau) in local.items():
            data[ch, p:] += g * amp * np.exp(-k / tau)
        data[:, p:] += g * -35.0 * np.exp(-k / 12.0)  # the reference electrode's: 15 uV at 10 ms
        data[:, p:p + 20] += 3000.0
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    H = np.eye(n_ch) - 1.0 / n_ch
    errors = {}
    for ref in ("recorded", "median"):
        stage = DecayRemoval(fit_window_ms=(10.0, 500.0), fit_on="average_gain",
                             min_decay_uv=20.0, min_r2=0.5, fit_reference=ref)
        out = feed(stage, data, make_meta(n_ch), events, np.random.default_rng(0), 700)
        seg = np.concatenate([np.arange(p + 55, p + 300) for p in pulses[3:]])  # 11-60 ms
        errors[ref] = float(np.sqrt(np.mean((H @ (out.data - clean))[:, seg] ** 2)))
        decayed = {ch for r in stage.fits[3:] if r["fit"] is not None
                   for ch in np.flatnonzero(r["fit"].ok)}
        assert decayed == set(local), (ref, decayed)
        # pulses.csv says what each pulse's channels were fitted against
        methods = {stage.pulse_columns(p)["decay_method"] for p in pulses[3:]}
        assert methods == {f"average_gain double_exp vs {ref}"}, methods
    # recorded: the 20 channels keep the reference decay the 4 lost (~15 x 20/24 uV at 10 ms)
    assert errors["recorded"] > 1.0 and errors["median"] < 0.2 * errors["recorded"], errors


def test_decay_size_is_the_extremum_of_a_fast_decay_whose_terms_cancel_at_the_start():
    amps = np.array([[88.8, -87.1],    # fast + slow of the other sign: 2 uV at the start
                     [-66.7, 85.3],    # a slow hump (57 / 114 ms: blinks in the average)
                     [300.0, 50.0],    # same signs: largest at the start
                     [-40.0, 15.0]])   # opposite signs, largest at the start
    taus = np.array([[7.8, 48.4], [57.0, 114.0], [5.0, 50.0], [4.0, 80.0]])
    size = decay_size_uv(amps, taus, 790.0)
    t = np.arange(0, 790.0, 0.01)
    curve = amps[:, :1] * np.exp(-t / taus[:, :1]) + amps[:, 1:] * np.exp(-t / taus[:, 1:])
    assert size[0] == pytest.approx(np.abs(curve[0]).max(), rel=1e-6)  # 51.3 uV at 17 ms
    assert size[0] > 50.0
    np.testing.assert_allclose(size[1:], np.abs(amps[1:].sum(axis=1)))
    # the extremum counts only inside the fit window; one exponential: its amplitude
    assert decay_size_uv(amps[:1], taus[:1], 5.0)[0] == pytest.approx(np.abs(curve[0, 500]))
    np.testing.assert_allclose(decay_size_uv(amps[:, :1], taus[:, :1], 790.0),
                               np.abs(amps[:, 0]))


def test_a_decay_whose_terms_cancel_at_the_fit_start_is_still_removed():
    """A fast discharge and a slower decay of the other polarity on one electrode can cancel
    at the fit start. Sized there (a few uV, under the 20-uV gate) the channel kept a 50-uV
    decay that its corrected neighbours did not (the outside benchmark's fastslow family,
    seed 4: C5 in the ROI, early TEP worse than the MNE script's); sized by its extremum it is
    removed like any other."""
    n_ch, n = 24, 60000
    rng, pulses, t_ms, clean, data = _noisy_train(n_ch, n, 5)
    for p in pulses:
        k = t_ms[p:] - t_ms[p] - 10.0  # from the fit start
        g = 1 + 0.15 * rng.standard_normal()
        data[0, p:] += g * -400.0 * np.exp(-(k + 10.0) / 9.0)
        data[1, p:] += g * (90.0 * np.exp(-k / 8.0) - 88.0 * np.exp(-k / 48.0))
        data[:, p:p + 20] += 3000.0
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    stage = DecayRemoval(fit_window_ms=(10.0, 500.0), fit_on="average_gain_scale",
                         min_decay_uv=20.0, min_r2=0.5)
    out = feed(stage, data, make_meta(n_ch), events, np.random.default_rng(0), 700)
    corrected = {ch for r in stage.fits[3:] if r["fit"] is not None
                 for ch in np.flatnonzero(r["fit"].ok)}
    assert corrected == {0, 1}, corrected
    seg = np.concatenate([np.arange(p + 55, p + 300) for p in pulses[3:]])  # 11-60 ms
    raw = float(np.sqrt(np.mean((data - clean)[1, seg] ** 2)))
    err = float(np.sqrt(np.mean((out.data - clean)[1, seg] ** 2)))
    assert raw > 25.0 and err < 0.1 * raw, (err, raw)


def test_old_fit_records_keep_their_pulses_csv_columns():
    """A live hour must not hold every pulse's fit (~4 kB each): beyond ``KEEP_FITS`` records
    the older pulses keep only their pulses.csv columns. Same output, same columns."""
    n_ch, n = 16, 60000
    rng = np.random.default_rng(5)
    pulses = list(range(2000, n - 3000, 2500))
    t_ms = np.arange(n) / SFREQ * 1000
    data = 4.0 * rng.standard_normal((n_ch, n))
    for p in pulses:
        k = t_ms[p:] - t_ms[p]
        data[:3, p:] += (300.0 + 60 * rng.standard_normal()) * np.exp(-k / 12.0)
        data[:, p:p + 20] += 3000.0
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    runs = []
    for keep in (1000, 6):
        stage = DecayRemoval(fit_window_ms=(10.0, 300.0))
        stage.KEEP_FITS = keep
        out = feed(stage, data, make_meta(n_ch), events, np.random.default_rng(0), 700)
        runs.append((stage, out, [stage.pulse_columns(p) for p in pulses]))
    (full, out_full, cols_full), (small, out_small, cols_small) = runs
    assert len(full.fits) == len(pulses) > 20 and len(small.fits) <= 6
    np.testing.assert_array_equal(out_full.data, out_small.data)
    assert cols_small == cols_full
    # the compacted pulses' columns say what was done (most pulses: the coil's channels)
    assert sum(c["decay_channels"] > 0 for c in cols_small[:10]) >= 8, cols_small[:10]


def test_own_window_shorter_than_the_average_s():
    """``own_window_end_ms``: each pulse's gain from its own data up to there, the curves from
    the earlier pulses' full windows (the first ``MIN_AVERAGED`` pulses wait for their own).
    The same output at any block size; the decay goes as well as with the full window; a
    later pulse's data up to there leave the stage ~100 ms sooner (700, not 800 ms after it)."""
    n_ch, n = 16, 90000
    rng, pulses, t_ms, clean, data = _noisy_train(n_ch, n, 8)
    for p in pulses:
        k = t_ms[p:] - t_ms[p]
        g = 1 + 0.2 * rng.standard_normal()
        data[:3, p:] += g * (400.0 * np.exp(-k / 8.0) + 60.0 * np.exp(-k / 120.0))
        data[:, p:p + 20] += 3000.0
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    seg = np.concatenate([np.arange(p + 55, p + 300) for p in pulses])  # 11-60 ms
    outs, wait = {}, {}
    for own, block in ((800.0, 50), (700.0, 50), (700.0, 37), (700.0, 2500)):
        stage = DecayRemoval(fit_window_ms=(10.0, 800.0), fit_on="average_gain",
                             min_decay_uv=20.0, min_r2=0.5, own_window_end_ms=own)
        parts, first_out = [], None
        p12 = pulses[12]  # after the first MIN_AVERAGED (10) pulses
        for b in blocks_from_array(data, make_meta(n_ch), block, events):
            o = stage.process(b)
            parts.append(o)
            if first_out is None and o.n_samples and o.stop_sample >= p12 + 3500:
                first_out = b.stop_sample - p12  # when the 700 ms after it came out
        parts.append(stage.flush())
        outs[(own, block)] = concat_blocks([o for o in parts if o is not None and o.n_samples]).data
        wait[(own, block)] = first_out
        assert stage.fits[0]["fit"] is not None and stage.fits[0]["fit"].ok[:3].all()
    a = outs[(700.0, 50)]
    np.testing.assert_array_equal(a, outs[(700.0, 37)])
    np.testing.assert_array_equal(a, outs[(700.0, 2500)])
    err = {own: float(np.sqrt(np.mean((outs[(own, 50)] - clean)[:3][:, seg] ** 2)))
           for own in (800.0, 700.0)}
    raw = float(np.sqrt(np.mean((data - clean)[:3][:, seg] ** 2)))
    assert err[700.0] < 0.05 * raw and err[700.0] < 1.5 * err[800.0] + 0.5, (err, raw)
    # + a block, + the 10 ms before a pulse's cut window that set its pre-pulse level
    assert wait[(700.0, 50)] <= 3500 + 50 + 50 and wait[(800.0, 50)] >= 4000, wait


def test_gain_scale_follows_a_decay_whose_time_constants_vary_from_pulse_to_pulse():
    """``"average_gain_scale"``: each pulse's decay is the average's curves with one gain and
    one time scale common to all channels (the electrodes' RC constants change with their
    impedance from pulse to pulse). With time constants scaled by 0.75..1.33 per pulse the
    scale it picks follows the true one. On these pure exponentials (our own assumption) it
    does not remove more than the gain alone: what it won is measured on the outside
    benchmark (README); here it must not cost much."""
    n_ch, n = 16, 130000
    rng, pulses, t_ms, clean, data = _noisy_train(n_ch, n, 21)
    scales = []
    for p in pulses:
        k = t_ms[p:] - t_ms[p]
        g, sc = np.exp(0.4 * rng.standard_normal()), rng.uniform(0.75, 1.33)
        scales.append(sc)
        data[:4, p:] += g * (500.0 * np.exp(-k / (6.0 * sc)) + 80.0 * np.exp(-k / (60.0 * sc)))
        data[:, p:p + 20] += 3000.0
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    seg = np.concatenate([np.arange(p + 55, p + 300) for p in pulses[10:]])  # 11-60 ms
    err, raw = {}, float(np.sqrt(np.mean((data - clean)[:4][:, seg] ** 2)))
    for method in ("average_gain", "average_gain_scale"):
        stage = DecayRemoval(fit_window_ms=(10.0, 800.0), fit_on=method, min_decay_uv=20.0,
                             min_r2=0.5, own_window_end_ms=700.0)
        out = feed(stage, data, make_meta(n_ch), events, np.random.default_rng(0), 700)
        err[method] = float(np.sqrt(np.mean((out.data - clean)[:4][:, seg] ** 2)))
        taus = [r["fit"].tau_ms[0, 0] for r in stage.fits[10:]]
    # the chosen time scale follows the pulse's own (measured r = 0.72; the grid's steps
    # are 6 %); a gain alone keeps the average's time constants (no correlation at all)
    assert np.corrcoef(taus, scales[10:])[0, 1] > 0.5
    # measured: 2.1 (gain) and 2.5 uV (gain and scale)
    assert err["average_gain_scale"] < 0.06 * raw and \
        err["average_gain_scale"] < 1.3 * err["average_gain"], (err, raw)


def test_steps_at_pulse_tells_a_decay_from_a_wave_that_crosses_the_pulse():
    """A decay leaves the pre-pulse level at the pulse; a blink, a drift or a slow wave that
    crosses the pulse is continuous there, even when a fit of the window alone finds a large
    slow "decay" in it. A fast two-term decay whose terms cancel at the start is judged at its
    extremum."""
    fs, n = 5000.0, 4000
    rng = np.random.default_rng(3)
    t_ms = np.arange(-60, n) / fs * 1000.0  # 60 samples before the fit window (12 ms)
    post = t_ms >= 0
    blink = 150.0 * np.exp(-0.5 * ((t_ms - 120.0) / 90.0) ** 2)  # peaks 120 ms after
    drift = -0.15 * t_ms  # -120 uV at 800 ms
    decay = np.where(post, 180.0 * np.exp(-t_ms / 15.0) + 40.0 * np.exp(-t_ms / 150.0), 0.0)
    hump = np.where(post, 120.0 * np.exp(-t_ms / 6.0) - 130.0 * np.exp(-t_ms / 40.0), 0.0)
    small_decay = np.where(post, 25.0 * np.exp(-t_ms / 30.0), 0.0)
    x = np.vstack([blink, drift, decay, hump, decay + blink, small_decay])
    x = x + 2.0 * rng.standard_normal(x.shape)
    pre, y = x[:, :50], x[:, 60:]
    fit = fit_decay(y, fs)
    assert fit.ok.all()
    # the fits alone call every row a decay of tens of uV or more
    assert (decay_size_uv(fit.amps_uv, fit.tau_ms, 800.0) > 20.0).all()
    steps = steps_at_pulse(fit, y, pre, fs)
    np.testing.assert_array_equal(steps, [False, False, True, True, True, True])
    # an unknown level (the stretch no longer held) does not reject a decay
    assert steps_at_pulse(fit, y, np.full_like(pre, np.nan), fs).all()


def test_young_average_leaves_blinks_alone_and_still_removes_real_decays():
    """Do no harm while the running average is young: the first pulses of a recording with
    no decay artifact but blinks across some of them are left as they are (pulses.csv says
    why), and the same pulses with a decay on three channels are corrected."""
    n_ch, n = 16, 70000
    rng, pulses, t_ms, clean, data = _noisy_train(n_ch, n, 11)
    blinks = clean.copy()
    for p in pulses[:3]:  # a blink of 120-200 uV on three frontal rows, peaking 30 ms before
        k = t_ms - t_ms[p] + 30.0
        blinks[:3] += rng.uniform(120, 200) * np.exp(-0.5 * (k / 100.0) ** 2)
    with_decay = blinks.copy()
    for p in pulses:
        k = t_ms[p:] - t_ms[p]
        with_decay[8:11, p:] += 300.0 * np.exp(-k / 10.0) + 50.0 * np.exp(-k / 100.0)
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    for data, decaying in ((blinks, False), (with_decay, True)):
        stage = DecayRemoval(fit_window_ms=(10.0, 800.0), fit_on="average_gain_scale",
                             min_decay_uv=20.0, own_window_end_ms=700.0)
        out = feed(stage, data, make_meta(n_ch), events, np.random.default_rng(0), 400)
        cols = [stage.pulse_columns(p) for p in pulses]
        if not decaying:  # (the cut windows are interpolated again, decay or not)
            far = np.ones(n, dtype=bool)
            for p in pulses:
                far[p - 20:p + 60] = False
            np.testing.assert_array_equal(out.data[:, far], data[:, far])
            assert all(c["decay_channels"] == 0 for c in cols), cols
            assert any("step at the pulse" in c["decay_method"] for c in cols[:3]), cols[:3]
        else:
            assert all(c["decay_channels"] >= 3 for c in cols), cols
            # the blinks' channels were turned away, and the pulses' rows say so
            assert any("want of a step at the pulse" in c["decay_method"] for c in cols[:3])
            seg = np.concatenate([np.arange(p + 55, p + 500) for p in pulses])
            err = np.sqrt(np.mean((out.data - blinks)[8:11][:, seg] ** 2))
            raw = np.sqrt(np.mean((data - blinks)[8:11][:, seg] ** 2))
            assert err < 0.1 * raw, (err, raw)


def test_the_pre_pulse_level_of_paired_pulses_is_the_same_at_any_block_size():
    """A test pulse 3 ms after its conditioning pulse takes its pre-pulse level from before
    the conditioning pulse's cut window; the stage holds those samples until it has taken
    them, so the young average's step gate sees the same levels live (any block size) as
    offline."""
    n_ch, n = 6, 60000
    pulses = []
    for p in range(2000, n - 6000, 5000):
        pulses += [p, p + 15]  # 3 ms apart at 5 kHz
    data = synth_decays(n_ch, n, pulses, seed=3)
    events = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    sums = []
    for max_block in (n, 400, 7):
        stage = DecayRemoval(fit_window_ms=(10.0, 500.0), fit_on="average_gain_scale",
                             min_decay_uv=20.0)
        feed(stage, data, make_meta(n_ch), events, np.random.default_rng(max_block), max_block)
        assert stage._pre_n is not None and stage._pre_n.max() > 0
        sums.append((stage._pre_sum.copy(), stage._pre_n.copy()))
    for pre_sum, pre_n in sums[1:]:
        np.testing.assert_array_equal(pre_n, sums[0][1])
        np.testing.assert_allclose(pre_sum, sums[0][0], rtol=0, atol=1e-9)
