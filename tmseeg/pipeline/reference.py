"""Common average reference as a pipeline stage."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tmseeg.pipeline.channels import bad_segments, resolve_picks
from tmseeg.stream.block import Block

__all__ = ["AverageReference", "average_reference"]


def average_reference(data_uv: np.ndarray, use: np.ndarray | None = None) -> np.ndarray:
    """Subtract, at every sample, the mean of the ``use`` rows from all rows.

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples)
        EEG rows only.
    use : ndarray of bool, shape (n_channels,), optional
        Rows that make up the reference (default all).

    Returns
    -------
    ndarray, shape (n_channels, n_samples)

    Notes
    -----
    NaN in a reference row leaves that row out of the mean for those samples only (a channel
    sending NaN does not blank the whole head); samples where no reference row is finite are
    NaN everywhere.
    """
    x = data_uv if use is None else data_uv[use]
    finite = np.isfinite(x)
    if finite.all():
        ref = x.mean(axis=0)
    else:
        count = finite.sum(axis=0)
        total = np.where(finite, x, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return data_uv - ref[None, :]


class AverageReference:
    """Re-reference the EEG channels to their common average.

    Parameters
    ----------
    exclude_bads : bool
        Leave bad channels out of the average (default True). They are still re-referenced,
        so after :class:`~tmseeg.pipeline.channels.BadChannelInterpolation` (which runs first in
        the default chain) every channel is on the same reference.
    bads_from : object with a ``bads`` mapping, optional
        Usually the session's :class:`~tmseeg.pipeline.channels.BadChannelDetector`, read at
        every block.
    bads : sequence of str
        Fixed bad channels.
    picks : str or sequence of str
        The channels referenced (default ``"eeg"``). EMG, EOG, stim and misc channels are
        never touched unless picked explicitly.
    """

    name = "average_reference"

    def __init__(
        self,
        exclude_bads: bool = True,
        bads_from=None,
        bads: Sequence[str] = (),
        picks: str | Sequence[str] = "eeg",
    ) -> None:
        self.exclude_bads = exclude_bads
        self.bads_from = bads_from
        self.fixed_bads = list(bads)
        self.picks = picks
        self._rows: np.ndarray | None = None
        self._names: list[str] = []

    def current_bads(self) -> set[str]:
        """Bad channels excluded from the average now."""
        out = set(self.fixed_bads)
        if self.bads_from is not None:
            out |= set(self.bads_from.bads)
        return out

    def process(self, block: Block) -> Block:
        """Return the block with its picked channels on the average reference."""
        if self._rows is None:
            self._rows = resolve_picks(block.meta, self.picks)
            self._names = [block.meta.ch_names[i] for i in self._rows]
        if block.n_samples == 0 or len(self._rows) == 0:
            return block
        data = block.data.copy()
        segments = (bad_segments(self.bads_from, self.fixed_bads, block.first_sample,
                                 block.stop_sample) if self.exclude_bads
                    else [(block.first_sample, block.stop_sample, frozenset())])
        for a, b, bads in segments:
            use = None
            if bads:
                use = np.array([n not in bads for n in self._names])
                if not use.any():
                    raise ValueError(
                        "AverageReference: every EEG channel is marked bad; nothing left to "
                        "average. Check the electrodes or clear the bad-channel list."
                    )
            sl = slice(a - block.first_sample, b - block.first_sample)
            data[self._rows, sl] = average_reference(block.data[self._rows, sl], use)
        return block.with_data(data)

    def flush(self) -> Block | None:
        """Nothing is held back."""
        return None

    def reset(self) -> None:
        """Forget the channel layout."""
        self._rows = None
