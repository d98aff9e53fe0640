"""Channel labels with an ``EEG`` prefix / reference suffix are tidied to 10-05 labels on input."""
import json

import mne
import numpy as np
import pytest

from tmseeg.stream.montage import tidy_channel_names, tidy_meta
from tmseeg.pipeline.coil import roi_around
from tmseeg.report.analyze import analyze_file
from tmseeg.sim.model import SimConfig, simulate_recording
from tmseeg.stream.block import StreamMeta
from tmseeg.io.files import read_recording


@pytest.mark.parametrize("name, expected", [
    ("EEG Fp1-REF", "Fp1"), ("EEG FP1-Ref", "Fp1"), ("eeg fp1-ref", "Fp1"),
    ("Fp1-A1", "Fp1"), ("Fp1-M2", "Fp1"), ("Fp1_A2", "Fp1"), ("Fp1/M1", "Fp1"),
    ("EEG C3", "C3"), ("EEG-C3", "C3"), ("EEG_C3", "C3"), ("C3-LE", "C3"), ("C3 RE", "C3"),
    ("Cz-AVG", "Cz"), ("Cz-AV", "Cz"), ("EEG FCZ-REF", "FCz"), ("C3-Cz", "C3"),
    ("EEG T3-REF", "T3"),  # old 10-20 name: the montage has it, the spelling is kept
])
def test_prefix_and_suffix_are_stripped_to_the_montage_spelling(name, expected):
    new, renamed = tidy_channel_names([name, "Oz"])
    assert new == [expected, "Oz"] and renamed == {name: expected}


@pytest.mark.parametrize("name", [
    "Fp1", "CZ", "fcz",  # already 10-05 labels (case-insensitive): untouched, even the case
    "T3", "T4",  # old names in the montage: untouched
    "EMG-REF", "Status", "EEG", "C3-C4", "EEG C3-C4", "Fp1-A1x", "EEGC3", "E12-REF", "Ch1",
])
def test_names_that_are_valid_or_do_not_reduce_to_a_label_stay(name):
    assert tidy_channel_names([name]) == ([name], {})


def test_duplicates_are_left_alone():
    names = ["C3", "EEG C3-REF", "EEG C4-REF", "C4-A1", "EEG Pz-REF", "Cz-AVG", "CZ"]
    new, renamed = tidy_channel_names(names)
    # C3 exists; C4 would be made twice; Cz exists as CZ: only Pz is renamed
    assert new == ["C3", "EEG C3-REF", "EEG C4-REF", "C4-A1", "Pz", "Cz-AVG", "CZ"]
    assert renamed == {"EEG Pz-REF": "Pz"}


def test_non_eeg_channels_are_never_renamed():
    names = ["EEG C3-REF", "EEG C4-REF", "EEG Cz-REF"]
    new, renamed = tidy_channel_names(names, ["eeg", "misc", "emg"])
    assert new == ["C3", "EEG C4-REF", "EEG Cz-REF"] and renamed == {"EEG C3-REF": "C3"}
    # a non-EEG channel's name still counts for duplicates
    assert tidy_channel_names(["C3", "EEG C3-REF"], ["misc", "eeg"])[1] == {}
    with pytest.raises(ValueError, match="2 channel names but 1"):
        tidy_channel_names(["a", "b"], ["eeg"])


def test_tidy_meta_keeps_the_original_names():
    meta = StreamMeta(("EEG C3-REF", "Cz", "EMG-REF"), 1000.0, ("eeg", "eeg", "emg"), name="x")
    tidy = tidy_meta(meta)
    assert tidy.ch_names == ("C3", "Cz", "EMG-REF") and tidy.ch_types == meta.ch_types
    assert tidy.original_names == meta.ch_names and tidy.renamed == {"EEG C3-REF": "C3"}
    assert tidy_meta(tidy) is tidy  # idempotent
    plain = StreamMeta(("C3", "Cz"), 1000.0)
    assert tidy_meta(plain) is plain and plain.original_names == () and plain.renamed == {}


def _ref_name(name: str) -> str:
    return name if name == "EMG" else f"EEG {name.upper()}-REF"


def _simulated_raw():
    raw, truth = simulate_recording(SimConfig(n_channels=32, sfreq=2000.0, seed=3,
                                              muscle_artifact=False), 20.0)
    assert set(raw.annotations.description) == {"TMS"}
    assert np.allclose(raw.time_as_index(raw.annotations.onset),
                       [p.sample for p in truth.pulses])
    return raw, truth


@pytest.mark.parametrize("fmt", ["edf", "fif"])
def test_read_recording_tidies_exported_names(tmp_path, fmt, caplog):
    raw, _ = _simulated_raw()
    plain = list(raw.ch_names)
    raw.rename_channels({n: _ref_name(n) for n in plain} | {"EMG": "EMG-REF"})
    path = tmp_path / ("ref.edf" if fmt == "edf" else "ref_raw.fif")
    if fmt == "edf":
        mne.export.export_raw(path, raw, overwrite=True, verbose="error")
    else:
        raw.save(path, verbose="error")
    with caplog.at_level("WARNING", logger="tmseeg"):
        rec = read_recording(path)
    assert list(rec.meta.ch_names) == plain[:-1] + ["EMG-REF"]
    assert rec.meta.ch_types[-1] == "emg"
    assert rec.meta.original_names == tuple(raw.ch_names)
    assert rec.meta.renamed["EEG FP1-REF"] == "Fp1" and len(rec.meta.renamed) == 32
    assert "renamed 32 channel(s) to 10-05 labels" in caplog.text
    assert "'EEG FCZ-REF'" not in caplog.text and "'EEG C3-REF'->'C3'" in caplog.text
    assert sum(e.kind == "pulse" for e in rec.events) == 8  # markers untouched


def test_analyze_finds_the_coil_site_with_reference_suffixed_names(tmp_path):
    raw, truth = _simulated_raw()
    plain_path = tmp_path / "plain.edf"
    mne.export.export_raw(plain_path, raw, overwrite=True, verbose="error")
    plain_names = list(raw.ch_names)
    raw.rename_channels({n: _ref_name(n) for n in plain_names})
    ref_path = tmp_path / "ref.edf"
    mne.export.export_raw(ref_path, raw, overwrite=True, verbose="error")

    summary = analyze_file(ref_path, tmp_path / "ref", progress=False, report=False)
    eeg = [n for n in plain_names if n != "EMG"]
    assert summary["coil_site"] in roi_around("C3", eeg, 4)
    assert len(summary["roi"]) == 5 and "C3" in summary["roi"]
    assert summary["n_pulses"] == len(truth.pulses)
    assert summary["renamed_channels"]["EEG C3-REF"] == "C3"
    assert len(summary["renamed_channels"]) == 32
    on_disk = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert on_disk["renamed_channels"] == summary["renamed_channels"]

    # the same data with plain names give the same answer
    same = analyze_file(plain_path, tmp_path / "plain", progress=False, report=False)
    assert same["renamed_channels"] == {}
    assert (same["coil_site"], same["roi"]) == (summary["coil_site"], summary["roi"])
    assert same["peaks"] == summary["peaks"]
