"""Per-pulse metadata (intensity, condition ...) and channel types given by the user, through
``tmseeg analyze`` on BrainVision files the tests write: the motor threshold of a recording
whose intensities live in a table or in the marker text, against the simulator's truth."""
from __future__ import annotations

import csv
import json
import logging

import numpy as np
import pytest

from tmseeg.cli import main as cli_main
from tmseeg.metrics.motor import motor_threshold_ml
from tmseeg.stream.montage import parse_channel_types
from tmseeg.stream.pulseinfo import PulseTable, PulseTableError
from tmseeg.report.analyze import analyze_file
from tmseeg.sim.model import SimConfig, TMSEEGSimulator

SF = 2000.0
SPACING = 2000  # 1 s between pulses
CHANNELS = ("F3", "Fz", "F4", "C3", "Cz", "C4", "P3", "Pz", "P4")


@pytest.fixture(scope="module")
def threshold_hunt(tmp_path_factory):
    """70 pulses at intensities scattered around the simulated threshold (true 50 %-MEP
    intensity 40.35 % MSO), EMG on a channel whose name says nothing ("Aux1"), written as
    BrainVision twice: markers "TMS/<intensity>" and plain "TMS" markers."""
    import pybv

    rng = np.random.default_rng(7)
    intens = np.round(rng.uniform(34.0, 48.0, 70) * 2) / 2
    sim = TMSEEGSimulator(SimConfig(ch_names=CHANNELS, sfreq=SF, schedule="external",
                                    blinks=False, alpha=False, mu=False, seed=7))
    for k, inten in enumerate(intens):
        sim.request_pulse(SPACING * (k + 1), intensity_pct=float(inten))
    data, _ = sim.generate(SPACING * (len(intens) + 1))
    names = list(CHANNELS) + ["Aux1"]
    assert data.shape[0] == len(names)  # the EMG is the simulator's last channel
    folder = tmp_path_factory.mktemp("hunt")
    pulses = sim.truth.pulses
    for stem, label in (("coded", lambda p: f"TMS/{p.intensity_pct:g}"),
                        ("plain", lambda p: "TMS")):
        pybv.write_brainvision(data=data * 1e-6, sfreq=SF, ch_names=names, fname_base=stem,
                               folder_out=str(folder), unit="µV", resolution=0.01,
                               events=[dict(onset=int(p.sample), description=label(p),
                                            type="Comment") for p in pulses])
    return folder, pulses


def _mep_rows(out_dir):
    with open(out_dir / "pulses.csv") as fh:
        return list(csv.DictReader(fh))


def _check_threshold(summary, rows, pulses):
    """The threshold analyze reports is the ML fit of the true intensities and the MEPs it
    measured, and close to the simulated one."""
    assert [float(r["intensity_pct"]) for r in rows] == [p.intensity_pct for p in pulses]
    mep = summary["metrics"]["mep"]
    assert mep["channel"] == "Aux1"
    amps = np.array([float(r["mep_ptp_uv"]) for r in rows])
    expected = motor_threshold_ml([p.intensity_pct for p in pulses], amps).mt_pct
    assert mep["motor_threshold_ml_pct"] == pytest.approx(expected, abs=0.3)
    assert abs(mep["motor_threshold_ml_pct"] - 40.35) < 2.0, mep
    assert mep["motor_threshold_rf_pct"] is not None or mep["motor_threshold_rf_warnings"]


def test_intensity_from_the_marker_text_and_emg_typed_on_the_command_line(threshold_hunt,
                                                                         tmp_path):
    folder, pulses = threshold_hunt
    out = tmp_path / "coded"
    rc = cli_main(["analyze", str(folder / "coded.vhdr"), "--out", str(out), "--no-report",
                   "--no-progress", "--channel-types", "Aux1=emg",
                   "--pulse-pattern", r"TMS/(?P<intensity_pct>\d+(?:\.\d+)?)"])
    assert rc in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_pulses"] == len(pulses)
    assert "Aux1" not in summary["roi"] and "Aux1" not in summary["bad_channels"]
    _check_threshold(summary, _mep_rows(out), pulses)


