"""BIDS in and out: write a simulated session with mne-bids, read it back, find by entities.

Offline validity checks only: the bids-validator is a Node tool (not installed here); the
checks are the required files, mne-bids reading everything back, and the content.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

pytest.importorskip("mne_bids")

from tmseeg.report.analyze import analyze_file  # noqa: E402
from tmseeg.study.bids import (STIM_FIELD, StudyError, bids_path_for,  # noqa: E402
                               find_recordings, read_bids_recording, write_bids,
                               write_derivatives_description)
from tmseeg.study.demo import simulate_block_session  # noqa: E402


@pytest.fixture(scope="module")
def session_raw():
    raw, stim = simulate_block_session(seed=7, gain_pre=1.0, gain_post=1.5, block_s=15.0)
    return raw, stim


def _tsv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_write_read_round_trip(tmp_path, session_raw):
    raw, stim = session_raw
    root = tmp_path / "bids"
    bp = write_bids(raw, root, subject="01", session="pre1", task="tms", run=1,
                    stimulation=stim)
    eeg = root / "sub-01" / "ses-pre1" / "eeg"
    base = "sub-01_ses-pre1_task-tms_run-1"
    for suffix in ("_eeg.vhdr", "_eeg.vmrk", "_eeg.eeg", "_eeg.json", "_channels.tsv",
                   "_events.tsv", "_events.json"):
        assert (eeg / (base + suffix)).is_file(), suffix
    for f in ("dataset_description.json", "participants.tsv", "README"):
        assert (root / f).is_file(), f
    assert bp.fpath == eeg / (base + "_eeg.vhdr")

    # events.tsv: every pulse and both block markers, labels kept
    ev = _tsv(eeg / (base + "_events.tsv"))
    labels = [r["trial_type"] for r in ev]
    n_pulses = sum(d == "TMS" for d in raw.annotations.description)
    assert labels.count("TMS") == n_pulses >= 20
    assert labels.count("pre") == 1 and labels.count("post") == 1
    # sidecar: BIDS fields plus the stimulation block
    side = json.loads((eeg / (base + "_eeg.json")).read_text())
    assert side["SamplingFrequency"] == 1000.0 and side["PowerLineFrequency"] == 50.0
    assert side["EEGChannelCount"] == 32
    st = side[STIM_FIELD]
    assert st["NumberOfPulses"] == n_pulses and st["Intensity_pct"] == 70.0
    assert st["CoilSite"] == "C3" and 1.0 <= st["MeanInterPulseInterval_s"] <= 1.4
    ch = _tsv(eeg / (base + "_channels.tsv"))
    assert [r["name"] for r in ch] == raw.ch_names
    assert {r["type"] for r in ch} == {"EEG", "EMG"}

    # read back: data within BrainVision resolution, events as the engine sees them
    rec = read_bids_recording(find_recordings(root)[0])
    assert rec.meta.ch_names == tuple(raw.ch_names) and rec.meta.sfreq == 1000.0
    assert rec.n_samples == raw.n_times
    err_uv = np.max(np.abs(rec.data_uv - raw.get_data() * 1e6))
    assert err_uv < 0.1, err_uv
    kinds = [(e.label, e.kind) for e in rec.events]
    assert kinds.count(("TMS", "pulse")) == n_pulses
    assert ("pre", "marker") in kinds and ("post", "marker") in kinds
    pulse_samples = [e.sample for e in rec.events if e.kind == "pulse"]
    want = sorted(raw.time_as_index([o for o, d in zip(raw.annotations.onset,
                                                       raw.annotations.description)
                                     if d == "TMS"], use_rounding=True))
    assert pulse_samples == list(want)


def test_pulse_columns_from_analysis(tmp_path, session_raw):
    """pulses.csv columns (kept, reason, early TEP, prestim phase/power, block) join events.tsv."""
    raw, stim = session_raw
    src = write_bids(raw, tmp_path / "src", subject="01", task="tms", stimulation=stim)
    out = tmp_path / "out"
    summary = analyze_file(src.fpath, out, progress=False, report=False,
                           recording=read_bids_recording(src))
    bp = write_bids(read_bids_recording(src),
                    tmp_path / "bids", subject="02", task="tms", pulses=out / "pulses.csv",
                    stimulation=stim, coil_site=summary["coil_site"], roi=summary["roi"])
    events = _tsv(bp.copy().update(suffix="events", extension=".tsv").fpath)
    pulses = list(csv.DictReader(open(out / "pulses.csv")))
    pulse_rows = [r for r in events if r["trial_type"] == "TMS"]
    assert len(pulse_rows) == len(pulses) == summary["n_pulses"]
    for col in ("kept", "reason", "early_tep_ptp_uv", "prestim_phase_rad", "prestim_power_uv2",
                "block"):
        assert col in events[0], col
    for ev, p in zip(pulse_rows, pulses):
        assert int(ev["sample"]) == int(p["sample"])
        assert ev["kept"] == p["kept"]
        if p["early_tep_ptp_uv"]:
            assert math.isclose(float(ev["early_tep_ptp_uv"]), float(p["early_tep_ptp_uv"]),
                                rel_tol=1e-9)
        assert ev["block"] == p["block"]
    assert {r["block"] for r in pulse_rows} == {"pre", "post"}
    marker_rows = [r for r in events if r["trial_type"] in ("pre", "post")]
    assert all(r["early_tep_ptp_uv"] == "n/a" for r in marker_rows)
    desc = json.loads(bp.copy().update(suffix="events", extension=".json").fpath.read_text())
    assert "prestim_phase_rad" in desc and "Description" in desc["prestim_phase_rad"]
    side = json.loads(bp.copy().update(extension=".json").fpath.read_text())
    assert side[STIM_FIELD]["ROI"] == summary["roi"]
    assert side[STIM_FIELD]["CoilSite"] == summary["coil_site"]

    # rows from another recording are refused, naming the problem
    shifted = [dict(r, sample=int(r["sample"]) + 5000000) for r in
               csv.DictReader(open(out / "pulses.csv"))]
    with pytest.raises(StudyError, match="none of the pulse rows matches"):
        write_bids(raw, tmp_path / "bids", subject="03", task="tms", pulses=shifted)

    # a recording without pulse markers (the pulses were found in the data): the rows are
    # the only record of its pulses and become its pulse events, the other markers kept
    rows = list(csv.DictReader(open(out / "pulses.csv")))
    unmarked = raw.copy()
    unmarked.annotations.delete([i for i, d in enumerate(unmarked.annotations.description)
                                 if d == "TMS"])
    found = [dict(r, label="TMS (detected)") for r in rows]
    bp = write_bids(unmarked, tmp_path / "bids", subject="04", task="tms", pulses=found)
    events = _tsv(bp.copy().update(suffix="events", extension=".tsv").fpath)
    detected = [r for r in events if r["trial_type"] == "TMS (detected)"]
    assert [int(r["sample"]) for r in detected] == [int(r["sample"]) for r in rows]
    assert [r["kept"] for r in detected] == [r["kept"] for r in rows]
    assert [r["trial_type"] for r in events if r["trial_type"] in ("pre", "post")] == [
        "pre", "post"]
    assert [float(r["onset"]) for r in events] == sorted(float(r["onset"]) for r in events)
    side = json.loads(bp.copy().update(extension=".json").fpath.read_text())
    assert side[STIM_FIELD]["NumberOfPulses"] == len(rows)
    with pytest.raises(StudyError, match="outside the recording"):
        write_bids(unmarked, tmp_path / "bids", subject="05", task="tms", pulses=shifted)


def test_find_filters_and_errors(tmp_path, session_raw):
    raw, _ = session_raw
    root = tmp_path / "bids"
    short = raw.copy().crop(0, 5.0)
    for sub, ses, run in (("01", "a", 1), ("01", "b", 1), ("02", "a", 1), ("02", "a", 2)):
        write_bids(short, root, subject=sub, session=ses, task="tms", run=run)
    # derivatives with a file that looks like a recording must not be picked up
    write_derivatives_description(root / "derivatives" / "tmseeg", {"x": 1}, root)
    assert len(find_recordings(root)) == 4
    got = find_recordings(root, subjects="02")
    assert [(b.subject, b.session, b.run) for b in got] == [("02", "a", "1"), ("02", "a", "2")]
    got = find_recordings(root, sessions=["a"], runs="1")
    assert [(b.subject, b.session) for b in got] == [("01", "a"), ("02", "a")]
    with pytest.raises(StudyError, match=r"subjects \['01', '02'\]"):
        find_recordings(root, subjects="09")
    with pytest.raises(StudyError, match="not a BIDS dataset root"):
        find_recordings(tmp_path)
    with pytest.raises(StudyError, match="already exists"):
        write_bids(short, root, subject="01", session="a", task="tms", run=1)
    with pytest.raises(StudyError, match="alphanumeric"):
        bids_path_for(root, subject="sub_01")
    desc = json.loads((root / "derivatives" / "tmseeg" / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "tmseeg"
    assert desc["GeneratedBy"][0]["Version"].startswith(__import__("tmseeg").__version__)


def test_corrupt_recording_message(tmp_path, session_raw):
    from tmseeg.io.files import RecordingError
    raw, _ = session_raw
    bp = write_bids(raw.copy().crop(0, 5.0), tmp_path / "bids", subject="01", task="tms")
    bp.fpath.write_text("this is not a BrainVision header\n")
    with pytest.raises(RecordingError, match="cannot read this BIDS recording.*re-export"):
        read_bids_recording(bp)


@pytest.fixture
def fresh_logging(monkeypatch):
    """cli.main() calls logging.basicConfig, which would bind the root logger to this test's
    captured stderr (closed afterwards); give each CLI test its own handler list."""
    import logging
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def test_cli_analyze_bids_root(tmp_path, session_raw, capsys, fresh_logging):
    from tmseeg.cli import main
    raw, _ = session_raw
    root = tmp_path / "bids"
    for sub in ("01", "02"):
        write_bids(raw.copy().crop(0, 12.0), root, subject=sub, task="tms")
    rc = main(["analyze", str(root), "--subject", "02", "--no-report", "--no-progress",
               "--no-group-report"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ok       subject=02 task=tms" in out and "subject=01" not in out
    assert "1 sessions: {'ok': 1}" in out
    summary = root / "derivatives/tmseeg/sub-02/eeg/sub-02_task-tms/summary.json"
    assert json.loads(summary.read_text())["n_pulses"] >= 8
    rc = main(["analyze", str(root), "--subject", "07", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "no EEG recording" in err and "subjects ['01', '02']" in err
    rc = main(["analyze", str(root / "sub-01/eeg/sub-01_task-tms_eeg.vhdr")])
    assert rc == 1 and "--out DIR is required" in capsys.readouterr().err


@pytest.mark.slow  # real time on LSL
def test_run_record_to_bids(tmp_path, session_raw, uid, capsys, fresh_logging):
    """`tmseeg run --bids-root`: live LSL in, BIDS out with the live pipeline's pulse rows."""
    from tmseeg.cli import main
    from tmseeg.io.files import read_recording
    from tmseeg.io.replay import Player
    raw, _ = session_raw
    src = tmp_path / "src_raw.fif"
    raw.copy().crop(0, 7.0).save(src, verbose="error")
    root = tmp_path / "bids"
    # looped, so the engine records ~7 s of data however late it connects on a busy machine
    with Player(src, name=f"bidsrec-{uid}", speed=1.0, chunk_ms=10.0, loop=True):
        rc = main(["run", "--stream", f"bidsrec-{uid}", "--loopback", "--duration", "7",
                   "--bids-root", str(root), "--subject", "05", "--session", "1",
                   "--stim-intensity", "70", "--stim-protocol", "single"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out + cap.err
    eeg = root / "sub-05/ses-1/eeg"
    base = "sub-05_ses-1_task-tms"
    raw_copy = list((root / "sourcedata/tmseeg" / base).glob("*.vhdr"))
    assert len(raw_copy) == 1  # the crash-safe recording is kept
    rec = read_bids_recording(eeg / f"{base}_eeg.vhdr")
    assert rec.n_samples == read_recording(raw_copy[0]).n_samples > 4 * 1000
    ev = _tsv(eeg / f"{base}_events.tsv")
    pulses = [r for r in ev if "TMS" in r["trial_type"]]
    assert len(pulses) >= 3 and {"kept", "early_tep_ptp_uv"} <= set(ev[0])
    assert any(r["kept"] == "True" for r in pulses)
    side = json.loads((eeg / f"{base}_eeg.json").read_text())[STIM_FIELD]
    assert side["Intensity_pct"] == 70.0 and side["Schedule"] == "single"
    assert side["NumberOfPulses"] == len(pulses) and side["CoilSite"]
    assert (root / "derivatives/tmseeg/sub-05/ses-1/eeg" / base / "summary.json").is_file()
