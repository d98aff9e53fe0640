"""Every metric plug-in through the same checks (the contract in tmseeg.metrics.base).

One simulated session with every plug-in on (EMG included, so the MEP plug-in runs): each
plug-in is a SessionMetric, adds exactly the per-pulse columns it declares to every row (names
with a unit or a known bookkeeping name), gives a JSON-ready summary, runs after the plug-ins
whose columns it reads, and writes its report section without error.
"""
from __future__ import annotations

import importlib
import json
import re

import mne
import pytest

from tmseeg.config import load_config
from tmseeg.metrics import PLUGINS
from tmseeg.metrics.base import SessionMetric, ordered_by_dependencies
from tmseeg.report.analyze import run_session
from tmseeg.sim.accuracy import simulated_recording
from tmseeg.sim.model import SimConfig

#: per-pulse column names that carry no unit by nature (flags, labels, counts, indices)
UNITLESS = {"mep_present", "mep_preinnervated", "mep_rejected", "mep_reason", "mep_site",
            "prestim_phase_bin", "block"}
UNIT = re.compile(r"_(uv|uv2|ms|s|hz|pct|rad|deg)$")
#: the report section of each plug-in that has something to show on this session (PCIst is in
#: the TEP part of the report; block comparisons need two blocks)
SECTIONS = {"mep": "MEP", "connectivity": "Connectivity", "spread": "Spread",
            "oscillations": "Oscillations", "state": "State"}


class _Recorder:
    """Wraps a plug-in's on_epoch to record which columns it added to each row."""

    def __init__(self, metric):
        self.added: list[set[str]] = []
        self.order: list[str] = []
        inner = metric.on_epoch

        def on_epoch(epoch, row):
            before = set(row)
            inner(epoch, row)
            self.added.append(set(row) - before)
            self.order.append(tuple(k for k in row))

        metric.on_epoch = on_epoch


@pytest.fixture(scope="module")
def session():
    rec, _ = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=4,
                                           isi_range_s=(1.0, 1.2)), 36.0)
    import tmseeg.report.analyze as analyze

    recorders = {}
    real = analyze.TEPSession

    class Recorded(real):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for m in self.metrics:
                recorders[m.name] = _Recorder(m)

    analyze.TEPSession = Recorded
    try:
        s = run_session(rec, load_config(), keep_epochs=False)
    finally:
        analyze.TEPSession = real
    return s, recorders


def test_every_plugin_runs_and_is_a_session_metric(session):
    s, _ = session
    names = [m.name for m in s.metrics]
    assert sorted(names) == sorted(p.rsplit(".", 1)[1] for p in PLUGINS), names
    for m in s.metrics:
        assert isinstance(m, SessionMetric) and m.name
        assert s.metric(m.name) is m
    assert s.metric("no-such-plugin") is None


def test_each_plugin_adds_exactly_its_declared_columns_with_units(session):
    s, recorders = session
    assert len(s.pulses) >= 25
    for m in s.metrics:
        rec = recorders[m.name]
        assert len(rec.added) == len(s.pulses), m.name  # every epoch, kept or not
        assert all(added == set(m.columns) for added in rec.added), (m.name, rec.added[0])
        for col in m.columns:
            assert col in UNITLESS or UNIT.search(col), f"{m.name}.{col}: no unit in the name"
    for row in s.pulses:  # and they reach pulses.csv
        for m in s.metrics:
            assert set(m.columns) <= set(row)


def test_summaries_are_json_ready(session):
    s, _ = session
    for name, summary in s.metrics_summary().items():
        json.dumps(summary, allow_nan=False)  # NaN must be null: LSL and JSON readers refuse it
        assert isinstance(summary, dict), name


def test_plugins_run_after_those_whose_columns_they_read(session):
    s, _ = session
    order = [m.name for m in s.metrics]
    for m in s.metrics:
        others = [o for o in order if o != m.name]
        waits = others if "*" in m.after else [a for a in m.after if a in order]
        assert all(order.index(w) < order.index(m.name) for w in waits), (m.name, order)
    # the declared order holds whatever order the modules are listed in
    shuffled = list(reversed(s.metrics))
    again = [m.name for m in ordered_by_dependencies(shuffled)]
    assert again.index("mep") < again.index("state") and again[-1] == "plasticity", again


def test_a_dependency_cycle_is_named():
    class A(SessionMetric):
        name, after = "a", ("b",)

    class B(SessionMetric):
        name, after = "b", ("a",)

    with pytest.raises(ValueError, match="wait for each other: a after \\['b'\\]"):
        ordered_by_dependencies([A(), B()])


def test_every_plugin_writes_its_report_section(session, tmp_path):
    s, _ = session
    report = mne.Report(title="contract", verbose="error")
    sections = {}
    for m in s.metrics:  # every plug-in has the hook; none may fail on a real session
        before = len(report._content)
        m.report(report)
        sections[m.name] = {c.section for c in report._content[before:]}
    report.save(tmp_path / "report.html", open_browser=False, verbose="error")
    html = (tmp_path / "report.html").read_text()
    for name, section in SECTIONS.items():
        assert sections[name] == {section}, (name, sections[name])
        assert section in html


def test_every_plugin_module_has_the_module_level_names():
    for module in PLUGINS:
        mod = importlib.import_module(module)
        assert isinstance(mod.CONFIG_TOML, str) and mod.CONFIG_TOML.lstrip().startswith("[")
        assert callable(mod.make_metric)
