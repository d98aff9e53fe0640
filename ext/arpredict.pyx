# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Autoregressive forward prediction, the inner loop of AR phase estimation.

``x[n] = sum_{k=1..p} coeffs[k-1] * x[n-k]`` is run ``n_ahead`` steps past the end of
``history``; each new value feeds the next step, so the loop is inherently sequential
(``n_ahead * p`` multiply-adds). It reads the last ``p`` samples of ``history`` and the values
already written to ``out`` in place, allocates nothing and releases the GIL.
"""


def ar_predict(const double[::1] coeffs, const double[::1] history, Py_ssize_t n_ahead,
               double[::1] out):
    """Write ``n_ahead`` AR predictions following ``history`` into ``out[:n_ahead]``.

    Parameters
    ----------
    coeffs : ndarray, shape (p,)
        AR coefficients in prediction form, ``x[n] = sum_k coeffs[k-1] x[n-k]``.
    history : ndarray, shape (n_hist,)
        Past samples, newest last; ``n_hist >= p``.
    n_ahead : int
        Number of steps to predict.
    out : ndarray, shape (>= n_ahead,)
        Receives the predictions (must not overlap ``history``).
    """
    cdef Py_ssize_t p = coeffs.shape[0], n_hist = history.shape[0]
    cdef Py_ssize_t j, k, m
    cdef double acc
    if p < 1:
        raise ValueError("ar_predict: need at least one AR coefficient")
    if n_hist < p:
        raise ValueError(f"ar_predict: history has {n_hist} samples, the AR order is {p}")
    if n_ahead < 0 or out.shape[0] < n_ahead:
        raise ValueError(f"ar_predict: out has {out.shape[0]} slots for n_ahead={n_ahead}")
    with nogil:
        for j in range(n_ahead):
            acc = 0.0
            # k = 1..p ; x[n-k] is out[j-k] when j-k >= 0, else history[n_hist + j - k]
            m = j if j < p else p
            for k in range(1, m + 1):
                acc = acc + coeffs[k - 1] * out[j - k]
            for k in range(m + 1, p + 1):
                acc = acc + coeffs[k - 1] * history[n_hist + j - k]
            out[j] = acc
