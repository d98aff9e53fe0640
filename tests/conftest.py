"""Test-wide setup: liblsl on loopback only, Qt offscreen, unique stream names per test."""
import os
import signal
import uuid

from tmseeg.stream.lslconfig import use_loopback_only

use_loopback_only(force=True)
# A suite started in the background by a shell without job control (`cmd &`) inherits
# SIGINT ignored, and every tmseeg process a test starts would inherit that too: the Ctrl-C
# tests would wait forever. The tests' own children must get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture
def uid() -> str:
    """A short unique suffix for LSL stream names / source ids, so parallel tests never collide."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def amplifier(uid):
    """``amplifier(config, prefix="amp", **kwargs)``: a started
    :class:`~tmseeg.sim.amplifier.SimulatedAmplifier` streaming ``config`` over loopback LSL
    as ``f"{prefix}-{uid}"`` (markers ``f"{prefix}-{uid}-markers"``), stopped after the test
    whatever happened (a test may stop it earlier: stopping twice is harmless). ``kwargs`` go
    to the amplifier (``trigger_stream_name``, ``listen_triggers`` ...)."""
    from tmseeg.sim.amplifier import SimulatedAmplifier

    started = []

    def start(config, prefix: str = "amp", **kwargs):
        kwargs.setdefault("name", f"{prefix}-{uid}")
        amp = SimulatedAmplifier(config, **kwargs)
        started.append(amp)
        amp.start()
        return amp

    yield start
    for amp in started:
        amp.stop()


@pytest.fixture
def lsl_player(uid):
    """``lsl_player(recording, prefix="play", **kwargs)``: a
    :class:`~tmseeg.io.replay.Player` of a file or Recording, its LSL outlets named
    ``f"{prefix}-{uid}"``, stopped after the test whatever happened (not started: the test
    starts it when its inlets are ready). ``kwargs`` go to the player (``speed``, ``chunk_ms``,
    ``loop`` ...)."""
    from tmseeg.io.replay import Player

    made = []

    def make(recording, prefix: str = "play", **kwargs):
        kwargs.setdefault("name", f"{prefix}-{uid}")
        made.append(Player(recording, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture
def live_replay(uid, lsl_player):
    """``live_replay(path, cfg, speed=3.0)``: replay a recording over LSL (a real outlet pair
    on loopback) into the live engine driving a fresh :class:`~tmseeg.session.TEPSession`, as
    ``tmseeg replay`` into ``tmseeg run`` does; returns the finished session. Asserts that no
    sample was lost on the way."""
    import time

    from tmseeg.engine import Engine
    from tmseeg.session import TEPSession
    from tmseeg.stream.inlet import LSLSource

    def run(path, cfg, speed: float = 3.0, timeout_s: float = 120.0):
        replaying = lsl_player(path, prefix="replay", speed=speed, chunk_ms=5.0)
        source = LSLSource.resolve(name=replaying.name, timeout_s=5,
                                   marker_name=replaying.marker_name,
                                   info_name=replaying.info_name)
        assert replaying.wait_for_consumers(5.0)
        session = TEPSession(cfg, source.meta)
        engine = Engine.for_session(source, session)
        n_total = replaying.recording.n_samples
        replaying.start()
        deadline = time.monotonic() + timeout_s
        while engine.ring.n_written < n_total and time.monotonic() < deadline:
            if engine.step() == 0:
                time.sleep(0.0005)
        time.sleep(0.2)  # markers of the last samples
        engine.step()
        replaying.stop()
        source.close()
        engine.finish()
        assert engine.ring.n_written == n_total, "samples lost on the way"
        assert engine.n_gaps == 0
        return session

    return run


class FillingDisk:
    """A folder whose writes fail once ``size_bytes`` are used, the way a full disk fails.

    A real tmpfs of that size where mounting is allowed (root): writes fail with ``ENOSPC``.
    Elsewhere the folder is an ordinary one and a child process started with
    ``preexec_fn=disk.preexec`` may write files of at most ``size_bytes``: its writes fail
    with ``EFBIG`` from the kernel, also part-way through a write (the same short write and
    error a full disk gives). ``errno_name`` says which.
    """

    def __init__(self, path, size_bytes: int) -> None:
        import subprocess

        self.path = path
        self.size_bytes = size_bytes
        path.mkdir(parents=True, exist_ok=True)
        self.mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
            capture_output=True).returncode == 0
        self.errno_name = "ENOSPC" if self.mounted else "EFBIG"

    def preexec(self) -> None:
        """In the child: limit the size of the files it writes (no-op on a real small disk)."""
        if self.mounted:
            return
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.size_bytes, self.size_bytes))

    def unmount(self) -> None:
        import subprocess

        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


@pytest.fixture
def filling_disk(tmp_path):
    """``filling_disk(size_bytes)``: a :class:`FillingDisk` folder, unmounted after the test."""
    made = []

    def make(size_bytes: int) -> FillingDisk:
        disk = FillingDisk(tmp_path / f"disk{len(made)}", size_bytes)
        made.append(disk)
        return disk

    yield make
    for disk in made:
        disk.unmount()
