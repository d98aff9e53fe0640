"""Processing stages: small stateful objects with one ``process(block) -> block`` method.

A stage may hold samples back (a pulse interpolator must see the end of its cut window before it
can release the samples in it); the block it returns then starts earlier than the one it was
given, and may be empty. Sample indices stay absolute, so later stages never lose track.
Offline, :meth:`Stage.flush` releases what is still held at the end of a file. The same chain
of stage objects runs on a live stream and on a file: that is what makes live and offline
numbers identical.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

from tmseeg.stream.block import Block, Event


def ms_to_samples(ms: float, sfreq: float) -> int:
    """Round a duration in ms to whole samples (half away from zero, symmetric for +/-)."""
    x = ms * sfreq / 1000.0
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


@runtime_checkable
class Stage(Protocol):
    """What every pipeline stage provides."""

    #: short name used in configs, logs and timing tables
    name: str

    def process(self, block: Block) -> Block:
        """Take the next block of the stream and return the processed (possibly delayed) block."""
        ...

    def flush(self) -> Block | None:
        """Release samples still held back at the end of the stream (None if nothing is held)."""
        ...

    def reset(self) -> None:
        """Forget all state (a new stream begins)."""
        ...


class StatelessStage:
    """Base for stages with no hold-back: ``flush`` and ``reset`` do nothing."""

    name = "stage"

    def process(self, block: Block) -> Block:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self) -> Block | None:
        return None

    def reset(self) -> None:
        return None


def concat_blocks(blocks: list[Block]) -> Block:
    """Join consecutive blocks of one stream into one (events kept in order)."""
    if not blocks:
        raise ValueError("concat_blocks needs at least one block")
    for a, b in zip(blocks, blocks[1:]):
        if a.stop_sample != b.first_sample:
            raise ValueError(
                f"blocks are not consecutive: one ends at {a.stop_sample}, next starts at "
                f"{b.first_sample}"
            )
    first = blocks[0]
    events: list[Event] = [e for b in blocks for e in b.events]
    return Block(
        data=np.concatenate([b.data for b in blocks], axis=1),
        first_sample=first.first_sample,
        timestamps=np.concatenate([b.timestamps for b in blocks]),
        meta=first.meta,
        events=events,
        received_s=blocks[-1].received_s,
    )


def empty_block_like(block: Block, first_sample: int | None = None) -> Block:
    """A zero-sample block of the same stream (what a stage returns while it holds data back)."""
    return Block(
        data=np.empty((block.meta.n_channels, 0)),
        first_sample=block.first_sample if first_sample is None else first_sample,
        timestamps=np.empty(0),
        meta=block.meta,
        events=[],
        received_s=block.received_s,
    )


class Chain:
    """Stages run in a declared order; a block goes in, the processed block comes out.

    Parameters
    ----------
    stages : iterable of Stage
        In processing order.
    """

    def __init__(self, stages: Iterable[Stage]) -> None:
        self.stages: list[Stage] = list(stages)

    def process(self, block: Block) -> Block:
        for stage in self.stages:
            block = stage.process(block)
        return block

    def flush(self) -> Iterator[Block]:
        """Drain held-back samples stage by stage, pushing each stage's rest through the rest."""
        for i, stage in enumerate(self.stages):
            while True:
                rest = stage.flush()
                if rest is not None and (rest.n_samples or rest.events):
                    for later in self.stages[i + 1:]:
                        rest = later.process(rest)
                    yield rest
                # a stage holding data across a gap in the stream (HeldBlocks) releases it
                # piece by piece
                if rest is None or not getattr(stage, "holds_more", False):
                    break

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()


class HeldBlocks:
    """Blocks a stage holds back, released up to a sample (a block is split where needed).

    Shared by the stages that wait for data before deciding (the cut window, the pulse
    source): :meth:`release` returns everything before a sample as one block, keeping events
    with their samples; across a gap in the stream it returns only the piece before the gap
    (the rest waits for the next call), so a released block is always gap-free.
    """

    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def push(self, block: Block) -> None:
        """Hold ``block``. Its events whose sample lies in an earlier held block (a marker
        that arrived late) move to that block, so they leave with their sample: on time for
        the stages after this one."""
        if self.blocks and any(e.sample < block.first_sample for e in block.events):
            own = []
            for e in block.events:
                home = self._holding(e.sample)
                if home is None:
                    own.append(e)
                else:
                    held = self.blocks[home]
                    self.blocks[home] = replace(held, events=sorted(
                        [*held.events, e], key=lambda ev: ev.sample))
            block = replace(block, events=own)
        self.blocks.append(block)

    def _holding(self, sample: int) -> int | None:
        """Index of the held block that holds ``sample`` (None: released, in a gap, or not
        yet held). Late events are rare and land near the newest blocks: search from there."""
        for k in range(len(self.blocks) - 1, -1, -1):
            b = self.blocks[k]
            if b.first_sample <= sample < b.stop_sample:
                return k
            if b.stop_sample <= sample:
                return None
        return None

    @property
    def start(self) -> int:
        """First held sample."""
        return self.blocks[0].first_sample

    @property
    def stop(self) -> int:
        """One past the last held sample."""
        return self.blocks[-1].stop_sample

    def events(self) -> Iterator[Event]:
        """The held events, block by block."""
        for b in self.blocks:
            yield from b.events

    def release(self, upto: int, like: Block | None = None) -> Block:
        """The held samples before ``upto`` (an empty block when there are none).

        ``like`` is the block an empty result is modelled on when nothing is held.
        """
        out: list[Block] = []
        blocks = self.blocks
        while blocks and blocks[0].stop_sample <= upto:
            out.append(blocks.pop(0))
        if blocks and blocks[0].first_sample < upto:
            first = blocks[0]
            k = upto - first.first_sample
            out.append(Block(first.data[:, :k], first.first_sample, first.timestamps[:k],
                             first.meta, [e for e in first.events if e.sample < upto],
                             first.received_s))
            blocks[0] = Block(first.data[:, k:], upto, first.timestamps[k:], first.meta,
                              [e for e in first.events if e.sample >= upto], first.received_s)
        if not out:
            ref = blocks[0] if blocks else like
            if ref is None:
                raise RuntimeError("nothing held and nothing to release")
            return empty_block_like(ref, first_sample=ref.first_sample)
        gaps = [i for i in range(1, len(out)) if out[i - 1].stop_sample != out[i].first_sample]
        if gaps:  # a gap in the stream: keep the first piece, the rest waits for the next call
            blocks[:0] = out[gaps[0]:]
            out = out[:gaps[0]]
        return concat_blocks(out) if len(out) > 1 else out[0]
