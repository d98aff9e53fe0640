"""A fixed-capacity multichannel ring buffer indexed by absolute sample number.

Writes copy only the new samples at a head pointer (Cython kernel, O(block) whatever the
capacity); nothing ever shifts the whole buffer. Readers ask for "the last N samples" or for an
absolute sample range; asking for samples that were already overwritten raises
:class:`OverwrittenError` instead of returning wrong data.
"""
from __future__ import annotations

import threading

import numpy as np

from tmseeg._ext.ringbuf import ring_read, ring_write, ring_write_samples


class OverwrittenError(LookupError):
    """The requested samples are older than what the ring buffer still holds."""


class NotYetAvailableError(LookupError):
    """The requested samples have not been received yet."""


class RingBuffer:
    """Multichannel ring buffer of float64 samples.

    Parameters
    ----------
    n_channels : int
        Rows of the buffer.
    capacity : int
        Samples kept (e.g. ``int(10 * sfreq)`` for ten seconds).

    Notes
    -----
    Sample indices are absolute: the first sample ever written is 0, and ``n_written`` is one
    past the newest. Gaps are written as NaN with :meth:`write_gap`, so indices stay aligned with
    the stream's sample counter. A lock makes single writer / many readers safe across threads.
    """

    def __init__(self, n_channels: int, capacity: int) -> None:
        if n_channels < 1 or capacity < 1:
            raise ValueError(f"RingBuffer needs n_channels >= 1 and capacity >= 1, "
                             f"got {n_channels}, {capacity}")
        self._ring = np.zeros((n_channels, capacity), dtype=np.float64)
        self._head = 0
        self._n_written = 0
        self._lock = threading.Lock()

    @property
    def n_channels(self) -> int:
        return self._ring.shape[0]

    @property
    def capacity(self) -> int:
        return self._ring.shape[1]

    @property
    def n_written(self) -> int:
        """One past the absolute index of the newest sample."""
        return self._n_written

    @property
    def first_available(self) -> int:
        """Absolute index of the oldest sample still in the buffer."""
        return max(0, self._n_written - self.capacity)

    def write(self, data: np.ndarray) -> None:
        """Append a block ``(n_channels, n)``; only its newest ``capacity`` samples are kept."""
        data = np.ascontiguousarray(data, dtype=np.float64)
        n = data.shape[1]
        with self._lock:
            if n > self.capacity:
                self._head = 0
                data = data[:, n - self.capacity:]
                self._n_written += n - self.capacity
                n = self.capacity
                data = np.ascontiguousarray(data)
            self._head = ring_write(self._ring, data, self._head)
            self._n_written += n

    def write_samples(self, samples: np.ndarray, scale: float = 1.0) -> None:
        """Append an LSL chunk ``(n, n_channels)`` (float32 or float64), scaled by ``scale``.

        Transposition, conversion and scaling happen in one pass of the Cython kernel.
        """
        if samples.dtype not in (np.float32, np.float64):
            samples = samples.astype(np.float64)
        samples = np.ascontiguousarray(samples)
        n = samples.shape[0]
        with self._lock:
            if n > self.capacity:
                self._n_written += n - self.capacity
                samples = np.ascontiguousarray(samples[n - self.capacity:])
                n = self.capacity
            self._head = ring_write_samples(self._ring, samples, self._head, float(scale))
            self._n_written += n

    def write_gap(self, n_missing: int) -> None:
        """Advance over ``n_missing`` samples that never arrived, filling them with NaN."""
        if n_missing <= 0:
            return
        fill = min(n_missing, self.capacity)
        with self._lock:
            self._n_written += n_missing - fill
            self._head = (self._head + n_missing - fill) % self.capacity
            nan_block = np.full((self.n_channels, fill), np.nan)
            self._head = ring_write(self._ring, nan_block, self._head)
            self._n_written += fill

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Copy of absolute samples ``[start, stop)`` as ``(n_channels, stop - start)``.

        Raises
        ------
        OverwrittenError
            If ``start`` is older than :attr:`first_available`.
        NotYetAvailableError
            If ``stop`` is beyond the newest sample.
        """
        if stop < start:
            raise ValueError(f"read range is reversed: start={start} > stop={stop}")
        n = stop - start
        if out is None:
            out = np.empty((self.n_channels, n), dtype=np.float64)
        elif out.shape != (self.n_channels, n) or out.dtype != np.float64:
            raise ValueError(f"out must be float64 of shape {(self.n_channels, n)}")
        with self._lock:
            if start < self.first_available:
                raise OverwrittenError(
                    f"samples {start}..{stop} were overwritten: the buffer now holds "
                    f"{self.first_available}..{self._n_written} (capacity {self.capacity}). "
                    "Read sooner or make the buffer longer."
                )
            if stop > self._n_written:
                raise NotYetAvailableError(
                    f"samples up to {stop} requested but only {self._n_written} received so far"
                )
            ring_start = (self._head - (self._n_written - start)) % self.capacity
            ring_read(self._ring, ring_start, out)
        return out

    def latest(self, n: int) -> np.ndarray:
        """Copy of the newest ``n`` samples (fewer if fewer were ever written)."""
        n = min(n, self._n_written, self.capacity)
        stop = self._n_written
        return self.read(stop - n, stop)