def test_intensity_from_a_table_joined_by_time_or_by_order(threshold_hunt, tmp_path):
    folder, pulses = threshold_hunt
    rng = np.random.default_rng(0)
    by_time = tmp_path / "log.csv"  # a navigation log: its own clock, ~10 ms off, extra column
    with open(by_time, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["time_s", "intensity_pct", "coil_x_mm"])
        for p in pulses:
            w.writerow([f"{p.sample / SF + rng.uniform(-0.01, 0.01):.4f}", p.intensity_pct,
                        f"{rng.normal(-40, 2):.1f}"])
        w.writerow([f"{pulses[-1].sample / SF + 0.5:.4f}", 99, 0])  # no pulse there
    over = {"channels": {"types": {"aux1": "emg"}}}  # names match case-insensitively
    summary = analyze_file(folder / "plain.vhdr", tmp_path / "t", progress=False, report=False,
                           overrides={**over, "pulses": {"table": str(by_time)}})
    rows = _mep_rows(tmp_path / "t")
    _check_threshold(summary, rows, pulses)
    assert all(r["coil_x_mm"] for r in rows)
    assert summary["pulse_table"]["join"] == "time"
    assert summary["pulse_table"]["rows_used"] == len(pulses)
    assert any("1 of 71 rows met no pulse" in w for w in summary["warnings"])

    in_order = tmp_path / "order.csv"  # a protocol sheet: one row per pulse, no times
    in_order.write_text("intensity_pct,condition\n" + "".join(
        f"{p.intensity_pct},{'sham' if k % 2 else 'active'}\n" for k, p in enumerate(pulses)))
    summary = analyze_file(folder / "plain.vhdr", tmp_path / "o", progress=False, report=False,
                           overrides={**over, "pulses": {"table": str(in_order)}})
    rows = _mep_rows(tmp_path / "o")
    _check_threshold(summary, rows, pulses)
    assert [r["condition"] for r in rows[:3]] == ["active", "sham", "active"]
    assert summary["pulse_table"]["join"] == "order" and not summary["warnings"]


def test_without_intensities_there_is_no_threshold_and_the_emg_stays_out(threshold_hunt,
                                                                        tmp_path, caplog):
    """The same file with no metadata: no threshold (not a made-up one); and without the
    channel type, Aux1 has no electrode position, so it is left out of the EEG (one warning)."""
    folder, pulses = threshold_hunt
    with caplog.at_level(logging.WARNING):
        summary = analyze_file(folder / "plain.vhdr", tmp_path / "n", progress=False,
                               report=False)
    assert "mep" not in summary["metrics"]  # no EMG channel known
    assert any("Aux1" in r.getMessage() and "no electrode position" in r.getMessage()
               for r in caplog.records)
    summary = analyze_file(folder / "plain.vhdr", tmp_path / "m", progress=False, report=False,
                           overrides={"channels": {"types": {"Aux1": "emg"}}})
    assert summary["metrics"]["mep"]["motor_threshold"] is None


def test_bad_metadata_and_channel_types_are_named(tmp_path, threshold_hunt):
    folder, _ = threshold_hunt
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,intensity_pct\n1.0,40\n2.0\n")
    with pytest.raises(PulseTableError, match="line 3: 1 cells for 2 columns"):
        PulseTable(bad)
    bad.write_text("time_s,intensity_pct\n1.0,40\nsoon,42\n")
    with pytest.raises(PulseTableError, match="line 3, column 'time_s': 'soon'"):
        PulseTable(bad)
    with pytest.raises(PulseTableError, match="does not exist"):
        PulseTable(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="NAME=TYPE"):
        parse_channel_types("Aux1:emg")
    with pytest.raises(ValueError, match=r"\['EMG2'\].*does not have"):
        analyze_file(folder / "plain.vhdr", tmp_path / "x", progress=False, report=False,
                     overrides={"channels": {"types": {"EMG2": "emg"}}})


def _wall_clock_allowance(cfg, speed: float):
    """``cfg`` for a replay at ``speed`` times real time: markers travel on their own stream,
    so the same wall-clock lag is ``speed`` times more stream time; the late-marker allowance
    (stream time) is scaled to keep the live wall-clock one (a busy CI machine delayed a
    marker past 60 ms / 12 = 5 ms). A longer wait changes no number."""
    from tmseeg.config import config_with

    return config_with(cfg, {"interpolation": {
        "max_delay_ms": cfg.interpolation.max_delay_ms * speed}})


