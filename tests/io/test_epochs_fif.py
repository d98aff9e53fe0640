"""``-epo.fif`` written one epoch at a time: the file MNE's own save writes, without its copies."""
import mne
import numpy as np
import pytest

from tmseeg.io.epochs_fif import fits_one_file, write_epochs_fif


def _case(n_epochs=7, n_channels=5, n_times=301, sfreq=1000.0):
    rng = np.random.default_rng(3)
    uv = (rng.standard_normal((n_epochs, n_channels, n_times)) * 20).astype(np.float32)
    uv[2, 1, 10:20] = np.nan  # an interpolation gap: stored as 0, as MNE would
    volts = [np.nan_to_num(e) * 1e-6 for e in uv]
    info = mne.create_info([f"E{i}" for i in range(n_channels)], sfreq, ch_types="eeg")
    n_all = n_epochs + 3
    kept = [0, 1, 3, 4, 6, 8, 9]
    drop_log = tuple(() if i in kept else ("noisy epoch",) for i in range(n_all))
    events = np.array([[1000 + 1500 * i, 0, 1] for i in kept])
    return info, volts, kept, drop_log, events


def test_the_file_is_the_one_mne_writes_and_reads_back_the_same(tmp_path):
    info, volts, kept, drop_log, events = _case()
    ours, theirs = tmp_path / "ours-epo.fif", tmp_path / "mne-epo.fif"
    write_epochs_fif(ours, info, iter(volts), len(volts), events, -0.1, {"TMS": 1},
                     np.array(kept), drop_log)
    mne.EpochsArray(np.array(volts, dtype=np.float64), info, events=events, tmin=-0.1,
                    event_id={"TMS": 1}, baseline=None, selection=kept, drop_log=drop_log,
                    verbose="error").save(theirs, verbose="error")
    a = mne.read_epochs(ours, verbose="error")
    b = mne.read_epochs(theirs, verbose="error")
    np.testing.assert_array_equal(a.get_data(), b.get_data())
    np.testing.assert_array_equal(a.get_data(), np.array(volts, np.float32))
    np.testing.assert_array_equal(a.events, events)
    np.testing.assert_array_equal(a.selection, kept)
    assert a.drop_log == b.drop_log == drop_log
    assert a.tmin == b.tmin and a.baseline is None and a.event_id == {"TMS": 1}
    assert a.info["ch_names"] == b.info["ch_names"] and a.info["sfreq"] == 1000.0
    # the same bytes, but for the ids' time stamps (each id is written when the file is)
    x, y = np.fromfile(ours, np.uint8), np.fromfile(theirs, np.uint8)
    assert x.size == y.size
    assert np.count_nonzero(x != y) <= 3 * 8


def test_a_wrong_epoch_count_or_shape_leaves_no_file(tmp_path):
    info, volts, kept, drop_log, events = _case()
    path = tmp_path / "x-epo.fif"
    with pytest.raises(ValueError, match="6 epochs written, 7 announced"):
        write_epochs_fif(path, info, iter(volts[:6]), 7, events, -0.1, {"TMS": 1},
                         np.array(kept), drop_log)
    assert not path.exists()
    bad = volts[:3] + [volts[3][:, :-1]] + volts[4:]
    with pytest.raises(ValueError, match="epoch 3 has shape"):
        write_epochs_fif(path, info, iter(bad), 7, events, -0.1, {"TMS": 1},
                         np.array(kept), drop_log)
    assert not path.exists()
    with pytest.raises(ValueError, match="more than the 6 epochs"):
        write_epochs_fif(path, info, iter(volts), 6, events[:6], -0.1, {"TMS": 1},
                         np.array(kept[:6]), drop_log)
    assert not path.exists()


def test_epochs_over_one_files_size_are_refused():
    assert fits_one_file(241, 64, 4501)  # 10 min at 5 kHz: 278 MB
    assert not fits_one_file(2000, 128, 20001)  # 20 GB: MNE's split save takes it
    info, volts, kept, drop_log, events = _case()
    with pytest.raises(ValueError, match="2 GB"):
        write_epochs_fif("never-epo.fif", info, iter(volts), 2 ** 24, events, -0.1,
                         {"TMS": 1}, np.array(kept), drop_log)
