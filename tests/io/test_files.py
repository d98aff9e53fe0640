"""read_recording: every format lands in µV with the right channels, types and events."""
import json
import struct
from datetime import datetime, timezone

import mne
import numpy as np
import pytest

from tmseeg.stream.block import StreamMeta, Event
from tmseeg.io.files import (
    DEFAULT_PULSE_PATTERN,
    FileSamples,
    Recording,
    RecordingError,
    read_recording,
)

SFREQ = 250.0
N = 750


def _raw(seed=5, stim=False):
    rng = np.random.default_rng(seed)
    names = ["Fp1", "Cz", "Oz", "EMG_FDI"] + (["STI 014"] if stim else [])
    # the EMG channel is typed misc, as many exporters leave it: the reader retypes it by name
    types = ["eeg", "eeg", "eeg", "misc"] + (["stim"] if stim else [])
    data_uv = rng.standard_normal((len(names), N)) * 20.0
    if stim:
        data_uv[-1] = 0.0
        data_uv[-1, [100, 400]] = [1, 7]
    scale = np.array([1e-6] * 4 + ([1.0] if stim else []))
    raw = mne.io.RawArray(data_uv * scale[:, None], mne.create_info(names, SFREQ, types),
                          verbose="error")
    raw.set_meas_date(datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc))
    raw.set_annotations(mne.Annotations([0.4, 1.2, 2.0], 0, ["TMS", "rest", "Pulse 80%"],
                                        orig_time=raw.info["meas_date"]))
    return raw, data_uv


def test_fif_units_types_events(tmp_path):
    raw, data_uv = _raw(stim=True)
    path = tmp_path / "a_raw.fif"
    raw.save(path, fmt="double", verbose="error")
    rec = read_recording(path)
    assert rec.meta.ch_names == ("Fp1", "Cz", "Oz", "EMG_FDI", "STI 014")
    assert rec.meta.ch_types == ("eeg", "eeg", "eeg", "emg", "stim")
    assert rec.meta.sfreq == SFREQ and rec.meta.name == "a_raw.fif"
    # EEG back in µV; the misc-typed EMG (volts in the file) retyped emg, so scaled to µV too;
    # stim unscaled
    np.testing.assert_allclose(rec.data_uv[:4], data_uv[:4], rtol=1e-12)
    np.testing.assert_array_equal(rec.data_uv[4], data_uv[4])
    got = [(e.sample, e.label, e.kind) for e in rec.events]
    assert got == [(100, "TMS", "pulse"), (100, "1", "marker"), (300, "rest", "marker"),
                   (400, "7", "marker"), (500, "Pulse 80%", "pulse")]
    assert rec.meas_date == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    # a stim code becomes a pulse when the lab says so
    rec1 = read_recording(path, pulse_pattern=r"^7$")
    assert [e.sample for e in rec1.events if e.kind == "pulse"] == [400]


def test_fif_gz_and_cropped_start(tmp_path):
    raw, data_uv = _raw()
    raw.crop(tmin=1.0)  # first_samp = 250: events must stay relative to the data start
    path = tmp_path / "b_raw.fif.gz"
    raw.save(path, fmt="double", verbose="error")
    rec = read_recording(path)
    assert rec.n_samples == N - 250
    assert rec.t0_s == pytest.approx(1.0)
    np.testing.assert_allclose(rec.data_uv[:3], data_uv[:3, 250:], rtol=1e-12)
    assert [(e.sample, e.label) for e in rec.events] == [(50, "rest"), (250, "Pulse 80%")]


def test_to_raw_roundtrip(tmp_path):
    raw, data_uv = _raw()
    rec = read_recording(_save(raw, tmp_path / "c_raw.fif"))
    back = rec.to_raw()
    np.testing.assert_allclose(back.get_data(), raw.get_data(), rtol=1e-12, atol=0)
    assert back.get_channel_types() == ["eeg", "eeg", "eeg", "emg"]
    assert list(back.annotations.description) == ["TMS", "rest", "Pulse 80%"]
    np.testing.assert_allclose(back.annotations.onset, [0.4, 1.2, 2.0])


