# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Second-order-section IIR filtering of many channels at once, channels innermost.

``scipy.signal.sosfilt`` filters one channel after another; each sample's sections wait for the
one before (a chain of dependent multiply-adds), so the loop runs at the latency of that chain.
Here the data are laid out (n_samples, n_channels) and every section step is done for all
channels together: the channels are independent, so the compiler vectorises the inner loop
and the chain's latency is spread over them. The arithmetic per channel is scipy's, in its
order (transposed direct form II, ``_sosfilt.pyx``: ``y = b0 x + z0; z0 = b1 x - a1 y + z1;
z1 = b2 x - a2 y``), so the result is the same to the bit. The epoch filter runs it forward
and backward (:func:`tmseeg.pipeline.filters.sosfiltfilt_channels`).
"""


def sosfilt_channels(const double[:, ::1] sos, double[:, ::1] x, double[:, :, ::1] z,
                     bint backward=False):
    """Filter ``x`` (n_samples, n_channels) in place along its first axis.

    Parameters
    ----------
    sos : ndarray of float64, shape (n_sections, 6)
        Sections ``b0 b1 b2 1 a1 a2``.
    x : ndarray of float64, shape (n_samples, n_channels), C-contiguous
        Filtered in place.
    z : ndarray of float64, shape (n_sections, 2, n_channels)
        The sections' states: initial on entry, final on return.
    backward : bool
        Run from the last sample to the first (the second pass of a zero-phase filter).
    """
    cdef Py_ssize_t n = x.shape[0], n_ch = x.shape[1], n_sec = sos.shape[0]
    cdef Py_ssize_t i, t, s, c
    cdef double b0, b1, b2, a1, a2, x_cur, x_new
    cdef double* row
    cdef double* z0
    cdef double* z1
    if sos.shape[1] != 6:
        raise ValueError(f"sosfilt_channels: sos must be (n_sections, 6), got {sos.shape[1]} "
                         "columns")
    if z.shape[0] != n_sec or z.shape[1] != 2 or z.shape[2] != n_ch:
        raise ValueError(f"sosfilt_channels: z must be ({n_sec}, 2, {n_ch})")
    if n == 0 or n_ch == 0:
        return
    with nogil:
        for i in range(n):
            t = n - 1 - i if backward else i
            row = &x[t, 0]
            for s in range(n_sec):
                b0 = sos[s, 0]
                b1 = sos[s, 1]
                b2 = sos[s, 2]
                a1 = sos[s, 4]
                a2 = sos[s, 5]
                z0 = &z[s, 0, 0]
                z1 = &z[s, 1, 0]
                for c in range(n_ch):
                    x_cur = row[c]
                    x_new = b0 * x_cur + z0[c]
                    z0[c] = b1 * x_cur - a1 * x_new + z1[c]
                    z1[c] = b2 * x_cur - a2 * x_new
                    row[c] = x_new
