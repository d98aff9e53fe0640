"""decimate_fir: resample_poly's zero-phase FIR decimation, as one matrix product."""
import numpy as np
import pytest
from scipy.signal import resample_poly

from tmseeg.dsp.resample import decimate_fir


@pytest.mark.parametrize("q", [2, 3, 4, 5, 20, 80])
@pytest.mark.parametrize("n", [2, 7, 161, 1000, 15001])
def test_the_same_as_resample_poly_with_a_line_padding(q, n):
    rng = np.random.default_rng(q * 100_000 + n)
    # a drift and a slope: the line extension at the ends matters
    x = rng.standard_normal((5, n)).cumsum(axis=1) + np.linspace(0, 40, n)
    ref = resample_poly(x, 1, q, axis=1, padtype="line")
    ours = decimate_fir(x, q)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_a_sine_below_the_new_nyquist_passes_and_one_above_is_removed():
    fs, q = 5000.0, 20  # to 250 Hz
    t = np.arange(20000) / fs
    x = np.vstack([np.sin(2 * np.pi * 40 * t), np.sin(2 * np.pi * 400 * t)])
    y = decimate_fir(x, q)
    mid = slice(50, -50)
    np.testing.assert_allclose(y[0, mid], x[0, ::q][mid], atol=2e-3)
    assert np.abs(y[1, mid]).max() < 1e-3  # would alias to 100 Hz without the filter


def test_trivial_and_bad_arguments():
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(decimate_fir(x, 1), x)
    np.testing.assert_allclose(decimate_fir(x[:, :1], 4),
                               resample_poly(x[:, :1], 1, 4, axis=1, padtype="line"))
    with pytest.raises(ValueError, match=r"\(n_channels, n_samples\)"):
        decimate_fir(np.zeros(10), 2)
    with pytest.raises(ValueError, match="q must be >= 1"):
        decimate_fir(x, 0)