def _save(raw, path):
    raw.save(path, fmt="double", verbose="error", overwrite=True)
    return path


def test_brainvision_pybv(tmp_path):
    import pybv

    rng = np.random.default_rng(1)
    data_uv = rng.standard_normal((3, N)) * 15
    pybv.write_brainvision(
        data=data_uv * 1e-6, sfreq=SFREQ, ch_names=["C3", "C4", "EMG1"], fname_base="x",
        folder_out=tmp_path, fmt="binary_float32", resolution=0.01,
        events=[{"onset": 10, "description": 1, "type": "Stimulus"},
                {"onset": 20, "description": 2, "type": "Stimulus"},
                {"onset": 30, "description": "TMS single", "type": "Comment"}],
    )
    rec = read_recording(tmp_path / "x.vhdr")
    assert rec.meta.ch_types == ("eeg", "eeg", "emg")
    np.testing.assert_allclose(rec.data_uv, data_uv, rtol=1e-6, atol=1e-6)
    assert [(e.sample, e.label, e.kind) for e in rec.events] == [
        (10, "Stimulus/S  1", "pulse"), (20, "Stimulus/S  2", "marker"),
        (30, "Comment/TMS single", "pulse")]


@pytest.mark.parametrize("fmt", ["binary_float32", "binary_int16"])
def test_brainvision_read_block_by_block_equals_mne(tmp_path, fmt):
    """``preload=False`` (``tmseeg analyze``) reads the data file when sliced; every sample
    equals MNE's reading of the same file, for float and integer files with their
    resolutions, and no sample is held."""
    import pybv

    rng = np.random.default_rng(2)
    n = 70_000  # several of FileSamples' 256-kB pieces
    data_uv = rng.standard_normal((4, n)) * 40
    pybv.write_brainvision(data=data_uv * 1e-6, sfreq=SFREQ,
                           ch_names=["C3", "C4", "Cz", "EMG1"], fname_base="y",
                           folder_out=tmp_path, fmt=fmt, resolution=0.1)
    mne_uv = mne.io.read_raw_brainvision(tmp_path / "y.vhdr", preload=True,
                                         verbose="error").get_data() * 1e6
    lazy = read_recording(tmp_path / "y.vhdr", preload=False)
    whole = read_recording(tmp_path / "y.vhdr")
    assert isinstance(lazy.data_uv, FileSamples) and isinstance(whole.data_uv, np.ndarray)
    assert lazy.n_samples == whole.n_samples == n and lazy.events == whole.events
    np.testing.assert_allclose(whole.data_uv, mne_uv, rtol=1e-12, atol=1e-9)
    assert np.array_equal(np.asarray(lazy.data_uv), whole.data_uv)
    assert np.array_equal(lazy.data_uv[:, 12_345:54_321], whole.data_uv[:, 12_345:54_321])
    assert np.array_equal(lazy.data_uv[[0, 2], :100], whole.data_uv[[0, 2], :100])
    assert np.array_equal(lazy.data_uv[3], whole.data_uv[3])
    assert lazy.data_uv[:, n - 5:n + 50].shape == (4, 5)  # clipped at the end, as numpy does


@pytest.mark.parametrize("ext", ["edf", "bdf"])
def test_edf_bdf_export(tmp_path, ext):
    raw, data_uv = _raw()
    raw.set_channel_types({"EMG_FDI": "emg"}, on_unit_change="ignore")
    path = tmp_path / f"d.{ext}"
    mne.export.export_raw(path, raw, fmt=ext, verbose="error")
    rec = read_recording(path)
    assert rec.meta.ch_names == ("Fp1", "Cz", "Oz", "EMG_FDI")
    assert rec.meta.ch_types[3] == "emg"
    assert rec.meta.sfreq == SFREQ
    # 16-bit (EDF) / 24-bit (BDF) quantisation of the physical range
    span = np.ptp(data_uv[:4])
    tol = span / (2 ** 16 if ext == "edf" else 2 ** 24) * 2
    np.testing.assert_allclose(rec.data_uv[:, :N], data_uv[:4], atol=tol)
    assert [(e.sample, e.label, e.kind) for e in rec.events] == [
        (100, "TMS", "pulse"), (300, "rest", "marker"), (500, "Pulse 80%", "pulse")]


