"""`tmseeg run` on a live simulated amplifier: TEP updates on the tmseeg-metrics stream."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pylsl

from tmseeg.sim.amplifier import SimulatedAmplifier
from tmseeg.sim.model import SimConfig


def test_run_publishes_pulse_updates_with_latency(tmp_path, uid):
    name = f"run-{uid}"
    amp = SimulatedAmplifier(SimConfig(n_channels=32, sfreq=5000.0, seed=2,
                                       isi_range_s=(0.8, 1.0)), name=name,
                             listen_triggers=False)
    amp.start()
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmseeg.cli", "run", "--stream", name, "--markers",
         f"{name}-markers", "--duration", "14", "--record", str(tmp_path / "rec")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        infos = pylsl.resolve_byprop("source_id", f"tmseeg-metrics-{amp.source_id}", timeout=30)
        if not infos:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"no tmseeg-metrics stream appeared; run said:\n{out[-2000:]}"
                                 f"\n{err[-3000:]}")
        assert infos[0].name() == "tmseeg-metrics" and infos[0].type() == "Metrics"
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(timeout=5)
        messages = []
        deadline = time.monotonic() + 16
        while time.monotonic() < deadline and proc.poll() is None:
            sample, _ = inlet.pull_sample(timeout=0.2)
            if sample is not None:
                messages.append(json.loads(sample[0]))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        amp.stop()
    assert proc.returncode == 0, err
    pulses = [m for m in messages if m["type"] == "pulse"]
    status = [m for m in messages if m["type"] == "status"]
    assert len(pulses) >= 5, (len(messages), err[-2000:])
    assert status and status[-1]["n_channels"] == 33
    # the engine numbers samples from the first one it received, so its pulse samples are the
    # true ones minus a constant: the sequence of intervals must appear in the truth, exactly
    true_samples = np.array([p.sample for p in amp.truth.pulses])
    got = np.array([m["pulse"]["sample"] for m in pulses])
    offsets = [k for k in range(len(true_samples) - len(got) + 1)
               if np.all(np.abs((true_samples[k:k + len(got)] - true_samples[k])
                                - (got - got[0])) <= 1)]
    assert len(offsets) == 1, (got, true_samples)
    last = pulses[-1]
    assert last["tep"]["n_averaged"] >= 3
    assert last["tep"]["coil_site"] == "C3"
    lat = [m["latency_ms"] for m in pulses if m["latency_ms"] is not None]
    # an epoch update goes out promptly after its last block; the first ones wait for the
    # decisions made on the first pulses (pulse source, cut window: documented holds), and go
    # out with the block that releases them, which carries all their cleaning at once
    assert len(lat) > 5 and max(lat[5:]) < 500.0, lat
    assert max(lat[:5]) < 2000.0, lat
    # the running ROI TEP and GMFP ride along (for `monitor --attach`): 1 kHz, compact
    c = last["curves"]
    assert c["n_averaged"] == last["tep"]["n_averaged"] and c["roi"] == last["tep"]["roi"]
    assert (c["tmin_ms"], c["step_ms"], c["n"], c["decimation"]) == (-500.0, 1.0, 1001, 5)
    assert len(c["roi_average_uv"]) == len(c["gmfp_uv"]) == c["n"]
    assert max(abs(x) for x in c["roi_average_uv"]) > 0.5
    assert all(x is None or round(x, 3) == x for x in c["roi_average_uv"] + c["gmfp_uv"])
    assert len(json.dumps(c, separators=(",", ":"))) < 20000
    assert "recording closed" in out and (tmp_path / "rec").exists()
