# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Min/max decimation of multichannel data for drawing: the monitor's hot loop.

A screen pixel column shows a bucket of consecutive samples; drawing a vertical stroke from
the bucket's minimum to its maximum looks exactly like drawing every sample, for a fraction
of the points. :func:`minmax_decimate` writes, per channel and per bucket, the minimum and the
maximum *interleaved* (``out[c, 2b] = min``, ``out[c, 2b + 1] = max``), which is the order a
connected line needs to draw the stroke. NaN samples (gaps in the stream) are skipped; a bucket
with no finite sample gives NaN twice, so the line breaks there. The GIL is released.
"""
from libc.math cimport INFINITY, NAN


def minmax_decimate(const double[:, ::1] data, Py_ssize_t bucket,
                    double[:, ::1] out):
    """Per-channel min/max of consecutive buckets, interleaved into ``out``.

    Parameters
    ----------
    data : ndarray of float64, shape (n_channels, n_samples), C-contiguous
        Samples; only the first ``(n_samples // bucket) * bucket`` are used.
    bucket : int
        Samples per bucket (>= 1).
    out : ndarray of float64, shape (n_channels, >= 2 * n_buckets)
        Receives ``min, max`` of bucket ``b`` in columns ``2b, 2b + 1`` (last axis contiguous,
        so a column slice of a larger C-contiguous array works).

    Returns
    -------
    int
        The number of buckets written, ``n_samples // bucket``.
    """
    cdef Py_ssize_t n_ch = data.shape[0]
    cdef Py_ssize_t n_b, c, b, k, start
    cdef double lo, hi, v
    if bucket < 1:
        raise ValueError(f"minmax_decimate: bucket must be >= 1, got {bucket}")
    n_b = data.shape[1] // bucket
    if out.shape[0] != n_ch or out.shape[1] < 2 * n_b:
        raise ValueError(f"minmax_decimate: out has shape ({out.shape[0]}, {out.shape[1]}), "
                         f"needs ({n_ch}, >= {2 * n_b})")
    with nogil:
        for c in range(n_ch):
            for b in range(n_b):
                start = b * bucket
                lo = INFINITY
                hi = -INFINITY
                for k in range(start, start + bucket):
                    # comparisons with NaN are false: gaps are skipped without a test
                    v = data[c, k]
                    if v < lo:
                        lo = v
                    if v > hi:
                        hi = v
                if lo > hi:  # no finite sample in the bucket
                    lo = NAN
                    hi = NAN
                out[c, 2 * b] = lo
                out[c, 2 * b + 1] = hi
    return n_b
