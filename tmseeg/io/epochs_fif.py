"""MNE ``-epo.fif`` written one epoch at a time.

``mne.EpochsArray(...).save`` needs every epoch in one float64 array, then makes a big-endian
float32 copy of it to write: on a 10-minute 64 ch / 5 kHz session (241 epochs of 1 s) that is
556 + 278 MB on top of the epochs the session holds, and it was the peak of ``tmseeg analyze``'s
memory (1.24 GB against 0.72 GB for the rest of the run). This writer lays the file out as MNE's
``Epochs.save`` does (the same blocks and tags in the same order, through MNE's own FIF tag
writers), but writes the data tag's payload epoch by epoch, so no array larger than one epoch
is made. ``mne.read_epochs`` reads it back to the same values, events, drop log and selection
as MNE's save would (``tests/io/test_epochs_fif.py``).

One file holds at most 2 GB (FIF's positions are signed 32-bit); :func:`fits_one_file` says
whether the epochs do, and the caller hands larger sets to MNE's own split save.
"""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# MNE's Epochs.save splits at 2 GB; leave room for the measurement info and the other tags
MAX_DATA_BYTES = 2 ** 31 - 64 * 2 ** 20


def fits_one_file(n_epochs: int, n_channels: int, n_times: int) -> bool:
    """Whether ``n_epochs`` float32 epochs fit in one FIF file."""
    return 4 * n_epochs * n_channels * n_times <= MAX_DATA_BYTES


def write_epochs_fif(path: str | Path, info, epochs_v: Iterable[np.ndarray], n_epochs: int,
                     events: np.ndarray, tmin_s: float, event_id: dict[str, int],
                     selection: np.ndarray, drop_log: tuple) -> None:
    """Write kept epochs to ``path`` (``-epo.fif``), reading them one at a time.

    Parameters
    ----------
    path : path
        Output file; replaced if it exists.
    info : mne.Info
        Channels of every epoch (their calibrations are applied as MNE's save applies them).
    epochs_v : iterable of ndarray, each (n_channels, n_times)
        The kept epochs in volts, in order; each is converted to float32 as it is written.
    n_epochs : int
        How many ``epochs_v`` yields (the data tag's size is written before its data).
    events : ndarray, (n_epochs, 3)
        MNE events of the kept epochs.
    tmin_s : float
        Time of each epoch's first sample relative to its event.
    event_id : dict
        Event names to codes, as in MNE.
    selection : ndarray of int
        Index of each kept epoch among all epochs (MNE's ``selection``).
    drop_log : tuple of tuples
        One entry per epoch, kept or not: empty for a kept epoch, its reasons otherwise.

    Raises
    ------
    ValueError
        When the epochs do not fit in one file (:func:`fits_one_file`), or ``epochs_v`` yields
        a different number of epochs or a different shape than announced (the file is removed:
        a data tag of the wrong size would not read back).
    """
    from mne._fiff.constants import FIFF
    from mne._fiff.meas_info import write_meas_info
    from mne._fiff.write import (end_block, start_and_end_file, start_block, write_float,
                                 write_id, write_int, write_string)

    path = Path(path)
    n_channels, sfreq = info["nchan"], float(info["sfreq"])
    epochs_iter = iter(epochs_v)
    first = next(epochs_iter, None)
    if first is None or n_epochs < 1:
        raise ValueError(f"no epoch to write to {path.name}")
    n_times = first.shape[1]
    if first.shape[0] != n_channels:
        raise ValueError(f"an epoch has {first.shape[0]} channels, the info {n_channels}")
    if not fits_one_file(n_epochs, n_channels, n_times):
        raise ValueError(f"{n_epochs} epochs of {n_channels} x {n_times} samples exceed one "
                         "FIF file's 2 GB; save them with mne's Epochs.save (it splits files)")
    events = np.asarray(events, dtype=np.int32).reshape(-1, 3)
    if events.shape[0] != n_epochs:
        raise ValueError(f"{events.shape[0]} events for {n_epochs} epochs")
    # MNE stores data divided by each channel's calibration (1 for EEG made by create_info)
    decal = 1.0 / np.array([ch["cal"] * ch.get("scale", 1.0) for ch in info["chs"]])
    try:
        with start_and_end_file(path) as fid:
            start_block(fid, FIFF.FIFFB_MEAS)
            write_id(fid, FIFF.FIFF_BLOCK_ID)
            if info["meas_id"] is not None:
                write_id(fid, FIFF.FIFF_PARENT_BLOCK_ID, info["meas_id"])
            write_meas_info(fid, info)
            start_block(fid, FIFF.FIFFB_PROCESSED_DATA)
            start_block(fid, FIFF.FIFFB_MNE_EPOCHS)
            start_block(fid, FIFF.FIFFB_MNE_EVENTS)
            write_int(fid, FIFF.FIFF_MNE_EVENT_LIST, events.T)
            write_string(fid, FIFF.FIFF_DESCRIPTION,
                         ";".join(f"{k}:{v}" for k, v in event_id.items()))
            end_block(fid, FIFF.FIFFB_MNE_EVENTS)
            first_sample = int(round(tmin_s * sfreq))
            write_int(fid, FIFF.FIFF_FIRST_SAMPLE, first_sample)
            write_int(fid, FIFF.FIFF_LAST_SAMPLE, first_sample + n_times - 1)
            write_float(fid, FIFF.FIFF_MNE_EPOCHS_RAW_SFREQ, sfreq)
            header = np.array([FIFF.FIFF_EPOCH, FIFF.FIFFT_FLOAT | FIFF.FIFFT_MATRIX,
                               4 * n_epochs * n_channels * n_times + 4 * 4,
                               FIFF.FIFFV_NEXT_SEQ], dtype=">i4")
            fid.write(header.tobytes())
            _write_epoch_data(fid, itertools.chain([first], epochs_iter),
                              (n_epochs, n_channels, n_times), decal)
            write_string(fid, FIFF.FIFF_MNE_EPOCHS_DROP_LOG, json.dumps(drop_log))
            write_int(fid, FIFF.FIFF_MNE_EPOCHS_SELECTION, np.asarray(selection, np.int32))
            end_block(fid, FIFF.FIFFB_MNE_EPOCHS)
            end_block(fid, FIFF.FIFFB_PROCESSED_DATA)
            end_block(fid, FIFF.FIFFB_MEAS)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _write_epoch_data(fid, epochs_v, shape: tuple[int, int, int], decal: np.ndarray) -> None:
    """The payload of a FIF float matrix tag as ``mne._fiff.write.write_float_matrix`` lays it
    out (big-endian float32, row-major; then the dimensions last-first and their number),
    written one epoch at a time."""
    n_epochs, n_channels, n_times = shape
    scale = decal[:, None]
    written = 0
    for epoch in epochs_v:
        if epoch.shape != (n_channels, n_times):
            raise ValueError(f"epoch {written} has shape {epoch.shape}, expected "
                             f"{(n_channels, n_times)}")
        if written == n_epochs:
            raise ValueError(f"more than the {n_epochs} epochs announced")
        # float64 product, then float32: the values MNE's save writes from its float64 copy
        fid.write(np.asarray(np.asarray(epoch, np.float64) * scale, dtype=">f4").data)
        written += 1
    if written != n_epochs:
        raise ValueError(f"{written} epochs written, {n_epochs} announced")
    fid.write(np.array([n_times, n_channels, n_epochs, 3], dtype=">i4").tobytes())
