"""The decay model kernel: the fitted exponentials added to (subtracted from) rows in place."""
import numpy as np
import pytest

from tmseeg._ext.expmodel import add_exp_model, exp_model_moments
from tmseeg.pipeline.decay import DecayFit

FS = 5000.0
DT_MS = 1000.0 / FS
AMPS = np.array([[30.0, -10.0], [5.0, 2.0], [-80.0, 40.0]])
TAUS = np.array([[3.0, 80.0], [10.0, 400.0], [2.0, 35.0]])


def _direct(n, start=0):
    t_ms = np.arange(start, start + n) * DT_MS
    return (AMPS[:, :, None] * np.exp(-t_ms[None, None, :] / TAUS[:, :, None])).sum(axis=1)


def test_the_model_is_the_sum_of_exponentials():
    n = 16_000  # 3.2 s: the longest a model is applied at an 800-ms fit window
    data = np.zeros((5, n))
    rows = np.array([4, 0, 2], dtype=np.intp)
    add_exp_model(data, rows, AMPS, TAUS, 0, n, 0, DT_MS, 1.0)
    np.testing.assert_allclose(data[rows], _direct(n), rtol=0, atol=1e-13 * 80)
    assert not data[[1, 3]].any()
    # from a later model sample, into a strided view, subtracted
    base = np.ones((5, 2 * n))
    view = base[:, ::2]
    add_exp_model(view, rows, AMPS, TAUS, 100, 500, 7_777, DT_MS, -1.0)
    np.testing.assert_allclose(view[rows, 100:600], 1.0 - _direct(500, 7_777), rtol=0,
                               atol=1e-13 * 80)
    assert (view[rows, :100] == 1).all() and (view[rows, 600:] == 1).all()
    assert (base[:, 1::2] == 1).all()


def test_any_block_sizes_give_the_same_values_to_the_bit():
    n = 20_000
    whole = np.zeros((3, n))
    rows = np.arange(3, dtype=np.intp)
    add_exp_model(whole, rows, AMPS, TAUS, 0, n, 0, DT_MS, 1.0)
    rng = np.random.default_rng(0)
    for max_block in (2, 5, 63, 64, 65, 500, 5000):  # 1-ms live blocks up to batches
        pieces = np.zeros((3, n))
        pos = 0
        while pos < n:
            m = min(int(rng.integers(1, max_block + 1)), n - pos)
            add_exp_model(pieces, rows, AMPS, TAUS, pos, m, pos, DT_MS, 1.0)
            pos += m
        np.testing.assert_array_equal(pieces, whole)


def test_decay_fit_subtracts_what_model_uv_says():
    ok = np.array([True, False, True])
    fit = DecayFit(amps_uv=AMPS, tau_ms=TAUS, offset_uv=np.zeros(3), r2=np.ones(3),
                   snr=np.ones(3), ok=ok)
    model = fit.model_uv(3000, FS, start=250)
    assert not model[1].any()
    data = np.zeros((6, 4000))
    stage_rows = np.array([5, 1, 3])
    fit.add_to(data, stage_rows, 1000, 3000, FS, start=250, scale=-1.0)
    np.testing.assert_array_equal(data[[5, 3], 1000:], -model[[0, 2]])
    assert not data[:, :1000].any() and not data[[0, 1, 2, 4]].any()


def test_bad_arguments_are_refused():
    data = np.zeros((3, 100))
    rows = np.arange(3, dtype=np.intp)
    with pytest.raises(ValueError, match="one row per row index"):
        add_exp_model(data, rows[:2], AMPS, TAUS, 0, 10, 0, DT_MS, 1.0)
    with pytest.raises(ValueError, match="outside"):
        add_exp_model(data, rows, AMPS, TAUS, 95, 10, 0, DT_MS, 1.0)
    with pytest.raises(ValueError, match="row 7 outside"):
        add_exp_model(data, np.array([0, 1, 7], dtype=np.intp), AMPS, TAUS, 0, 10, 0, DT_MS,
                      1.0)
    with pytest.raises(ValueError, match="at most 4 exponentials"):
        add_exp_model(data, rows, np.ones((3, 5)), np.ones((3, 5)), 0, 10, 0, DT_MS, 1.0)


def test_model_moments_are_the_sums_of_the_built_model():
    n = 3450  # a 10..700-ms own window at 5 kHz
    rng = np.random.default_rng(1)
    y = rng.normal(0, 20, (3, n))
    y -= y.mean(axis=1, keepdims=True)
    scales = np.exp(np.linspace(-0.36, 0.36, 13))
    sum_ym, sum_mm = np.empty(13), np.empty(13)
    exp_model_moments(y, AMPS, TAUS, DT_MS, scales, sum_ym, sum_mm)
    for s, ym, mm in zip(scales, sum_ym, sum_mm):
        t_ms = np.arange(n) * DT_MS
        model = (AMPS[:, :, None] * np.exp(-t_ms / (s * TAUS[:, :, None]))).sum(axis=1)
        centred = model - model.mean(axis=1, keepdims=True)
        assert ym == pytest.approx(float((y * centred).sum()), rel=1e-11)
        assert mm == pytest.approx(float((centred * centred).sum()), rel=1e-11)
    with pytest.raises(ValueError, match="one value per scale"):
        exp_model_moments(y, AMPS, TAUS, DT_MS, scales, sum_ym[:3], sum_mm)
