"""`tmseeg run` on a live simulated amplifier: TEP updates on the tmseeg-metrics stream."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import mne
import numpy as np
import pylsl
import pytest

from tmseeg.sim.amplifier import SimulatedAmplifier
from tmseeg.sim.model import SimConfig


@pytest.mark.slow  # real time on LSL
def test_run_publishes_pulse_updates_with_latency(tmp_path, uid, amplifier):
    name = f"run-{uid}"
    amp = amplifier(SimConfig(n_channels=32, sfreq=5000.0, seed=2, isi_range_s=(0.8, 1.0)),
                    name=name, listen_triggers=False)
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
    # true ones minus a constant: every one must be a true pulse at one offset, and a true
    # pulse between them may lack its update only where the run said why (on a loaded
    # machine: samples skipped while processing was behind, or a marker later than the wait)
    true_samples = np.array([p.sample for p in amp.truth.pulses])
    got = np.array([m["pulse"]["sample"] for m in pulses])
    offsets = [k for k in range(len(true_samples))
               if all(np.abs(true_samples - true_samples[k] - (g - got[0])).min() <= 1
                      for g in got)]
    assert len(offsets) == 1, (got, true_samples, err[-2000:])
    first = true_samples[offsets[0]]
    inside = true_samples[(true_samples >= first) & (true_samples <= first + got[-1] - got[0])]
    if len(inside) > len(got):
        said = status[-1]["n_skipped_samples"] > 0 or "no pulse marker" in err
        assert said, (f"{len(inside) - len(got)} pulse update(s) missing and the run did not "
                      f"say why", got, inside, err[-2000:])
        assert len(inside) - len(got) <= 2, (got, inside)
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


class _Lines(threading.Thread):
    """Reads a child's stdout or stderr as it comes: (monotonic time, line) pairs."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe, self.lines = pipe, []

    def run(self):
        for line in iter(self.pipe.readline, ""):
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def first(self, text, after=0.0):
        return next(((t, s) for t, s in self.lines if text in s and t >= after), (None, None))

    def text(self):
        return "\n".join(s for _, s in self.lines)