def test_eeglab_export(tmp_path):
    raw, data_uv = _raw()
    path = tmp_path / "e.set"
    mne.export.export_raw(path, raw, fmt="eeglab", verbose="error")
    rec = read_recording(path)
    assert rec.meta.ch_names == ("Fp1", "Cz", "Oz", "EMG_FDI")
    assert rec.meta.ch_types == ("eeg", "eeg", "eeg", "emg")
    np.testing.assert_allclose(rec.data_uv[:3], data_uv[:3], rtol=1e-5, atol=1e-5)
    assert [(e.sample, e.kind) for e in rec.events] == [(100, "pulse"), (300, "marker"),
                                                       (500, "pulse")]


# ---------------------------------------------------------------------------------------------
# XDF, written by hand following the XDF 1.0 specification
# (https://github.com/sccn/xdf/wiki/Specifications): "XDF:" magic, then chunks of
# [NumLengthBytes u8][Length][Tag u16][Content]; Length counts the tag and the content.
# ---------------------------------------------------------------------------------------------

def _varlen(n: int) -> bytes:
    if n < 256:
        return struct.pack("<BB", 1, n)
    if n < 2 ** 32:
        return struct.pack("<BI", 4, n)
    return struct.pack("<BQ", 8, n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _stream_header(sid, name, stype, n_ch, srate, fmt, channels=()):
    chans = "".join(
        f"<channel><label>{lab}</label><type>{typ}</type><unit>{unit}</unit></channel>"
        for lab, typ, unit in channels
    )
    xml = (
        '<?xml version="1.0"?><info>'
        f"<name>{name}</name><type>{stype}</type><channel_count>{n_ch}</channel_count>"
        f"<nominal_srate>{srate}</nominal_srate><channel_format>{fmt}</channel_format>"
        f"<source_id>{name}-sid</source_id><version>1.1</version><created_at>0</created_at>"
        f"<uid>{name}-uid</uid><session_id>default</session_id><hostname>test</hostname>"
        f"<desc><channels>{chans}</channels></desc></info>"
    )
    return _chunk(2, struct.pack("<I", sid) + xml.encode())


def _numeric_samples(sid, ts, values):  # values: (n_samples, n_ch) float32
    body = b"".join(
        struct.pack("<Bd", 8, t) + np.asarray(v, "<f4").tobytes() for t, v in zip(ts, values)
    )
    return _chunk(3, struct.pack("<I", sid) + _varlen(len(ts)) + body)


def _string_samples(sid, ts, labels):
    body = b"".join(
        struct.pack("<Bd", 8, t) + _varlen(len(s.encode())) + s.encode()
        for t, s in zip(ts, labels)
    )
    return _chunk(3, struct.pack("<I", sid) + _varlen(len(ts)) + body)


def _footer(sid, first, last, count):
    xml = (
        '<?xml version="1.0"?><info>'
        f"<first_timestamp>{first}</first_timestamp><last_timestamp>{last}</last_timestamp>"
        f"<sample_count>{count}</sample_count><clock_offsets><offset><time>{first}</time>"
        "<value>0</value></offset></clock_offsets></info>"
    )
    return _chunk(6, struct.pack("<I", sid) + xml.encode())


def write_xdf(path, data, t0, srate, marker_ts, marker_labels, units=("microvolts",) * 4):
    """A LabRecorder-like file: an EEG stream (2 sample chunks) and a Markers stream."""
    n_ch, n = data.shape
    ts = t0 + np.arange(n) / srate
    chans = [("Fp1", "EEG", units[0]), ("Cz", "EEG", units[1]), ("EMG_R", "EMG", units[2]),
             ("TRIG", "STIM", units[3])][:n_ch]
    out = b"XDF:"
    out += _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version>'
                     b"<datetime>2024-05-06T07:08:09+0000</datetime></info>")
    out += _stream_header(1, "amp", "EEG", n_ch, srate, "float32", chans)
    out += _stream_header(2, "stim-markers", "Markers", 1, 0, "string")
    half = n // 2
    out += _numeric_samples(1, ts[:half], data[:, :half].T)
    out += _chunk(4, struct.pack("<Idd", 1, ts[half], 0.0))
    out += _string_samples(2, marker_ts, marker_labels)
    out += _numeric_samples(1, ts[half:], data[:, half:].T)
    out += _chunk(5, bytes.fromhex("4321f2ab3c6d5e8f9a0b1c2d3e4f5a6b"))  # boundary chunk
    out += _footer(1, ts[0], ts[-1], n)
    out += _footer(2, marker_ts[0], marker_ts[-1], len(marker_ts))
    path.write_bytes(out)
    return ts


