# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Ring-buffer kernels: write a block at the head, read a range out, with wrap-around.

The buffer is ``(n_channels, capacity)`` float64, C-contiguous. Each call touches only the
samples it moves (O(block)), never the whole buffer, and releases the GIL so the acquisition
thread does not hold up the GUI or a protocol script.
"""
from libc.string cimport memcpy

ctypedef fused sample_t:
    float
    double


def ring_write(double[:, ::1] ring, const double[:, ::1] block, Py_ssize_t head):
    """Copy ``block`` (n_channels, n) into ``ring`` at position ``head``; return the new head.

    ``n`` must not exceed the ring's capacity (the caller keeps only the newest samples).
    """
    cdef Py_ssize_t n_ch = ring.shape[0], cap = ring.shape[1], n = block.shape[1]
    cdef Py_ssize_t first, ch
    if block.shape[0] != n_ch:
        raise ValueError(f"block has {block.shape[0]} channels, ring has {n_ch}")
    if n > cap:
        raise ValueError(f"block of {n} samples is larger than the ring capacity {cap}")
    if n == 0:
        return head
    first = cap - head if n > cap - head else n
    with nogil:
        for ch in range(n_ch):
            memcpy(&ring[ch, head], &block[ch, 0], first * sizeof(double))
            if n > first:
                memcpy(&ring[ch, 0], &block[ch, first], (n - first) * sizeof(double))
    return (head + n) % cap


def ring_write_samples(double[:, ::1] ring, const sample_t[:, ::1] samples, Py_ssize_t head,
                       double scale):
    """Write an LSL-style chunk ``samples`` (n, n_channels) transposed into ``ring``.

    Converts to float64 and multiplies by ``scale`` (unit conversion to microvolts) in the same
    pass, so the pulled chunk is read once. Returns the new head.
    """
    cdef Py_ssize_t n_ch = ring.shape[0], cap = ring.shape[1], n = samples.shape[0]
    cdef Py_ssize_t i, ch, pos
    if samples.shape[1] != n_ch:
        raise ValueError(f"chunk has {samples.shape[1]} channels, ring has {n_ch}")
    if n > cap:
        raise ValueError(f"chunk of {n} samples is larger than the ring capacity {cap}")
    with nogil:
        pos = head
        for i in range(n):
            for ch in range(n_ch):
                ring[ch, pos] = samples[i, ch] * scale
            pos += 1
            if pos == cap:
                pos = 0
    return pos


def ring_read(const double[:, ::1] ring, Py_ssize_t start, double[:, ::1] out):
    """Copy ``out.shape[1]`` samples starting at ring position ``start`` into ``out``."""
    cdef Py_ssize_t n_ch = ring.shape[0], cap = ring.shape[1], n = out.shape[1]
    cdef Py_ssize_t first, ch
    if out.shape[0] != n_ch:
        raise ValueError(f"out has {out.shape[0]} channels, ring has {n_ch}")
    if n > cap:
        raise ValueError(f"cannot read {n} samples from a ring of capacity {cap}")
    if n == 0:
        return
    first = cap - start if n > cap - start else n
    with nogil:
        for ch in range(n_ch):
            memcpy(&out[ch, 0], &ring[ch, start], first * sizeof(double))
            if n > first:
                memcpy(&out[ch, first], &ring[ch, 0], (n - first) * sizeof(double))
