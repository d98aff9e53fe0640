"""The bad-channel window statistics kernel against their numpy definitions."""
import numpy as np
import pytest

from tmseeg._ext.winstats import window_stats
from tmseeg.pipeline.channels import _finite_window_stats, _typical_rms, edge_counts


def _window(n_ch=9, n=10_000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_ch, n)).cumsum(axis=1) * 3 + 50 * rng.standard_normal((n_ch, 1))
    x[2] = np.clip(x[2], -20, 15)  # a railed channel: many samples at both extremes
    x[5, 3000:3400] += 300  # a blink-sized excursion on one channel
    x[7] = 4.0  # flat
    return x


@pytest.mark.parametrize("n", [10_000, 9_999, 1_251, 2])
def test_the_kernel_gives_numpys_values(n):
    x = _window(n=n, seed=n)
    piece = 1250
    sd, hf, xmax, xmin, at_max, at_min, (sd_typ, hf_typ) = _finite_window_stats(x, piece)
    d = np.diff(x, axis=1)
    np.testing.assert_allclose(sd, np.std(x, axis=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hf, np.sqrt((d * d).mean(axis=1)), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(xmax, x.max(axis=1))
    np.testing.assert_array_equal(xmin, x.min(axis=1))
    ref_max, ref_min = edge_counts(x, x.max(axis=1), x.min(axis=1))
    np.testing.assert_array_equal(at_max, ref_max)
    np.testing.assert_array_equal(at_min, ref_min)
    if n >= 4 * piece:
        assert at_max[2] > 100 and at_min[2] > 100 and at_max[7] == n
    ref_sd, ref_hf = _typical_rms(x, piece)
    np.testing.assert_allclose(sd_typ, ref_sd, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hf_typ, ref_hf, rtol=1e-10, atol=1e-12)


def test_strided_input_and_bad_shapes():
    x = _window(n=20_000)[:, ::2]  # a view with a step, as the detector's window may be
    out = _finite_window_stats(x, 1250)
    np.testing.assert_allclose(out[0], np.std(x, axis=1), rtol=1e-10)
    z = np.empty(9)
    zi = np.empty(9, np.intp)
    with pytest.raises(ValueError, match="need >= 2 samples"):
        window_stats(x[:, :1], 1250, z, z, z, z, zi, zi, np.empty((9, 0)), np.empty((9, 0)))
    with pytest.raises(ValueError, match="do not fit"):
        window_stats(x, 1250, z, z, z, z, zi, zi, np.empty((9, 9)), np.empty((9, 9)))
    with pytest.raises(ValueError, match="every output needs 9 rows"):
        window_stats(x, 1250, z[:8], z, z, z, zi, zi, np.empty((9, 0)), np.empty((9, 0)))
