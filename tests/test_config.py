"""``tmseeg config --check``: a configuration a session would refuse is refused before it.

Keys, types and every section's own rules (the pipeline's and each plug-in's typed section,
tmseeg.sections) are checked when the file is read; what depends on the stream (the epoch's
length, files a setting names) by a rehearsal on a short simulated recording
(tmseeg.report.rehearse). Each bad value below was once accepted by ``config --check`` and
failed only once a session was built or cut its first epochs.
"""
from __future__ import annotations

import dataclasses
import re

import pytest

from tmseeg.cli import main
from tmseeg.config import ConfigError, config_with, load_config

#: a rehearsal small enough for the suite: the session's own limits do not depend on it
SMALL = ["--channels", "32", "--sfreq", "2000"]


@pytest.mark.parametrize("toml, named", [
    ('[connectivity]\nmethods = ["nonsense"]\n', "connectivity.methods ['nonsense']"),
    ('[spread]\nnull = "shuffled"\n', "null='shuffled'"),
    ('[oscillations]\nspacing = "octaves"\n', "spacing='octaves'"),
    ('[mep]\nwindow_ms = [50.0, 15.0]\n',
     "mep.window_ms must be [start, stop] with start < stop, got [50.0, 15.0]"),
    ('[blocks]\npattern = "pre("\n', "blocks.pattern 'pre(' is not a regular expression"),
    ('[state]\nphase_bins = 1\n', "state.phase_bins=1"),
    ('[decay]\nmodel = "triple_exp"\n', "decay.model must be"),
    ('[decay]\nown_window_end_ms = 5.0\n', "own_window_end_ms = 5 must come after"),
    ('[interpolation]\nrecharge_delay_ms = -80.0\n', "recharge_delay_ms must be >= 0"),
    ('[interpolation]\nrecharge_delay_ms = 0.5\n', "must start after the pulse"),
])
def test_each_section_refuses_its_own_bad_values_when_read(tmp_path, capsys, toml, named):
    """A plug-in's section checks its values as the file is read (no rehearsal needed)."""
    path = tmp_path / "lab.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(path)
    assert main(["config", "--check", str(path), "--no-rehearsal"]) == 1
    err = capsys.readouterr().err
    assert named in err, err


def test_recharge_delay_puts_a_cut_at_that_delay_into_the_chain():
    """``[interpolation] recharge_delay_ms``: a second cut, at the stimulator's recharge
    delay, right after the pulse's own and before the decay fit whose window it lies in."""
    from tmseeg.session import build_stages
    from tmseeg.stream.block import StreamMeta

    meta = StreamMeta(ch_names=["C3", "C4", "Cz", "Pz"], sfreq=5000.0, ch_types=["eeg"] * 4)
    assert "recharge" not in build_stages(load_config(), meta).names
    names = build_stages(load_config(overrides={"interpolation": {"recharge_delay_ms": 80.0}}),
                         meta).names
    assert names.index("interp") < names.index("recharge") < names.index("decay")
    stage = build_stages(load_config(overrides={"interpolation": {
        "recharge_delay_ms": 80.0, "recharge_window_ms": [-0.5, 3.0]}}), meta).chain.stages[
            names.index("recharge")]
    assert stage.window_ms == (79.5, 83.0) and stage.delay_ms == 80.0


def test_sections_are_typed_and_read_both_ways():
    cfg = load_config(overrides={"decay": {"min_r2": 0.4}})
    assert cfg.decay.min_r2 == 0.4 == cfg["decay"]["min_r2"]
    assert cfg.connectivity.methods == ["wpli", "plv", "coh"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.decay.min_r2 = 0.9  # a session's configuration cannot change under it
    assert config_with(cfg, {"epochs": {"reject_uv": 0.0}}).epochs.reject_uv == 0.0
    assert cfg.epochs.reject_uv == 150.0
    assert load_config(overrides=cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="reference.type"):
        config_with(cfg, {"reference": {"type": "linked_mastoids"}})


@pytest.mark.parametrize("toml, named", [
    ('[pcist]\nresponse_window_ms = [0.0, 900.0]\n', "response_window_ms"),
    ('[pulses]\ntable = "no_such_table.csv"\n', "no_such_table.csv does not exist"),
])
def test_check_refuses_what_a_session_would(tmp_path, capsys, toml, named):
    path = tmp_path / "lab.toml"
    path.write_text(toml)
    load_config(path)  # the keys and types are right: only a session knew better
    assert main(["config", "--check", str(path), "--no-rehearsal"]) == 0
    capsys.readouterr()
    assert main(["config", "--check", str(path)] + SMALL) == 1
    err = capsys.readouterr().err
    assert f"{path}: a session would refuse this configuration" in err, err
    assert named in err, err


def test_check_passes_a_lab_file_and_says_what_it_rehearsed(tmp_path, capsys):
    """Channel names the simulated cap lacks (the lab's ROI, EMG and trigger channels) are left
    to the session; everything else ran, every plug-in included."""
    path = tmp_path / "lab.toml"
    path.write_text('[pulses]\nsource = "trigger"\ntrigger_channel = "TRIG"\n'
                    'pattern = "TMS/(?P<intensity_pct>\\\\d+)"\n'
                    '[coil]\nroi = ["C3", "CCP3h"]\n'
                    '[mep]\nchannel = "APB"\n'
                    '[channels.types]\nAPB = "emg"\n'
                    '[spread]\nnull = "baseline"\n')
    assert main(["config", "--check", str(path)] + SMALL) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: valid; rehearsed on a simulated"), out
    assert "(32 EEG channels + EMG, 2000 Hz)" in out
    n_pulses = int(out.split("Hz): ")[1].split(" pulses")[0])
    assert n_pulses >= 30  # PCIst and spread summarise from 20 epochs, every 10
    for plugin in ("mep", "pcist", "connectivity", "spread", "oscillations", "state",
                   "plasticity"):
        assert plugin in out.split("plug-ins ")[1], out


def test_unknown_keys_and_bad_patterns_are_refused_without_a_rehearsal(tmp_path, capsys):
    path = tmp_path / "typo.toml"
    path.write_text("[connectivity]\nmethod = ['wpli']\n")
    assert main(["config", "--check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "unknown configuration key 'connectivity.method'" in err and "methods" in err, err
    path.write_text('[pulses]\npattern = "TMS("\n')
    with pytest.raises(ConfigError, match="pulses.pattern 'TMS\\(' is not a regular expression"):
        from tmseeg.report.rehearse import rehearse_config
        rehearse_config(load_config(path), n_channels=32, sfreq_hz=2000.0)
