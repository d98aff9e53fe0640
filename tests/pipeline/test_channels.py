"""Bad-channel detection, spherical-spline interpolation and the average reference."""
import numpy as np
import pytest
from scipy import signal

from tmseeg.pipeline.base import Chain, concat_blocks
from tmseeg.pipeline.channels import BadChannelDetector, BadChannelInterpolation, resolve_picks, spline_matrix
from tmseeg.stream.montage import standard_montage
from tmseeg.pipeline.reference import AverageReference, average_reference
from tmseeg.stream.block import Event, StreamMeta, blocks_from_array, EVENT_PULSE

SF = 1000.0
NAMES = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz",
         "C4", "T8", "CP5", "CP1", "CP2", "CP6", "P7", "P3", "Pz", "P4", "P8", "POz", "O1", "Oz",
         "O2", "FCz", "CPz", "AFz"]


def _meta(emg=True):
    return StreamMeta(NAMES + (["EMG"] if emg else []), SF,
                      ["eeg"] * len(NAMES) + (["emg"] if emg else []))


def _positions():
    mont = standard_montage("auto").get_positions()["ch_pos"]
    lookup = {k.lower(): v for k, v in mont.items()}
    pos = np.array([lookup[n.lower()] for n in NAMES])
    return pos / np.linalg.norm(pos, axis=1, keepdims=True)


def _smooth_field(n, rng):
    """Spatially smooth scalp data: low-order polynomials of the unit-sphere position."""
    p = _positions()
    basis = np.column_stack([p[:, 0], p[:, 1], p[:, 2], p[:, 0] * p[:, 1], p[:, 1] ** 2 - p[:, 0] ** 2])
    b, a = signal.butter(2, 20, fs=SF)
    courses = signal.lfilter(b, a, rng.standard_normal((basis.shape[1], n)), axis=1) * 60
    return basis @ courses


def _session(rng, n=8000, return_smooth=False):
    """32 EEG channels (smooth field + independent 1/f-ish noise) and one EMG channel."""
    smooth = _smooth_field(n, rng)
    eeg = smooth + signal.lfilter([1], [1, -0.9], rng.standard_normal((32, n)), axis=1) * 3
    emg = rng.standard_normal((1, n)) * 50
    data = np.vstack([eeg, emg])
    return (data, smooth) if return_smooth else data


def _feed(stage, data, meta, events=(), size=50):
    return concat_blocks([stage.process(b) for b in blocks_from_array(data, meta, size, events)])


def test_flat_clipped_noisy_found_with_reasons():
    rng = np.random.default_rng(0)
    meta = _meta()
    data = _session(rng)
    i_flat, i_clip, i_noisy, i_hf = NAMES.index("F3"), NAMES.index("P4"), NAMES.index("O1"), NAMES.index("T8")
    data[i_flat] = 12.0 + 0.01 * rng.standard_normal(data.shape[1])
    data[i_clip] = np.clip(data[i_clip], -np.inf, np.percentile(data[i_clip], 90))
    data[i_noisy] *= 20
    data[i_hf] += 10 * np.sin(2 * np.pi * 300 * np.arange(data.shape[1]) / SF)  # small in RMS, big in HF
    det = BadChannelDetector(window_s=2.0)
    out = _feed(det, data, meta)
    np.testing.assert_array_equal(out.data, data)  # pass-through
    assert set(det.bads) == {"F3", "P4", "O1", "T8"}, det.bads
    assert det.bads["F3"].startswith("flat")
    assert det.bads["P4"].startswith("clipped")
    assert det.bads["O1"].startswith("noisy (RMS")
    assert det.bads["T8"].startswith("noisy high-frequency")
    # the HF channel's broadband RMS is not far from its neighbours: only the HF test catches it
    rms = det.last_stats["rms_uv"]
    assert rms[i_hf] < 1.5 * np.median(rms)
    assert "EMG" not in det.bads  # non-EEG never examined


