"""Protocol API: loading errors, and hostile protocols contained while acquisition goes on.

Each hostile protocol runs against a real SimulatedAmplifier on loopback LSL, through the
Engine, with a BrainVision recorder as a second sink; the engine runs on its own thread and the
test samples the engine's sample counter and the recorder while the protocol misbehaves.
"""
from __future__ import annotations

import math
import textwrap
import threading
import time

import numpy as np
import pytest

from tmseeg.io.recorder import RawRecorderSink
from tmseeg.closedloop import Protocol, ProtocolLoadError, ProtocolRunner, TriggerRequest
from tmseeg.closedloop.protocol import ProtocolConfigError, load_protocol
from tmseeg.closedloop.triggers import LSLTriggerOutput
from tmseeg.engine import Engine
from tmseeg.sim.amplifier import SimulatedAmplifier
from tmseeg.sim.model import SimConfig
from tmseeg.stream.block import StreamMeta
from tmseeg.stream.inlet import LSLSource
from tmseeg.io.recorder import BrainVisionRecorder


# -- loading ----------------------------------------------------------------------------------

def _write(tmp_path, text, name="proto.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_protocol(tmp_path / "nope.py")


def test_load_syntax_error_names_line(tmp_path):
    p = _write(tmp_path, """\
        from tmseeg.closedloop import Protocol
        class P(Protocol):
            def on_block(self, state)
                return None
        """)
    with pytest.raises(ProtocolLoadError, match=r"syntax error at line 3"):
        load_protocol(p)


def test_load_import_error_names_line(tmp_path):
    p = _write(tmp_path, "from tmseeg.closedloop import Protocol\n\nx = 1 / 0\n")
    with pytest.raises(ProtocolLoadError, match=r"ZeroDivisionError while importing at line 3"):
        load_protocol(p)


def test_load_no_subclass_and_several(tmp_path):
    p = _write(tmp_path, "class NotAProtocol:\n    pass\n")
    with pytest.raises(ProtocolLoadError, match="no Protocol subclass"):
        load_protocol(p)
    p2 = _write(tmp_path, """\
        from tmseeg.closedloop import Protocol
        class A(Protocol):
            pass
        class B(Protocol):
            pass
        """, "two.py")
    with pytest.raises(ProtocolLoadError, match="several"):
        load_protocol(p2)
    assert load_protocol(f"{p2}:B").__name__ == "B"
    with pytest.raises(ProtocolLoadError, match="no Protocol subclass named 'C'"):
        load_protocol(p2, name="C")


def test_example_protocols_load():
    for f in ("apps/protocol_mu_phase.py", "apps/protocol_motor_threshold.py",
              "apps/protocol_tep_target.py"):
        cls = load_protocol(f)
        assert issubclass(cls, Protocol)


def test_bad_configuration_is_refused():
    meta = StreamMeta(ch_names=("C3", "C1", "C5", "FC3", "CP3", "Cz"), sfreq=1000.0)

    class BadChannel(Protocol):
        channels = "C4 Laplacian"

    class EtpNoWarmup(Protocol):
        channels, estimator = "C3", "etp"

    class EstimatorNoChannels(Protocol):
        estimator = "ar"

    class Loosen(Protocol):
        guard = {"min_interval_s": 0.01}

    with pytest.raises(ProtocolConfigError, match="C4"):
        ProtocolRunner(BadChannel, meta)
    with pytest.raises(ProtocolConfigError, match="warmup_s"):
        ProtocolRunner(EtpNoWarmup, meta)
    with pytest.raises(ProtocolConfigError, match="set channels"):
        ProtocolRunner(EstimatorNoChannels, meta)
    r = ProtocolRunner(Loosen, meta)  # a protocol can only tighten the guard
    assert r.guard.min_interval_s == 1.0
    r.close()


# -- hostile protocols, live ------------------------------------------------------------------

class Live:
    """Simulator -> LSL -> Engine (thread) with the runner and a recorder as sinks."""

    def __init__(self, protocol, uid, tmp_path, listen=True):
        self.trig = f"trig-{uid}"
        self.amp = SimulatedAmplifier(
            SimConfig(n_channels=32, sfreq=2000.0, seed=1, schedule="external",
                      include_emg=False), name=f"cl-{uid}", trigger_stream_name=self.trig,
            listen_triggers=listen)
        self.amp.start()
        self.source = LSLSource.resolve(name=f"cl-{uid}", marker_name=f"cl-{uid}-markers",
                                        timeout_s=20, marker_timeout_s=20)
        self.out = LSLTriggerOutput(self.trig)
        self.runner = ProtocolRunner(protocol, self.source.meta, outputs=[self.out])
        self.rec = BrainVisionRecorder(tmp_path / "rec", self.source.meta)
        self.engine = Engine(self.source, sinks=[RawRecorderSink(self.rec), self.runner])
        self.thread = threading.Thread(target=self.engine.run, daemon=True)
        self.thread.start()

    def counts(self):
        return self.engine.ring.n_written, self.rec.n_samples_written

    def close(self):
        self.engine.stop()
        self.thread.join(5)
        self.runner.close()
        self.rec.close()
        self.amp.stop()
        self.source.close()


def _advancing(live, seconds, every=0.5):
    """Sample counts every ``every`` s; True if both engine and recorder always advanced."""
    deadline = time.monotonic() + 10
    while live.counts()[1] == 0 and time.monotonic() < deadline:  # inlet opening
        time.sleep(0.01)
    seen = [live.counts()]
    for _ in range(int(seconds / every)):
        time.sleep(every)
        seen.append(live.counts())
    eng = np.diff([c[0] for c in seen])
    rec = np.diff([c[1] for c in seen])
    return seen, bool((eng > 0).all()), bool((rec > 0).all())


def _run_live(protocol, uid, tmp_path, seconds):
    """Run ``protocol`` live for ``seconds``: acquisition and recording must never stop.
    Returns the (closed) live setup and the sample counts seen."""
    live = Live(protocol, uid, tmp_path)
    try:
        seen, eng_ok, rec_ok = _advancing(live, seconds)
    finally:
        live.close()
    assert eng_ok and rec_ok, seen
    return live, seen


class Raises(Protocol):
    def setup(self, info):
        self.n = 0

    def on_block(self, state):
        self.n += 1
        if self.n == 20:
            raise ZeroDivisionError("boom in the protocol")
        return None


def test_raising_protocol_is_disabled_acquisition_continues(uid, tmp_path):
    live, seen = _run_live(Raises, uid, tmp_path, 3.0)
    r = live.runner
    assert seen[-1][0] - seen[0][0] > 2.5 * 2000
    assert r.n_exceptions == 1
    assert "ZeroDivisionError" in r.disabled_reason
    assert any("boom in the protocol" in e and "Traceback" in e for e in r.errors)
    assert r.n_calls["on_block"] == 20  # never called again once disabled


class RaisesContinue(Raises):
    on_error = "continue"

    def on_block(self, state):
        raise ValueError("always")


def test_raising_protocol_continue_policy(uid, tmp_path):
    live = Live(RaisesContinue, uid, tmp_path)
    try:
        time.sleep(2.0)
    finally:
        live.close()
    r = live.runner
    assert not r.disabled_reason
    assert r.n_exceptions == r.n_calls["on_block"] > 50


class Hangs(Protocol):
    """First on_block call blocks 2.5 s (in C: not interruptible), then returns a request."""
    callback_timeout_ms = 50.0

    def setup(self, info):
        self.n = 0

    def on_block(self, state):
        self.n += 1
        if self.n == 10:
            time.sleep(2.5)
            return state.trigger(50.0, label="TMS late", after_ms=20)
        return None


def test_hanging_protocol_abandoned_and_skipped(uid, tmp_path):
    live = Live(Hangs, uid, tmp_path)
    try:
        seen, eng_ok, rec_ok = _advancing(live, 2.0, every=0.25)
        stuck_during = live.runner.stuck
        skipped_during = live.runner.n_skipped
        time.sleep(1.5)  # the callback returns (its late request must be discarded)
        calls_after = live.runner.n_calls["on_block"]
        time.sleep(0.5)
        calls_later = live.runner.n_calls["on_block"]
    finally:
        live.close()
    r = live.runner
    assert eng_ok and rec_ok, seen  # acquisition never waited for the protocol
    assert stuck_during and skipped_during > 50
    assert r.n_timeouts == 1
    assert any("deadline" in e for e in r.errors)
    assert not r.accepted and r.counts.get("ok", 0) == 0  # late result discarded
    assert calls_later > calls_after >= 10  # calls resumed once it returned
    assert not live.amp.truth.pulses


class BusyLoop(Protocol):
    """Spins in pure Python forever on its 10th call: interrupted by the injected timeout."""
    callback_timeout_ms = 50.0

    def setup(self, info):
        self.n = 0

    def on_block(self, state):
        self.n += 1
        if self.n == 10:
            while True:
                pass
        return None


def test_busy_loop_protocol_interrupted(uid, tmp_path):
    live, seen = _run_live(BusyLoop, uid, tmp_path, 2.0)
    r = live.runner
    assert r.n_timeouts == 1
    assert any("interrupted" in e for e in r.errors)
    assert not r.stuck and r.n_calls["on_block"] > 50  # recovered and called again


class Floods(Protocol):
    def on_block(self, state):
        return state.trigger(40.0, label="TMS flood", after_ms=50)


def test_flooding_protocol_held_by_guard(uid, tmp_path):
    live = Live(Floods, uid, tmp_path)
    try:
        seen, eng_ok, rec_ok = _advancing(live, 4.5)
        live.engine.stop()  # no new decisions; let the simulator reach the last target
        live.thread.join(5)
        time.sleep(0.3)
    finally:
        live.close()
    r = live.runner
    assert eng_ok and rec_ok
    acc = [x["target_time_s"] for x in r.accepted]
    assert 3 <= len(acc) <= 5, len(acc)  # at most one per second (guard min_interval 1 s)
    assert np.min(np.diff(acc)) >= 1.0
    assert r.counts["min_interval"] > 100
    fired = [p.sample for p in live.amp.truth.pulses]
    t_end = live.amp.t0_s + live.amp.n_sent / 2000.0
    # targets the simulator surely lived to reach: a trigger sent in the last moments can still be
    # in flight on LSL when the test stops the simulator, and one sent before the simulator's
    # trigger inlet connected is never delivered (LSL keeps no history for late subscribers)
    due = [t for t in acc if t < t_end - 1.0]
    assert len(due) - 1 <= len(fired) <= len(acc)
    t_fired = live.amp.t0_s + np.array(fired) / 2000.0
    # every fired pulse is an accepted decision, on its target sample
    assert all(np.min(np.abs(np.array(acc) - t)) < 1e-3 for t in t_fired), (t_fired, acc)
    assert len(fired) < 2 or np.min(np.diff(fired)) / 2000.0 >= 0.999
    for rec in r.accepted:  # the latency trace is complete
        for k in ("received_s", "last_sample_time_s", "decision_time_s", "send_time_s",
                  "target_time_s", "fired_at_s"):
            assert math.isfinite(rec[k]), k
        assert rec["last_sample_time_s"] <= rec["decision_time_s"] <= rec["send_time_s"]
        assert rec["send_time_s"] < rec["target_time_s"]
    assert live.runner.guard.n_committed == len(r.accepted)


class Nonsense(Protocol):
    def setup(self, info):
        self.n = 0
        self.answers = ["fire!", 42, {"target_time_s": 1.0}, [None],
                        TriggerRequest(delay_s=0.02, intensity_pct="high"),
                        TriggerRequest(delay_s=0.02, intensity_pct=float("nan")),
                        TriggerRequest(delay_s=0.02, intensity_pct=150.0),
                        TriggerRequest(delay_s=-1.0, intensity_pct=50.0),
                        TriggerRequest(target_time_s=1.0, intensity_pct=50.0),
                        TriggerRequest(intensity_pct=50.0),
                        TriggerRequest(delay_s=0.02, intensity_pct=50.0, label=123)]

    def on_block(self, state):
        self.n += 1
        if self.n <= len(self.answers):
            return self.answers[self.n - 1]
        return None


def test_nonsense_returns_rejected_with_reason(uid, tmp_path):
    live, seen = _run_live(Nonsense, uid, tmp_path, 1.5)
    r = live.runner
    codes = [x["code"] for x in r.records]
    assert codes == ["bad_return"] * 4 + ["bad_intensity"] * 3 + ["bad_target", "target_past",
                                                                  "bad_target", "bad_request"]
    assert all(not x["accepted"] for x in r.records)
    assert "returned str" in r.records[0]["reason"]
    assert not live.amp.truth.pulses
    assert r.n_exceptions == 0 and not r.disabled_reason


# -- latency: the protocol sees raw data before the (slow) artifact stages ---------------------

class _StallingStage:
    """A stage as slow as a decay fit on a big cap: holds the thread 300 ms once a second."""

    name = "stall"

    def __init__(self, sfreq):
        self.every = int(sfreq)
        self.n = 0

    def process(self, block):
        before, self.n = self.n, self.n + block.n_samples
        if before // self.every != self.n // self.every:
            time.sleep(0.3)
        return block

    def flush(self):
        return None

    def reset(self):
        self.n = 0


class RecordsLag(Protocol):
    def setup(self, info):
        self.lags_ms = []

    def on_block(self, state):
        self.lags_ms.append((state.now_s - state.newest_time_s) * 1e3)
        return None


def test_protocol_sees_each_block_before_the_stages_process_it(uid, amplifier):
    """The engine hands raw blocks to the runner before the stages: a 300 ms stall in artifact
    removal (a decay fit after each pulse) must not delay the protocol's view of the data
    (the trigger decision) by 300 ms."""
    amp = amplifier(SimConfig(n_channels=32, sfreq=2000.0, seed=1, schedule="external",
                              include_emg=False), name=f"lag-{uid}",
                    listen_triggers=False)
    src = LSLSource.resolve(name=f"lag-{uid}", timeout_s=20, with_markers=False)
    runner = ProtocolRunner(RecordsLag, src.meta)
    engine = Engine(src, stages=[_StallingStage(2000.0)], sinks=[runner])
    engine.run(duration_s=4.5)
    runner.close()
    amp.stop()
    lags = np.array(runner.protocol.lags_ms)
    print(f"\n{lags.size} protocol calls; data -> protocol lag median {np.median(lags):.1f} ms, "
          f"max {lags.max():.1f} ms")
    assert lags.size > 50
    assert lags.max() < 150.0, np.sort(lags)[-5:]
