"""Live equals offline on recordings we did not make.

Every family of the outside benchmark (``benchmarks/outside/tmsgen.py``: ringing, saturation,
decays, muscle, paired pulses marked on the test pulse only, stim-channel codes nobody named,
no markers at all, blinks, a bad electrode; BrainVision, FIF, EDF, EEGLAB; 1-20 kHz) is written
to its file format, replayed over LSL into the live engine, and analysed offline from the same
file. Every decision (where the pulses are, which label is the pulse, which artifacts have no
marker, the cut window, marker lag, decay fits, bad channels) is made by the same stages, so
the per-pulse values and the averaged TEP agree to 1e-6.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.outside import tmsgen  # noqa: E402
from tmseeg.config import load_config  # noqa: E402
from tmseeg.report.analyze import run_session  # noqa: E402
from tmseeg.io.files import read_recording  # noqa: E402

#: pulses per short recording: enough for every decision made on the first pulses (5)
N_PULSES = 7
#: per-pulse values compared
PULSE_KEYS = ("sample", "label", "kept", "reason", "early_tep_ptp_uv", "max_ptp_uv",
              "n_bad_channels", "snr_after", "decay_method", "decay_channels", "decay_max_uv")


@pytest.fixture(scope="module")
def outside_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("outside")
    paths = {}
    for family in tmsgen.FAMILIES:
        rec = tmsgen.make_recording(family, n_pulses=N_PULSES, seed=4)
        paths[family] = Path(tmsgen.write_recording(rec, root)["data_path"])
    return paths


@pytest.mark.slow  # real time on LSL
@pytest.mark.parametrize("family", list(tmsgen.FAMILIES))
def test_live_replay_equals_offline_analysis_on_outside_recordings(family, outside_files,
                                                                   live_replay):
    path = outside_files[family]
    cfg = load_config()
    offline = run_session(read_recording(path), cfg, keep_epochs=False)
    live = live_replay(path, cfg, speed=4.0)
    assert len(offline.pulses) >= N_PULSES - 1, family  # every test pulse has its epoch
    assert [p["sample"] for p in live.pulses] == [p["sample"] for p in offline.pulses], (
        live.stages.pulse_source.summary(), offline.stages.pulse_source.summary())
    for a, b in zip(live.pulses, offline.pulses):
        for key in PULSE_KEYS:
            if isinstance(b.get(key), float):
                assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9, nan_ok=True), key
            else:
                assert a.get(key) == b.get(key), (key, a.get(key), b.get(key))
    assert live.tep.n == offline.tep.n > 0
    scale = np.abs(offline.tep.average_uv).max()
    np.testing.assert_allclose(live.tep.average_uv, offline.tep.average_uv,
                               rtol=1e-6, atol=1e-6 * scale)
    # the decisions themselves
    for stage in ("pulse_source", "cut_window"):  # as JSON: NaN equals NaN there
        assert (json.dumps(getattr(live.stages, stage).summary(), sort_keys=True)
                == json.dumps(getattr(offline.stages, stage).summary(), sort_keys=True)), stage
    assert live.stages.coil.site == offline.stages.coil.site
    assert dict(live.stages.bad_detector.bads) == dict(offline.stages.bad_detector.bads)
    assert live.live_offline_differences() == offline.live_offline_differences() == []
