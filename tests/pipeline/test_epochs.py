"""Epocher: exact cuts, emission timing, late events, edge pulses, gaps and rejection."""
import numpy as np
import pytest

from tmseeg.pipeline.epochs import Epocher
from tmseeg.stream.block import Block, Event, StreamMeta, blocks_from_array, EVENT_PULSE

SF = 1000.0


def _meta():
    return StreamMeta(["C3", "Cz", "C4", "EMG"], SF, ["eeg", "eeg", "eeg", "emg"])


def _pulse(s):
    return Event(s, "TMS", EVENT_PULSE)


def _data(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((4, n)) * 5 + np.arange(4)[:, None] * 100.0


class _Bads:
    def __init__(self, bads):
        self.bads = bads


def test_epoch_is_exact_slice_minus_baseline_and_emitted_when_complete():
    data = _data()
    pulses = [1000, 2500, 4000]
    ep = Epocher(tmin_ms=-200, tmax_ms=300, baseline_ms=(-200, -10), reject_uv=None)
    got = {}
    for b in blocks_from_array(data, _meta(), 64, [_pulse(p) for p in pulses]):
        for e in ep.push(b):
            got[e.sample] = (e, b.stop_sample)
    assert sorted(got) == pulses
    for p in pulses:
        e, when = got[p]
        # emitted by the first block that completes the post-window, not later
        assert p + 301 <= when < p + 301 + 64
        seg = data[:3, p - 200:p + 301]
        expected = seg - seg[:, :191].mean(axis=1, keepdims=True)
        np.testing.assert_allclose(e.data_uv, expected, atol=1e-12)
        np.testing.assert_allclose(e.times_ms, np.arange(-200, 301))
        assert e.ch_names == ("C3", "Cz", "C4") and not e.rejected and e.reason == ""
        assert e.first_sample == p - 200
        test = np.r_[0:198, 211:501]  # outside (-2, 10) ms
        np.testing.assert_allclose(e.ptp_uv, np.ptp(expected[:, test], axis=1))
    assert ep.flush() == []


def test_late_events_give_identical_epochs():
    data = _data(seed=1)
    pulses = [800, 1500, 3000]
    ep_on = Epocher(tmin_ms=-300, tmax_ms=400, reject_uv=None, baseline_ms=(-300, -10))
    ep_late = Epocher(tmin_ms=-300, tmax_ms=400, reject_uv=None, baseline_ms=(-300, -10))
    on = [e for b in blocks_from_array(data, _meta(), 50, [_pulse(p) for p in pulses]) for e in ep_on.push(b)]
    late = []
    for b in blocks_from_array(data, _meta(), 50):
        # each marker arrives 1.2 s after its pulse, i.e. after the whole post-window
        b.events = [_pulse(p) for p in pulses if b.first_sample <= p + 1200 < b.stop_sample]
        late += ep_late.push(b)
    assert [e.sample for e in late] == pulses
    for a, b in zip(on, late):
        np.testing.assert_array_equal(a.data_uv, b.data_uv)


def test_pulse_at_start_and_end_of_file():
    data = _data(3000, seed=2)
    ep = Epocher(tmin_ms=-500, tmax_ms=500, reject_uv=None)
    evs = [_pulse(0), _pulse(300), _pulse(1500), _pulse(2800)]
    out = [e for b in blocks_from_array(data, _meta(), 100, evs) for e in ep.push(b)]
    assert [e.sample for e in out] == [0, 300, 1500]
    assert out[0].rejected and out[0].reason.startswith("pre-window missing")
    assert out[1].rejected and out[1].reason.startswith("pre-window missing")
    assert np.isnan(out[1].data_uv[:, :200]).all() and np.isfinite(out[1].data_uv[:, 200:]).all()
    assert not out[2].rejected
    rest = ep.flush()
    assert [e.sample for e in rest] == [2800]
    assert rest[0].rejected and rest[0].reason.startswith("incomplete")
    assert np.isfinite(rest[0].data_uv[:, :700]).all() and np.isnan(rest[0].data_uv[:, 700:]).all()
    assert ep.n_emitted == 4 and ep.n_rejected == 3


def test_nan_gap_and_missing_blocks_reject_with_reason():
    data = _data(6000, seed=3)
    data[:, 1200:1250] = np.nan  # gap inside pulse 1000's epoch
    data[:, 3002:3008] = np.nan  # NaN only inside the pulse window of pulse 3000: tolerated
    blocks = list(blocks_from_array(data, _meta(), 100, [_pulse(p) for p in (1000, 3000, 4700)]))
    del blocks[45:47]  # samples 4500..4699 never arrived -> gap before pulse 4700
    ep = Epocher(tmin_ms=-300, tmax_ms=300, reject_uv=None, baseline_ms=(-300, -10))
    out = {e.sample: e for b in blocks for e in ep.push(b)}
    assert set(out) == {1000, 3000, 4700}
    assert out[4700].rejected and out[4700].reason.startswith("NaN in data")
    assert np.isnan(out[4700].data_uv[:, 100:300]).all()  # the 200 missing samples are NaN
    assert out[1000].rejected and out[1000].reason.startswith("NaN in data")
    assert "50.0 ms missing" in out[1000].reason
    assert not out[3000].rejected
    # a gap signalled only by first_sample jumping forward
    ep2 = Epocher(tmin_ms=-300, tmax_ms=300, reject_uv=None, baseline_ms=(-300, -10))
    blocks = list(blocks_from_array(_data(3000, 4), _meta(), 100, [_pulse(1500)]))
    out2 = [e for i, b in enumerate(blocks) if i != 13 for e in ep2.push(b)]
    assert len(out2) == 1 and out2[0].rejected and "NaN" in out2[0].reason
    assert np.isnan(out2[0].data_uv[:, 100:200]).all()


def test_amplitude_rejection_outside_pulse_window_and_bads_ignored():
    data = _data(5000, seed=5)
    data[1, 1005] += 1000.0   # inside (-2, 10) ms of pulse 1000: ignored
    data[1, 2100] += 200.0    # 100 ms after pulse 2000: rejects (ptp > 150)
    data[2, 3100] += 200.0    # same on C4, but C4 is bad: ignored
    evs = [_pulse(p) for p in (1000, 2000, 3000)]
    ep = Epocher(tmin_ms=-300, tmax_ms=300, baseline_ms=(-300, -10), bads_from=_Bads({"C4": "flat"}))
    out = {e.sample: e for b in blocks_from_array(data, _meta(), 100, evs) for e in ep.push(b)}
    assert not out[1000].rejected
    assert out[2000].rejected and out[2000].reason.startswith("amplitude") and "Cz" in out[2000].reason
    assert not out[3000].rejected and out[3000].bads == ("C4",)
    assert out[3000].ptp_uv[2] > 150
    # mode "abs": the same 200 uV spike also exceeds +-150 uV
    ep_abs = Epocher(tmin_ms=-300, tmax_ms=300, reject_mode="abs", reject_uv=150)
    r = [e for b in blocks_from_array(data, _meta(), 100, evs[1:2]) for e in ep_abs.push(b)]
    assert r[0].rejected and "abs" in r[0].reason
    ep_big = Epocher(tmin_ms=-300, tmax_ms=300, reject_mode="abs", reject_uv=250)
    r = [e for b in blocks_from_array(data, _meta(), 100, evs[1:2]) for e in ep_big.push(b)]
    assert not r[0].rejected


def test_ptp_unless_slow_rejects_muscle_and_residue_not_blinks():
    """reject_mode "ptp_unless_slow": a blink (a 300-ms, 250-uV bump on a frontal channel) and a
    slow drift keep the pulse; a 100-uV burst at 80 Hz (muscle) 20-40 ms after the pulse, or
    a sharp step of residue, over the limit, rejects it; "ptp" rejects the blink too, and
    what "ptp" keeps is kept."""
    rng = np.random.default_rng(7)
    n = 6000
    data = rng.standard_normal((4, n)) * 3
    t = np.arange(n) / SF
    pulses = (1000, 2500, 4000, 5000)
    # pulse 1000: a blink 150 ms after it, and a drift of 200 uV over the epoch
    data[0] += 250.0 * np.exp(-0.5 * ((t - 1.15) / 0.06) ** 2)
    data[1] += 200.0 * np.clip((np.arange(n) - 700) / 600.0, 0.0, 1.0)
    # pulse 2500: muscle, 20-40 ms after it
    burst = slice(2520, 2540)
    data[2, burst] += 50.0 * np.sin(2 * np.pi * 80 * t[burst])
    # pulse 4000: a 120-uV step 15 ms after it (what a failed interpolation leaves)
    data[1, 4015:4300] += 120.0
    evs = [_pulse(p) for p in pulses]

    def run(mode, limit, fast_limit=100.0):
        ep = Epocher(tmin_ms=-300, tmax_ms=300, baseline_ms=(-300, -10), reject_mode=mode,
                     reject_uv=limit, fast_uv=fast_limit)
        return ep, {e.sample: e for b in blocks_from_array(data, _meta(), 100, evs)
                    for e in ep.push(b)}

    _, ptp = run("ptp", 150.0)
    assert ptp[1000].rejected and not ptp[2500].rejected and not ptp[5000].rejected
    ep, slow_ok = run("ptp_unless_slow", 90.0, 80.0)
    assert not slow_ok[1000].rejected and not slow_ok[5000].rejected  # blink and drift
    assert slow_ok[2500].rejected and slow_ok[4000].rejected  # muscle, residue
    assert slow_ok[2500].reason.startswith("amplitude: ptp") and "C4" in slow_ok[2500].reason
    assert ", fast ptp" in slow_ok[2500].reason and "Cz" in slow_ok[4000].reason
    # it never rejects what "ptp" keeps: the burst is under a 150-uV limit
    assert not run("ptp_unless_slow", 150.0, 80.0)[1][2500].rejected
    # what the fast peak-to-peak measured: ~100 uV of the burst, a few uV of the blink
    burst_uv = float(ep._fast_ptp(slow_ok[2500].data_uv)[2])
    blink_uv = float(ep._fast_ptp(slow_ok[1000].data_uv)[0])
    assert 85.0 < burst_uv < 115.0 and blink_uv < 40.0
    with pytest.raises(ValueError, match="reject_mode"):
        Epocher(reject_mode="fast")
    with pytest.raises(ValueError, match="fast_ms"):
        Epocher(reject_mode="ptp_unless_slow", fast_ms=0.0)


def test_too_late_event_is_rejected_overwritten_and_duplicates_ignored():
    data = _data(12000, seed=6)
    ep = Epocher(tmin_ms=-200, tmax_ms=200, reject_uv=None, baseline_ms=(-200, -10), max_delay_s=1.0)
    out = []
    for b in blocks_from_array(data, _meta(), 100):
        if b.first_sample == 5000:
            b.events = [_pulse(1000), _pulse(4500)]  # 4 s late (too late) and 0.5 s late (fine)
        if b.first_sample == 5100:
            b.events = [_pulse(4500)]  # the same pulse reported twice
        out += ep.push(b)
    assert [e.sample for e in out] == [1000, 4500]
    assert out[0].rejected and out[0].reason.startswith("overwritten")
    assert not out[1].rejected


def test_bad_arguments():
    with pytest.raises(ValueError):
        Epocher(tmin_ms=10, tmax_ms=100)
    with pytest.raises(ValueError):
        Epocher(tmin_ms=-100, baseline_ms=(-600, -150))
    ep = Epocher(picks="eog")
    with pytest.raises(ValueError, match="selects no channel"):
        ep.push(next(blocks_from_array(_data(100), _meta(), 100)))
    ep = Epocher(reject_uv=None)
    b = next(blocks_from_array(_data(200), _meta(), 100))
    ep.push(b)
    with pytest.raises(ValueError, match="overlapping"):
        ep.push(b)


def test_empty_blocks_from_holding_stages_carry_events_only():
    data = _data(3000, seed=7)
    ep = Epocher(tmin_ms=-200, tmax_ms=200, reject_uv=None, baseline_ms=(-200, -10))
    out = []
    for b in blocks_from_array(data, _meta(), 100):
        # a holding stage announces the pulse at 1000 in an empty block that "starts" later
        if b.first_sample == 900:
            empty = Block(np.empty((4, 0)), 1500, np.empty(0), _meta(), [_pulse(1000)])
            out += ep.push(empty)
        out += ep.push(b)
    assert len(out) == 1 and not out[0].rejected
    seg = data[:3, 800:1201]
    np.testing.assert_allclose(out[0].data_uv, seg - seg[:, :191].mean(1, keepdims=True), atol=1e-12)


def test_one_block_longer_than_the_ring_still_gives_every_epoch():
    """A stage that held seconds back (cleaning calibrating until the end of a short file)
    releases them in one block: every epoch in it must be cut, none "overwritten"."""
    data = _data(n=40000, seed=3)
    pulses = list(range(1000, 39000, 1500))
    small = [e for b in blocks_from_array(data, _meta(), 100, [_pulse(p) for p in pulses])
             for e in Epocher(tmin_ms=-200, tmax_ms=300, reject_uv=None).push(b)]
    ep = Epocher(tmin_ms=-200, tmax_ms=300, reject_uv=None, max_delay_s=2.0)
    one = ep.push(Block(data, 0, np.arange(data.shape[1]) / SF, _meta(),
                        events=[_pulse(p) for p in pulses]))
    assert ep._ring.capacity < data.shape[1]
    assert [e.sample for e in one] == pulses and not any(e.rejected for e in one)
    for a, b in zip(small, one):
        np.testing.assert_array_equal(a.data_uv, b.data_uv)


def test_paired_pulse_and_burst_give_one_epoch_locked_to_the_last_pulse():
    """Conditioning + test pulse 3 ms apart, and a 3-pulse 50-Hz burst: the earlier pulses of
    each group are rejected as "grouped", the last one is the epoch; group_ms=0 cuts all."""
    data = _data(n=9000, seed=4)
    pulses = [1000, 1003, 4000, 4020, 4040]
    ep = Epocher(tmin_ms=-200, tmax_ms=300, baseline_ms=(-200, -10), reject_uv=None)
    got = [e for b in blocks_from_array(data, _meta(), 50, [_pulse(p) for p in pulses])
           for e in ep.push(b)] + ep.flush()
    assert [e.sample for e in got] == pulses
    grouped = {e.sample: e.reason for e in got if e.rejected}
    assert sorted(grouped) == [1000, 4000, 4020]
    assert grouped[1000].startswith("grouped: another pulse 3.0 ms later")
    assert grouped[4000].startswith("grouped: another pulse 20.0 ms later")
    assert not any(e.rejected for e in got if e.sample in (1003, 4040))
    plain = Epocher(tmin_ms=-200, tmax_ms=300, baseline_ms=(-200, -10), reject_uv=None,
                    group_ms=0)
    got = [e for b in blocks_from_array(data, _meta(), 50, [_pulse(p) for p in pulses])
           for e in plain.push(b)]
    assert [e.sample for e in got] == pulses and not any(e.rejected for e in got)
    with pytest.raises(ValueError, match="group_ms"):
        Epocher(group_ms=-1)
