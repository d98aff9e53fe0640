"""Simulated amplifier -> LSL (loopback) -> tmseeg inlet: 64 ch at 5 kHz for 10 s, nothing lost."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.inlet import LSLSource


@pytest.mark.slow
def test_simulator_to_inlet_64ch_5khz_10s_no_loss_and_markers_within_one_sample(uid, amplifier):
    cfg = SimConfig(n_channels=64, sfreq=5000.0, seed=21, isi_range_s=(0.9, 1.1))
    name = f"rt-{uid}"
    amp = amplifier(cfg, name=name, listen_triggers=False)
    source = LSLSource.resolve(name=name, marker_name=f"{name}-markers", timeout_s=10)
    blocks = []
    t_end = time.monotonic() + 10.5
    while time.monotonic() < t_end:
        b = source.read()
        if b is None:
            time.sleep(0.0005)
            continue
        blocks.append(b)
    source.close()
    amp.stop()
    data = np.concatenate([b.data for b in blocks], axis=1)
    ts = np.concatenate([b.timestamps for b in blocks])
    first_index = int(round((ts[0] - amp.t0_s) * cfg.sfreq))  # where the inlet came in
    n = data.shape[1]
    assert n >= 10 * 5000 - 5000 * 0.5, f"only {n} samples in 10.5 s"
    # absolute numbering is contiguous (nothing lost, nothing reordered) ...
    assert all(a.stop_sample == b.first_sample for a, b in zip(blocks, blocks[1:]))
    assert sum(b.n_samples for b in blocks) == n
    # ... and every value is the simulator's own, in order
    ref_sim = TMSEEGSimulator(cfg)
    ref, ref_events = ref_sim.generate(first_index + n)
    np.testing.assert_array_equal(data, ref[:, first_index:].astype(np.float32).astype(np.float64))
    # dejittered times are the amplifier's exact sample times
    np.testing.assert_allclose(ts, amp.t0_s + np.arange(first_index, first_index + n) / cfg.sfreq,
                               atol=2e-4)
    # markers land within one sample of the true pulses
    got = [e.sample + first_index for b in blocks for e in b.events if e.label == "TMS"]
    want = [p.sample for p in amp.truth.pulses if first_index <= p.sample < first_index + n - 5]
    assert len(want) >= 8
    assert len(got) >= len(want)
    for w in want:
        assert min(abs(g - w) for g in got) <= 1


def test_demo_exits_cleanly_on_ctrl_c(tmp_path):
    import os
    import threading

    proc = subprocess.Popen([sys.executable, "-m", "tmseeg.cli", "demo", "--duration", "0",
                             "--channels", "32", "--record", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: dict[str, list[str]] = {"out": [], "err": []}
    running = threading.Event()

    def read(pipe, into: list[str]) -> None:  # both pipes drained, so the child never blocks
        for line in pipe:
            into.append(line)
            if " | samples " in line:  # the engine's status line: it runs (busy machine: >6 s)
                running.set()

    readers = [threading.Thread(target=read, args=(proc.stdout, lines["out"]), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, lines["err"]), daemon=True)]
    for r in readers:
        r.start()
    try:
        assert running.wait(90.0), "the demo's engine printed no status line within 90 s"
        time.sleep(3.0)  # a few seconds recorded
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    for r in readers:
        r.join(10.0)
    out, err = "".join(lines["out"]), "".join(lines["err"])
    assert proc.returncode == 0, err[-3000:]
    assert "final:" in out and "simulator stopped" in out
    assert "Traceback" not in err
    vhdr = list(tmp_path.glob("*.vhdr"))
    assert vhdr, "the demo's recording is missing"
    import mne
    raw = mne.io.read_raw_brainvision(vhdr[0], verbose="error")
    assert raw.n_times > 5000 * 2  # at least two seconds of 5 kHz data were kept