@pytest.mark.slow  # real time on LSL
def test_live_replay_gives_the_same_threshold_and_metadata(threshold_hunt, tmp_path,
                                                           live_replay):
    """Channel types and the pattern's named groups act in the stages, so a live run of the
    recording (over LSL) gives what the analysis of the file gives."""
    from tmseeg.config import load_config
    from tmseeg.report.analyze import run_session
    from tmseeg.io.files import read_recording

    folder, pulses = threshold_hunt
    cfg = load_config(overrides={"channels": {"types": {"Aux1": "emg"}},
                                 "pulses": {"pattern": r"TMS/(?P<intensity_pct>[\d.]+)"}})
    live = live_replay(folder / "coded.vhdr", _wall_clock_allowance(cfg, 10.0), speed=10.0)
    offline = run_session(read_recording(folder / "coded.vhdr"), cfg, keep_epochs=False)
    assert live.meta.ch_types[-1] == offline.meta.ch_types[-1] == "emg"
    lm, om = live.metrics_summary()["mep"], offline.metrics_summary()["mep"]
    assert lm["motor_threshold_ml_pct"] == pytest.approx(om["motor_threshold_ml_pct"], abs=1e-6)
    assert [r["intensity_pct"] for r in live.pulses] == [p.intensity_pct for p in pulses]


