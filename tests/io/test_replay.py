"""File replay over real loopback LSL: every sample and marker arrives, exactly, in order."""
import argparse
import time

import mne
import numpy as np
import pybv
import pylsl
import pytest

from tmseeg.io.files import RecordingError, read_recording
from tmseeg.io.replay import Player, add_arguments, run

SFREQ = 500.0
N = 1000  # 2 s


def _raw(seed=3):
    rng = np.random.default_rng(seed)
    names = ["Fz", "Cz", "Pz", "C3", "EMG_APB"]
    data_uv = rng.standard_normal((5, N)) * 25.0
    info = mne.create_info(names, SFREQ, ["eeg"] * 4 + ["emg"])
    raw = mne.io.RawArray(data_uv * 1e-6, info, verbose="error")
    raw.set_annotations(mne.Annotations([0.2, 0.9, 1.5, 1.998], 0, ["TMS", "pre", "TMS", "end"]))
    return raw, data_uv, {100: "TMS", 450: "pre", 750: "TMS", 999: "end"}


@pytest.fixture
def fif_file(tmp_path):
    raw, data_uv, events = _raw()
    path = tmp_path / "rec_raw.fif"
    raw.save(path, verbose="error")
    return path, data_uv, events


@pytest.fixture
def vhdr_file(tmp_path):
    rng = np.random.default_rng(11)
    data_uv = rng.standard_normal((3, N)) * 30.0
    ev = [
        {"onset": 123, "duration": 1, "description": 1, "type": "Stimulus"},
        {"onset": 600, "duration": 1, "description": "block start", "type": "Comment"},
        {"onset": 777, "duration": 1, "description": 1, "type": "Stimulus"},
    ]
    pybv.write_brainvision(
        data=data_uv * 1e-6, sfreq=SFREQ, ch_names=["C3", "C4", "Cz"], fname_base="bv",
        folder_out=tmp_path, events=ev, unit="µV", fmt="binary_float32",
    )
    return tmp_path / "bv.vhdr", data_uv, {
        123: "Stimulus/S  1", 600: "Comment/block start", 777: "Stimulus/S  1"
    }


def _connect(name, marker_name):
    eeg = pylsl.resolve_byprop("name", name, timeout=5.0)
    mrk = pylsl.resolve_byprop("name", marker_name, timeout=5.0)
    assert eeg and mrk, "replay streams not found on loopback"
    eeg_in = pylsl.StreamInlet(eeg[0], max_buflen=60, processing_flags=0)
    mrk_in = pylsl.StreamInlet(mrk[0], max_buflen=60, processing_flags=0)
    eeg_in.open_stream(timeout=5.0)
    mrk_in.open_stream(timeout=5.0)
    return eeg_in, mrk_in


def _pull_all(eeg_in, mrk_in, n_expected, timeout_s=20.0):
    chunks, stamps, markers = [], [], []
    got = 0
    t_end = time.monotonic() + timeout_s
    while got < n_expected and time.monotonic() < t_end:
        x, ts = eeg_in.pull_chunk(timeout=0.0, max_samples=min(4096, n_expected - got))
        if ts:
            chunks.append(np.asarray(x, dtype=np.float32))
            stamps.extend(ts)
            got += len(ts)
        else:
            time.sleep(0.002)
        m, mts = mrk_in.pull_chunk(timeout=0.0)
        markers.extend(zip((v[0] for v in m), mts))
    time.sleep(0.2)
    m, mts = mrk_in.pull_chunk(timeout=0.0)
    markers.extend(zip((v[0] for v in m), mts))
    data = np.concatenate(chunks) if chunks else np.empty((0, 0), np.float32)
    return data, np.asarray(stamps), markers


def _check_replay(player, data_uv, events, n_total=None):
    n_total = n_total or data_uv.shape[1]
    eeg_in, mrk_in = _connect(player.name, player.marker_name)
    t_start = time.perf_counter()
    player.start()
    data, stamps, markers = _pull_all(eeg_in, mrk_in, n_total)
    elapsed = time.perf_counter() - t_start
    assert data.shape[0] == n_total, f"got {data.shape[0]} of {n_total} samples"
    reps = int(np.ceil(n_total / data_uv.shape[1]))
    # bit-exact against what the file holds (what the player sends) ...
    file_uv = player.recording.data_uv
    want = np.tile(file_uv, reps)[:, :n_total].T.astype(np.float32)
    np.testing.assert_array_equal(data, want)  # every sample, none lost or reordered
    # ... and equal to the data the test wrote, within float32 storage precision
    np.testing.assert_allclose(data, np.tile(data_uv, reps)[:, :n_total].T, rtol=3e-7, atol=1e-12)
    np.testing.assert_allclose(stamps, player.t0_s + np.arange(n_total) / SFREQ, rtol=0, atol=1e-9)
    got = {int(round((ts - player.t0_s) * SFREQ)): label for label, ts in markers}
    want_ev = {s + k * data_uv.shape[1]: lab for k in range(reps) for s, lab in events.items()
               if s + k * data_uv.shape[1] < n_total}
    assert {s: l for s, l in got.items() if s < n_total} == want_ev
    for label, ts in markers:  # marker time is exactly its sample's time
        s = round((ts - player.t0_s) * SFREQ)
        assert abs(ts - (player.t0_s + s / SFREQ)) < 1e-9
    info = eeg_in.info()
    eeg_in.close_stream()
    mrk_in.close_stream()
    return elapsed, info


