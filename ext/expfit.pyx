# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Levenberg-Marquardt refinement of ``sum_k a_k exp(-t / tau_k) + c`` fits, channel by channel.

The decay-artifact fit (:class:`tmseeg.pipeline.decay.DecayFitter`) starts every channel from
the best point of a tau grid; this kernel then polishes (amplitudes, c, log tau) with a few
Levenberg-Marquardt steps. Each channel is an independent small problem (at most 5 parameters,
a few hundred box means), so the loop runs in C without the GIL and without the temporary
(n_channels, n_points, n_params) arrays the numpy formulation needs.

Per iteration and channel: the Jacobian normal equations ``J^T J`` and ``J^T r`` are accumulated
in one pass, the damped system ``(J^T J + lam diag(J^T J) + 1e-12 I) step = J^T r`` is solved,
the new log taus are clipped to the bounds and kept ``log_ratio`` apart, amplitudes and ``c``
are re-solved exactly for those taus (linear least squares with a 1e-12 relative ridge), and the
step is kept only if the residual sum of squares went down (then ``lam *= 0.3``, else
``lam *= 10``). Exactly the algorithm of the numpy reference in ``tests/pipeline/test_artifact.py``.
"""
from libc.math cimport exp, log, fabs, isfinite
from libc.stdlib cimport malloc, free

cdef enum:
    MAXK = 2
    MAXP = 5  # 2 * MAXK + 1


cdef int _solve(double* a, double* b, int n) noexcept nogil:
    """Solve the n x n system a x = b in place (b <- x); Gaussian elimination with partial
    pivoting. Returns -1 if singular."""
    cdef int i, j, k, piv
    cdef double best, f, tmp
    for k in range(n):
        piv = k
        best = fabs(a[k * n + k])
        for i in range(k + 1, n):
            if fabs(a[i * n + k]) > best:
                best = fabs(a[i * n + k])
                piv = i
        if best == 0.0 or not isfinite(best):
            return -1
        if piv != k:
            for j in range(n):
                tmp = a[k * n + j]
                a[k * n + j] = a[piv * n + j]
                a[piv * n + j] = tmp
            tmp = b[k]
            b[k] = b[piv]
            b[piv] = tmp
        for i in range(k + 1, n):
            f = a[i * n + k] / a[k * n + k]
            if f != 0.0:
                for j in range(k, n):
                    a[i * n + j] -= f * a[k * n + j]
                b[i] -= f * b[k]
    for k in range(n - 1, -1, -1):
        tmp = b[k]
        for j in range(k + 1, n):
            tmp -= a[k * n + j] * b[j]
        b[k] = tmp / a[k * n + k]
    return 0


cdef double _linear(const double* y, const double* t, Py_ssize_t nb, int K,
                    const double* log_tau, double* coef, double* e) noexcept nogil:
    """Amplitudes and c for fixed taus (into coef), exponentials into e (nb x K);
    returns the residual sum of squares (inf if singular)."""
    cdef int p, q, n = K + 1
    cdef Py_ssize_t i
    cdef double ata[(MAXK + 1) * (MAXK + 1)]
    cdef double aty[MAXK + 1]
    cdef double row[MAXK + 1]
    cdef double inv_tau[MAXK]
    cdef double tr, r, cost
    for p in range(K):
        inv_tau[p] = exp(-log_tau[p])
    for p in range(n * n):
        ata[p] = 0.0
    for p in range(n):
        aty[p] = 0.0
    for i in range(nb):
        for p in range(K):
            row[p] = exp(-t[i] * inv_tau[p])
            e[i * K + p] = row[p]
        row[K] = 1.0
        for p in range(n):
            aty[p] += row[p] * y[i]
            for q in range(n):
                ata[p * n + q] += row[p] * row[q]
    tr = 0.0
    for p in range(n):
        tr += ata[p * n + p]
    for p in range(n):
        ata[p * n + p] += 1e-12 * tr
    if _solve(ata, aty, n) != 0:
        return 1e308
    for p in range(n):
        coef[p] = aty[p]
    cost = 0.0
    for i in range(nb):
        r = y[i] - coef[K]
        for p in range(K):
            r -= coef[p] * e[i * K + p]
        cost += r * r
    return cost


cdef void _constrain(double* lt, int K, double lo, double hi, double need) noexcept nogil:
    cdef int p
    cdef double tmp, mid
    for p in range(K):
        if lt[p] < lo:
            lt[p] = lo
        elif lt[p] > hi:
            lt[p] = hi
    if K == 2:
        if lt[1] < lt[0]:
            tmp = lt[0]
            lt[0] = lt[1]
            lt[1] = tmp
        if lt[1] - lt[0] < need:
            mid = 0.5 * (lt[0] + lt[1])
            if mid < lo + need / 2:
                mid = lo + need / 2
            elif mid > hi - need / 2:
                mid = hi - need / 2
            lt[0] = mid - need / 2
            lt[1] = mid + need / 2


def lm_refine(const double[:, ::1] yb, const double[::1] t_ms, double[:, ::1] log_tau,
              double[:, ::1] coef, double log_lo, double log_hi, double log_ratio,
              int n_iter, double[::1] cost_out):
    """Refine exponential fits of every row of ``yb`` in place.

    Parameters
    ----------
    yb : (n_channels, n_points) float64
        Data (box means).
    t_ms : (n_points,) float64
        Times of the points, ms from the first one.
    log_tau : (n_channels, K) float64, K in {1, 2}
        Start values (from the grid), overwritten with the refined log time constants.
    coef : (n_channels, K + 1) float64
        Overwritten with the amplitudes and the constant.
    log_lo, log_hi : float
        Bounds of log tau.
    log_ratio : float
        Least distance of the two log taus (K = 2).
    n_iter : int
        Levenberg-Marquardt iterations.
    cost_out : (n_channels,) float64
        Residual sum of squares at the end.
    """
    cdef Py_ssize_t n_ch = yb.shape[0], nb = yb.shape[1], ch, i
    cdef int K = log_tau.shape[1], P, p, q, it
    cdef double lam, cost, cost2, r
    cdef double jtj[MAXP * MAXP]
    cdef double sys[MAXP * MAXP]
    cdef double jtr[MAXP]
    cdef double jrow[MAXP]
    cdef double trial[MAXK]
    cdef double c2[MAXK + 1]
    cdef double cur_c[MAXK + 1]
    cdef double scale[MAXK]
    cdef double* e
    cdef double* e2
    cdef double* tmp
    if K < 1 or K > MAXK:
        raise ValueError(f"log_tau must have 1 or 2 columns, got {K}")
    if t_ms.shape[0] != nb or coef.shape[0] != n_ch or coef.shape[1] != K + 1 \
            or log_tau.shape[0] != n_ch or cost_out.shape[0] != n_ch:
        raise ValueError("lm_refine: inconsistent array shapes")
    P = 2 * K + 1
    e = <double*>malloc(nb * K * sizeof(double))
    e2 = <double*>malloc(nb * K * sizeof(double))
    if e == NULL or e2 == NULL:
        free(e)
        free(e2)
        raise MemoryError()
    with nogil:
        for ch in range(n_ch):
            cost = _linear(&yb[ch, 0], &t_ms[0], nb, K, &log_tau[ch, 0], cur_c, e)
            lam = 1e-3
            for it in range(n_iter):
                for p in range(P * P):
                    jtj[p] = 0.0
                for p in range(P):
                    jtr[p] = 0.0
                for p in range(K):
                    scale[p] = cur_c[p] * exp(-log_tau[ch, p])  # a_k / tau_k
                for i in range(nb):
                    r = yb[ch, i] - cur_c[K]
                    for p in range(K):
                        r -= cur_c[p] * e[i * K + p]
                    for p in range(K):
                        jrow[p] = e[i * K + p]
                        jrow[K + 1 + p] = e[i * K + p] * scale[p] * t_ms[i]
                    jrow[K] = 1.0
                    for p in range(P):
                        jtr[p] += jrow[p] * r
                        for q in range(p, P):  # J^T J is symmetric: one triangle
                            jtj[p * P + q] += jrow[p] * jrow[q]
                for p in range(P):
                    for q in range(p):
                        jtj[p * P + q] = jtj[q * P + p]
                for p in range(P * P):
                    sys[p] = jtj[p]
                for p in range(P):
                    sys[p * P + p] += lam * jtj[p * P + p] + 1e-12
                if _solve(sys, jtr, P) != 0:
                    for p in range(P):
                        jtr[p] = 0.0
                for p in range(K):
                    if not isfinite(jtr[K + 1 + p]):
                        jtr[K + 1 + p] = 0.0
                    trial[p] = log_tau[ch, p] + jtr[K + 1 + p]
                _constrain(trial, K, log_lo, log_hi, log_ratio)
                cost2 = _linear(&yb[ch, 0], &t_ms[0], nb, K, trial, c2, e2)
                if cost2 < cost:
                    cost = cost2
                    for p in range(K):
                        log_tau[ch, p] = trial[p]
                    for p in range(K + 1):
                        cur_c[p] = c2[p]
                    tmp = e
                    e = e2
                    e2 = tmp
                    lam *= 0.3
                else:
                    lam *= 10.0
            for p in range(K + 1):
                coef[ch, p] = cur_c[p]
            cost_out[ch] = cost
    free(e)
    free(e2)
