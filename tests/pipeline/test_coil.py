"""Coil site and ROI from the pulse artifact."""
import numpy as np

from tmseeg.stream.montage import standard_montage
from tmseeg.pipeline.coil import (CoilSiteDetector, broken_channels, centroid_channel,
                                roi_around)
from tmseeg.sim.model import SimConfig, TMSEEGSimulator
from tmseeg.stream.block import blocks_from_array


def _names_64():
    return SimConfig(n_channels=64).eeg_names()


def test_centroid_ignores_one_high_impedance_neighbour():
    names = _names_64()
    pos = standard_montage().get_positions()["ch_pos"]
    pos = {k.lower(): v for k, v in pos.items()}
    c3 = pos["c3"]
    d = np.array([np.linalg.norm(pos[n.lower()] - c3) for n in names])
    amps = 2000 * np.exp(-0.5 * (d / 0.03) ** 2)
    amps[names.index("FC3")] *= 2.5  # a bad contact makes FC3's artifact the largest
    assert names[int(np.argmax(amps))] == "FC3"
    assert centroid_channel(amps, names) == "C3"


def test_roi_is_site_and_nearest_neighbours():
    roi = roi_around("C3", _names_64(), 4)
    assert roi[0] == "C3" and set(roi[1:]) == {"C1", "C5", "FC3", "CP3"}


def test_detector_finds_the_simulated_coil_site_or_a_neighbour():
    sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=5000.0, seed=5, isi_range_s=(1.0, 1.2)))
    data, events = sim.generate(5000 * 8)
    det = CoilSiteDetector()
    late = [e.__class__(sample=e.sample, label=e.label, kind=e.kind) for e in events]
    blocks = list(blocks_from_array(data, sim.meta, 50))
    # markers arrive 3 blocks after their sample, as on a slow network
    for i, b in enumerate(blocks):
        b.events = [e for e in late if blocks[max(i - 3, 0)].first_sample <= e.sample
                    < blocks[max(i - 3, 0)].stop_sample] if i >= 3 else []
        det.process(b)
    assert len(det.amplitudes_uv) == 5
    assert det.site in sim.truth.roi
    assert det.roi[0] == det.site and len(det.roi) == 5


def test_centroid_smooths_over_one_electrode_spacing_of_a_32_channel_cap():
    """On a 32-channel cap the neighbours are ~6 cm apart: a neighbour whose artifact is 50 %
    larger than its true size (worse contact) must not win over the site its own neighbours
    agree on (a fixed 3 cm smoothing gave them almost no weight)."""
    names = SimConfig(n_channels=32).eeg_names()
    pos = {k.lower(): v for k, v in standard_montage().get_positions()["ch_pos"].items()}
    d = np.array([np.linalg.norm(pos[n.lower()] - pos["c3"]) for n in names])
    amps = 2000 * np.exp(-0.5 * (d / 0.04) ** 2) + 300
    amps[names.index("C3")] *= 0.6
    amps[names.index("FC1")] *= 1.8
    assert names[int(np.argmax(amps))] == "FC1"
    assert centroid_channel(amps, names) == "C3"
    assert centroid_channel(amps, names, sigma_m=0.03) == "FC1"  # the old fixed smoothing


def test_detector_finds_c3_on_32_channel_sessions():
    hits = 0
    for seed in range(1, 11):
        sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=5000.0, seed=seed,
                                        isi_range_s=(1.0, 1.2), muscle_artifact=False))
        data, events = sim.generate(5000 * 7)
        det = CoilSiteDetector()
        for b in blocks_from_array(data, sim.meta, 500, events=events):
            det.process(b)
        hits += det.site == "C3"
    assert hits == 10, hits


def test_session_warns_when_the_site_moves_out_of_the_roi_fixed_with_the_first_epoch(caplog):
    """The ROI is fixed with the first averaged epoch (per-pulse values go out at once); when
    later pulses move the coil site out of it, the end of the session says so and how to fix
    it."""
    from dataclasses import replace

    from tmseeg.config import load_config
    from tmseeg.report.analyze import run_session
    from tmseeg.sim.accuracy import simulated_recording

    clean_rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=4,
                                                     isi_range_s=(0.9, 1.1),
                                                     muscle_artifact=False), 14.0)
    data = clean_rec.data_uv.copy()
    names = list(clean_rec.meta.ch_names)
    for p in truth.pulses[:2]:  # a huge artifact on P8 (far from C3) after the first two pulses
        data[names.index("P8"), p.sample + 2:p.sample + 16] += 1e6
    rec = replace(clean_rec, data_uv=data)
    # the cut window, measured on the first pulses, holds them back: measure it on one pulse
    # so that the first epoch comes while P8 still looks like the site
    cfg = load_config(overrides={"interpolation": {"auto_pulses": 1}})
    with caplog.at_level("WARNING", logger="tmseeg.session"):
        session = run_session(rec, cfg, keep_epochs=False)
    assert session.stages.coil.site in truth.roi and session.stages.coil.site not in \
        session.tep.roi
    assert any("coil site estimate moved to" in r.getMessage() and "--roi" in r.getMessage()
               for r in caplog.records)
    clean = run_session(clean_rec, load_config(), keep_epochs=False)
    assert clean.tep.roi[0] == clean.stages.coil.site  # no warning case: the ROI is the site's


def test_railed_and_flat_channels_are_no_coil_site_nor_in_its_roi():
    """Fz swinging between +-3 V (a lead off: millions of µV between samples) made Fz the
    site and its neighbours the ROI; FC1 flat (a dead input) next to the coil. Both are left
    out, and the site stays under the coil."""
    sim = TMSEEGSimulator(SimConfig(n_channels=32, sfreq=5000.0, seed=5, isi_range_s=(1.0, 1.2)))
    data, events = sim.generate(5000 * 8)
    names = list(sim.meta.ch_names)
    rng = np.random.default_rng(0)
    data = data.copy()
    data[names.index("Fz")] = 3e6 * rng.choice([-1.0, 1.0], data.shape[1])
    data[names.index("FC1")] = 12.5
    det = CoilSiteDetector()
    for b in blocks_from_array(data, sim.meta, 50, events):
        det.process(b)
    assert len(det.amplitudes_uv) == 5
    eeg = [n for n, t in zip(names, sim.meta.ch_types) if t == "eeg"]
    raw = np.nan_to_num(np.median(np.abs(data[[names.index(n) for n in eeg]]), axis=1))
    assert centroid_channel(raw, eeg) == "Fz"  # what the rail's swing alone makes the site
    assert set(det.excluded) == {"Fz", "FC1"} and "railed or flat" in det.excluded["Fz"]
    assert det.site in sim.truth.roi and det.site != "FC1"
    assert not {"Fz", "FC1"} & set(det.roi) and len(det.roi) == 5


def test_broken_channels_needs_a_rail_not_a_quantised_peak():
    rng = np.random.default_rng(1)
    x = np.round(10 * rng.standard_normal((3, 500)), 1)  # EEG at 0.1 µV resolution
    x[1] = np.clip(x[1], -3.0, 3.0)  # clipped 2/3 of the time
    x[2, 200:] = np.nan  # NaN is no evidence either way
    assert broken_channels(x).tolist() == [False, True, False]
    assert broken_channels(np.zeros((1, 500))).tolist() == [True]  # flat
