"""BrainVisionRecorder: incremental, crash-safe, readable by MNE at every moment."""
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import mne
import numpy as np
import pytest

from tmseeg.stream.block import Block, Event, StreamMeta, blocks_from_array
from tmseeg.io.files import read_recording
from tmseeg.io.recorder import AppendFile, BrainVisionRecorder, RecordingError

SFREQ = 1000.0


def _meta(n_eeg=4, stim=True, name="rec"):
    names = [f"E{i}" for i in range(n_eeg)] + ["EMG1"] + (["STI"] if stim else [])
    types = ["eeg"] * n_eeg + ["emg"] + (["stim"] if stim else [])
    return StreamMeta(ch_names=names, sfreq=SFREQ, ch_types=types, name=name)


def _data(meta, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((meta.n_channels, n)) * 40.0
    if "stim" in meta.ch_types:
        x[meta.ch_types.index("stim")] = 0.0
    return x


def test_roundtrip_data_markers_types(tmp_path):
    meta = _meta()
    x = _data(meta, 3000)
    events = [Event(500, "TMS", "pulse"), Event(1700, "pre", "marker"),
              Event(2222, "Stimulus/S  1", "pulse"), Event(2500, "a,b", "marker")]
    path = tmp_path / "r.vhdr"
    with BrainVisionRecorder(path, meta) as rec:
        for b in blocks_from_array(x, meta, 37, events):
            rec.write(b)
        assert rec.n_samples_written == 3000
        assert rec.n_markers_written == 4
    raw = mne.io.read_raw_brainvision(path, preload=True, verbose="error")
    assert raw.n_times == 3000
    assert raw.info["sfreq"] == SFREQ
    assert raw.ch_names == list(meta.ch_names)
    f32 = x.astype(np.float32).astype(np.float64)
    # voltage channels: µV in the file, volts in MNE
    np.testing.assert_allclose(raw.get_data()[:5] * 1e6, f32[:5], rtol=1e-12, atol=0)
    # stim channel is written unscaled (unit n/a -> MNE misc, factor 1)
    np.testing.assert_array_equal(raw.get_data()[5], f32[5])
    assert raw.get_channel_types()[5] == "misc"
    ann = {(round(o * SFREQ), d) for o, d in zip(raw.annotations.onset, raw.annotations.description)}
    assert ann == {(500, "Stimulus/TMS"), (1700, "Comment/pre"), (2222, "Stimulus/S  1"),
                   (2500, "Comment/a,b")}
    assert raw.info["meas_date"] is not None
    # the engine's reader gets the same samples, types and pulse kinds back
    rec2 = read_recording(path)
    np.testing.assert_allclose(rec2.data_uv[:5], f32[:5], rtol=1e-12)
    assert rec2.meta.ch_types[4] == "emg"
    kinds = {e.sample: e.kind for e in rec2.events}
    assert kinds == {500: "pulse", 1700: "marker", 2222: "pulse", 2500: "marker"}


def test_gap_is_marked_and_file_is_contiguous(tmp_path):
    meta = _meta(stim=False)
    x = _data(meta, 1000)
    path = tmp_path / "gap.vhdr"
    with BrainVisionRecorder(path, meta) as rec:
        rec.write(Block(x[:, :400], 100, np.arange(400) / SFREQ, meta))
        # 50 samples never arrived; a pulse after the gap must land on the right file sample
        rec.write(Block(x[:, 400:], 550, np.arange(600) / SFREQ, meta,
                        events=[Event(560, "TMS", "pulse")]))
    raw = mne.io.read_raw_brainvision(path, preload=True, verbose="error")
    assert raw.n_times == 1000
    got = {d: (round(o * SFREQ), round(du * SFREQ))
           for o, d, du in zip(raw.annotations.onset, raw.annotations.description,
                               raw.annotations.duration)}
    assert got["New Segment/Gap"] == (400, 50)
    assert got["Stimulus/TMS"][0] == 410
    rec = read_recording(path)
    gaps = [e for e in rec.events if e.kind == "gap"]
    assert [(g.sample, g.duration) for g in gaps] == [(400, 50)]


def test_refuses_overwrite_and_bad_input_keeps_data(tmp_path):
    meta = _meta()
    x = _data(meta, 500)
    path = tmp_path / "keep.vhdr"
    rec = BrainVisionRecorder(path, meta)
    rec.write(next(blocks_from_array(x, meta, 500)))
    other = StreamMeta(ch_names=["A", "B"], sfreq=SFREQ)
    with pytest.raises(ValueError, match="channel-count mismatch"):
        rec.write(Block(np.zeros((2, 10)), 500, np.zeros(10), other))
    with pytest.raises(ValueError, match="overlap"):
        rec.write(next(blocks_from_array(x, meta, 100)))
    rec.close()
    size = (tmp_path / "keep.eeg").stat().st_size
    assert size == 500 * meta.n_channels * 4
    with pytest.raises(FileExistsError, match="overwrite=True"):
        BrainVisionRecorder(path, meta)
    assert (tmp_path / "keep.eeg").stat().st_size == size  # untouched
    with pytest.raises(ValueError, match=r"\.vhdr"):
        BrainVisionRecorder(tmp_path / "x.eeg", meta)
    with pytest.raises(RuntimeError, match="closed"):
        rec.write(next(blocks_from_array(x, meta, 10)))
    with BrainVisionRecorder(path, meta, overwrite=True) as rec2:
        rec2.write(next(blocks_from_array(x[:, :10], meta, 10)))
    assert (tmp_path / "keep.eeg").stat().st_size == 10 * meta.n_channels * 4
    # a directory (created when missing): file named after the stream, never overwritten
    folder = tmp_path / "sessions"
    paths = []
    for _ in range(2):
        with BrainVisionRecorder(folder, _meta(name="sub 01/TMS")) as rec3:
            rec3.write(next(blocks_from_array(x, meta, 20)))
        paths.append(rec3.path)
    assert [p.name for p in paths] == ["sub_01_TMS.vhdr", "sub_01_TMS-2.vhdr"]
    assert all(p.with_suffix(".eeg").stat().st_size == 20 * 6 * 4 for p in paths)


def test_readable_while_recording(tmp_path):
    """MNE reads the files while the recorder still has them open (header written up front)."""
    meta = _meta()
    x = _data(meta, 2000)
    path = tmp_path / "live.vhdr"
    with BrainVisionRecorder(path, meta) as rec:
        for b in blocks_from_array(x, meta, 250, [Event(300, "TMS", "pulse")]):
            rec.write(b)
            if b.stop_sample == 1000:
                raw = mne.io.read_raw_brainvision(path, preload=True, verbose="error")
                assert raw.n_times == 1000
                assert list(raw.annotations.description) == ["Stimulus/TMS"]


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from tmseeg.stream.block import Block, Event, StreamMeta
    from tmseeg.io.recorder import BrainVisionRecorder
    path, block = sys.argv[1], int(sys.argv[2])
    meta = StreamMeta(ch_names=[f"E{i}" for i in range(8)], sfreq=1000.0, name="crash")
    x = np.random.default_rng(7).standard_normal((8, 600000)) * 30.0
    rec = BrainVisionRecorder(path, meta, flush_interval_s=0.5)
    t0 = time.perf_counter()
    start = 0
    while True:
        stop = start + block
        evs = [Event(s, "TMS", "pulse") for s in range(start, stop) if s % 250 == 17]
        rec.write(Block(x[:, start:stop], start, np.arange(start, stop) / 1000.0, meta, evs))
        print(f"written {rec.n_samples_written}", flush=True)
        start = stop
        # real-time pacing: a block every block/1000 s
        delay = t0 + start / 1000.0 - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    """
)


def test_sigkill_loses_nothing_written(tmp_path):
    path = tmp_path / "crash.vhdr"
    block = 20
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(block)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    last = 0
    try:
        t_end = time.monotonic() + 30
        while time.monotonic() < t_end:
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line.split()[1])
            if last >= 2500:  # ~2.5 s of data recorded (after import time)
                break
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: no close(), no atexit
        proc.wait(10)
        rest = proc.stdout.read().split()
        if rest:
            last = max(last, int(rest[-1]))  # progress lines printed before the kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert last >= 2500, proc.stderr.read()
    raw = mne.io.read_raw_brainvision(path, preload=True, verbose="error")
    n = raw.n_times
    # every sample the child saw written is on disk; at most the one block in flight is extra
    assert last <= n <= last + block, (last, n)
    assert n % block == 0  # whole blocks (hence whole samples) only
    assert (tmp_path / "crash.eeg").stat().st_size == n * 8 * 4
    x = np.random.default_rng(7).standard_normal((8, 600000)) * 30.0
    # MNE scales µV -> V in float32 arithmetic on some read paths: 1 float32 ulp tolerance;
    # the bytes on disk are compared bit for bit below
    np.testing.assert_allclose(raw.get_data(), x[:, :n].astype(np.float32) * 1e-6, rtol=2e-7)
    np.testing.assert_array_equal(
        np.fromfile(tmp_path / "crash.eeg", "<f4").reshape(n, 8).T, x[:, :n].astype(np.float32)
    )
    onsets = np.round(raw.annotations.onset * 1000).astype(int)
    expected = [s for s in range(n) if s % 250 == 17]
    assert list(onsets) == expected
    assert set(raw.annotations.description) == {"Stimulus/TMS"}
    print(f"SIGKILL after {last} printed samples: {n} on disk, {last - min(n, last)} lost")


def test_record_a_replayed_lsl_stream(tmp_path, uid):
    """File -> Player -> loopback LSL -> Blocks -> recorder -> file: samples and pulses intact."""
    import pylsl

    from tmseeg.io.files import Recording
    from tmseeg.io.replay import Player

    meta = StreamMeta([f"E{i}" for i in range(6)], 1000.0, name="src")
    x = _data(meta, 1500, seed=4)
    src = Recording(x, meta, events=[Event(200, "TMS", "pulse"), Event(1100, "TMS", "pulse")])
    player = Player(src, name=f"rec-{uid}", speed=4.0, chunk_ms=10.0)
    eeg = pylsl.StreamInlet(pylsl.resolve_byprop("name", player.name, timeout=5)[0],
                            processing_flags=0)
    mrk = pylsl.StreamInlet(pylsl.resolve_byprop("name", player.marker_name, timeout=5)[0],
                            processing_flags=0)
    eeg.open_stream(5)
    mrk.open_stream(5)
    live_meta = StreamMeta(meta.ch_names, 1000.0, name=player.name)
    path = tmp_path / "live.vhdr"
    got = 0
    with player, BrainVisionRecorder(path, live_meta) as rec:
        t_end = time.monotonic() + 10
        pending = []
        while got < 1500 and time.monotonic() < t_end:
            m, mts = mrk.pull_chunk(timeout=0.0)
            pending += [(v[0], t) for v, t in zip(m, mts)]
            chunk, ts = eeg.pull_chunk(timeout=0.0, max_samples=1500 - got)
            if not ts:
                time.sleep(0.002)
                continue
            evs = [Event(int(round((t - player.t0_s) * 1000.0)), lab, "pulse", t)
                   for lab, t in pending]
            pending = []
            rec.write(Block(np.asarray(chunk, float).T, got, np.asarray(ts), live_meta, evs))
            got += len(ts)
        eeg.close_stream()
        mrk.close_stream()
    on_disk = np.fromfile(tmp_path / "live.eeg", "<f4").reshape(-1, 6).T
    np.testing.assert_array_equal(on_disk, x.astype(np.float32))  # bit for bit
    back = read_recording(path)
    np.testing.assert_allclose(back.data_uv, x.astype(np.float32), rtol=1e-7)
    assert [(e.sample, e.kind) for e in back.events] == [(200, "pulse"), (1100, "pulse")]


class _FillsUp(AppendFile):
    """A file on a disk with ``room_bytes`` left: a write that does not fit writes what fits
    and the next call fails with ENOSPC, as the kernel does on a full disk."""

    room_bytes = 0

    def _write_some(self, data):
        room = self.room_bytes - os.fstat(self.fd).st_size
        if room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(self.fd, data[:room])


@pytest.mark.parametrize("full", [".eeg", ".vmrk"])
def test_disk_full_stops_at_a_whole_sample_and_says_what_was_kept(tmp_path, full):
    """The disk fills while a block is written (part of it is on disk): the block is taken
    back, so the data end at a whole sample and every marker points into them; the error is
    raised once with what was kept; later blocks are counted as not recorded."""
    meta = _meta()
    frame = meta.n_channels * 4
    x = _data(meta, 3000)
    events = [Event(100, "TMS", "pulse"), Event(420, "TMS", "pulse"), Event(2000, "TMS", "pulse")]

    class Recorder(BrainVisionRecorder):
        def _open_append(self, path):
            f = _FillsUp(path) if path.suffix == full else AppendFile(path)
            f.room_bytes = 10_000 if full == ".eeg" else 1 << 30  # the .vmrk: set below
            return f

    path = tmp_path / "full.vhdr"
    rec = Recorder(path, meta)
    if full == ".vmrk":  # room for the header and the first block's marker line only
        rec._vmrk.room_bytes = rec._vmrk.size + 30
    raised = []
    for b in blocks_from_array(x, meta, 37, events):
        try:
            rec.write(b)
        except RecordingError as err:
            raised.append(err)
    rec.close()
    # blocks of 37 samples: 10 000 bytes hold 11 whole blocks (407 samples) and part of the
    # 12th. The marker file has room for the line of the pulse at 100, not for the one at 420
    # (12th block): that block's data, already written, are taken back with it
    kept = 407
    assert len(raised) == 1, raised
    err = raised[0]
    assert err.errno == errno.ENOSPC and rec.failed
    msg = str(err)
    assert msg.startswith("recording stopped") and "No space left on device (ENOSPC)" in msg
    assert f"Kept {kept} samples ({kept / SFREQ:.1f} s) and 1 markers in {path}" in msg
    assert "NOT recorded" in msg and "Free space" in msg
    assert rec.n_samples_written == kept and rec.n_samples_dropped == 3000 - kept
    assert rec.outcome().startswith("recording FAILED (No space left on device (ENOSPC)): "
                                    f"kept {kept} samples")
    assert f"NOT recorded: {3000 - kept} samples ({(3000 - kept) / SFREQ:.1f} s)" in rec.outcome()
    assert (tmp_path / "full.eeg").stat().st_size == kept * frame
    raw = mne.io.read_raw_brainvision(path, preload=True, verbose="error")
    assert raw.n_times == kept
    np.testing.assert_allclose(raw.get_data()[:5] * 1e6, x[:5, :kept].astype(np.float32),
                               rtol=1e-6)
    assert [round(o * SFREQ) for o in raw.annotations.onset] == [100]
    assert (tmp_path / "full.vmrk").read_text().endswith("\n")  # no half line


def test_a_real_full_disk_keeps_whole_samples(filling_disk):
    """The same on a real filesystem that fills up (a 64 kB tmpfs; needs root to mount)."""
    disk = filling_disk(64 * 1024)
    if not disk.mounted:
        pytest.skip("no small filesystem here (mounting a tmpfs needs root)")
    meta = _meta(n_eeg=7)  # 9 channels: 36-byte samples do not tile 4 kB pages
    x = _data(meta, 10_000)
    rec = BrainVisionRecorder(disk.path / "r.vhdr", meta)
    with pytest.raises(RecordingError, match="No space left on device") as err:
        for b in blocks_from_array(x, meta, 50, [Event(33, "TMS", "pulse")]):
            rec.write(b)
    assert err.value.errno == errno.ENOSPC
    rec.close()
    n = rec.n_samples_written
    assert 500 < n < 2000 and f"Kept {n} samples" in str(err.value)
    assert (disk.path / "r.eeg").stat().st_size == n * 9 * 4
    raw = mne.io.read_raw_brainvision(disk.path / "r.vhdr", preload=True, verbose="error")
    assert raw.n_times == n and list(raw.annotations.onset * SFREQ) == [33]
    np.testing.assert_array_equal(np.fromfile(disk.path / "r.eeg", "<f4").reshape(n, 9).T,
                                  x[:, :n].astype(np.float32))
