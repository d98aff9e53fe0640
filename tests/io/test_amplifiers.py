"""The amplifiers TMS-EEG labs use, each in a file a test writes with that system's own
layout: ANT Neuro eego ``.cnt`` (written by ANT's libeep), EGI ``.mff`` (written by EGI's
mffpy) and a Bittium NeurOne session folder (written here from NeurOne's data format).
Each is read, its pulses found, and analysed."""
import ctypes
import struct
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from tmseeg.report.analyze import analyze_file
from tmseeg.sim.accuracy import simulated_recording
from tmseeg.sim.model import SimConfig
from tmseeg.io.files import EVENT_GAP, RecordingError, read_recording


def _session(seconds=20.0, sfreq=2000.0, seed=7):
    rec, truth = simulated_recording(SimConfig(n_channels=32, sfreq=sfreq, seed=seed,
                                               muscle_artifact=False), seconds, None)
    return rec, [p.sample for p in truth.pulses]


# --------------------------------------------------------------------------------------------
# ANT Neuro eego (.cnt, RIFF)
# --------------------------------------------------------------------------------------------

def write_ant_cnt(path: Path, data_uv, names, sfreq, triggers):
    """An eego recording as ANT's own library writes it: channel table, recording info
    (start time, subject), float samples, and triggers (sample, code)."""
    pyeep = pytest.importorskip("antio.libeep.pyeep", reason="antio writes the ANT file")
    lib = ctypes.CDLL(pyeep.__file__)  # the same libeep pyeep wraps, for what it does not
    lib.libeep_add_trigger.argtypes = [ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p]
    lib.libeep_set_start_time.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.libeep_set_date_of_birth.argtypes = [ctypes.c_int] * 4
    lib.libeep_set_patient_sex.argtypes = [ctypes.c_int, ctypes.c_char]
    lib.libeep_set_patient_id.argtypes = [ctypes.c_int, ctypes.c_char_p]
    lib.libeep_add_recording_info.argtypes = [ctypes.c_int, ctypes.c_int]
    channels = pyeep.create_channel_info()
    for name in names:
        pyeep.add_channel(channels, name, "CPz", "uV")
    handle = pyeep.write_cnt(str(path), int(sfreq), channels, 0)
    info = lib.libeep_create_recinfo()
    lib.libeep_set_start_time(info, 1767600000)
    lib.libeep_set_date_of_birth(info, 1990, 1, 1)  # libeep reads a subject back: give one
    lib.libeep_set_patient_sex(info, b"F")
    lib.libeep_set_patient_id(info, b"sub-01")
    lib.libeep_add_recording_info(handle, info)
    samples = np.ascontiguousarray(data_uv.T, dtype=np.float32)
    for start in range(0, len(samples), 4096):
        chunk = samples[start:start + 4096]
        pyeep.add_samples(handle, chunk.ravel().tolist(), len(names))
    for sample, code in triggers:
        lib.libeep_add_trigger(handle, int(sample), code.encode())
    pyeep.close(handle)


def test_ant_eego_cnt_is_read_and_analysed(tmp_path):
    """eego: ANT's triggers (code "1" from the stimulator) become the pulses, the EMG
    channel is typed by its name, the samples are the ones written."""
    rec, pulses = _session()
    path = tmp_path / "sub-01_tms.cnt"
    write_ant_cnt(path, rec.data_uv, rec.meta.ch_names, rec.meta.sfreq,
                  [(s, "1") for s in pulses])
    got = read_recording(path)
    assert got.meta.ch_names == rec.meta.ch_names and got.meta.sfreq == rec.meta.sfreq
    assert got.meta.ch_types[-1] == "emg" and set(got.meta.ch_types[:-1]) == {"eeg"}
    # eego stores scaled integers: within 1e-4 of each channel's range
    tol = 1e-4 * np.abs(rec.data_uv).max(axis=1, keepdims=True) + 0.01
    assert np.all(np.abs(got.data_uv - rec.data_uv) <= tol)
    assert [(e.sample, e.label) for e in got.events] == [(s, "1") for s in pulses]
    assert got.meas_date == datetime.fromtimestamp(1767600000, timezone.utc)
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False)
    assert summary["n_pulses"] == len(pulses) and summary["n_kept"] >= len(pulses) - 2


