# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-sample jump statistics across channels: the data pulse detector's hot loop.

A TMS pulse is a steep jump on many channels at the same sample. For every sample the
detector needs how many channels jump beyond their threshold and how large the jump is across
the channels that can vote. In numpy that is a dozen whole-array passes and temporaries per
block (diff, scale, abs, compare, count, square, NaN-replace, sum, sqrt), which on a live
stream of 1-ms blocks is mostly call overhead; here it is one pass with the GIL released.

The sums run over the channels in order, as ``numpy.nansum(d ** 2, axis=0)`` does, so the
result is the same to the bit.
"""
from libc.math cimport fabs, sqrt, isfinite


def jump_stats(const double[:, :] data, const Py_ssize_t[::1] rows, const double[::1] prev,
               double scale, const double[::1] threshold, int[::1] count, double[::1] norm):
    """Count the channels over threshold and the jump size at every sample of a block.

    Parameters
    ----------
    data : ndarray of float64, shape (n_all_channels, n_samples)
        The block (any strides).
    rows : ndarray of intp, shape (n_rows,)
        The watched channels' rows in ``data``.
    prev : ndarray of float64, shape (n_rows,)
        Each watched channel's sample before the block (the first jump is against it).
    scale : float
        Factor from one sample's difference to the threshold's unit (µV/ms: ``sfreq / 1000``).
    threshold : ndarray of float64, shape (n_rows,)
        Per watched channel; ``inf`` for a channel that cannot vote.
    count : ndarray of int32, shape (n_samples,)
        Receives how many channels have ``|d| > threshold``.
    norm : ndarray of float64, shape (n_samples,)
        Receives ``sqrt(sum d^2)`` over the channels with a finite threshold (NaN jumps count
        as 0).
    """
    cdef Py_ssize_t n_rows = rows.shape[0], n = data.shape[1]
    cdef Py_ssize_t i, t, r
    cdef double d, before
    if prev.shape[0] != n_rows or threshold.shape[0] != n_rows:
        raise ValueError(f"jump_stats: prev ({prev.shape[0]}) and threshold "
                         f"({threshold.shape[0]}) need one value per row ({n_rows})")
    if count.shape[0] < n or norm.shape[0] < n:
        raise ValueError(f"jump_stats: count and norm need {n} samples")
    for i in range(n_rows):
        if rows[i] < 0 or rows[i] >= data.shape[0]:
            raise ValueError(f"jump_stats: row {rows[i]} outside 0..{data.shape[0] - 1}")
    with nogil:
        for t in range(n):
            count[t] = 0
            norm[t] = 0.0
        # channel by channel (cache-friendly on long blocks); each sample's sum still adds
        # the channels in order
        for i in range(n_rows):
            r = rows[i]
            before = prev[i]
            for t in range(n):
                d = (data[r, t] - before) * scale
                before = data[r, t]
                if fabs(d) > threshold[i]:  # false for NaN
                    count[t] += 1
                if isfinite(threshold[i]) and d == d:
                    norm[t] += d * d
        for t in range(n):
            norm[t] = sqrt(norm[t])