def test_xdf_handwritten(tmp_path):
    rng = np.random.default_rng(9)
    data = (rng.standard_normal((4, N)) * 10).astype(np.float32)
    data[3] = 0
    t0 = 1234.5
    m_samples = [50, 333, 600]
    # marker times slightly off the sample grid (as real LSL markers are): nearest sample wins
    m_ts = [t0 + s / SFREQ + 0.3 / SFREQ for s in m_samples]
    path = tmp_path / "f.xdf"
    write_xdf(path, data, t0, SFREQ, m_ts, ["TMS", "block2", "tms"])
    rec = read_recording(path)
    assert rec.meta.ch_names == ("Fp1", "Cz", "EMG_R", "TRIG")
    assert rec.meta.ch_types == ("eeg", "eeg", "emg", "stim")
    assert rec.meta.sfreq == SFREQ and rec.meta.source_id == "amp-sid"
    np.testing.assert_array_equal(rec.data_uv, data.astype(np.float64))
    assert rec.t0_s == pytest.approx(t0, abs=1e-9)
    assert [(e.sample, e.label, e.kind) for e in rec.events] == [
        (50, "TMS", "pulse"), (333, "block2", "marker"), (600, "tms", "pulse")]
    assert rec.events[0].time_s == pytest.approx(m_ts[0])
    assert rec.meas_date == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def test_xdf_volts_scaled_and_stream_choice(tmp_path):
    data = np.ones((4, 100), np.float32) * 1e-5
    path = tmp_path / "v.xdf"
    write_xdf(path, data, 10.0, SFREQ, [10.1], ["x"], units=("volts", "volts", "mV", "n/a"))
    rec = read_recording(path)
    np.testing.assert_allclose(rec.data_uv[:, 0], [10.0, 10.0, 1e-2, 1e-5], rtol=1e-6)
    with pytest.raises(RecordingError, match="no numeric stream named 'nope'.*'amp'"):
        read_recording(path, stream_name="nope")
    assert read_recording(path, stream_name="amp").meta.name == "v.xdf"


def test_xdf_errors(tmp_path):
    bad = tmp_path / "bad.xdf"
    bad.write_bytes(b"not an xdf file at all")
    with pytest.raises(RecordingError, match="not an XDF file"):
        read_recording(bad)
    only_markers = tmp_path / "m.xdf"
    only_markers.write_bytes(
        b"XDF:" + _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
        + _stream_header(2, "mk", "Markers", 1, 0, "string")
        + _string_samples(2, [1.0], ["TMS"])
    )
    with pytest.raises(RecordingError, match="cannot pick the EEG stream.*'mk'"):
        read_recording(only_markers)


