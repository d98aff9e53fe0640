"""``tmseeg config --check``: a configuration a session would refuse is refused before it.

Keys, types and the pipeline's own rules are checked when the file is read; the metric
plug-ins' rules by a rehearsal on a short simulated recording (tmseeg.report.rehearse). Each
bad value below was accepted by ``config --check`` before the rehearsal and failed only once a
session was built or cut its first epochs.
"""
from __future__ import annotations

import pytest

from tmseeg.cli import main
from tmseeg.config import ConfigError, load_config

#: a rehearsal small enough for the suite: the session's own limits do not depend on it
SMALL = ["--channels", "32", "--sfreq", "2000"]


@pytest.mark.parametrize("toml, named", [
    ('[connectivity]\nmethods = ["nonsense"]\n', "connectivity.methods ['nonsense']"),
    ('[spread]\nnull = "shuffled"\n', "null='shuffled'"),
    ('[pcist]\nresponse_window_ms = [0.0, 900.0]\n', "response_window_ms"),
    ('[oscillations]\nspacing = "octaves"\n', "spacing='octaves'"),
    ('[mep]\nwindow_ms = [50.0, 15.0]\n', "window_ms=(50.0, 15.0)"),
    ('[blocks]\npattern = "pre("\n', "blocks.pattern 'pre(' is not a regular expression"),
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
