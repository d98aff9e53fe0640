"""The channels-at-once zero-phase filter: scipy's sosfiltfilt to the bit."""
import numpy as np
import pytest
from scipy import signal

from tmseeg._ext.sosfilt import sosfilt_channels
from tmseeg.pipeline.filters import design_bandpass, design_notch, sosfiltfilt_channels


def _epoch_sos(fs):
    return np.vstack([design_bandpass(fs, 1.0, 100.0, 4), design_notch(fs, 50.0, 2)])


@pytest.mark.parametrize("fs,n_ch,n", [(5000.0, 64, 8500), (1000.0, 3, 120), (20000.0, 5, 4001)])
def test_the_same_as_scipy_to_the_bit(fs, n_ch, n):
    sos = _epoch_sos(fs)
    x = np.random.default_rng(int(fs) + n).standard_normal((n_ch, n)).cumsum(axis=1)
    x[0] += 200 * np.exp(-np.arange(n) / (0.02 * fs))  # a decay-like step at the start
    np.testing.assert_array_equal(sosfiltfilt_channels(sos, x),
                                  signal.sosfiltfilt(sos, x, axis=-1))
    np.testing.assert_array_equal(sosfiltfilt_channels(sos, x[:, ::-1]),
                                  signal.sosfiltfilt(sos, x[:, ::-1], axis=-1))


def test_the_kernel_is_sosfilt_with_states_and_runs_backward():
    sos = _epoch_sos(5000.0)
    x = np.random.default_rng(1).standard_normal((7, 1000))
    zi = signal.sosfilt_zi(sos)[:, None, :] * x[:, :1]
    ref, ref_zf = signal.sosfilt(sos, x, axis=-1, zi=zi)
    xt = np.ascontiguousarray(x.T)
    z = np.ascontiguousarray(np.moveaxis(zi, 1, 2))  # (sections, 2, channels)
    sosfilt_channels(sos, xt, z)
    np.testing.assert_array_equal(xt.T, ref)
    np.testing.assert_array_equal(z, np.moveaxis(ref_zf, 1, 2))
    back = np.ascontiguousarray(x.T)
    sosfilt_channels(sos, back, np.zeros((len(sos), 2, 7)), True)
    np.testing.assert_array_equal(back.T[:, ::-1], signal.sosfilt(sos, x[:, ::-1], axis=-1))


def test_short_data_and_bad_states():
    sos = _epoch_sos(1000.0)
    x = np.random.default_rng(2).standard_normal((2, 30))  # not longer than the extension
    with pytest.raises(ValueError):
        signal.sosfiltfilt(sos, x, axis=-1)
    with pytest.raises(ValueError):
        sosfiltfilt_channels(sos, x)
    with pytest.raises(ValueError, match="z must be"):
        sosfilt_channels(sos, np.zeros((10, 2)), np.zeros((len(sos), 2, 3)))
