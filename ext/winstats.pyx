# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Per-channel statistics of one bad-channel window: the detector's hot loop.

Every 2-s window the bad-channel detector needs, per channel, the SD, the RMS of the first
differences, the extremes and how many samples sit at them, and the SD and difference RMS of
each 250-ms piece (their medians are the channel's typical size). In numpy that is some fifteen
whole-window passes and temporaries (std, diff, einsum, max, min, two comparisons and sums, a
reshape, std, diff, square, mean, sqrt): ~11 ms per window at 64 ch / 5 kHz, 3 s of a
10-minute analysis. Here it is two passes per channel without the GIL.

Sums run sample by sample (numpy sums pairwise), so the values agree with numpy's to ~1e-15
relative, not to the bit; the detector compares them with thresholds and medians.
"""
from libc.math cimport sqrt, fmax


def window_stats(const double[:, :] x, Py_ssize_t piece, double[::1] sd, double[::1] hf,
                 double[::1] xmax, double[::1] xmin, Py_ssize_t[::1] at_max,
                 Py_ssize_t[::1] at_min, double[:, ::1] piece_sd, double[:, ::1] piece_hf):
    """Statistics of every row of a finite window (no NaN: the caller checks).

    Parameters
    ----------
    x : ndarray of float64, shape (n_channels, n_samples)
        The window, n_samples >= 2 (any strides).
    piece : int
        Samples per piece (>= 2); the pieces are the first ``n_samples // piece`` whole ones.
    sd, hf, xmax, xmin : ndarray of float64, shape (n_channels,)
        Receive the SD (ddof 0), ``sqrt(mean(diff(x) ** 2))``, the maximum and the minimum.
    at_max, at_min : ndarray of intp, shape (n_channels,)
        Receive how many samples lie within ``1e-6 (max - min)`` (at least 1e-18) of the
        maximum and of the minimum (as :func:`tmseeg.pipeline.channels.edge_counts`).
    piece_sd, piece_hf : ndarray of float64, shape (n_channels, n_pieces)
        Receive each piece's SD and difference RMS (differences within the piece).
    """
    cdef Py_ssize_t n_ch = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t n_pieces = piece_sd.shape[1] if piece > 0 else 0
    cdef Py_ssize_t i, t, p, a, b, c_max, c_min
    cdef double v, d, s, dd, hi, lo, mean, ss, tol, top, bottom, pm, ps, pd
    if n < 2 or piece < 2:
        raise ValueError(f"window_stats: need >= 2 samples and pieces of >= 2 ({n}, {piece})")
    if n_pieces * piece > n or piece_hf.shape[1] != n_pieces:
        raise ValueError(f"window_stats: {n_pieces} pieces of {piece} do not fit {n} samples")
    for arr_len in (sd.shape[0], hf.shape[0], xmax.shape[0], xmin.shape[0], at_max.shape[0],
                    at_min.shape[0], piece_sd.shape[0], piece_hf.shape[0]):
        if arr_len != n_ch:
            raise ValueError(f"window_stats: every output needs {n_ch} rows")
    with nogil:
        for i in range(n_ch):
            s = 0.0
            dd = 0.0
            hi = x[i, 0]
            lo = x[i, 0]
            for t in range(n):
                v = x[i, t]
                s = s + v
                if v > hi:
                    hi = v
                if v < lo:
                    lo = v
                if t > 0:
                    d = v - x[i, t - 1]
                    dd = dd + d * d
            mean = s / n
            tol = 1e-6 * fmax(hi - lo, 1e-12)
            top = hi - tol
            bottom = lo + tol
            ss = 0.0
            c_max = 0
            c_min = 0
            for t in range(n):
                v = x[i, t]
                d = v - mean
                ss = ss + d * d
                if v >= top:
                    c_max += 1
                if v <= bottom:
                    c_min += 1
            sd[i] = sqrt(ss / n)
            hf[i] = sqrt(dd / (n - 1))
            xmax[i] = hi
            xmin[i] = lo
            at_max[i] = c_max
            at_min[i] = c_min
            for p in range(n_pieces):
                a = p * piece
                b = a + piece
                ps = 0.0
                pd = 0.0
                for t in range(a, b):
                    ps = ps + x[i, t]
                    if t > a:
                        d = x[i, t] - x[i, t - 1]
                        pd = pd + d * d
                pm = ps / piece
                ps = 0.0
                for t in range(a, b):
                    d = x[i, t] - pm
                    ps = ps + d * d
                piece_sd[i, p] = sqrt(ps / piece)
                piece_hf[i, p] = sqrt(pd / (piece - 1))