def test_a_neuroscan_cnt_is_not_taken_for_ant(tmp_path):
    """A .cnt that is not ANT's RIFF container goes to MNE's Neuroscan reader, whose error
    is named as such (no Neuroscan writer exists to test a valid file here)."""
    path = tmp_path / "scan.cnt"
    path.write_bytes(b"Version 3.0\x00" + bytes(900))
    with pytest.raises(RecordingError, match="cannot read it as CNT"):
        read_recording(path)


# --------------------------------------------------------------------------------------------
# EGI (.mff)
# --------------------------------------------------------------------------------------------

def _gsn32_order(names):
    """The 10-05 channels put one-to-one on the HydroCel GSN 32 electrodes nearest them:
    for each E1..E32, the index of the simulated channel recorded there."""
    import mne
    from scipy.optimize import linear_sum_assignment

    from tmseeg.stream.montage import ten_five_montage

    gsn = mne.channels.make_standard_montage("GSN-HydroCel-32").get_positions()["ch_pos"]
    ten = {k.lower(): v for k, v in ten_five_montage().get_positions()["ch_pos"].items()}
    electrodes = [f"E{i}" for i in range(1, 33)]
    cost = np.array([[np.linalg.norm(gsn[e] - ten[n.lower()]) for e in electrodes]
                     for n in names])
    rows, cols = linear_sum_assignment(cost)
    order = np.empty(32, int)
    order[cols] = rows
    return order


def write_egi_mff(path: Path, data_uv, sfreq, start, events):
    """A Net Station recording as EGI's mffpy writes it: HydroCel GSN 32 sensor layout
    (E1 ... E32 and the vertex reference), float samples, an event track (onset s, code)."""
    mffpy = pytest.importorskip("mffpy", reason="mffpy writes the EGI file")
    from datetime import timedelta

    from mffpy.bin_writer import BinWriter

    writer = mffpy.Writer(str(path))
    writer.addxml("fileInfo", recordTime=start)
    writer.add_coordinates_and_sensor_layout("HydroCel GSN 32 1.0")
    signal = BinWriter(sampling_rate=int(sfreq), data_type="EEG")
    signal.add_block(np.asarray(data_uv, dtype=np.float32))
    writer.addbin(signal)
    writer.addxml("eventTrack", name="Events", trackType="EVNT", events=[
        {"beginTime": start + timedelta(seconds=t), "duration": 1, "code": code,
         "label": code, "relativeBeginTime": int(round(t * 1e6)), "segmentationEvent": False,
         "sourceDevice": "Multi-Port ECI"} for t, code in events])
    writer.write()


def test_egi_mff_is_read_and_analysed_with_its_montage(tmp_path):
    """Net Station: "TMS" events are the pulses (once each, though MNE also makes them a
    stim channel); E1 ... E32 with --montage GSN-HydroCel-32 give a coil site over the
    simulated one."""
    rec, pulses = _session(seed=8)
    eeg = [i for i, t in enumerate(rec.meta.ch_types) if t == "eeg"]
    names = [rec.meta.ch_names[i] for i in eeg]
    order = _gsn32_order(names)
    data = np.vstack([rec.data_uv[eeg][order], np.zeros((1, rec.n_samples))])  # + VREF
    start = datetime(2026, 1, 5, 10, 0, 0, tzinfo=timezone.utc)
    path = tmp_path / "sub-01.mff"
    write_egi_mff(path, data, rec.meta.sfreq, start, [(s / rec.meta.sfreq, "TMS")
                                                      for s in pulses])
    got = read_recording(path)
    assert list(got.meta.ch_names[:32]) == [f"E{i}" for i in range(1, 33)]
    np.testing.assert_allclose(got.data_uv[:32], data[:32], rtol=1e-6, atol=1e-3)
    assert [(e.sample, e.kind) for e in got.events] == [(s, "pulse") for s in pulses]
    summary = analyze_file(path, tmp_path / "out", progress=False, report=False,
                           overrides={"channels": {"montage": "GSN-HydroCel-32"}})
    assert summary["n_pulses"] == len(pulses)
    ref = analyze_file(_brainvision(rec, pulses, tmp_path), tmp_path / "ref",
                       progress=False, report=False)
    site = f"E{int(np.flatnonzero(np.array(names)[order] == ref['coil_site'])[0]) + 1}"
    assert summary["coil_site"] == site, (summary["coil_site"], ref["coil_site"], site)


