# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Add a fitted decay model ``scale * sum_k a_k exp(-t / tau_k)`` to rows of a block in place.

The decay stage subtracts every pulse's model from the samples it reaches (up to a few seconds
after the pulse, block by block), and offline also adds it up again for the report's
comparison. In numpy each block costs a time vector, a division, an exponential, a product and
a sum per exponential, a fancy-indexed copy and write-back: ~11 ns per value, 3 s of a
10-minute 64 ch / 5 kHz analysis. Here it is one pass in C without the GIL.

The exponential advances by one multiplication per sample (``exp(-dt/tau)``) from anchors
computed directly every ``ANCHOR`` samples of the model's own time axis. The anchors do not
depend on where a block starts, so a sample gets the same value whatever the block sizes
(live 1-ms blocks and offline 100-ms blocks agree to the bit); between anchors the product
drifts from the direct exponential by a few 1e-16 relative.
"""
from libc.math cimport exp, expm1

cdef enum:
    ANCHOR = 64
    MAXK = 4


def add_exp_model(double[:, :] data, const Py_ssize_t[::1] rows, const double[:, ::1] amps,
                  const double[:, ::1] tau_ms, Py_ssize_t col0, Py_ssize_t n, Py_ssize_t j0,
                  double dt_ms, double scale):
    """``data[rows[i], col0 + c] += scale * sum_k amps[i, k] exp(-(j0 + c) dt_ms / tau_ms[i, k])``
    for ``c`` in ``0 .. n - 1``.

    Parameters
    ----------
    data : ndarray of float64, shape (n_all_rows, n_cols)
        Changed in place (any strides).
    rows : ndarray of intp, shape (n_rows,)
        Row of ``data`` for each model row.
    amps, tau_ms : ndarray of float64, shape (n_rows, n_exp)
        Each row's amplitudes (µV at model sample 0) and time constants (ms).
    col0, n : int
        The columns of ``data`` to change.
    j0 : int
        Model sample of column ``col0`` (samples since the model's first sample, >= 0).
    dt_ms : float
        Sample interval in ms.
    scale : float
        -1 subtracts the model, +1 adds it.
    """
    cdef Py_ssize_t n_rows = rows.shape[0], n_exp = amps.shape[1]
    cdef Py_ssize_t i, k, c, j, r, seg
    cdef double v
    cdef double e[MAXK]
    cdef double step[MAXK]
    cdef double inv_tau[MAXK]
    if amps.shape[0] != n_rows or tau_ms.shape[0] != n_rows or tau_ms.shape[1] != n_exp:
        raise ValueError(f"add_exp_model: amps ({amps.shape[0]}, {amps.shape[1]}) and tau_ms "
                         f"({tau_ms.shape[0]}, {tau_ms.shape[1]}) need one row per row index "
                         f"({n_rows})")
    if n_exp > MAXK:
        raise ValueError(f"add_exp_model: at most {MAXK} exponentials, got {n_exp}")
    if n < 0 or col0 < 0 or col0 + n > data.shape[1] or j0 < 0:
        raise ValueError(f"add_exp_model: columns {col0}..{col0 + n} outside 0..{data.shape[1]}"
                         f" or model sample {j0} < 0")
    for i in range(n_rows):
        if rows[i] < 0 or rows[i] >= data.shape[0]:
            raise ValueError(f"add_exp_model: row {rows[i]} outside 0..{data.shape[0] - 1}")
    if n == 0:
        return
    with nogil:
        for i in range(n_rows):
            r = rows[i]
            for k in range(n_exp):
                inv_tau[k] = 1.0 / tau_ms[i, k]
                step[k] = exp(-dt_ms * inv_tau[k])
                # from the anchor at or before j0 up to j0, as every block before would have
                j = j0 - j0 % ANCHOR
                e[k] = exp(-(j * dt_ms) * inv_tau[k])
                while j < j0:
                    e[k] = e[k] * step[k]
                    j += 1
            c = 0
            while c < n:
                # one stretch up to the next anchor; the anchor itself computed directly
                j = j0 + c
                seg = c + ANCHOR - j % ANCHOR
                if seg > n:
                    seg = n
                if j % ANCHOR == 0 and c > 0:
                    for k in range(n_exp):
                        e[k] = exp(-(j * dt_ms) * inv_tau[k])
                if n_exp == 2:  # the default model: the chain in registers, not memory
                    _run2(&data[r, 0], data.strides[1] // sizeof(double), col0 + c,
                          col0 + seg, amps[i, 0], amps[i, 1], &e[0], &e[1], step[0],
                          step[1], scale)
                    c = seg
                while c < seg:
                    v = 0.0
                    for k in range(n_exp):
                        v = v + amps[i, k] * e[k]
                        e[k] = e[k] * step[k]
                    data[r, col0 + c] = data[r, col0 + c] + scale * v
                    c += 1


cdef void _run2(double* row, Py_ssize_t stride, Py_ssize_t a, Py_ssize_t b, double a0,
                double a1, double* e0_io, double* e1_io, double s0, double s1,
                double scale) noexcept nogil:
    """Columns a .. b-1 of one row (``stride`` in doubles) for two exponentials."""
    cdef double e0 = e0_io[0], e1 = e1_io[0]
    cdef Py_ssize_t c
    for c in range(a, b):
        row[c * stride] = row[c * stride] + scale * ((0.0 + a0 * e0) + a1 * e1)
        e0 = e0 * s0
        e1 = e1 * s1
    e0_io[0] = e0
    e1_io[0] = e1



cdef enum:
    MAXLANES = 256


cdef double _geometric_sum(double log_q, Py_ssize_t n) noexcept nogil:
    """``sum_{t < n} q^t`` for ``q = exp(log_q) < 1``, without cancellation near q = 1."""
    return -expm1(n * log_q) / -expm1(log_q)


def exp_model_moments(const double[:, ::1] y, const double[:, ::1] amps,
                      const double[:, ::1] tau_ms, double dt_ms, const double[::1] scales,
                      double[::1] sum_ym, double[::1] sum_mm):
    """For each time scale ``s``: the model ``m_i(t) = sum_k amps[i, k] exp(-t dt_ms /
    (s tau_ms[i, k]))`` of every row against ``y``, as the two sums a gain fit needs,
    ``sum_ym[s] = sum_i,t y[i, t] m_i(t)`` and ``sum_mm[s] = sum_i,t (m_i(t) - mean_t m_i)^2``.

    What the decay stage's per-pulse gain and time-scale search computed with a (rows,
    samples) model, its mean and three products for each of the 13 scales (15 ms a pulse at
    64 ch / 5 kHz), without building the model: the model's own sums are geometric series in
    closed form, and ``sum_t y(t) exp(-t / tau)`` of every (scale, exponential) is one pass
    over each row with all of them side by side (independent lanes the compiler vectorises;
    each exponential advanced by one multiplication a sample, set directly every 64 samples).
    ``y`` should have zero mean per row (then ``sum_ym`` is the product with the centred
    model too).

    Parameters
    ----------
    y : ndarray of float64, shape (n_rows, n_samples)
    amps, tau_ms : ndarray of float64, shape (n_rows, n_exp)
    dt_ms : float
    scales : ndarray of float64, shape (n_scales,)
    sum_ym, sum_mm : ndarray of float64, shape (n_scales,)
        Written.
    """
    cdef Py_ssize_t n_rows = y.shape[0], n = y.shape[1], n_exp = amps.shape[1]
    cdef Py_ssize_t n_scales = scales.shape[0], n_lanes = n_scales * n_exp
    cdef Py_ssize_t i, k, l, c, c0, c1, si, kk
    cdef double yc, sm, smm
    cdef double e[MAXLANES]
    cdef double step[MAXLANES]
    cdef double rate[MAXLANES]  # dt / (s tau): minus the log of each lane's ratio
    cdef double acc[MAXLANES]
    if (amps.shape[0] != n_rows or tau_ms.shape[0] != n_rows or tau_ms.shape[1] != n_exp
            or n_exp > MAXK):
        raise ValueError(f"exp_model_moments: amps and tau_ms need shape ({n_rows}, <= {MAXK})")
    if sum_ym.shape[0] != n_scales or sum_mm.shape[0] != n_scales:
        raise ValueError("exp_model_moments: sum_ym and sum_mm need one value per scale")
    if n_lanes > MAXLANES:
        raise ValueError(f"exp_model_moments: at most {MAXLANES} scales x exponentials")
    with nogil:
        for si in range(n_scales):
            sum_ym[si] = 0.0
            sum_mm[si] = 0.0
        for i in range(n_rows):
            for si in range(n_scales):
                for k in range(n_exp):
                    l = si * n_exp + k
                    rate[l] = dt_ms / (tau_ms[i, k] * scales[si])
                    step[l] = exp(-rate[l])
                    acc[l] = 0.0
            c0 = 0
            while c0 < n:
                c1 = c0 + ANCHOR
                if c1 > n:
                    c1 = n
                for l in range(n_lanes):
                    e[l] = exp(-(c0 * rate[l]))
                for c in range(c0, c1):
                    yc = y[i, c]
                    for l in range(n_lanes):
                        acc[l] = acc[l] + yc * e[l]
                        e[l] = e[l] * step[l]
                c0 = c1
            for si in range(n_scales):
                sm = 0.0
                smm = 0.0
                for k in range(n_exp):
                    l = si * n_exp + k
                    sum_ym[si] = sum_ym[si] + amps[i, k] * acc[l]
                    sm = sm + amps[i, k] * _geometric_sum(-rate[l], n)
                    for kk in range(n_exp):
                        smm = smm + amps[i, k] * amps[i, kk] * _geometric_sum(
                            -(rate[l] + rate[si * n_exp + kk]), n)
                if n > 0:
                    sum_mm[si] = sum_mm[si] + (smm - sm * sm / n)