def test_motor_map_from_a_navigation_log_finds_the_hotspot(tmp_path):
    """A motor-mapping session: 5 sites x 12 pulses at one intensity, the coil position of
    each pulse in a navigation log (measured, so it scatters ~1 mm around the grid point).
    The site under which the simulator's MEP is largest is the hotspot, with a high bootstrap
    share; per-site medians match the injected MEPs."""
    import pybv

    from tmseeg.metrics.motor import hotspot_map

    # the simulator knows intensity, not position: a site's distance from the hotspot is an
    # effective intensity (the field at the hand knob falls with distance)
    grid = {(-40.0, 10.0): 50.0, (-35.0, 10.0): 47.0, (-45.0, 10.0): 46.0,
            (-40.0, 15.0): 45.0, (-40.0, 5.0): 43.0}
    rng = np.random.default_rng(3)
    order = [site for site in grid for _ in range(12)]
    rng.shuffle(order)
    sim = TMSEEGSimulator(SimConfig(ch_names=CHANNELS, sfreq=SF, schedule="external",
                                    blinks=False, alpha=False, mu=False, seed=11))
    for k, site in enumerate(order):
        sim.request_pulse(SPACING * (k + 1), intensity_pct=grid[site])
    data, _ = sim.generate(SPACING * (len(order) + 1))
    names = list(CHANNELS) + ["FDI"]
    pybv.write_brainvision(data=data * 1e-6, sfreq=SF, ch_names=names, fname_base="map",
                           folder_out=str(tmp_path), unit="µV", resolution=0.01,
                           events=[dict(onset=int(p.sample), description="TMS", type="Comment")
                                   for p in sim.truth.pulses])
    log_csv = tmp_path / "navigation.csv"
    with open(log_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_s", "coil_x_mm", "coil_y_mm", "coil_z_mm"])
        for p, (x, y) in zip(sim.truth.pulses, order):
            w.writerow([p.sample / SF, x + rng.normal(0, 0.8), y + rng.normal(0, 0.8),
                        62.0 + rng.normal(0, 0.8)])
    summary = analyze_file(tmp_path / "map.vhdr", tmp_path / "out", progress=False,
                           overrides={"pulses": {"table": str(log_csv)}})
    hs = summary["metrics"]["mep"]["hotspot"]

    def grid_point(label):  # a site is named by its first measured position, in whole mm
        x, y = (float(v) for v in label.split(",")[:2])
        return min(grid, key=lambda g: np.hypot(g[0] - x, g[1] - y))

    assert grid_point(hs["hotspot"]) == (-40.0, 10.0) and hs["p_best"] > 0.8, hs
    truth = {}
    for p, site in zip(sim.truth.pulses, order):
        truth.setdefault(site, []).append(p.mep_ptp_uv)
    assert sorted(grid_point(r["site"]) for r in hs["sites"]) == sorted(grid)
    for row in hs["sites"]:
        assert row["n_trials"] == 12
        assert row["median_ptp_uv"] == pytest.approx(np.median(truth[grid_point(row["site"])]),
                                                     rel=0.1, abs=15.0)
    assert "Motor map" in (tmp_path / "out" / "report.html").read_text()
    # too few sites is an error that says what a map needs
    with pytest.raises(ValueError, match="at least two"):
        hotspot_map(["a"] * 5 + ["b"], np.ones(6))


def test_a_cap_without_10_05_labels_works_with_its_montage(tmp_path):
    """An EGI-style cap (E1 ... E129): with --montage GSN-HydroCel-129, or the same positions
    in an .sfp file, the coil site, ROI, bad-channel handling and TEP work as on the same
    recording with 10-05 labels."""
    import mne
    import pybv

    from tmseeg.stream.montage import ten_five_montage, use_montage
    from tmseeg.sim.accuracy import simulated_recording

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=5,
                                               muscle_artifact=False), 25.0, "TMS")
    gsn = mne.channels.make_standard_montage("GSN-HydroCel-129").get_positions()["ch_pos"]
    ten = ten_five_montage().get_positions()["ch_pos"]
    ten = {k.lower(): v for k, v in ten.items()}
    names, taken = [], set()
    for name, kind in zip(rec.meta.ch_names, rec.meta.ch_types):
        if kind != "eeg":
            names.append(name)
            continue
        free = [g for g in gsn if g not in taken]  # the nearest free EGI electrode
        best = min(free, key=lambda g: np.linalg.norm(gsn[g] - ten[name.lower()]))
        taken.add(best)
        names.append(best)
    events = [dict(onset=int(p.sample), description=1, type="Stimulus") for p in truth.pulses]
    for stem, ch in (("ten", list(rec.meta.ch_names)), ("egi", names)):
        pybv.write_brainvision(data=rec.data_uv * 1e-6, sfreq=rec.meta.sfreq, ch_names=ch,
                               fname_base=stem, folder_out=str(tmp_path), unit="µV",
                               resolution=0.01, events=events)
    sfp = tmp_path / "cap.sfp"  # the same positions as a digitiser's file (label x y z, m)
    sfp.write_text("".join(f"{g} {gsn[g][0]:.6f} {gsn[g][1]:.6f} {gsn[g][2]:.6f}\n"
                           for g in names if g in gsn))
    try:
        ref = analyze_file(tmp_path / "ten.vhdr", tmp_path / "a", progress=False, report=False)
        rename = dict(zip(rec.meta.ch_names, names))
        for montage in ("GSN-HydroCel-129", str(sfp)):
            out = tmp_path / f"b{len(montage)}"
            got = analyze_file(tmp_path / "egi.vhdr", out, progress=False,
                               overrides={"channels": {"montage": montage}})
            assert got["coil_site"] == rename[ref["coil_site"]], (got["coil_site"], ref["coil_site"])
            # neighbours of the site by the EGI cap's own distances: mostly the same electrodes
            assert len(set(got["roi"]) & {rename[c] for c in ref["roi"]}) >= 3, got["roi"]
            assert got["n_kept"] == ref["n_kept"] and got["n_pulses"] == len(truth.pulses)
            assert got["bad_channels"] == {rename[c]: v for c, v in ref["bad_channels"].items()}
            # every channel's TEP is the same: positions enter no step that changes it here
            a = mne.read_evokeds(tmp_path / "a" / "ten-ave.fif", verbose="error")[0]
            b = mne.read_evokeds(out / "egi-ave.fif", verbose="error")[0]
            b = b.copy().rename_channels({v: k for k, v in rename.items() if v in b.ch_names})
            np.testing.assert_allclose(b.get_data(picks=a.ch_names), a.get_data(), atol=1e-12)
            assert (out / "report.html").stat().st_size > 0
    finally:
        use_montage("auto")


def _analyze_with_table(folder, out, table):
    """The threshold hunt (EMG on Aux1) analysed with ``table`` as its pulse table."""
    return analyze_file(folder / "plain.vhdr", out, progress=False, report=False,
                        overrides={"channels": {"types": {"aux1": "emg"}},
                                   "pulses": {"table": str(table)}})


