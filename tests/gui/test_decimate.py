"""ext/decimate.pyx (min/max per bucket) against its numpy reference, and RawDecimator."""
import numpy as np
import pytest

from tmseeg._ext.decimate import minmax_decimate
from tmseeg.gui.decimate import RawDecimator, minmax_decimate_numpy
from tmseeg.stream.ringbuffer import RingBuffer


@pytest.mark.parametrize("bucket", [1, 3, 25, 64])
def test_kernel_matches_numpy_with_nan(bucket):
    rng = np.random.default_rng(bucket)
    x = rng.standard_normal((8, 1003)) * 50
    x[2, 100:180] = np.nan  # a gap: some buckets all-NaN, some partly
    x[5, ::7] = np.nan
    ref = minmax_decimate_numpy(x, bucket)
    out = np.full((8, ref.shape[1] + 6), -1.0)
    n = minmax_decimate(x, bucket, out)
    assert n == 1003 // bucket
    np.testing.assert_array_equal(out[:, :2 * n], ref)  # exact, NaN where the bucket is empty
    assert (out[:, 2 * n:] == -1.0).all()  # nothing written past the buckets
    with pytest.raises(ValueError):
        minmax_decimate(x, 0, out)
    with pytest.raises(ValueError):
        minmax_decimate(x, bucket, np.empty((8, 1)))


def test_raw_decimator_incremental_equals_batch():
    """Feeding the ring in odd-sized blocks, frame by frame, gives the batch envelope."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((4, 20000))
    ring = RingBuffer(4, 30000)
    dec = RawDecimator(ring, sfreq=1000.0, window_s=10.0, n_buckets=500)  # 20 samples/bucket
    pos = 0
    for size in [7, 300, 1, 999, 5000, 13] * 5:
        if pos + size > data.shape[1]:
            break
        ring.write(data[:, pos:pos + size])
        pos += size
        dec.update()
    full = pos // 20 * 20
    ref = minmax_decimate_numpy(data[:, :full], 20)[:, -1000:]
    np.testing.assert_array_equal(dec.envelope()[:, -ref.shape[1]:], ref)
    assert dec.next_sample == full


def test_raw_decimator_survives_overwrite_and_gaps():
    ring = RingBuffer(2, 1000)
    dec = RawDecimator(ring, sfreq=100.0, window_s=5.0, n_buckets=50)  # 10 samples/bucket
    ring.write(np.ones((2, 300)))
    dec.update()
    ring.write_gap(100)
    ring.write(np.full((2, 5000), 2.0))  # more than the ring holds arrived while "paused"
    dec.update()
    env = dec.envelope()
    assert env.shape == (2, 100)
    assert (env == 2.0).all()  # the whole window is the newest data
    ring.write_gap(200)
    dec.update()
    assert np.isnan(dec.envelope()[:, -40:]).all()  # the gap shows as a break