def _brainvision(rec, pulses, folder):
    """The same session as a BrainVision file with 10-05 labels (the reference analysis)."""
    import pybv

    eeg = [i for i, t in enumerate(rec.meta.ch_types) if t == "eeg"]
    pybv.write_brainvision(data=rec.data_uv[eeg] * 1e-6, sfreq=rec.meta.sfreq,
                           ch_names=[rec.meta.ch_names[i] for i in eeg], fname_base="ref",
                           folder_out=str(folder), unit="µV", resolution=0.01,
                           events=[dict(onset=s, description=1, type="Stimulus")
                                   for s in pulses])
    return folder / "ref.vhdr"


# --------------------------------------------------------------------------------------------
# Bittium NeurOne (session folder)
# --------------------------------------------------------------------------------------------

_PROTOCOL_NS = "http://www.megaemg.com/DataSetGeneralProtocol.xsd"
_SESSION_NS = "http://www.megaemg.com/DataSetGeneralSession.xsd"


def write_neurone(folder: Path, phases, names, sfreq, start, gain_nv=1.0):
    """A NeurOne session folder: Protocol.xml (channels in shuffled table order with their
    input numbers and calibration), Session.xml (start time, phases), and per phase
    ``N/1.bin`` (int32, interleaved by input number) and ``N/events.bin`` (88-byte records)
    with ``eventData.bin`` for comments. ``phases`` is a list of (data_uv, events) with
    events as (sample, type, port, code, comment)."""
    folder.mkdir(parents=True)
    table = "".join(
        f"<TableInput><InputNumber>{k + 1}</InputNumber><Name>{name}</Name>"
        f"<RangeMinimum>-8388608</RangeMinimum><RangeMaximum>8388607</RangeMaximum>"
        f"<RangeAsCalibratedMinimum>{-8388608 * gain_nv:.6f}</RangeAsCalibratedMinimum>"
        f"<RangeAsCalibratedMaximum>{8388607 * gain_nv:.6f}</RangeAsCalibratedMaximum>"
        f"</TableInput>" for k, name in reversed(list(enumerate(names))))  # any table order
    (folder / "Protocol.xml").write_text(
        f'<?xml version="1.0" standalone="yes"?><DataSetProtocol xmlns="{_PROTOCOL_NS}">'
        f"<TableProtocol><SamplingFrequency>{sfreq:g}</SamplingFrequency>"
        f"<ActualSamplingFrequency>{sfreq:g}</ActualSamplingFrequency></TableProtocol>"
        f"{table}</DataSetProtocol>")
    from datetime import timedelta

    def stamp(t):
        return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+02:00"  # 7 digits, as NeurOne writes

    phase_xml, t = "", start
    for k, (data_uv, _) in enumerate(phases):
        stop = t + timedelta(seconds=data_uv.shape[1] / sfreq)
        phase_xml += (f"<TableSessionPhase><Folder>C:\\NeurOne\\data\\sub-01\\{k + 1}"
                      f"</Folder><StartDateTime>{stamp(t)}</StartDateTime>"
                      f"<StopDateTime>{stamp(stop)}</StopDateTime></TableSessionPhase>")
        t = stop + timedelta(seconds=5.0)
    (folder / "Session.xml").write_text(
        f'<?xml version="1.0" standalone="yes"?><DataSetSession xmlns="{_SESSION_NS}">'
        f"<TableSession><StartDateTime>{stamp(start)}</StartDateTime></TableSession>"
        f"<TablePerson><PersonID>sub-01</PersonID></TablePerson>{phase_xml}"
        f"</DataSetSession>")
    for k, (data_uv, events) in enumerate(phases):
        sub = folder / str(k + 1)
        sub.mkdir()
        counts = np.round(data_uv * 1e3 / gain_nv).astype("<i4")
        counts.T.tofile(sub / "1.bin")
        records, text = b"", b""
        for sample, kind, port, code, comment in events:
            data = comment.encode("utf-16-le")
            records += struct.pack("<6i6Qd2i", 5, 0, kind, port, 0, code, sample, sample,
                                   0, 0, len(data), len(text), 0.0, 0, 0)
            text += data
        (sub / "events.bin").write_bytes(records)
        (sub / "eventData.bin").write_bytes(text)