def test_bad_files(tmp_path):
    with pytest.raises(RecordingError, match="no such file"):
        read_recording(tmp_path / "gone.vhdr")
    empty = tmp_path / "empty_raw.fif"
    empty.touch()
    with pytest.raises(RecordingError, match="empty"):
        read_recording(empty)
    with pytest.raises(RecordingError, match="unknown recording format.*Supported"):
        read_recording(tmp_path / "x.csv")
    with pytest.raises(RecordingError, match="pass the header file 'y.vhdr'"):
        read_recording(tmp_path / "y.eeg")
    raw, _ = _raw()
    good = _save(raw, tmp_path / "t_raw.fif")
    truncated = tmp_path / "trunc_raw.fif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(RecordingError, match="trunc_raw.fif.*cannot read it as FIF"):
        read_recording(truncated)
    garbage = tmp_path / "g.edf"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(RecordingError, match="g.edf.*EDF"):
        read_recording(garbage)
    # BrainVision header whose data file is missing
    import pybv
    pybv.write_brainvision(data=np.zeros((2, 10)), sfreq=SFREQ, ch_names=["a", "b"],
                           fname_base="h", folder_out=tmp_path)
    (tmp_path / "h.eeg").unlink()
    with pytest.raises(RecordingError, match="h.vhdr.*beside it"):
        read_recording(tmp_path / "h.vhdr")
    with pytest.raises(RecordingError, match="regex"):
        read_recording(good, pulse_pattern="(")


def test_default_pulse_pattern_documented_cases():
    import re

    p = re.compile(DEFAULT_PULSE_PATTERN, re.IGNORECASE)
    for yes in ["TMS", "tms_pulse", "Stimulus/TMS", "pulse", "Stimulus/S  1", "S 1"]:
        assert p.search(yes), yes
    for no in ["Stimulus/S 11", "Stimulus/S  2", "Comment/pre", "stimulation", "atms", "1"]:
        assert not p.search(no), no


def test_recording_checks_shape():
    meta = StreamMeta(["a", "b"], 100.0)
    with pytest.raises(ValueError, match="channel-count mismatch"):
        Recording(np.zeros((3, 10)), meta)
    rec = Recording(np.zeros((2, 10)), meta, events=[Event(5, "b"), Event(1, "a")])
    assert [e.sample for e in rec.events] == [1, 5] and rec.duration_s == 0.1


def test_xdf_with_a_separate_emg_amplifier_and_json_markers(tmp_path):
    """LabRecorder file of a TMS-EEG session: EEG at 1 kHz, a separate EMG amplifier at 4 kHz
    on another computer (its clock 3.7 s behind, which LabRecorder's clock offsets say) whose
    recording started 0.2 s later (its own stream, type EMG), and JSON pulse markers.
    The EMG becomes a channel on the EEG's samples (by time stamp, anti-aliased), the JSON
    fields the pulses' metadata."""
    from tmseeg.stream.pulseinfo import pulse_info

    fs_eeg, fs_emg, t0 = 1000.0, 4000.0, 500.0
    n = 3000
    rng = np.random.default_rng(4)
    eeg = (rng.standard_normal((2, n)) * 5).astype(np.float32)
    emg_t = t0 + 0.2 + np.arange(int(2.5 * fs_emg)) / fs_emg
    emg = rng.standard_normal(emg_t.size) * 2.0
    mep_at = [t0 + 1.0, t0 + 2.0]  # an MEP 25 ms after each pulse: 1 kHz-wide bursts of 40 Hz
    for p in mep_at:
        k = (emg_t >= p + 0.020) & (emg_t < p + 0.045)
        emg[k] += 500.0 * np.sin(2 * np.pi * 40.0 * (emg_t[k] - p - 0.020))
    out = b"XDF:" + _chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>')
    out += _stream_header(1, "amp", "EEG", 2, fs_eeg, "float32",
                          [("C3", "EEG", "microvolts"), ("C4", "EEG", "microvolts")])
    out += _stream_header(2, "emg-amp", "EMG", 1, fs_emg, "float32",
                          [("FDI", "EMG", "millivolts")])
    out += _stream_header(3, "stim", "Markers", 1, 0, "string")
    ts = t0 + np.arange(n) / fs_eeg
    out += _numeric_samples(1, ts, eeg.T)
    lag = 3.7  # the EMG computer's clock: LabRecorder measures and stores the offset
    out += _chunk(4, struct.pack("<Idd", 2, emg_t[0] - lag, lag))
    out += _numeric_samples(2, emg_t - lag, (emg[:, None] / 1000.0).astype(np.float32))
    out += _chunk(4, struct.pack("<Idd", 2, emg_t[-1] - lag, lag))
    labels = [json.dumps({"label": "TMS", "intensity_pct": 50 + 5 * i, "coil": "figure8"})
              for i in range(len(mep_at))]
    out += _string_samples(3, mep_at, labels)
    out += _footer(1, ts[0], ts[-1], n) + _footer(2, emg_t[0] - lag, emg_t[-1] - lag, emg_t.size)
    out += _footer(3, mep_at[0], mep_at[-1], len(mep_at))
    path = tmp_path / "session.xdf"
    path.write_bytes(out)
    rec = read_recording(path)
    assert rec.meta.ch_names == ("C3", "C4", "FDI")
    assert rec.meta.ch_types == ("eeg", "eeg", "emg")
    fdi = rec.data_uv[2]
    pulses = [e for e in rec.events if e.kind == "pulse"]
    assert [e.sample for e in pulses] == [1000, 2000]
    assert [pulse_info(e) for e in pulses] == [
        {"intensity_pct": 50.0, "coil": "figure8"}, {"intensity_pct": 55.0, "coil": "figure8"}]
    for p in (1000, 2000):
        burst = fdi[p + 15:p + 55]
        # the burst is where its time stamps put it (20-45 ms after the pulse), mV -> µV
        on = np.flatnonzero(np.abs(burst) > 100)
        assert 20 - 15 - 1 <= on[0] <= 20 - 15 + 2 and 44 - 15 - 2 <= on[-1] <= 45 - 15 + 1
        assert 400 < np.ptp(burst) < 1100
    assert np.abs(fdi[250:900]).max() < 20  # before the first MEP: the EMG's own noise


