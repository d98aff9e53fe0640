"""SafetyGuard: every rule fires with its reason, floods stay within limits, hostile input is
refused without raising, and concurrent threads cannot overbook."""
from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from tmseeg.closedloop.guard import GuardDecision, SafetyGuard, TriggerRequest


class FakeClock:
    """A settable clock (the guard's clock parameter exists for exactly this)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def req(target=None, delay=None, inten=60.0, label="TMS", **kw) -> TriggerRequest:
    return TriggerRequest(target_time_s=target, delay_s=delay, intensity_pct=inten, label=label,
                          **kw)


def fresh(**kw) -> SafetyGuard:
    return SafetyGuard(clock=FakeClock(), **kw)


def ok_check(g: SafetyGuard, target: float, now: float | None = None, **kw) -> GuardDecision:
    now = g.clock() if now is None else now
    return g.check(req(target), now_s=now, newest_sample_time_s=now - 0.005, **kw)


def test_accept_and_log():
    g = fresh()
    d = ok_check(g, 1000.05)
    assert d.accepted and d.code == "ok" and d.target_time_s == 1000.05
    assert g.commit(d) and not g.commit(d)  # idempotent
    assert g.n_committed == 1 and g.n_accepted == 1
    entry = [e for e in g.log if e["event"] == "decision"][0]
    assert entry["accepted"] and entry["code"] == "ok" and entry["check_ms"] >= 0
    assert entry["target_time_s"] == 1000.05 and entry["intensity_pct"] == 60.0
    assert [e["event"] for e in g.log] == ["decision", "commit", "commit"]
    # delay_s resolved from requested_at_s
    d2 = g.check(req(delay=0.02, requested_at_s=1001.5), now_s=1001.51,
                 newest_sample_time_s=1001.5)
    assert d2.accepted and d2.target_time_s == pytest.approx(1001.52)
    assert g.log[-1]["request_latency_ms"] == pytest.approx(10.0)


@pytest.mark.parametrize("kwargs,setup,request_,call,code", [
    ({}, [], req(999.0), {}, "target_past"),
    ({"max_lead_s": 2.0}, [], req(1003.0), {}, "target_far"),
    ({}, [], req(1000.1, inten=120.0), {}, "bad_intensity"),
    ({"max_intensity_pct": 50.0}, [], req(1000.1, inten=60.0), {}, "bad_intensity"),
    ({}, [], req(1000.1), {"newest_sample_time_s": None}, "no_data_time"),
    ({}, [], req(1000.1), {"newest_sample_time_s": 999.8}, "stale_data"),
    ({}, [], req(1000.1), {"last_gap_time_s": 999.5}, "recent_gap"),
    ({"min_interval_s": 1.0}, [1000.1], req(1000.9), {}, "min_interval"),
    ({"min_interval_s": 1.0}, [1001.5], req(1000.9), {}, "min_interval"),  # before a booked one
    ({"min_interval_s": 0.1, "max_rate": [(1.0, 2)]}, [1000.1, 1000.5], req(1000.9), {},
     "rate_limit"),
    ({"min_interval_s": 0.0, "max_pulses_session": 2, "max_rate": []}, [1000.1, 1000.2],
     req(1000.3), {}, "session_limit"),
    ({"min_interval_s": 0.0, "max_pulses_train": 2, "max_rate": []}, [1000.1, 1000.2],
     req(1000.3), {}, "train_limit"),
    ({}, [], req(1000.1, 0.01), {}, "bad_target"),  # both target and delay
    ({}, [], req(), {}, "bad_target"),  # neither
])
def test_each_rule_fires_with_its_reason(kwargs, setup, request_, call, code):
    g = fresh(**kwargs)
    for t in setup:
        assert ok_check(g, t).accepted
    args = {"now_s": 1000.0, "newest_sample_time_s": 999.99}
    args.update(call)
    d = g.check(request_, **args)
    assert not d.accepted and d.code == code, d
    assert d.reason.startswith("refused") and len(d.reason) > 15
    assert g.log[-1]["code"] == code and g.log[-1]["accepted"] is False
    assert g.n_accepted == len(setup)  # refusals never count
    assert not g.commit(d)


def test_limits_are_not_off_by_one():
    g = fresh(min_interval_s=0.5, max_rate=[(1.0, 2)])
    assert ok_check(g, 1000.0).accepted
    assert ok_check(g, 1000.5).accepted  # exactly the minimum interval
    assert ok_check(g, 1001.0).accepted  # [1000.0, 1001.0) holds 2, [1000.5, 1001.5) holds 2
    assert not ok_check(g, 1001.4).accepted
    g2 = fresh(min_interval_s=0.0, max_pulses_train=3, train_break_s=1.0, max_rate=[])
    for t in (1000.1, 1000.2, 1000.3):
        assert ok_check(g2, t).accepted
    assert ok_check(g2, 1000.4).code == "train_limit"
    assert ok_check(g2, 1001.5).accepted  # a pause > train_break_s starts a new train
    # data 99 ms old passes a 100 ms limit, 101 ms does not; a gap 1.0 s ago is fine
    g3 = fresh()
    assert g3.check(req(1000.1), now_s=1000.0, newest_sample_time_s=999.899).code == "stale_data"
    assert g3.check(req(1000.1), now_s=1000.0, newest_sample_time_s=999.901).accepted
    assert g3.check(req(1001.2), now_s=1000.0, newest_sample_time_s=999.99,
                    last_gap_time_s=999.0).accepted


def test_cancel_releases_the_slot():
    g = fresh(min_interval_s=1.0, max_pulses_session=1)
    d = ok_check(g, 1000.2)
    assert ok_check(g, 1000.5).code == "session_limit"
    assert g.cancel(d) and not g.cancel(d) and not g.commit(d)
    assert ok_check(g, 1000.5).accepted
    assert g.accepted_times() == [1000.5]


@pytest.mark.parametrize("max_rate,min_interval,session", [
    ([(1.0, 2), (60.0, 30)], 0.0, 1000),
    ([(10.0, 6), (60.0, 30)], 1.0, 25),
    ([], 0.2, 10_000),
])
def test_flood_never_exceeds_limits(max_rate, min_interval, session):
    """10,000 requests in a tight loop, random targets in the next few seconds while time
    advances: accepted pulses satisfy every limit exactly."""
    clock = FakeClock(0.0)
    g = SafetyGuard(clock=clock, min_interval_s=min_interval, max_rate=max_rate,
                    max_pulses_session=session)
    rng = np.random.default_rng(5)
    n_acc = 0
    for i in range(10_000):
        clock.t = i * 0.01  # 100 s of requests at 100 Hz
        d = g.check(req(clock.t + rng.uniform(0, 3.0)), newest_sample_time_s=clock.t)
        if d.accepted:
            n_acc += 1
            g.commit(d)
    times = np.array(g.accepted_times())
    assert n_acc == len(times) <= session
    assert n_acc > 10  # the flood did get pulses through (the test is not vacuous)
    if len(times) > 1:
        assert np.diff(times).min() >= min_interval - 1e-12
    for window, limit in max_rate:
        counts = [np.count_nonzero((times >= a) & (times < a + window)) for a in times]
        assert max(counts) <= limit
    assert len([e for e in g.log if e["event"] == "decision"]) == 10_000


def test_threads_cannot_overbook():
    g = SafetyGuard(clock=FakeClock(0.0), min_interval_s=0.05, max_rate=[(1.0, 5)],
                    max_pulses_session=40)
    barrier = threading.Barrier(4)

    def worker(seed):
        rng = np.random.default_rng(seed)
        barrier.wait()
        for _ in range(2000):
            d = g.check(req(float(rng.uniform(0, 9.0))), now_s=0.0, newest_sample_time_s=0.0)
            if d.accepted:
                g.commit(d)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = np.array(g.accepted_times())
    assert g.n_committed == len(times) <= 40
    assert np.diff(times).min() >= 0.05
    assert max(np.count_nonzero((times >= a) & (times < a + 1.0)) for a in times) <= 5
    assert len({e["decision_id"] for e in g.log if e["event"] == "decision"}) == 8000


class Evil:
    def __float__(self):
        raise RuntimeError("boom")

    def __repr__(self):
        raise RuntimeError("no repr either")


HOSTILE = [None, "1000.1", "abc", float("nan"), float("inf"), -float("inf"), -1.0, 1e308,
           -1e308, True, [1000.1], {"t": 1}, Evil(), object(), 10 ** 400, complex(1, 1)]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda v: type(v).__name__ + ":" +
                         (str(v)[:12] if not isinstance(v, Evil) else "evil"))
def test_hostile_values_are_refused_not_raised(value):
    g = fresh()
    good = {"now_s": 1000.0, "newest_sample_time_s": 999.99}
    cases = [
        (req(value), good),
        (req(delay=value), good),
        (req(1000.1, inten=value), good),
        (req(1000.1, label=value), good),
        (req(delay=0.1, requested_at_s=value), good),
        (req(1000.1), {"now_s": value, "newest_sample_time_s": 999.99}),
        (req(1000.1), {"now_s": 1000.0, "newest_sample_time_s": value}),
        (value, good),
    ]
    if value is None:  # None is legitimate for requested_at_s and now_s (= use the clock)
        del cases[4:6]
    if isinstance(value, str):  # any string is a legitimate label
        del cases[3]
    for r, kw in cases:
        d = g.check(r, **kw)
        assert isinstance(d, GuardDecision)
        assert not d.accepted, (r, kw, d)
        assert d.code != "ok" and d.reason
    # gap time: None (no gap) and finite times long past pass; anything else is refused
    d = g.check(req(1000.1), now_s=1000.0, newest_sample_time_s=999.99, last_gap_time_s=value)
    long_ago = isinstance(value, float) and math.isfinite(value) and value <= 999.0
    assert d.accepted == (value is None or long_ago)
    # requested_at_s used only for logging when target_time_s is given: still never raises
    g.check(req(1000.1, requested_at_s=value, phase_rad=value, amplitude_uv=value), **good)
    assert not g.commit(value) and not g.cancel(value)  # type: ignore[arg-type]
    assert all(isinstance(e, dict) for e in g.log)


def test_clock_failure_refuses():
    def broken():
        raise OSError("clock gone")

    g = SafetyGuard(clock=broken)
    d = g.check(req(1.0), newest_sample_time_s=0.0)
    assert not d.accepted and "clock" in d.reason


def test_bad_configuration_raises_clearly():
    with pytest.raises(ValueError, match="min_interval_s"):
        SafetyGuard(min_interval_s=-1)
    with pytest.raises(ValueError, match="max_rate"):
        SafetyGuard(max_rate=[(1.0, 0)])
    with pytest.raises(ValueError, match="max_rate"):
        SafetyGuard(max_rate=[3])
    with pytest.raises(ValueError, match="max_pulses_session"):
        SafetyGuard(max_pulses_session=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_intensity_pct"):
        SafetyGuard(max_intensity_pct=float("nan"))


def test_default_clock_is_lsl():
    import pylsl

    g = SafetyGuard()
    now = pylsl.local_clock()
    d = g.check(req(delay=0.05), newest_sample_time_s=now)
    assert d.accepted and math.isclose(d.target_time_s, d.decided_at_s + 0.05)
    assert abs(d.decided_at_s - now) < 1.0