def _start(args, preexec_fn=None):
    proc = subprocess.Popen([sys.executable, "-m", "tmseeg.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    out.start()
    err.start()
    return proc, out, err


def _finish(proc, out, err, timeout_s=60):
    try:
        proc.wait(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.join(5)
    err.join(5)


def _wait_for(lines, text, timeout_s, proc):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if lines.first(text)[0] is not None:
            return True
        time.sleep(0.05)
    return lines.first(text)[0] is not None


def _sim(name, source_id, seed=3):
    return SimulatedAmplifier(SimConfig(n_channels=32, sfreq=1000.0, seed=seed,
                                        isi_range_s=(0.8, 1.0)), name=name,
                              source_id=source_id, listen_triggers=False)


@pytest.mark.slow  # real time on LSL
@pytest.mark.parametrize("command", ["run", "record"])
def test_a_stream_that_dies_and_comes_back_with_a_new_source_id(tmp_path, uid, command):
    """The amplifier program dies and is restarted: same name, new source id. `run` and
    `record` say at once that the stream is gone (`run`'s status shows rate 0 and the seconds
    missing while it lasts), pick the new stream up, and record the outage as a gap."""
    name = f"back-{uid}"
    amp = _sim(name, f"first-{uid}")
    amp.start()
    rec = tmp_path / "rec"
    args = ([command, "--stream", name, "--no-markers", "--duration", "16"]
            + (["--record", str(rec)] if command == "run" else ["--out", str(rec)]))
    proc, out, err = _start(args)
    amp2 = None
    try:
        started = "recording to" if command == "run" else "Ctrl-C to stop"
        assert _wait_for(out, started, 40, proc), err.text()
        time.sleep(3.0)
        amp.stop()  # the amplifier program dies
        t_gone = time.monotonic()
        assert _wait_for(err, "sent nothing", 30, proc), err.text()
        said_s = err.first("sent nothing")[0] - t_gone
        time.sleep(max(0.0, t_gone + 4.0 - time.monotonic()))
        amp2 = _sim(name, f"second-{uid}", seed=4)  # ... and comes back under a new id
        amp2.start()
        t_back = time.monotonic()
        assert _wait_for(err, "data again", 15, proc), err.text()
        _finish(proc, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
        amp.stop()
        if amp2 is not None:
            amp2.stop()
    stderr, stdout = err.text(), out.text()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    print(f"{command}: the outage was said {said_s:.2f} s after the stream died")
    assert stderr.count("sent nothing") == 1 and stderr.count("data again") == 1
    assert f"source id 'second-{uid}'" in stderr
    if command == "run":
        gone = [s for t, s in out.lines if "NO DATA" in s]
        assert gone, stdout
        assert all("@     0.0 Hz" in s for s in gone), gone
        secs = [float(s.split("NO DATA for ")[1].split(" s")[0]) for s in gone]
        assert secs == sorted(secs) and secs[-1] >= 3.0, secs
        shown_at = next(t for t, s in out.lines if "NO DATA" in s)
        print(f"run: status showed the outage {shown_at - t_gone:.2f} s after the stream died")
        assert shown_at < t_back  # shown while the outage lasted, not only once it was over
        after = [s for t, s in out.lines if t > t_back + 3.0 and s.startswith(name)]
        assert after and "gaps 1 " in after[-1], after
        rate_after = float(after[-1].split("@")[1].split("Hz")[0])
        assert 800 < rate_after < 1200, after[-1]
    else:
        assert "the stream was gone 1 time(s)" in stdout, stdout
    vhdr = next(rec.glob("*.vhdr"))
    raw = mne.io.read_raw_brainvision(vhdr, verbose="error")
    gaps = [(o, d) for o, d, desc in zip(raw.annotations.onset, raw.annotations.duration,
                                         raw.annotations.description) if desc == "New Segment/Gap"]
    assert len(gaps) == 1, raw.annotations
    # 4 s without the amplifier, plus the new program's start and the time to find it
    assert 3.5 < gaps[0][1] < 15.0, gaps
    assert 2.0 < gaps[0][0] < 8.0 and raw.times[-1] > gaps[0][0] + 3.0


def _full_disk_stream(amplifier):
    # 33 channels at 2 kHz: 264 kB/s, so a 512 kB disk fills within ~2 s of recording
    return amplifier(SimConfig(n_channels=32, sfreq=2000.0, seed=5, isi_range_s=(0.8, 1.0)),
                     prefix="fill", listen_triggers=False)


def _check_what_was_kept(folder, stderr, errno_name):
    msgs = [s for s in stderr.splitlines() if "recording stopped" in s]
    assert len(msgs) == 1, stderr  # said once, not once per block
    assert f"({errno_name})" in msgs[0] and "NOT recorded" in msgs[0]
    kept = int(msgs[0].split("Kept ")[1].split(" samples")[0])
    vhdr = next(folder.glob("*.vhdr"))
    assert vhdr.with_suffix(".eeg").stat().st_size == kept * 33 * 4  # whole samples
    raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    assert raw.n_times == kept > 1000
    assert np.all(np.isfinite(raw.get_data()))
    assert "Traceback" not in stderr
    return kept


@pytest.mark.slow  # real time on LSL
def test_run_record_on_a_disk_that_fills(filling_disk, uid, amplifier):
    """`run --record` when the disk fills: said once, the recording stops at a whole sample
    and stays readable, the engine goes on, the end says what was kept and what was not, and
    the exit status is 1."""
    disk = filling_disk(512 * 1024)
    amp = _full_disk_stream(amplifier)
    try:
        proc, out, err = _start(["run", "--stream", amp.name, "--no-markers", "--duration", "9",
                                 "--record", str(disk.path)], preexec_fn=disk.preexec)
        _finish(proc, out, err)
    finally:
        amp.stop()
    stderr, stdout = err.text(), out.text()
    assert proc.returncode == 1, (stdout[-2000:], stderr)
    kept = _check_what_was_kept(disk.path, stderr, disk.errno_name)
    # the engine went on: status lines after the failure, and more samples than were kept
    t_fail = err.first("recording stopped")[0]
    later = [s for t, s in out.lines if t > t_fail + 1.0 and "RECORDING STOPPED" in s]
    assert later, stdout
    final = next(s for s in stdout.splitlines() if s.startswith("final:"))
    assert int(final.split("samples")[1].split("|")[0]) > kept + 5000
    summary = [s for s in stderr.splitlines() if "recording FAILED" in s]
    assert len(summary) == 1 and f"kept {kept} samples" in summary[0], stderr
    dropped = int(summary[0].split("NOT recorded: ")[1].split(" samples")[0])
    assert dropped > 5000


def test_record_on_a_disk_that_fills(filling_disk, uid, amplifier):
    """`record` when the disk fills: it stops at once, says what was kept and what was not,
    leaves a readable recording and exits with 1 (no traceback)."""
    disk = filling_disk(512 * 1024)
    amp = _full_disk_stream(amplifier)
    try:
        proc, out, err = _start(["record", "--stream", amp.name, "--no-markers",
                                 "--duration", "20", "--out", str(disk.path)],
                                preexec_fn=disk.preexec)
        _finish(proc, out, err)
    finally:
        amp.stop()
    stderr = err.text()
    assert proc.returncode == 1, stderr
    kept = _check_what_was_kept(disk.path, stderr, disk.errno_name)
    assert "recording FAILED" in stderr and f"kept {kept} samples" in stderr
    if disk.mounted:  # a nearly full disk is announced before the start
        assert "room for ~" in out.text() and "will stop when the disk is full" in stderr


@pytest.mark.parametrize("command, option", [("run", "--record"), ("record", "--out")])
def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, uid, command,
                                                                     option):
    """The output folder is checked before the stream is even looked for: the error names
    the folder and the option, not a missing stream."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    proc, out, err = _start([command, "--stream", f"absent-{uid}", "--timeout", "30", option,
                             str(blocker / "rec")])
    _finish(proc, out, err, timeout_s=25)  # long before the 30 s stream timeout
    stderr = err.text()
    assert proc.returncode == 1, stderr
    assert f"cannot write the outputs to {blocker / 'rec'}" in stderr
    assert f"choose another {option} directory" in stderr
    assert "No LSL stream" not in stderr and "Traceback" not in stderr


@pytest.mark.slow  # real time on LSL
def test_run_refuses_a_marker_flood_with_one_warning_per_second(uid, amplifier):
    """A marker loop on the live marker stream (~7.6k "TMS" markers per second for 2 s, on a
    real LSL outlet among the stimulator's own markers): before, 11,008 pulses were taken,
    processing fell 1.4 s behind and 1.8 MB of warnings came out in 25 s. Now the flood is
    refused, said once per second with the count, and the real pulses outside it go on."""
    name = f"flood-{uid}"
    amp = amplifier(SimConfig(n_channels=32, sfreq=5000.0, seed=2, isi_range_s=(0.8, 1.0)),
                    name=name, listen_triggers=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmseeg.cli", "run", "--stream", name, "--markers",
         f"{name}-markers", "--duration", "14"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    n_flood = 0
    try:
        infos = pylsl.resolve_byprop("source_id", f"tmseeg-metrics-{amp.source_id}", timeout=30)
        assert infos, "no tmseeg-metrics stream appeared"
        inlet = pylsl.StreamInlet(infos[0])
        inlet.open_stream(timeout=5)
        messages = []

        def pull(until):
            while time.monotonic() < until and proc.poll() is None:
                sample, _ = inlet.pull_sample(timeout=0.01)
                if sample is not None:
                    messages.append(json.loads(sample[0]))

        pull(time.monotonic() + 4.0)
        flood_t0 = flood_end = pylsl.local_clock()
        while pylsl.local_clock() < flood_t0 + 2.0:  # the stimulator's own outlet, 76 at a time
            now = pylsl.local_clock()
            for k in range(76):
                amp._marker_outlet.push_sample(["TMS"], now + k / 7600.0)
            flood_end = now + 75 / 7600.0
            n_flood += 76
            pull(time.monotonic() + 0.01)
        pull(time.monotonic() + 16.0)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)
        amp.stop()
    assert proc.returncode == 0, err[-3000:]
    said = [line for line in err.splitlines() if "pulse plausibility: refused" in line]
    assert 2 <= len(said) <= 4, err[-3000:]  # a 2-s flood: its seconds, and the one after
    refused = sum(int(re.search(r"refused (\d+) pulse", line).group(1)) for line in said)
    # besides the flood, the stimulator's real pulses are refused while the last second holds
    # the flood: from its start to a second after its last marker (LSL time of a pulse = the
    # amplifier's first sample's time + its sample / rate; 50 ms for the marker clocks)
    real_times = amp.t0_s + amp.truth.pulse_samples() / amp.simulator.sfreq
    n_real = int(((real_times >= flood_t0 - 0.05) & (real_times <= flood_end + 1.05)).sum())
    assert 0.9 * n_flood <= refused <= n_flood + n_real, (refused, n_flood, n_real,
                                                          err[-3000:])
    assert len(err) < 50_000  # not one line per marker
    pulses = [m for m in messages if m["type"] == "pulse"]
    # at most one flood marker (indistinguishable from a pulse) and no real pulse is doubled
    assert 8 <= len(pulses) <= len(amp.truth.pulses) + 1, len(pulses)
    assert pulses[-1]["tep"]["coil_site"] == "C3"