def test_replay_fif_every_sample_and_marker(fif_file, lsl_player):
    path, data_uv, events = fif_file
    player = lsl_player(path, prefix="fif", chunk_ms=10.0)
    elapsed, info = _check_replay(player, data_uv, events)
    assert player.finished.wait(2.0)
    # paced in real time: 2 s of data cannot arrive in less than ~2 s
    print(f"2 s of data replayed in {elapsed:.2f} s")
    assert elapsed > 1.8, elapsed
    assert info.type() == "EEG" and info.nominal_srate() == SFREQ
    assert info.channel_format() == pylsl.cf_float32
    ch = info.desc().child("channels").child("channel")
    labels, types, units = [], [], []
    while not ch.empty():
        labels.append(ch.child_value("label"))
        types.append(ch.child_value("type"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling()
    assert labels == ["Fz", "Cz", "Pz", "C3", "EMG_APB"]
    assert types == ["EEG"] * 4 + ["EMG"]
    assert units == ["microvolts"] * 5
    assert player.n_pushed == N and player.n_markers_pushed == 4


def test_replay_brainvision_speed4(vhdr_file, lsl_player):
    path, data_uv, events = vhdr_file
    player = lsl_player(path, prefix="bv", speed=4.0, chunk_ms=5.0)
    elapsed, _ = _check_replay(player, data_uv, events)
    # 2 s of data at 4x: ~0.5 s, timestamps still at the nominal spacing (checked above). Not
    # sooner (paced), and sooner than the 2 s a player that ignored `speed` would need
    print(f"2 s of data replayed at 4x in {elapsed:.2f} s")
    assert 0.45 < elapsed < 1.9, elapsed


def test_replay_loop_fast(fif_file, uid):
    path, data_uv, events = fif_file
    player = Player(path, name=f"loop-{uid}", speed=0, loop=True, chunk_ms=20.0)
    try:
        _check_replay(player, data_uv, events, n_total=int(2.5 * N))
        assert not player.finished.is_set()  # a loop only ends on stop()
    finally:
        player.stop()
    assert player.finished.is_set() and not player.running
    assert player.error is None


def test_replay_throughput_as_fast_as_possible(lsl_player):
    """Every sample pushed unpaced (speed 0), and how fast (printed: a figure, not a limit)."""
    from tmseeg.stream.block import StreamMeta
    from tmseeg.io.files import Recording

    rng = np.random.default_rng(0)
    n = 5000 * 4
    rec = Recording(rng.standard_normal((64, n)),
                    StreamMeta([f"E{i}" for i in range(64)], 5000.0, name="big"))
    player = lsl_player(rec, prefix="fast", speed=0, chunk_ms=5.0)
    t = time.perf_counter()
    player.start()
    assert player.finished.wait(30.0)
    dt = time.perf_counter() - t
    assert player.n_pushed == n and player.error is None
    print(f"replay throughput: {n / dt / 5000:.1f}x real time at 64 ch / 5 kHz, 5 ms chunks")


def test_wrong_files(tmp_path, uid):
    with pytest.raises(RecordingError, match="no such file"):
        Player(tmp_path / "missing_raw.fif", name=f"x-{uid}")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(RecordingError, match="unknown recording format"):
        Player(bad, name=f"x-{uid}")
    fake = tmp_path / "fake.vhdr"
    fake.write_text("this is not a header")
    with pytest.raises(RecordingError, match="fake.vhdr"):
        Player(fake, name=f"x-{uid}")


def test_cli_run(fif_file, tmp_path, uid, capsys):
    path, _, _ = fif_file
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(path), "--speed", "0", "--name", f"cli-{uid}", "--chunk-ms", "20"])
    assert run(args) == 0
    out = capsys.readouterr().out
    assert f"pushed {N} samples, 4 markers" in out
    assert "2 pulses" in out
    args = parser.parse_args([str(tmp_path / "nope.edf")])
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "nope.edf" in err and "no such file" in err
    args = parser.parse_args([str(path), "--speed", "-1"])
    assert run(args) == 2
    assert "speed" in capsys.readouterr().err


def test_recording_roundtrip_through_player(vhdr_file, uid):
    """What the player streams equals what read_recording sees in the file."""
    path, data_uv, _ = vhdr_file
    rec = read_recording(path)
    np.testing.assert_allclose(rec.data_uv, data_uv.astype(np.float32), rtol=1e-6)
    assert [e.kind for e in rec.events] == ["pulse", "marker", "pulse"]


def test_cli_ctrl_c_is_clean(fif_file, uid):
    """`replay --loop` runs until SIGINT, then stops its thread and exits 0 with a summary."""
    import signal
    import subprocess
    import sys

    path, _, _ = fif_file
    code = (
        "import argparse, sys; from tmseeg.io import replay; p = argparse.ArgumentParser(); "
        "replay.add_arguments(p); sys.exit(replay.run(p.parse_args(sys.argv[1:])))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), "--loop", "--name", f"cc-{uid}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("replaying"), first + proc.stderr.read()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "pushed" in out and "Traceback" not in err
    n = int(out.split("pushed")[1].split()[0])
    assert 0 < n < 5 * N  # it was really streaming in real time