def test_neurone_session_folder_is_read_and_analysed(tmp_path):
    """NeurOne: the stimulator's TTL on port A ("A - Stimulation") marks the pulses, a
    comment keeps its text, 8-bit triggers their code; two phases are joined with a gap;
    samples calibrated to µV; the session analysed from its folder or its Protocol.xml."""
    rec, pulses = _session(seconds=24.0, seed=9)
    sfreq = rec.meta.sfreq
    cut = int(12 * sfreq)
    first = [s for s in pulses if s < cut]
    second = [s - cut for s in pulses if s >= cut]
    ev1 = [(s, 1, 1, 0, "") for s in first] + [(100, 6, 6, 0, "eyes open"), (150, 4, 3, 7, "")]
    ev2 = [(s, 1, 1, 0, "") for s in second]
    folder = tmp_path / "NeurOne-2026-01-05"
    start = datetime(2026, 1, 5, 10, 0, 0)
    write_neurone(folder, [(rec.data_uv[:, :cut], ev1), (rec.data_uv[:, cut:], ev2)],
                  rec.meta.ch_names, sfreq, start, gain_nv=0.5)
    got = read_recording(folder)
    assert got.meta.ch_names == rec.meta.ch_names and got.meta.sfreq == sfreq
    assert got.meta.ch_types[-1] == "emg"
    np.testing.assert_allclose(got.data_uv, rec.data_uv, atol=0.5e-3)  # 0.5 nV steps
    labels = [(e.sample, e.label) for e in got.events if e.kind != EVENT_GAP]
    assert (100, "eyes open") in labels and (150, "7") in labels
    stims = [s for s, lab in labels if lab == "A - Stimulation"]
    assert stims == first + [cut + s for s in second]
    assert [e.sample for e in got.events if e.kind == EVENT_GAP] == [cut]
    assert got.meas_date == datetime(2026, 1, 5, 8, 0, 0, tzinfo=timezone.utc)
    assert read_recording(folder / "Protocol.xml").meta.ch_names == got.meta.ch_names
    summary = analyze_file(folder, tmp_path / "out", progress=False, report=False)
    assert summary["n_pulses"] == len(stims), summary["n_pulses"]


def test_a_broken_neurone_folder_is_named(tmp_path):
    """A data file cut to whole samples but shorter than the session file says the phase
    lasted is a warning (and analysed); one cut mid-value, or missing, is an error."""
    rec, _ = _session(seconds=3.0)
    folder = tmp_path / "s"
    write_neurone(folder, [(rec.data_uv, [])], rec.meta.ch_names, rec.meta.sfreq,
                  datetime(2026, 1, 5))
    assert read_recording(folder).warnings == []
    data = (folder / "1" / "1.bin").read_bytes()
    frame = 4 * rec.meta.n_channels
    (folder / "1" / "1.bin").write_bytes(data[:frame * (rec.n_samples // 3)])
    short = read_recording(folder)
    assert len(short.warnings) == 1 and "lasted 3.0 s but its data hold 1.0 s" in \
        short.warnings[0], short.warnings
    (folder / "1" / "1.bin").write_bytes(data)
    with open(folder / "1" / "1.bin", "ab") as f:
        f.write(b"\x00\x00")  # half a value: the copy was cut
    with pytest.raises(RecordingError, match=r"1\.bin.*not a whole number of samples"):
        read_recording(folder)
    (folder / "1" / "1.bin").unlink()
    with pytest.raises(RecordingError, match=r"no data file \(1\.bin\)"):
        read_recording(folder)