def test_channel_dying_mid_session_becomes_bad_live():
    rng = np.random.default_rng(1)
    meta = _meta(emg=False)
    data = _session(rng, 12000)[:32]
    i = NAMES.index("Cz")
    data[i, 5000:] = np.nan  # electrode connection lost at 5 s: the amplifier sends NaN
    j = NAMES.index("Pz")
    data[j, 7000:] = -3.2  # another goes flat at 7 s
    det = BadChannelDetector(window_s=1.0)
    seen_at = {}
    for b in blocks_from_array(data, meta, 100):
        det.process(b)
        for nm in det.bads:
            seen_at.setdefault(nm, b.stop_sample)
    assert set(det.bads) == {"Cz", "Pz"}
    assert det.bads["Cz"].startswith("no data") and det.bads["Pz"].startswith("flat")
    # found live: flat within ~1.2 windows of failing (window 1 s + late-marker margin 100 ms);
    # NaN only once it has lasted no_data_windows (3) windows: a dead electrode, not a dropout
    assert 7000 < seen_at["Pz"] <= 7000 + 1600
    assert 5000 + 2 * 1000 < seen_at["Cz"] <= 5000 + 3 * 1000 + 600
    assert sorted(h[1] for h in det.history) == ["Cz", "Pz"]


def test_a_nan_stretch_marks_no_channel_a_dead_one_does():
    """2 s of NaN on C3, 1 s of NaN on every channel (a gap): no channel is bad (the epochs
    they touch are rejected instead); Cz NaN from 9 s to the end (20 s) is."""
    rng = np.random.default_rng(3)
    meta = _meta(emg=False)
    data = _session(rng, 20000)[:32]
    data[NAMES.index("C3"), 2000:4000] = np.nan  # exactly one 2-s window: 100 % NaN
    data[:, 5000:6000] = np.nan
    data[NAMES.index("Cz"), 9000:] = np.nan
    det = BadChannelDetector(window_s=2.0)
    _feed(det, data, meta)
    assert det.bads == {"Cz": det.bads.get("Cz")} and det.bads["Cz"].startswith("no data")
    assert "3 windows of 2 s in a row" in det.bads["Cz"]
    with pytest.raises(ValueError, match="no_data_windows"):
        BadChannelDetector(no_data_windows=0)


def test_pulse_windows_are_excluded_from_evaluation():
    rng = np.random.default_rng(2)
    meta = _meta(emg=False)
    data = _session(rng, 10000)[:32]
    pulses = list(range(500, 10000, 700))
    i = NAMES.index("C3")
    for p in pulses:  # residual artifact under the coil, only inside (-5, 80) ms
        data[i, p - 5:p + 80] += 800 * np.exp(-np.arange(85) / 20.0)
    evs = [Event(p, "TMS", EVENT_PULSE) for p in pulses]
    det = BadChannelDetector(window_s=2.0)
    _feed(det, data, meta, evs)
    assert det.bads == {}
    # the same data without pulse events: C3 looks noisy
    det2 = BadChannelDetector(window_s=2.0)
    _feed(det2, data, meta)
    assert "C3" in det2.bads and det2.bads["C3"].startswith("noisy")
    # a late marker (arriving one block after its pulse) is still honoured
    det3 = BadChannelDetector(window_s=2.0)
    blocks = list(blocks_from_array(data, meta, 50))
    for b in blocks:
        late = [Event(p, "TMS", EVENT_PULSE) for p in pulses if b.first_sample - 50 <= p < b.first_sample]
        b.events = late
        det3.process(b)
    assert det3.bads == {}


