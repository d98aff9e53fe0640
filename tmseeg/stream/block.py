"""The unit of data that flows through the engine: a :class:`Block` of samples.

Every source (LSL inlet, file replay, in-process simulator) produces blocks; every pipeline
stage takes a block and returns a block. Data are always ``(n_channels, n_samples)`` float64
in microvolts, indexed by an absolute sample counter that starts at 0 with the first sample
the engine received and advances across gaps (missing samples are never silently bridged).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

#: Event kinds used throughout the engine.
EVENT_PULSE = "pulse"  # a TMS pulse (from a marker, a trigger channel or detected in the data)
EVENT_MARKER = "marker"  # any other marker (block labels such as "pre"/"post", protocol notes)
EVENT_GAP = "gap"  # samples missing from the stream (duration in samples in ``Event.duration``)
#: what the lab knows about a pulse, sent apart from it (a second LSL stream of JSON, a
#: ``PulseInfo`` marker in a recording): ``extra["pulse_info"]``, joined to the pulse nearest
#: in time by :class:`tmseeg.stream.pulseinfo.PulseInfoJoin`
EVENT_INFO = "info"


@dataclass(frozen=True)
class Event:
    """Something that happened at one sample of the EEG stream.

    Parameters
    ----------
    sample : int
        Absolute sample index in the EEG stream (same counter as ``Block.first_sample``).
    label : str
        The marker text (e.g. ``"TMS"``, ``"pre"``); for pulses the original marker text.
    kind : str
        One of ``"pulse"``, ``"marker"``, ``"gap"``, ``"info"``.
    time_s : float
        Time of the event on the local LSL clock, in seconds (NaN when unknown).
    duration : int
        Length in samples (gaps; 0 for point events).
    extra : dict
        Free-form key/values carried along (intensity, source, ...).
    """

    sample: int
    label: str
    kind: str = EVENT_MARKER
    time_s: float = float("nan")
    duration: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class StreamMeta:
    """What is fixed for the lifetime of a stream: channels, rate and where it came from.

    Parameters
    ----------
    ch_names : list of str
        Channel labels, in data row order.
    sfreq : float
        Nominal sampling rate in Hz.
    ch_types : list of str
        MNE channel types (``"eeg"``, ``"emg"``, ``"stim"``, ``"misc"``, ``"eog"``).
    name : str
        Stream or file name, for status displays and recordings.
    source_id : str
        LSL source id (empty for files).
    original_names : tuple of str
        The labels as the file or stream gave them, when some were renamed on the way in
        (:func:`~tmseeg.stream.montage.tidy_channel_names`); empty when none was. Not part
        of equality.
    """

    ch_names: tuple[str, ...]
    sfreq: float
    ch_types: tuple[str, ...] = ()
    name: str = ""
    source_id: str = ""
    original_names: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_names", tuple(self.ch_names))
        types = tuple(self.ch_types) if self.ch_types else ("eeg",) * len(self.ch_names)
        if len(types) != len(self.ch_names):
            raise ValueError(
                f"StreamMeta: {len(self.ch_names)} channel names but {len(types)} channel types; "
                "give one type per channel."
            )
        object.__setattr__(self, "ch_types", types)
        object.__setattr__(self, "original_names", tuple(self.original_names))
        if self.original_names and len(self.original_names) != len(self.ch_names):
            raise ValueError(
                f"StreamMeta: {len(self.ch_names)} channel names but {len(self.original_names)} "
                "original names; give one per channel (or none)."
            )
        if not self.sfreq > 0:
            raise ValueError(f"StreamMeta: sampling rate must be positive, got {self.sfreq!r}.")

    @property
    def n_channels(self) -> int:
        return len(self.ch_names)

    @property
    def renamed(self) -> dict[str, str]:
        """Original label -> current name, for the channels renamed on the way in."""
        return {o: n for o, n in zip(self.original_names, self.ch_names) if o != n}

    def picks(self, kind: str) -> np.ndarray:
        """Row indices of the channels of one MNE type (e.g. ``"eeg"``)."""
        return np.array([i for i, t in enumerate(self.ch_types) if t == kind], dtype=np.intp)

    def index(self, names: Sequence[str] | str) -> np.ndarray:
        """Row indices of channels by name; a clear error lists what exists when one is missing."""
        if isinstance(names, str):
            names = [names]
        lookup = {n.lower(): i for i, n in enumerate(self.ch_names)}
        missing = [n for n in names if n.lower() not in lookup]
        if missing:
            raise KeyError(
                f"channel(s) {missing} not in stream {self.name!r}; it has: "
                f"{', '.join(self.ch_names)}"
            )
        return np.array([lookup[n.lower()] for n in names], dtype=np.intp)


@dataclass
class Block:
    """A run of consecutive samples and the events that fall in it.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Samples in microvolts (float64).
    first_sample : int
        Absolute index of ``data[:, 0]``.
    timestamps : ndarray, shape (n_samples,)
        Dejittered local LSL time of each sample, in seconds.
    meta : StreamMeta
        Channels and rate of the stream.
    events : list of Event
        Events whose sample lies in this block, or earlier events that became known only now
        (a marker that arrived late); stages never drop events they do not understand.
    received_s : float
        Local LSL clock time at which the newest sample of this block was pulled (NaN for files);
        used to report processing latency.
    """

    data: np.ndarray
    first_sample: int
    timestamps: np.ndarray
    meta: StreamMeta
    events: list[Event] = field(default_factory=list)
    received_s: float = float("nan")

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"Block data must be 2-D (n_channels, n_samples), got {self.data.shape}")
        if self.data.shape[0] != self.meta.n_channels:
            raise ValueError(
                f"Block has {self.data.shape[0]} rows but the stream declares "
                f"{self.meta.n_channels} channels ({self.meta.name!r}): channel-count mismatch."
            )
        if self.timestamps.shape != (self.data.shape[1],):
            raise ValueError(
                f"Block timestamps have shape {self.timestamps.shape}, "
                f"expected ({self.data.shape[1]},)"
            )

    @property
    def n_samples(self) -> int:
        return self.data.shape[1]

    @property
    def stop_sample(self) -> int:
        """One past the last absolute sample index of this block."""
        return self.first_sample + self.data.shape[1]

    def with_data(self, data: np.ndarray) -> "Block":
        """A copy of this block carrying new data (same samples, events and times)."""
        return replace(self, data=data, events=list(self.events))

    def pulses(self) -> list[Event]:
        """The pulse events of this block."""
        return [e for e in self.events if e.kind == EVENT_PULSE]


def blocks_from_array(
    data_uv: np.ndarray,
    meta: StreamMeta,
    block_size: int,
    events: Sequence[Event] = (),
    t0_s: float = 0.0,
):
    """Cut a whole recording into consecutive blocks, as a live stream would deliver it.

    This is how offline analysis feeds a file through the very same stages as the live path.

    Parameters
    ----------
    data_uv : ndarray, shape (n_channels, n_samples)
        The recording in microvolts.
    meta : StreamMeta
        Channels and rate.
    block_size : int
        Samples per block (the last block may be shorter).
    events : sequence of Event
        Events of the recording; each is attached to the block that contains its sample.
    t0_s : float
        Time of sample 0, in seconds.

    Yields
    ------
    Block
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n_samples = data_uv.shape[1]
    ordered = sorted(events, key=lambda e: e.sample)
    k = 0
    for start in range(0, n_samples, block_size):
        stop = min(start + block_size, n_samples)
        block_events = []
        while k < len(ordered) and ordered[k].sample < stop:
            block_events.append(ordered[k])
            k += 1
        yield Block(
            data=np.ascontiguousarray(data_uv[:, start:stop], dtype=np.float64),
            first_sample=start,
            timestamps=t0_s + np.arange(start, stop) / meta.sfreq,
            meta=meta,
            events=block_events,
        )
