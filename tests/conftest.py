"""Test-wide setup: liblsl on loopback only, Qt offscreen, unique stream names per test."""
import os
import uuid

from tmseeg.stream.lslconfig import use_loopback_only

use_loopback_only(force=True)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture
def uid() -> str:
    """A short unique suffix for LSL stream names / source ids, so parallel tests never collide."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def live_replay(uid):
    """``live_replay(path, cfg, speed=3.0)``: replay a recording over LSL (a real outlet pair
    on loopback) into the live engine driving a fresh :class:`~tmseeg.session.TEPSession`, as
    ``tmseeg replay`` into ``tmseeg run`` does; returns the finished session. Asserts that no
    sample was lost on the way."""
    import time

    from tmseeg.engine import Engine
    from tmseeg.session import TEPSession
    from tmseeg.stream.inlet import LSLSource
    from tmseeg.stream.replay import Player

    def run(path, cfg, speed: float = 3.0, timeout_s: float = 120.0):
        player = Player(path, name=f"replay-{uid}", speed=speed, chunk_ms=5.0)
        source = LSLSource.resolve(name=player.name, timeout_s=5,
                                   marker_name=player.marker_name)
        assert player.wait_for_consumers(5.0)
        session = TEPSession(cfg, source.meta)
        engine = Engine(source, stages=session.chain,
                        on_processed=lambda b: session.after_stages(b, b.received_s))
        n_total = player.recording.n_samples
        player.start()
        deadline = time.monotonic() + timeout_s
        while engine.ring.n_written < n_total and time.monotonic() < deadline:
            if engine.step() == 0:
                time.sleep(0.0005)
        time.sleep(0.2)  # markers of the last samples
        engine.step()
        player.stop()
        source.close()
        session.finish()
        assert engine.ring.n_written == n_total, "samples lost on the way"
        assert engine.n_gaps == 0
        return session

    return run