def test_interpolation_recovers_smooth_signal_and_caches_matrix():
    rng = np.random.default_rng(3)
    meta = _meta()
    data, truth = _session(rng, 4000, return_smooth=True)
    for nm in ("C3", "Oz"):
        data[NAMES.index(nm)] = rng.standard_normal(4000) * 200  # broken electrodes
    stage = BadChannelInterpolation(bads=["C3", "Oz"])
    out = _feed(stage, data, meta, size=100)
    for nm in ("C3", "Oz"):
        r = np.corrcoef(out.data[NAMES.index(nm)], truth[NAMES.index(nm)])[0, 1]
        assert r > 0.9, (nm, r)
    good = [k for k, n in enumerate(NAMES) if n not in ("C3", "Oz")]
    np.testing.assert_array_equal(out.data[good], data[good])
    np.testing.assert_array_equal(out.data[32], data[32])  # EMG untouched
    assert len(stage.cache) == 1
    bad_idx, good_idx, mat = stage.cache[frozenset({"C3", "Oz"})]
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, atol=1e-6)  # a constant is reproduced
    # nearest neighbours dominate: C3 draws most on FC5/FC1/CP5/CP1/Cz/T7
    w = dict(zip([NAMES[g] for g in good_idx], mat[0]))
    top = sorted(w, key=w.get, reverse=True)[:4]
    assert set(top) <= {"FC5", "FC1", "CP5", "CP1", "Cz", "T7"}, top


def test_interpolation_follows_live_detector():
    rng = np.random.default_rng(4)
    meta = _meta()
    data, truth = _session(rng, 6000, return_smooth=True)
    i = NAMES.index("CP2")
    data[i, 2500:] = 0.0  # dies at 2.5 s
    det = BadChannelDetector(window_s=1.0)
    chain = Chain([det, BadChannelInterpolation(bads_from=det)])
    out = concat_blocks([chain.process(b) for b in blocks_from_array(data, meta, 100)])
    assert "CP2" in det.bads
    t_bad = det.history[0][0]
    assert t_bad <= 4000  # first whole window after death (3000..4000) is flat
    seg = slice(4200, 6000)
    assert np.corrcoef(out.data[i, seg], truth[i, seg])[0, 1] > 0.9


def test_spline_matrix_unknown_channel_error():
    with pytest.raises(ValueError, match="no electrode position"):
        spline_matrix(["Cz", "C3", "C4", "Foo1"], ["Cz"])


def test_average_reference_eeg_only_and_excludes_bads():
    rng = np.random.default_rng(5)
    meta = _meta()
    data = _session(rng, 1000)
    data[NAMES.index("Fz")] += 5000  # bad channel with a huge offset
    ref = AverageReference(bads=["Fz"])
    out = _feed(ref, data, meta)
    good = [k for k, n in enumerate(NAMES) if n != "Fz"]
    np.testing.assert_allclose(out.data[good].mean(axis=0), 0, atol=1e-9)
    expected = data[:32] - data[good].mean(axis=0)
    np.testing.assert_allclose(out.data[:32], expected, atol=1e-9)
    np.testing.assert_array_equal(out.data[32], data[32])  # EMG untouched
    # including the bad channel drags every channel down by ~5000/32 uV
    out_all = _feed(AverageReference(exclude_bads=False), data, meta)
    np.testing.assert_allclose(out_all.data[:32], data[:32] - data[:32].mean(axis=0), atol=1e-9)
    assert (out_all.data[good] - out.data[good]).mean() < -5000 / 32 + 5


def test_average_reference_nan_channel_does_not_blank_the_head():
    x = np.array([[1.0, 2.0, np.nan], [3.0, np.nan, np.nan], [5.0, 6.0, np.nan]])
    y = average_reference(x)
    np.testing.assert_allclose(y[:, 0], [-2, 0, 2])
    np.testing.assert_allclose(y[[0, 2], 1], [-2, 2])
    assert np.isnan(y[:, 2]).all()


def test_resolve_picks():
    meta = _meta()
    assert list(resolve_picks(meta, "emg")) == [32]
    assert len(resolve_picks(meta, "eeg")) == 32
    assert list(resolve_picks(meta, ["Cz", "emg"])) == [13, 32]
    with pytest.raises(KeyError):
        resolve_picks(meta, ["Nope"])
