# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Pulse-window interpolation kernel: replace a span of samples by a polynomial fitted on
short stretches of data on either side of it, for many channels at once, in place.

The polynomial (degree 0..3) is fitted by least squares to ``n_left`` samples just before the
span and ``n_right`` samples just after it, and evaluated inside the span. Degree 1 with one
sample on each side is the straight line between the two edge samples; degree 3 with a few
samples each side is the usual "cubic interpolation" of TMS-EEG pipelines.

Time is measured relative to the span (``k - start``) and mapped to ``[-1, 1]`` over the fit
range, so the result does not depend on where the span sits in the buffer and the 4x4 normal
equations stay well conditioned. The normal matrix is the same for every channel: it is inverted
once per call (Gauss-Jordan with partial pivoting), then each channel costs one pass over its
fit samples and one Horner evaluation per replaced sample. The GIL is released throughout.
"""
from libc.math cimport fabs

cdef enum:
    MAXP = 4  # at most a cubic: 4 coefficients


cdef int _invert(double a[MAXP][MAXP], double inv[MAXP][MAXP], int n) noexcept nogil:
    """Invert the n x n matrix ``a`` into ``inv`` (Gauss-Jordan, partial pivoting).

    Returns 0 on success, -1 if the matrix is singular."""
    cdef double work[MAXP][2 * MAXP]
    cdef int i, j, k, piv
    cdef double best, f, tmp
    for i in range(n):
        for j in range(n):
            work[i][j] = a[i][j]
            work[i][n + j] = 1.0 if i == j else 0.0
    for k in range(n):
        piv = k
        best = fabs(work[k][k])
        for i in range(k + 1, n):
            if fabs(work[i][k]) > best:
                best = fabs(work[i][k])
                piv = i
        if best == 0.0:
            return -1
        if piv != k:
            for j in range(2 * n):
                tmp = work[k][j]
                work[k][j] = work[piv][j]
                work[piv][j] = tmp
        f = 1.0 / work[k][k]
        for j in range(2 * n):
            work[k][j] *= f
        for i in range(n):
            if i != k:
                f = work[i][k]
                if f != 0.0:
                    for j in range(2 * n):
                        work[i][j] -= f * work[k][j]
    for i in range(n):
        for j in range(n):
            inv[i][j] = work[i][n + j]
    return 0


def interp_span(double[:, ::1] data, const Py_ssize_t[::1] rows, Py_ssize_t start,
                Py_ssize_t stop, Py_ssize_t n_left, Py_ssize_t n_right, int order):
    """Replace ``data[rows, start:stop]`` in place by a least-squares polynomial.

    Parameters
    ----------
    data : float64 array (n_channels, n_samples), C-contiguous
        Modified in place.
    rows : intp array
        Channel rows to interpolate (others are left alone).
    start, stop : int
        The span to replace, ``start <= stop`` (stop exclusive).
    n_left, n_right : int
        Fit samples taken from ``data[:, start-n_left:start]`` and ``data[:, stop:stop+n_right]``.
    order : int
        Polynomial degree, 0..3; must be < ``n_left + n_right``.
    """
    cdef Py_ssize_t n_ch = data.shape[0], n_s = data.shape[1], n_rows = rows.shape[0]
    cdef Py_ssize_t r, ch, k, rel
    cdef int p, q, n_p = order + 1
    cdef double centre, half, u, y, acc
    cdef double ata[MAXP][MAXP]
    cdef double inv[MAXP][MAXP]
    cdef double aty[MAXP]
    cdef double coef[MAXP]
    cdef double pw[2 * MAXP]
    if order < 0 or order > 3:
        raise ValueError(f"order must be 0..3, got {order}")
    if n_left < 0 or n_right < 0:
        raise ValueError("n_left and n_right must be >= 0")
    if n_left + n_right < n_p:
        raise ValueError(
            f"a degree-{order} fit needs at least {n_p} samples, got {n_left} + {n_right}")
    if start < n_left or stop > n_s - n_right or start > stop:
        raise ValueError(
            f"span [{start}, {stop}) with fit {n_left}/{n_right} does not fit in {n_s} samples")
    for r in range(n_rows):
        if rows[r] < 0 or rows[r] >= n_ch:
            raise IndexError(f"row {rows[r]} out of range for {n_ch} channels")
    if stop == start or n_rows == 0:
        return
    # fit range in span-relative time: [-n_left, stop - start + n_right - 1]
    centre = 0.5 * (<double>(stop - start + n_right - 1) - <double>n_left)
    half = 0.5 * (<double>(stop - start + n_right - 1) + <double>n_left)
    if half <= 0.0:
        half = 1.0
    with nogil:
        for p in range(MAXP):
            for q in range(MAXP):
                ata[p][q] = 0.0
        for p in range(2 * MAXP):
            pw[p] = 0.0
        # sums of powers of u over the fit samples (left, then right)
        for k in range(start - n_left, start):
            u = (<double>(k - start) - centre) / half
            acc = 1.0
            for p in range(2 * n_p - 1):
                pw[p] += acc
                acc *= u
        for k in range(stop, stop + n_right):
            u = (<double>(k - start) - centre) / half
            acc = 1.0
            for p in range(2 * n_p - 1):
                pw[p] += acc
                acc *= u
        for p in range(n_p):
            for q in range(n_p):
                ata[p][q] = pw[p + q]
        if _invert(ata, inv, n_p) != 0:
            with gil:
                raise ValueError("singular fit: too few distinct fit samples")
        for r in range(n_rows):
            ch = rows[r]
            for p in range(n_p):
                aty[p] = 0.0
            for k in range(start - n_left, start):
                u = (<double>(k - start) - centre) / half
                y = data[ch, k]
                acc = 1.0
                for p in range(n_p):
                    aty[p] += acc * y
                    acc *= u
            for k in range(stop, stop + n_right):
                u = (<double>(k - start) - centre) / half
                y = data[ch, k]
                acc = 1.0
                for p in range(n_p):
                    aty[p] += acc * y
                    acc *= u
            for p in range(n_p):
                acc = 0.0
                for q in range(n_p):
                    acc += inv[p][q] * aty[q]
                coef[p] = acc
            for k in range(start, stop):
                u = (<double>(k - start) - centre) / half
                acc = coef[n_p - 1]
                for p in range(n_p - 2, -1, -1):
                    acc = acc * u + coef[p]
                data[ch, k] = acc
