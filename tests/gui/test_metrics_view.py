"""The monitor's plug-in panel: every plug-in's summary as labelled numbers with units, from a
real session (blocks, MEPs, phase, connectivity), never a dump of its structure."""
from __future__ import annotations

import re
from dataclasses import replace

import pytest

from tmseeg.gui.metrics_view import metric_lines, metrics_lines
from tmseeg.config import load_config
from tmseeg.report.analyze import run_session
from tmseeg.sim.accuracy import simulated_recording
from tmseeg.sim.model import SimConfig
from tmseeg.stream.block import EVENT_MARKER, Event


@pytest.fixture(scope="module")
def summaries():
    """60 s at 2 kHz with EMG; a "post" block marker half-way."""
    rec, _ = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=3), 60.0)
    events = sorted([*rec.events, Event(sample=60_000, label="post", kind=EVENT_MARKER)],
                    key=lambda e: e.sample)
    session = run_session(replace(rec, events=events), load_config(), keep_epochs=False)
    return session.metrics_summary()


def test_every_plugin_reads_as_labelled_numbers(summaries):
    lines = metrics_lines(summaries)
    text = "\n".join(lines)
    assert not re.search(r"[{}\[\]]|\(start\)\)|n_epochs|_uv\b", text), text  # no structures
    by_start = {name: [ln for ln in lines if ln.startswith(name)] for name in
                ("MEP (EMG)", "PCIst", "Connectivity", "Spread", "Oscillations",
                 "Pre-stimulus", "Blocks")}
    assert all(by_start.values()), by_start
    mep = summaries["mep"]
    assert f"median {mep['median_ptp_uv']:.0f} µV" in by_start["MEP (EMG)"][0]
    assert f"{mep['n_present']} of {mep['n_pulses']} pulses" in by_start["MEP (EMG)"][0]
    osc = summaries["oscillations"]
    if osc.get("n_epochs"):
        assert f"{osc['natural_frequency_hz']:.1f} Hz" in by_start["Oscillations"][0]
    # the block comparison: the effect size and its CI, with the numbers of the summary
    vs = summaries["plasticity"]["per_trial"]["early_tep_ptp_uv"]["vs_baseline"]["post"]
    line = next(ln for ln in lines if "early TEP post vs (start)" in ln)
    assert f"Hedges g {vs['hedges_g']:+.2f}" in line and f"{vs['g_ci'][0]:+.2f}" in line
    top = summaries["connectivity"]["top_pairs"]["wpli"]["alpha"][0]
    assert any("–".join(top["pair"]) in ln and f"{top['post']:.2f}" in ln for ln in lines)


def test_an_unknown_or_odd_summary_is_still_readable():
    assert metric_lines("myplugin", {"value_hz": 10.5, "n": 3, "curve": [1, 2]}) == \
        ["myplugin: value hz 10.5, n 3"]
    # a known plug-in whose summary has another shape: its scalars, not a crash
    odd = {"rate_hz": 250.0, "top_pairs": {"wpli": {"alpha": [{"no_pair": 1}]}}}
    assert metric_lines("connectivity", odd) == ["connectivity: rate hz 250"]
    assert metric_lines("mep", {"n_pulses": 2, "n_present": 1, "median_ptp_uv": None})[0] \
        .startswith("MEP (EMG): 1 of 2 pulses with an MEP, median n/a")