def write_localite(path, rows):
    """A Localite TMS Navigator TriggerMarkers XML: one <TriggerMarker> per (time_ms,
    amplitude %, x, y, z) with the coil pose as a Matrix4D (identity = not tracked)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<TriggerMarkerList coordinateSpace="RAS">']
    for t_ms, amp, pos in rows:
        rot = np.eye(3) if pos is None else np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        xyz = (0.0, 0.0, 0.0) if pos is None else pos
        cells = " ".join(f'data{i}{j}="{(rot[i][j] if j < 3 else xyz[i]) if i < 3 else float(j == 3):+.6f}"'
                         for i in range(4) for j in range(4))
        out.append(f'  <TriggerMarker description="" recordingTime="{t_ms:d}">\n'
                   '    <ResponseValues>\n'
                   f'      <Value key="valueA" response="{amp * 1.4:.1f}" />\n'
                   '      <Value key="valueB" response="NaN" />\n'
                   f'      <Value key="amplitudeA" response="{amp:g}" />\n'
                   '      <Value key="amplitudeB" response="NaN" />\n'
                   '    </ResponseValues>\n'
                   f'    <Matrix4D {cells} />\n'
                   '  </TriggerMarker>')
    out.append("</TriggerMarkerList>")
    path.write_text("\n".join(out), encoding="utf-8")


def test_a_localite_trigger_marker_file_joins_on_the_navigators_clock(threshold_hunt, tmp_path):
    """Localite's TriggerMarkers XML, as exported: its clock starts elsewhere and runs 80 ppm
    fast, times jitter by a few ms; the navigator missed pulse 10 and logged a pulse the EEG
    did not record (between pulses 40 and 41); one coil was not tracked. Every other pulse
    gets its own intensity and position; the threshold is the true one."""
    folder, pulses = threshold_hunt
    rng = np.random.default_rng(4)
    rows, expect = [], []
    for k, p in enumerate(pulses):
        clock_ms = int(round((1234.5 + p.sample / SF * (1 + 80e-6)) * 1000 + rng.uniform(-4, 4)))
        if k == 10:
            expect.append(None)
            continue
        pos = None if k == 20 else (-38.0 + k * 0.01, 12.0, 61.0)
        rows.append((clock_ms, p.intensity_pct, pos))
        expect.append((p.intensity_pct, pos))
        if k == 40:
            rows.append((clock_ms + 500, 70.0, (-38.0, 12.0, 61.0)))
    xml = tmp_path / "TriggerMarkers_Coil0_20260105101112.xml"
    write_localite(xml, rows)
    summary = _analyze_with_table(folder, tmp_path / "l", xml)
    table = summary["pulse_table"]
    assert table["format"] == "localite" and table["join"] == "navigation", table
    assert table["rows_used"] == len(pulses) - 1 and table["pulses_without_row"] == 1, table
    assert table["resyncs"] == 1
    got = _mep_rows(tmp_path / "l")
    for row, want in zip(got, expect):
        if want is None:
            assert row["intensity_pct"] == ""
            continue
        assert float(row["intensity_pct"]) == want[0]
        if want[1] is None:
            assert row["coil_tracked"] == "False" and row["coil_x_mm"] in ("", "nan")
        else:
            assert float(row["coil_x_mm"]) == pytest.approx(want[1][0])
            assert float(row["coil_r01"]) == -1.0 and float(row["didt_a_per_us"]) > 0
    mep = summary["metrics"]["mep"]
    assert abs(mep["motor_threshold_ml_pct"] - 40.35) < 2.0, mep
    assert any("not tracked" in w for w in summary["warnings"])
    assert any("fell out of step 1 time" in w for w in summary["warnings"])


def write_brainsight(path, samples):
    """A Brainsight export: its header, a target table, the sample table (one row per
    (cause, target, power, x, y, z, clock)) and the electrode table after it."""
    head = ["# Version: 13", "# Coordinate system: NIfTI:Aligned",
            "# Created: 2026-01-05 10:30:00.000", "# Brainsight 2.5.4",
            "# Units: millimetres, degrees, milliseconds, and microvolts",
            "# Encoding: UTF-8",
            "# Notes: Each column is delimited by a tab. Each value within a column is "
            "delimited by a semicolon.",
            "# Target Name\tLoc. X\tLoc. Y\tLoc. Z\tm0n0\tm0n1\tm0n2\tm1n0\tm1n1\tm1n2\tm2n0"
            "\tm2n1\tm2n2",
            "hand knob\t-40.0\t10.0\t62.0\t1\t0\t0\t0\t1\t0\t0\t0\t1"]
    cols = ["Sample Name", "Session Name", "Index", "Assoc. Target", "Loc. X", "Loc. Y",
            "Loc. Z", "m0n0", "m0n1", "m0n2", "m1n0", "m1n1", "m1n2", "m2n0", "m2n1", "m2n2",
            "Dist. to Target", "Target Error", "Angular Error", "Twist Error", "Stim. Power",
            "Date", "Time", "Creation Cause", "Crosshairs Driver", "Offset", "Comment",
            "EMG Start", "EMG End", "EMG Res.", "EMG Channels", "EMG Window Start",
            "EMG Window End", "EMG Peak-to-peak 1", "EMG Data 1"]
    lines = head + ["# " + "\t".join(cols)]
    for n, (cause, target, power, x, y, z, clock) in enumerate(samples, start=1):
        lines.append("\t".join(str(v) for v in (
            f"Sample {n}", "Session 1", n, target, f"{x:.3f}", f"{y:.3f}", f"{z:.3f}",
            1, 0, 0, 0, 1, 0, 0, 0, 1, 0.8, 0.5, 1.2, 0.3, power, "2026-01-05",
            clock, cause, "Coil", 0, "(null)", -20, 80, 0.333, 1, 15, 60, 123.4,
            "1.0;2.0;-3.5")))
    lines += ["# Electrode Name\tLoc. X\tLoc. Y\tLoc. Z", "Cz\t0\t0\t90"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_brainsight_export_gives_intensity_site_and_position(threshold_hunt, tmp_path):
    """Brainsight's text export: samples created by the trigger (TTL1) are the pulses,
    two samples taken by hand are not; target name, stimulator power and coil position
    reach each pulse; the time column is the wall clock of another computer."""
    from datetime import datetime, timedelta

    folder, pulses = threshold_hunt
    t0 = datetime(2026, 1, 5, 10, 31, 7, 250000)
    samples = [("Manual (foot switch)", "hand knob", 0, -41.0, 9.0, 62.0, "10:31:01.000")]
    for k, p in enumerate(pulses):
        clock = (t0 + timedelta(seconds=p.sample / SF)).strftime("%H:%M:%S.%f")[:-3]
        samples.append(("TTL1", "hand knob" if k % 2 else "APB site", p.intensity_pct,
                        -40.0 + 0.1 * (k % 3), 10.0, 62.0, clock))
        if k == 5:
            samples.append(("Manual", "(null)", 0, 0.0, 0.0, 0.0, clock))
    txt = tmp_path / "Exported Brainsight Data.txt"
    write_brainsight(txt, samples)
    summary = _analyze_with_table(folder, tmp_path / "b", txt)
    table = summary["pulse_table"]
    assert table["format"] == "brainsight" and table["join"] == "navigation"
    assert table["rows"] == len(pulses) == table["rows_used"], table
    got = _mep_rows(tmp_path / "b")
    assert [float(r["intensity_pct"]) for r in got] == [p.intensity_pct for p in pulses]
    assert [r["site"] for r in got[:2]] == ["APB site", "hand knob"]
    assert float(got[2]["coil_x_mm"]) == pytest.approx(-39.8)
    assert float(got[0]["nav_mep_ptp_uv"]) == 123.4 and "EMG Data 1" not in got[0]
    assert any("2 Brainsight samples were not created by a trigger" in w
               for w in summary["warnings"])
    assert abs(summary["metrics"]["mep"]["motor_threshold_ml_pct"] - 40.35) < 2.0


def test_a_broken_navigation_log_is_named(tmp_path):
    xml = tmp_path / "TriggerMarkers.xml"
    write_localite(xml, [(1000, 50.0, (1.0, 2.0, 3.0))])
    xml.write_text(xml.read_text().replace('recordingTime="1000"', 'recordingTime="soon"'))
    with pytest.raises(PulseTableError, match=r"TriggerMarker 1: recordingTime 'soon'"):
        PulseTable(xml)
    txt = tmp_path / "bs.txt"
    write_brainsight(txt, [("TTL1", "t", 50, -40.0, 10.0, 62.0, "10:00:00.000")])
    txt.write_text(txt.read_text().replace("-40.000", "left"))
    with pytest.raises(PulseTableError, match=r"line 11, column 'Loc. X': 'left'"):
        PulseTable(txt)


def _with_info_messages(threshold_hunt, tmp_path):
    """The threshold hunt recorded as tmseeg records it, with the stimulator bridge's
    per-pulse JSON (intensity, coil position) on a stream of its own: each message 0-20 ms
    before or after its pulse, two stray messages that belong to no pulse."""
    from tmseeg.stream.block import EVENT_INFO, Block, Event
    from tmseeg.io.files import read_recording
    from tmseeg.io.recorder import BrainVisionRecorder

    folder, pulses = threshold_hunt
    rec = read_recording(folder / "plain.vhdr")
    rng = np.random.default_rng(12)
    infos = [Event(sample=p.sample + int(rng.integers(-40, 40)), label="PulseInfo",
                   kind=EVENT_INFO, extra={"pulse_info": {"intensity_pct": p.intensity_pct,
                                                          "coil_x_mm": -38.5, "note": "a, b"}})
             for p in pulses]
    infos += [Event(sample=pulses[3].sample + 900, label="PulseInfo", kind=EVENT_INFO,
                    extra={"pulse_info": {"intensity_pct": 99.0}}),
              Event(sample=pulses[-1].sample + 1000, label="PulseInfo", kind=EVENT_INFO,
                    extra={"pulse_info": {"intensity_pct": 98.0}})]
    path = tmp_path / "with_info.vhdr"
    recorder = BrainVisionRecorder(path, rec.meta)
    recorder.write(Block(data=rec.data_uv, first_sample=0, meta=rec.meta,
                         timestamps=np.arange(rec.n_samples) / SF,
                         events=sorted(rec.events + infos, key=lambda e: e.sample)))
    recorder.close()
    return path, pulses


@pytest.mark.slow  # real time on LSL
def test_per_pulse_metadata_on_a_stream_of_its_own_joins_live_and_offline(threshold_hunt,
                                                                          tmp_path, live_replay):
    """``--pulse-info``: a second LSL stream of JSON objects, one per pulse; recorded as
    PulseInfo markers; the analysis of the recording and a live replay of it (EEG, markers
    and that stream over LSL) give every pulse its own intensity, and the same threshold."""
    from tmseeg.config import load_config
    from tmseeg.io.files import read_recording

    path, pulses = _with_info_messages(threshold_hunt, tmp_path)
    got = read_recording(path)
    assert sum(e.kind == "info" for e in got.events) == len(pulses) + 2
    over = {"channels": {"types": {"aux1": "emg"}}}
    summary = analyze_file(path, tmp_path / "a", progress=False, report=False, overrides=over)
    rows = _mep_rows(tmp_path / "a")
    _check_threshold(summary, rows, pulses)
    assert {r["note"] for r in rows} == {"a, b"}  # a comma survives BrainVision's \1
    assert summary["pulse_info_messages"]["joined"] == len(pulses)
    assert summary["pulse_info_messages"]["unclaimed"] == 2
    assert any("2 of 72 info messages met no pulse" in w for w in summary["warnings"])
    live = live_replay(path, _wall_clock_allowance(load_config(overrides=over), 12.0),
                       speed=12.0)
    assert [r["intensity_pct"] for r in live.pulses] == [p.intensity_pct for p in pulses]
    assert live.metrics_summary()["mep"]["motor_threshold_ml_pct"] == pytest.approx(
        summary["metrics"]["mep"]["motor_threshold_ml_pct"], abs=1e-6)


def test_json_marker_metadata_survives_a_recording(tmp_path):
    """A JSON marker's metadata is written with it and read back (it was lost before)."""
    from tmseeg.stream.block import EVENT_PULSE, Block, Event, StreamMeta
    from tmseeg.io.files import read_recording
    from tmseeg.io.recorder import BrainVisionRecorder

    meta = StreamMeta(("Cz", "Pz", "Oz"), 1000.0, ("eeg",) * 3, name="m")
    events = [Event(sample=100, label="TMS", kind=EVENT_PULSE,
                    extra={"pulse_info": {"intensity_pct": 55.0, "condition": "sham"}}),
              Event(sample=300, label="pre")]
    recorder = BrainVisionRecorder(tmp_path / "m.vhdr", meta)
    recorder.write(Block(data=np.zeros((3, 500)), first_sample=0, meta=meta,
                         timestamps=np.arange(500) / 1000.0, events=events))
    recorder.close()
    got = read_recording(tmp_path / "m.vhdr")
    assert [(e.sample, e.label, e.kind) for e in got.events] == [
        (100, "Stimulus/TMS", "pulse"), (300, "Comment/pre", "marker")]
    assert got.events[0].extra["pulse_info"] == {"intensity_pct": 55.0, "condition": "sham"}
