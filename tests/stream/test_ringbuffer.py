"""Ring buffer against a plain numpy reference (the whole history kept in one array)."""
import numpy as np
import pytest

from tmseeg._ext.ringbuf import ring_read, ring_write, ring_write_samples
from tmseeg.stream.ringbuffer import NotYetAvailableError, OverwrittenError, RingBuffer


def numpy_ring_write(ring, block, head):
    """Reference: index arithmetic with np.take-style modular positions."""
    pos = (head + np.arange(block.shape[1])) % ring.shape[1]
    ring[:, pos] = block
    return (head + block.shape[1]) % ring.shape[1]


def test_kernels_match_numpy_reference():
    rng = np.random.default_rng(1)
    ring = np.zeros((5, 37))
    ref = ring.copy()
    head = ref_head = 0
    for _ in range(200):
        n = int(rng.integers(0, 38))
        block = rng.normal(size=(5, n))
        head = ring_write(ring, block, head)
        ref_head = numpy_ring_write(ref, block, ref_head)
        assert head == ref_head
        np.testing.assert_array_equal(ring, ref)
        samples = rng.normal(size=(n, 5)).astype(np.float32)
        head = ring_write_samples(ring, samples, head, 2.5)
        ref_head = numpy_ring_write(ref, samples.T.astype(np.float64) * 2.5, ref_head)
        np.testing.assert_array_equal(ring, ref)
        start, m = int(rng.integers(0, 37)), int(rng.integers(0, 38))
        out = np.empty((5, m))
        ring_read(ring, start, out)
        np.testing.assert_array_equal(out, ref[:, (start + np.arange(m)) % 37])


def test_ringbuffer_reads_equal_history():
    rng = np.random.default_rng(2)
    buf = RingBuffer(3, 1000)
    history = []
    for _ in range(300):
        n = int(rng.integers(1, 120))
        block = rng.normal(size=(3, n))
        if rng.random() < 0.5:
            buf.write(block)
        else:
            buf.write_samples(block.T.copy())
        history.append(block)
        full = np.concatenate(history, axis=1)
        assert buf.n_written == full.shape[1]
        np.testing.assert_array_equal(buf.latest(500), full[:, -500:])
        lo = buf.first_available
        a = int(rng.integers(lo, buf.n_written))
        b = int(rng.integers(a, buf.n_written + 1))
        np.testing.assert_array_equal(buf.read(a, b), full[:, a:b])


def test_overwritten_and_future_reads_raise_clear_errors():
    buf = RingBuffer(2, 100)
    buf.write(np.ones((2, 250)))
    assert buf.first_available == 150
    with pytest.raises(OverwrittenError, match="overwritten.*150"):
        buf.read(100, 160)
    with pytest.raises(NotYetAvailableError):
        buf.read(200, 260)
    np.testing.assert_array_equal(buf.read(150, 250), np.ones((2, 100)))


def test_block_larger_than_capacity_keeps_newest():
    buf = RingBuffer(1, 10)
    buf.write(np.arange(25.0)[None])
    np.testing.assert_array_equal(buf.latest(10), np.arange(15.0, 25.0)[None])
    buf.write_samples(np.arange(100.0, 130.0)[:, None])
    np.testing.assert_array_equal(buf.latest(10), np.arange(120.0, 130.0)[None])
    assert buf.n_written == 55


def test_gap_is_nan_and_keeps_indices():
    buf = RingBuffer(2, 50)
    buf.write(np.zeros((2, 10)))
    buf.write_gap(5)
    buf.write(np.ones((2, 10)))
    assert buf.n_written == 25
    out = buf.read(8, 17)
    assert np.all(out[:, :2] == 0) and np.all(np.isnan(out[:, 2:7])) and np.all(out[:, 7:] == 1)
    buf.write_gap(500)  # longer than the buffer: indices still advance exactly
    assert buf.n_written == 525 and np.all(np.isnan(buf.latest(50)))


def test_write_cost_does_not_grow_with_capacity():
    """O(block): the kernel touches only the block, so a 100x larger ring costs the same.

    Counted in bytes touched rather than timed (timing belongs in benchmarks/): a write into a
    huge ring must leave every sample outside the written span bit-identical (not rewritten).
    """
    big = RingBuffer(4, 2_000_000)
    sentinel = np.full((4, 2_000_000), 7.0)
    big._ring[:] = sentinel
    big.write(np.zeros((4, 10)))
    assert np.count_nonzero(big._ring != 7.0) == 40
