"""Scrolling raw-EEG display data: incremental min/max decimation of the engine's ring buffer.

Each frame, :class:`RawDecimator` reads only the samples that arrived since the previous frame
(a few hundred at 5 kHz and 30-60 fps), reduces every complete bucket to its minimum and
maximum with the Cython kernel :func:`tmseeg._ext.decimate.minmax_decimate`, and writes them
into a small ring of ``n_buckets`` columns. Drawing then costs ``2 * n_buckets`` points per
channel whatever the sampling rate, and reading never holds the ring buffer's lock for more
than the copy of those new samples.
"""
from __future__ import annotations

import numpy as np

from tmseeg._ext.decimate import minmax_decimate
from tmseeg.stream.ringbuffer import OverwrittenError, RingBuffer


def minmax_decimate_numpy(data: np.ndarray, bucket: int) -> np.ndarray:
    """Plain numpy reference of :func:`~tmseeg._ext.decimate.minmax_decimate`.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
    bucket : int
        Samples per bucket.

    Returns
    -------
    ndarray, shape (n_channels, 2 * (n_samples // bucket))
        ``min, max`` of each bucket, interleaved; NaN for buckets without finite samples.
    """
    n_ch, n = data.shape
    nb = n // bucket
    x = data[:, :nb * bucket].reshape(n_ch, nb, bucket)
    out = np.empty((n_ch, 2 * nb))
    with np.errstate(invalid="ignore"):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets
            out[:, 0::2] = np.nanmin(x, axis=2)
            out[:, 1::2] = np.nanmax(x, axis=2)
    return out


class RawDecimator:
    """Min/max envelope of the newest ``window_s`` seconds of a ring buffer, updated in place.

    Parameters
    ----------
    ring : RingBuffer
        The engine's raw ring buffer (µV, absolute sample indices).
    sfreq : float
        Sampling rate in Hz.
    window_s : float
        Seconds shown.
    n_buckets : int
        Buckets (about the plot's width in pixels); each holds ``window_s * sfreq / n_buckets``
        samples.

    Attributes
    ----------
    bucket : int
        Samples per bucket.
    next_sample : int
        Absolute index where the next (not yet complete) bucket starts.
    """

    def __init__(self, ring: RingBuffer, sfreq: float, window_s: float = 5.0,
                 n_buckets: int = 1000) -> None:
        self.ring = ring
        self.sfreq = float(sfreq)
        self.window_s = float(window_s)
        self.bucket = max(1, int(round(window_s * sfreq / n_buckets)))
        self.n_buckets = int(n_buckets)
        self._env = np.full((ring.n_channels, 2 * self.n_buckets), np.nan)
        self._pos = 0  # next bucket column to write (ring position)
        self.next_sample = ring.n_written - ring.n_written % self.bucket
        self.n_buckets_written = 0

    def clear(self) -> None:
        """Forget the envelope (the display starts empty from the newest sample)."""
        self._env[:] = np.nan
        self._pos = 0
        n = self.ring.n_written
        self.next_sample = n - n % self.bucket

    def update(self) -> int:
        """Decimate the complete buckets that arrived since the last call.

        Returns
        -------
        int
            Number of new buckets.
        """
        n_written = self.ring.n_written
        n_full = (n_written - self.next_sample) // self.bucket
        if n_full <= 0:
            return 0
        if n_full > self.n_buckets:  # more than a screen arrived (paused, slow frame)
            skip = n_full - self.n_buckets
            self._advance_nan(skip)
            n_full = self.n_buckets
        start = self.next_sample
        stop = start + n_full * self.bucket
        try:
            data = self.ring.read(start, stop)
        except OverwrittenError:
            first = self.ring.first_available
            lost = -(-(first - start) // self.bucket)  # ceil: buckets no longer in the ring
            self._advance_nan(lost)
            return lost + self.update()
        buf = np.empty((self.ring.n_channels, 2 * n_full))
        minmax_decimate(data, self.bucket, buf)
        self._put(buf)
        self.next_sample = stop
        self.n_buckets_written += n_full
        return n_full

    def _advance_nan(self, n: int) -> None:
        n_show = min(n, self.n_buckets)
        self._put(np.full((self.ring.n_channels, 2 * n_show), np.nan))
        self.next_sample += n * self.bucket
        self.n_buckets_written += n

    def _put(self, cols: np.ndarray) -> None:
        nb = cols.shape[1] // 2
        first = min(nb, self.n_buckets - self._pos)
        p = 2 * self._pos
        self._env[:, p:p + 2 * first] = cols[:, :2 * first]
        if first < nb:
            self._env[:, :2 * (nb - first)] = cols[:, 2 * first:]
        self._pos = (self._pos + nb) % self.n_buckets

    def envelope(self) -> np.ndarray:
        """Oldest-to-newest envelope, shape (n_channels, 2 * n_buckets), µV (a new array)."""
        p = 2 * self._pos
        return np.concatenate([self._env[:, p:], self._env[:, :p]], axis=1)

    def times_s(self) -> np.ndarray:
        """Time of each envelope column relative to the newest bucket's end (seconds, <= 0)."""
        t = (np.arange(self.n_buckets) - self.n_buckets) * self.bucket / self.sfreq
        return np.repeat(t, 2) + np.tile([0.0, self.bucket / self.sfreq * 0.5], self.n_buckets)