def write_biosemi_bdf(path, data_uv, names, sfreq, status):
    """A BioSemi ActiveTwo-style BDF: 24-bit samples, 1 s records, EEG in µV with the
    ActiveTwo's range, and a ``Status`` channel whose low 16 bits are the trigger code and
    whose upper bits are the amplifier's own flags (here bit 20, "CMS in range", always on,
    as on a working system)."""
    n_ch = len(names) + 1
    fs = int(sfreq)
    n_rec = data_uv.shape[1] // fs
    labels = list(names) + ["Status"]
    head = (b"\xffBIOSEMI".ljust(8) + b"X X X X".ljust(80) + b"Startdate 01-JAN-2024 X X X".ljust(80)
            + b"01.01.24" + b"12.00.00" + str(256 * (n_ch + 1)).encode().ljust(8)
            + b"24BIT".ljust(44) + str(n_rec).encode().ljust(8) + b"1".ljust(8)
            + str(n_ch).encode().ljust(4))
    field = lambda vals, w: b"".join(str(v).encode().ljust(w) for v in vals)  # noqa: E731
    head += field(labels, 16) + field(["Active Electrode"] * (n_ch - 1) + ["Triggers"], 80)
    head += field(["uV"] * (n_ch - 1) + ["Boolean"], 8)
    head += field([-262144] * (n_ch - 1) + [-8388608], 8)
    head += field([262143] * (n_ch - 1) + [8388607], 8)
    head += field([-8388608] * n_ch, 8) + field([8388607] * n_ch, 8)
    head += field([""] * n_ch, 80) + field([fs] * n_ch, 8) + field([""] * n_ch, 32)
    assert len(head) == 256 * (n_ch + 1)
    gain = (262143 - -262144) / (8388607 - -8388608)  # EDF: phys = pmin + (dig - dmin) * gain
    digital = np.vstack([np.round((data_uv - (-262144 - -8388608 * gain)) / gain),
                         status[None, :]]).astype(np.int64)
    body = bytearray()
    for r in range(n_rec):
        for c in range(n_ch):
            x = digital[c, r * fs:(r + 1) * fs] & 0xFFFFFF
            b = np.empty((fs, 3), np.uint8)
            b[:, 0], b[:, 1], b[:, 2] = x & 0xFF, (x >> 8) & 0xFF, (x >> 16) & 0xFF
            body += b.tobytes()
    path.write_bytes(head + bytes(body))


