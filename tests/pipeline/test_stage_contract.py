"""Every stage of the default chain through the same checks (the Stage contract, pipeline/base.py).

The stages run as the session builds them, on a simulated recording with pulse, decay and
muscle artifacts, blinks and a bad channel's worth of noise. Each stage is then fed, alone and
fresh, exactly what it received in that run, cut into blocks of two very different sizes. What
every stage must do, whatever it is:

- release every sample it was given, once, in order, with absolute sample numbers that join
  without a gap or an overlap (hold-back and flush);
- give the same samples and the same events at any block size (live == offline by construction);
- keep the channels it was given (names and count), and a sampling rate.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tmseeg.config import load_config
from tmseeg.pipeline.base import Chain, concat_blocks
from tmseeg.session import build_stages
from tmseeg.sim.accuracy import simulated_recording
from tmseeg.sim.model import SimConfig
from tmseeg.stream.block import blocks_from_array

#: block sizes (samples at 1 kHz): 3 ms, a live amplifier's chunk, and 997 ms
SIZES = (3, 997)


def _drain(stage, blocks) -> list:
    """What ``stage`` releases for ``blocks`` and at the end of the stream (as a chain drains
    it: a stage holding data across a gap releases it piece by piece)."""
    chain = Chain([stage])
    out = [chain.process(b) for b in blocks] + list(chain.flush())
    return [b for b in out if b is not None and (b.n_samples or b.events)]


def _recut(whole, size: int) -> list:
    """``whole`` in blocks of ``size`` samples, each event with the block holding its sample
    (one outside the block's span with the first or the last block)."""
    out = []
    for a in range(0, whole.n_samples, size):
        b = min(a + size, whole.n_samples)
        lo = -np.inf if a == 0 else whole.first_sample + a
        hi = np.inf if b == whole.n_samples else whole.first_sample + b
        out.append(replace(whole, data=whole.data[:, a:b], first_sample=whole.first_sample + a,
                           timestamps=whole.timestamps[a:b],
                           events=[e for e in whole.events if lo <= e.sample < hi]))
    return out


@pytest.fixture(scope="module")
def recorded_inputs():
    """(stage names, each stage's whole input as one block) from one run of the chain."""
    rec, _ = simulated_recording(SimConfig(n_channels=32, sfreq=1000.0, seed=8,
                                           isi_range_s=(1.0, 1.2), muscle_artifact=True), 24.0)
    cfg = load_config()
    chain = build_stages(cfg, rec.meta).chain
    inputs: dict[int, list] = {i: [] for i in range(len(chain.stages))}
    for i, stage in enumerate(chain.stages):
        real = stage.process

        def process(block, real=real, i=i):
            inputs[i].append(block)
            return real(block)

        stage.process = process
    for block in blocks_from_array(rec.data_uv, rec.meta, 50, events=rec.events):
        chain.process(block)
    list(chain.flush())  # the chain pushes each stage's rest through the stages after it
    whole = {i: concat_blocks([b for b in got if b.n_samples or b.events])
             for i, got in inputs.items()}
    return cfg, rec.meta, [s.name for s in chain.stages], whole


def test_the_default_chain_has_its_stages(recorded_inputs):
    _, _, names, _ = recorded_inputs
    for needed in ("checked_marker_pulses", "cut_window", "interp", "decay", "bad_channels",
                   "interpolate_bads", "average_reference"):
        assert needed in names, names


@pytest.mark.parametrize("index", range(10))
def test_each_stage_releases_every_sample_once_and_ignores_block_size(recorded_inputs, index):
    cfg, meta, names, whole = recorded_inputs
    if index >= len(names):
        pytest.skip(f"the default chain has {len(names)} stages")
    given = whole[index]
    assert given.n_samples > 20_000, names[index]
    # the stages after the pulse source see its pulses (~20), the ones before it the markers
    kinds = [e.kind for e in given.events]
    assert kinds.count("pulse" if index > names.index("checked_marker_pulses") else "marker") >= 18
    released = {}
    for size in SIZES:
        stage = build_stages(cfg, meta).chain.stages[index]  # fresh, as the session builds it
        assert stage.name == names[index]
        out = _drain(stage, _recut(given, size))
        starts = [b.first_sample for b in out if b.n_samples]
        stops = [b.first_sample + b.n_samples for b in out if b.n_samples]
        assert starts[0] == given.first_sample, (names[index], size)
        assert starts[1:] == stops[:-1], f"{names[index]}: a gap or an overlap at {size}"
        assert stops[-1] == given.first_sample + given.n_samples, (names[index], size)
        joined = concat_blocks(out)
        assert joined.data.shape[0] == given.data.shape[0]
        assert joined.meta.sfreq == meta.sfreq
        assert len(joined.meta.ch_names) == len(given.meta.ch_names)
        released[size] = joined
    a, b = released[SIZES[0]], released[SIZES[1]]
    np.testing.assert_allclose(a.data, b.data, rtol=1e-9, atol=1e-9,
                               err_msg=f"{names[index]} depends on the block size")
    ev = [[(e.sample, e.kind, e.label) for e in sorted(x.events, key=lambda e: (e.sample, e.kind))]
          for x in (a, b)]
    assert ev[0] == ev[1], f"{names[index]}: events depend on the block size"