def test_biosemi_bdf_status_channel_gives_the_trigger_codes(tmp_path):
    """BioSemi's Status channel carries the trigger in its low 16 bits and the amplifier's
    flags above (CMS in range, battery, speed mode): the pulses are the trigger code, not the
    flags; and `analyze` finds every pulse of a stimulator that sends code 1."""
    from tmseeg.report.analyze import analyze_file
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2048.0, seed=6,
                                               muscle_artifact=False), 20.0, None)
    eeg = [i for i, t in enumerate(rec.meta.ch_types) if t == "eeg"]
    status = np.full(rec.n_samples, 1 << 20, dtype=np.int64)  # CMS in range
    for p in truth.pulses:
        status[p.sample:p.sample + 20] |= 1  # the stimulator's TTL on trigger bit 0
    status[5000:] |= 1 << 16  # a flag flipping mid-recording must not make an event
    path = tmp_path / "biosemi.bdf"
    write_biosemi_bdf(path, rec.data_uv[eeg], [rec.meta.ch_names[i] for i in eeg],
                      rec.meta.sfreq, status)
    got = read_recording(path)
    assert got.meta.ch_types[-1] == "stim"
    np.testing.assert_allclose(got.data_uv[:len(eeg)], rec.data_uv[eeg][:, :got.n_samples],
                               atol=0.02)  # 24-bit steps of 0.031 µV
    codes = [(e.sample, e.label) for e in got.events]
    full = [p.sample for p in truth.pulses if p.sample < got.n_samples]
    assert codes == [(s, "1") for s in full], codes[:5]
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False)
    assert summary["n_pulses"] == len(full)


def test_xdf_markers_after_the_eeg_stream_stopped_are_counted(tmp_path):
    """The amplifier's stream stopped (lost, unplugged) while the stimulator's markers went
    on: the markers after the EEG's last sample are counted in a warning, not dropped in
    silence."""
    data = np.zeros((4, N), np.float32)
    t0 = 100.0
    inside = [t0 + 1.0, t0 + 2.0]
    after = [t0 + N / SFREQ + 1.0, t0 + N / SFREQ + 2.5]
    path = tmp_path / "lost.xdf"
    write_xdf(path, data, t0, SFREQ, inside + after, ["TMS"] * 4)
    rec = read_recording(path)
    assert [e.sample for e in rec.events] == [250, 500]
    assert len(rec.warnings) == 1 and rec.warnings[0].startswith("2 marker(s) lie after")
    assert "'amp' stopped before the markers did" in rec.warnings[0]


@pytest.mark.parametrize("fmt", ["edf", "bdf"])
def test_a_truncated_edf_or_bdf_says_how_much_of_its_header_is_missing(tmp_path, fmt):
    """An EDF/BDF file cut short (copied before the recording was closed): MNE reads what is
    there and says nothing, EDF+ annotations in the missing records are gone with them; the
    header's record count against the records the file holds is named (summary.json too),
    and what is there is analysed."""
    from tmseeg.report.analyze import analyze_file
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=2048.0 if fmt == "bdf"
                                               else 1000.0, seed=6, muscle_artifact=False),
                                     20.0, None)
    eeg = [i for i, t in enumerate(rec.meta.ch_types) if t == "eeg"]
    path = tmp_path / f"cut.{fmt}"
    if fmt == "bdf":
        status = np.zeros(rec.n_samples, dtype=np.int64)
        for p in truth.pulses:
            status[p.sample:p.sample + 20] |= 1
        write_biosemi_bdf(path, rec.data_uv[eeg], [rec.meta.ch_names[i] for i in eeg],
                          rec.meta.sfreq, status)
    else:
        raw = rec.to_raw().pick(eeg)
        raw.set_annotations(mne.Annotations([p.sample / rec.meta.sfreq for p in truth.pulses],
                                            0.0, "TMS"))
        mne.export.export_raw(path, raw, overwrite=True, verbose="error")
    whole = read_recording(path)
    assert whole.warnings == []
    n_records = int(whole.duration_s)  # 1-s records
    data = path.read_bytes()
    header = int(data[184:192].decode().strip())
    record = (len(data) - header) // n_records
    path.write_bytes(data[:header + 9 * record + record // 2])  # 9 records and a half
    got = read_recording(path)
    said = [w for w in got.warnings if "truncated" in w]
    assert len(said) == 1 and f"declares {n_records} data records" in said[0], got.warnings
    assert "holds 9 (9.0 s)" in said[0] and got.duration_s <= 9.0
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False)
    assert any("declares" in w for w in summary["warnings"])
    assert 1 <= summary["n_pulses"] <= sum(p.sample < got.n_samples for p in truth.pulses)


def test_a_fif_cut_short_is_read_as_far_as_it_goes(tmp_path):
    """A FIF file copied before it was closed ends inside a data buffer: MNE cannot read it
    at all; tmseeg closes what is complete and analyses it, with one warning naming it."""
    from tmseeg.report.analyze import analyze_file
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=1000.0, seed=6,
                                               muscle_artifact=False), 20.0, "TMS")
    path = tmp_path / "cut_raw.fif"
    rec.to_raw().save(path, buffer_size_sec=1.0, verbose="error")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.55)])
    with pytest.raises(Exception):
        mne.io.read_raw_fif(path, preload=True, verbose="error")
    got = read_recording(path)
    said = [w for w in got.warnings if "cut short" in w]
    assert len(said) == 1 and "what is there is analysed" in said[0]
    assert 8.0 <= got.duration_s <= 11.5
    np.testing.assert_allclose(got.data_uv, rec.data_uv[:, :got.n_samples], atol=1e-3)
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False)
    assert any("cut short" in w for w in summary["warnings"])
    assert summary["n_pulses"] >= sum(p.sample < got.n_samples for p in truth.pulses) - 1
    bad = tmp_path / "garbage_raw.fif"
    bad.write_bytes(b"not a fif file at all" * 10)
    with pytest.raises(RecordingError, match="cannot read it as FIF"):
        read_recording(bad)


def test_an_eeglab_fdt_cut_short_is_read_as_far_as_it_goes(tmp_path):
    """EEGLAB with a separate .fdt (as EEGLAB saves large sets): an .fdt holding fewer
    samples than the .set declares is read as far as it goes, with both lengths named."""
    import scipy.io

    from tmseeg.report.analyze import analyze_file
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=1000.0, seed=6,
                                               muscle_artifact=False), 20.0, "TMS")
    eeg = [i for i, t in enumerate(rec.meta.ch_types) if t == "eeg"]
    path = tmp_path / "sub.set"
    mne.export.export_raw(path, rec.to_raw().pick(eeg), overwrite=True, verbose="error")
    mat = scipy.io.loadmat(path, squeeze_me=False, appendmat=False)
    mat["data"].astype("<f4").T.tofile(tmp_path / "sub.fdt")  # sample after sample
    mat["data"] = np.array(["sub.fdt"])
    scipy.io.savemat(path, {k: v for k, v in mat.items() if not k.startswith("__")},
                     appendmat=False)
    whole = read_recording(path)
    assert whole.warnings == [] and whole.n_samples == rec.n_samples
    fdt = tmp_path / "sub.fdt"
    frame = 4 * len(eeg)
    fdt.write_bytes(fdt.read_bytes()[:frame * 9000 + 7])
    got = read_recording(path)
    assert got.n_samples == 9000
    np.testing.assert_allclose(got.data_uv, rec.data_uv[eeg, :9000], atol=1e-3)
    assert len(got.warnings) == 1 and "declares 20000 samples (20.0 s) but sub.fdt holds " \
        "9000 (9.0 s)" in got.warnings[0]
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False)
    assert any("sub.fdt holds 9000" in w for w in summary["warnings"])
