"""BIDS in and out for TMS-EEG sessions (with :mod:`mne_bids`).

Writing (:func:`write_bids`)
    A recording (a file tmseeg reads, a :class:`~tmseeg.io.files.Recording` or an MNE Raw)
    becomes ``<root>/sub-XX/[ses-YY/]eeg/sub-XX[_ses-YY]_task-T[_run-R]_eeg.vhdr`` (BrainVision,
    written by :func:`mne_bids.write_raw_bids`) with ``channels.tsv``, ``events.tsv``,
    ``_eeg.json`` and the dataset files. ``events.tsv`` has one row per TMS pulse and per block
    marker (``trial_type`` = the label, e.g. ``TMS``, ``pre``, ``post``); when the per-pulse rows
    of the pipeline are given (``pulses.csv`` of ``tmseeg analyze`` or a live session's rows)
    their columns join the pulse rows (``kept``, ``reason``, ``early_tep_ptp_uv``,
    ``prestim_phase_rad``, ``prestim_power_uv2``, ``block`` ...; BIDS allows extra columns, each
    is described in ``events.json``). The stimulation the engine knows goes to the custom
    ``_eeg.json`` field :data:`STIM_FIELD` (BIDS has no TMS fields for EEG yet: the
    non-invasive brain stimulation extension, BEP037, is not part of the specification)::

        "TMSStimulation": {"NumberOfPulses": 33, "MeanInterPulseInterval_s": 1.19,
                           "Intensity_pct": 70.0, "Schedule": "single",
                           "CoilSite": "C3", "ROI": ["C3", "FC1", ...], ...}

Reading (:func:`find_recordings`, :func:`read_bids_recording`)
    Recordings are found with :func:`mne_bids.find_matching_paths` (datatype ``eeg``, entity
    filters subject / session / task / run) and read with :func:`mne_bids.read_raw_bids`, so
    the event labels come from ``events.tsv`` (the ``.vmrk`` written by mne-bids holds only
    numeric codes).

Derivatives (:func:`derivatives_root`, :func:`session_output_dir`)
    ``<root>/derivatives/tmseeg/`` with a ``dataset_description.json`` (``DatasetType``
    ``derivative``, ``GeneratedBy`` tmseeg + version + git commit when known, the pipeline
    configuration hash) and, per recording,
    ``sub-XX/[ses-YY/]eeg/<recording basename>/`` holding the ``tmseeg analyze`` outputs.
"""
from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from tmseeg import __version__
from tmseeg.config import Config, config_hash
from tmseeg.utils import jsonable
from tmseeg.io.files import DEFAULT_PULSE_PATTERN, Recording, RecordingError

#: custom ``_eeg.json`` field with what the engine knows about the stimulation
STIM_FIELD = "TMSStimulation"

#: name of the derivatives pipeline folder
PIPELINE_NAME = "tmseeg"

#: descriptions of the known per-pulse columns in ``events.tsv`` (others get a generic one)
EVENT_COLUMN_DESCRIPTIONS: dict[str, str] = {
    "kept": "tmseeg: the epoch of this pulse entered the average (True) or was rejected",
    "reason": "tmseeg: why the epoch was rejected (empty when kept)",
    "early_tep_ptp_uv": "tmseeg: single-trial early TEP peak-to-peak at the ROI, 15-60 ms, µV",
    "max_ptp_uv": "tmseeg: largest channel peak-to-peak outside the pulse window, µV",
    "n_bad_channels": "tmseeg: bad channels at this pulse",
    "bad_channels": "tmseeg: names of the bad channels at this pulse",
    "n_averaged": "tmseeg: epochs in the running average after this pulse",
    "snr_after": "tmseeg: SNR of the running TEP after this pulse",
    "block": "tmseeg: block (last block marker before the pulse)",
    "prestim_phase_rad": "tmseeg: causal pre-stimulus mu phase at the pulse, rad (0 = peak)",
    "prestim_power_uv2": "tmseeg: causal pre-stimulus mu power at the pulse, µV²",
    "prestim_amplitude_uv": "tmseeg: causal pre-stimulus mu amplitude at the pulse, µV",
    "mep_ptp_uv": "tmseeg: MEP peak-to-peak amplitude, µV",
    "mep_latency_ms": "tmseeg: MEP onset latency, ms",
    "intensity_pct": "stimulator output, % of maximum",
}

_BIDS_LABEL = re.compile(r"^[A-Za-z0-9]+$")


class StudyError(ValueError):
    """A BIDS dataset or study request is wrong: the message names the problem and the fix."""


def entity_label(entities: dict) -> str:
    """``sub-01_ses-pre_task-tms_run-1`` for a dict of BIDS entities (empty ones left out)."""
    short = {"subject": "sub", "session": "ses", "task": "task", "run": "run"}
    return "_".join(f"{short.get(k, k)}-{v}" for k, v in entities.items() if v)


def _check_label(entity: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value)
    if not _BIDS_LABEL.match(value):
        raise StudyError(f"BIDS {entity} label {value!r} is not alphanumeric; BIDS labels "
                         "may only contain letters and digits (e.g. '01', 'pre', 'tms').")
    return value


def bids_path_for(bids_root: str | Path, subject: str, session: str | None = None,
                  task: str = "tms", run: str | int | None = None):
    """The :class:`mne_bids.BIDSPath` of one EEG recording.

    Parameters
    ----------
    bids_root : path
        Dataset root.
    subject, session, task : str
        BIDS labels (letters and digits only); ``session`` may be None.
    run : str or int, optional
        Run index.

    Returns
    -------
    mne_bids.BIDSPath
    """
    from mne_bids import BIDSPath

    return BIDSPath(root=Path(bids_root), subject=_check_label("subject", subject),
                    session=_check_label("session", session), task=_check_label("task", task),
                    run=None if run is None else _check_label("run", str(run)),
                    datatype="eeg", suffix="eeg")


# ---------------------------------------------------------------------------------------------
# writing

def read_pulses_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a ``pulses.csv`` written by ``tmseeg analyze``, with numbers parsed.

    Parameters
    ----------
    path : path

    Returns
    -------
    list of dict
        ``kept`` as bool, numeric strings as int / float, empty cells as NaN.
    """
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append({k: _parse_cell(k, v) for k, v in row.items()})
    return rows


def _parse_cell(key: str, v: str) -> Any:
    if key == "kept":
        return v.strip().lower() in ("true", "1")
    if v == "":
        return math.nan if key not in ("reason", "bad_channels", "label", "block") else ""
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _as_raw(source):
    """An MNE Raw (volts) from a path, a Recording or a Raw."""
    import mne

    if isinstance(source, mne.io.BaseRaw):
        return source
    if isinstance(source, Recording):
        return source.to_raw()
    from tmseeg.io.files import read_recording
    return read_recording(Path(source)).to_raw()


def _extra_value(v: Any) -> Any:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if v is None:
        return None
    return str(v)


def _events_from_rows(raw, orig_time, pulses: Sequence[dict], columns: list[str]
                      ) -> tuple[np.ndarray, list[str], list[dict]]:
    """One pulse event per row of ``pulses``: onsets (as ``raw``'s annotations count them),
    labels (the row's ``label``, default ``TMS``) and per-pulse extras."""
    n_times = raw.n_times
    bad = [int(r["sample"]) for r in pulses if not 0 <= int(r["sample"]) < n_times]
    if bad:
        raise StudyError(f"write_bids: pulse rows at samples {bad[:5]} lie outside the "
                         f"recording (0..{n_times - 1}); pass the pulses.csv of this very "
                         "recording, or pulses=None.")
    # from orig_time (the first sample's time) when the annotations have one
    offset_s = raw.first_time if orig_time is not None else 0.0
    onsets = np.array([offset_s + int(r["sample"]) / raw.info["sfreq"] for r in pulses])
    labels = [str(r.get("label") or "TMS") for r in pulses]
    extras = [{c: _extra_value(r.get(c)) for c in columns} for r in pulses]
    return onsets, labels, extras


def _pulse_events(raw, pulses: Sequence[dict] | None, pulse_pattern: str,
                  tolerance_samples: int) -> tuple[Any, list[str], dict[str, str]]:
    """Annotations (with per-pulse extras) to write, the pulse labels, column descriptions."""
    import mne

    ann = raw.annotations
    pattern = re.compile(pulse_pattern, re.IGNORECASE)
    keep = [i for i, d in enumerate(ann.description)
            if not str(d).startswith(("BAD", "EDGE", "New Segment"))]
    onsets = np.asarray(ann.onset)[keep]
    samples = raw.time_as_index(onsets, use_rounding=True, origin=ann.orig_time)
    labels = [str(ann.description[i]) for i in keep]
    is_pulse = [bool(pattern.search(lab)) for lab in labels]
    columns: list[str] = []
    by_sample: dict[int, dict] = {}
    if pulses:
        for r in pulses:
            by_sample[int(r["sample"])] = r
            columns += [k for k in r if k not in columns
                        and k not in ("pulse_index", "sample", "time_s", "label")]
    extras: list[dict] = []
    matched = 0
    pulse_samples = np.array(sorted(by_sample), dtype=np.int64)
    for s, pulse in zip(samples, is_pulse):
        row: dict | None = None
        if pulse and pulse_samples.size:
            j = int(np.argmin(np.abs(pulse_samples - s)))
            if abs(int(pulse_samples[j]) - int(s)) <= tolerance_samples:
                row = by_sample[int(pulse_samples[j])]
                matched += 1
        extras.append({c: (_extra_value(row.get(c)) if row is not None else None)
                       for c in columns})
    durations = np.asarray(ann.duration)[keep]
    if pulses and matched == 0 and not any(is_pulse):
        # no pulse annotation at all: the pulses were found in the data (no marker stream,
        # no trigger), so the rows are the only record of them and become the events
        # (mne.Annotations puts them in time order)
        row_onsets, row_labels, row_extras = _events_from_rows(raw, ann.orig_time, pulses,
                                                               columns)
        onsets = np.concatenate([onsets, row_onsets])
        durations = np.concatenate([durations, np.zeros(row_onsets.size)])
        labels, extras = labels + row_labels, extras + row_extras
        is_pulse = is_pulse + [True] * len(row_labels)
    elif pulses and matched == 0:
        raise StudyError("write_bids: none of the pulse rows matches a pulse annotation of the "
                         "recording (compared by sample); pass the pulses.csv of this very "
                         "recording, or pulses=None.")
    new = mne.Annotations(onset=onsets, duration=durations,
                          description=labels, orig_time=ann.orig_time,
                          extras=extras if columns else None)
    descriptions = {c: EVENT_COLUMN_DESCRIPTIONS.get(c, f"tmseeg per-pulse value {c!r} "
                                                        "(see pulses.csv in the tmseeg README)")
                    for c in columns}
    return new, sorted({lab for lab, p in zip(labels, is_pulse) if p}), descriptions


def stimulation_sidecar(pulse_times_s: Sequence[float], stimulation: dict | None = None,
                        coil_site: str | None = None, roi: Sequence[str] | None = None
                        ) -> dict[str, Any]:
    """The :data:`STIM_FIELD` content: what the engine knows about the stimulation.

    Parameters
    ----------
    pulse_times_s : sequence of float
        Pulse times in the recording.
    stimulation : dict, optional
        Known parameters (``intensity_pct``, ``schedule``, ``coil_site``, ``isi_range_s``,
        anything else is copied under its own key).
    coil_site : str, optional
        Coil site found by the pipeline (overrides ``stimulation["coil_site"]``).
    roi : sequence of str, optional
        ROI used for the TEP.

    Returns
    -------
    dict
    """
    t = np.sort(np.asarray(pulse_times_s, dtype=float))
    out: dict[str, Any] = {"NumberOfPulses": int(t.size)}
    if t.size > 1:
        ipi = np.diff(t)
        out["MeanInterPulseInterval_s"] = round(float(ipi.mean()), 6)
        out["MinInterPulseInterval_s"] = round(float(ipi.min()), 6)
    stim = dict(stimulation or {})
    names = {"intensity_pct": "Intensity_pct", "schedule": "Schedule",
             "coil_site": "CoilSite", "isi_range_s": "InterStimulusIntervalRange_s"}
    for k, v in stim.items():
        out[names.get(k, k)] = v
    if coil_site:
        out["CoilSite"] = coil_site
    if roi:
        out["ROI"] = list(roi)
    out["GeneratedBy"] = f"tmseeg {__version__}"
    return out


def write_bids(source, bids_root: str | Path, subject: str, session: str | None = None,
               task: str = "tms", run: str | int | None = None,
               pulses: Sequence[dict] | str | Path | None = None,
               stimulation: dict | None = None, coil_site: str | None = None,
               roi: Sequence[str] | None = None, line_freq_hz: float | None = 50.0,
               pulse_pattern: str = DEFAULT_PULSE_PATTERN, overwrite: bool = False):
    """Write one TMS-EEG recording as BIDS EEG (BrainVision) with pulse events and stimulation.

    Parameters
    ----------
    source : path, Recording or mne.io.Raw
        The recording (any file :func:`~tmseeg.io.files.read_recording` reads). Its
        annotations / markers become ``events.tsv`` rows.
    bids_root : path
        Dataset root (created with ``dataset_description.json`` if new).
    subject, session, task, run : str
        BIDS entities (letters and digits).
    pulses : list of dict or path, optional
        Per-pulse rows (``pulses.csv`` of ``tmseeg analyze`` or a session's ``pulses``); their
        columns join the pulse rows of ``events.tsv`` (matched by sample, ±2 ms).
    stimulation : dict, optional
        Stimulation parameters for the ``_eeg.json`` field :data:`STIM_FIELD`.
    coil_site : str, optional
        Coil site (e.g. from ``summary.json``).
    roi : sequence of str, optional
        TEP ROI.
    line_freq_hz : float or None
        Power-line frequency for ``PowerLineFrequency`` (required by BIDS).
    pulse_pattern : str
        Regex deciding which annotations are TMS pulses.
    overwrite : bool
        Replace an existing recording of the same entities.

    Returns
    -------
    mne_bids.BIDSPath
        Of the written ``_eeg.vhdr``.

    Raises
    ------
    StudyError
        Bad labels, a recording already there (without ``overwrite``), pulse rows that do
        not belong to the recording.
    """
    from mne_bids import update_sidecar_json, write_raw_bids

    bp = bids_path_for(bids_root, subject, session, task, run)
    if isinstance(pulses, (str, Path)):
        pulses = read_pulses_csv(pulses)
    raw = _as_raw(source).copy()
    if line_freq_hz:
        raw.info["line_freq"] = float(line_freq_hz)
    sfreq = raw.info["sfreq"]
    ann, pulse_labels, descriptions = _pulse_events(
        raw, pulses, pulse_pattern, tolerance_samples=max(1, int(round(2e-3 * sfreq))))
    raw.set_annotations(ann)
    existing = list(Path(bp.directory).glob(bp.basename + "*")) if Path(bp.directory).exists() \
        else []
    if existing and not overwrite:
        raise StudyError(f"{bp.fpath.with_suffix('.vhdr')} already exists; choose another "
                         "subject/session/run, or pass overwrite=True (--overwrite).")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = write_raw_bids(raw, bp.copy().update(extension=".vhdr"), format="BrainVision",
                                 allow_preload=True, overwrite=overwrite,
                                 extra_columns_descriptions=descriptions or None,
                                 verbose="error")
    pulse_times = [o for o, d in zip(ann.onset, ann.description) if d in pulse_labels]
    sidecar = written.copy().update(extension=".json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        update_sidecar_json(sidecar, {STIM_FIELD: stimulation_sidecar(
            pulse_times, stimulation, coil_site, roi)}, verbose="error")
    return written


# ---------------------------------------------------------------------------------------------
# reading

def is_bids_root(path: str | Path) -> bool:
    """True when ``path`` is a directory with a ``dataset_description.json``."""
    p = Path(path)
    return p.is_dir() and (p / "dataset_description.json").is_file()


def _as_list(x: str | Iterable[str] | None) -> list[str] | None:
    if x is None:
        return None
    if isinstance(x, (str, int)):
        return [str(x)]
    return [str(v) for v in x]


def find_recordings(bids_root: str | Path, subjects: str | Sequence[str] | None = None,
                    sessions: str | Sequence[str] | None = None,
                    tasks: str | Sequence[str] | None = None,
                    runs: str | Sequence[str] | None = None) -> list:
    """EEG recordings of a BIDS dataset that match the entity filters.

    Parameters
    ----------
    bids_root : path
        Dataset root (must hold ``dataset_description.json``).
    subjects, sessions, tasks, runs : str or list of str, optional
        Keep only these labels (None = all).

    Returns
    -------
    list of mne_bids.BIDSPath
        Sorted by subject, session, task, run; one per recording (the data file: ``.vhdr``,
        ``.edf``, ``.bdf``, ``.set`` or ``.fif``).

    Raises
    ------
    StudyError
        Not a BIDS root, or nothing matches (the message lists the labels that exist).
    """
    from mne_bids import find_matching_paths, get_entity_vals

    root = Path(bids_root)
    if not is_bids_root(root):
        raise StudyError(f"{root} is not a BIDS dataset root (no dataset_description.json "
                         "there); pass the folder that holds dataset_description.json and "
                         "the sub-* folders.")
    filters = {"subjects": _as_list(subjects), "sessions": _as_list(sessions),
               "tasks": _as_list(tasks), "runs": _as_list(runs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_matching_paths(root, datatypes="eeg", suffixes="eeg",
                                    extensions=[".vhdr", ".edf", ".bdf", ".set", ".fif"],
                                    **filters)
    found = [bp for bp in found if "derivatives" not in Path(bp.fpath).relative_to(root).parts
             and "sourcedata" not in Path(bp.fpath).relative_to(root).parts]
    if not found:
        have = {ent: get_entity_vals(root, ent)
                for ent in ("subject", "session", "task", "run")}
        asked = {k: v for k, v in filters.items() if v}
        raise StudyError(
            f"no EEG recording in {root} matches {asked or 'any filter'}; the dataset has "
            + ", ".join(f"{k}s {list(v) or '(none)'}" for k, v in have.items())
            + ". Fix --subject/--session/--task/--run.")

    def key(bp):
        return tuple(str(getattr(bp, e) or "") for e in ("subject", "session", "task", "run"))
    return sorted(found, key=key)


def entities_of(bids_path) -> dict[str, str | None]:
    """``{"subject", "session", "task", "run"}`` of a BIDSPath (None where absent)."""
    return {e: (None if getattr(bids_path, e) is None else str(getattr(bids_path, e)))
            for e in ("subject", "session", "task", "run")}


def read_bids_recording(bids_path, pulse_pattern: str = DEFAULT_PULSE_PATTERN) -> Recording:
    """Read one BIDS recording (events from ``events.tsv``) into engine units.

    Parameters
    ----------
    bids_path : mne_bids.BIDSPath or path
        The recording (a BIDSPath from :func:`find_recordings`, or its data file).
    pulse_pattern : str
        Regex deciding which event labels are TMS pulses.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        The files cannot be read (the message names the file and what to do).
    """
    from mne_bids import get_bids_path_from_fname, read_raw_bids

    from tmseeg.io.files import _from_raw, checked_recording

    if not hasattr(bids_path, "fpath"):
        bids_path = get_bids_path_from_fname(Path(bids_path))
    fpath = Path(bids_path.fpath)
    if not fpath.exists():
        raise RecordingError(f"{fpath}: no such file. Check the BIDS dataset.")
    if fpath.stat().st_size == 0:
        raise RecordingError(f"{fpath}: the file is empty (0 bytes); it was not written or was "
                             "truncated. Replace it with a good copy.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = read_raw_bids(bids_path, verbose="error")
            raw.load_data(verbose="error")
    except Exception as exc:  # MNE / mne-bids raise many types; all mean "unreadable"
        raise RecordingError(
            f"{fpath}: cannot read this BIDS recording ({type(exc).__name__}: {exc}). "
            "Hint: the header, marker and data files must be complete and sit together; "
            "re-export the recording.") from exc
    return checked_recording(_from_raw(raw, re.compile(pulse_pattern, re.IGNORECASE), fpath),
                             fpath)


# ---------------------------------------------------------------------------------------------
# derivatives

def code_version() -> str:
    """tmseeg version plus the git commit of its source tree when it is a checkout."""
    here = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5)
        if commit.returncode == 0 and commit.stdout.strip():
            return f"{__version__}+g{commit.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def derivatives_root(bids_root: str | Path) -> Path:
    """``<bids_root>/derivatives/tmseeg``."""
    return Path(bids_root) / "derivatives" / PIPELINE_NAME


def session_output_dir(deriv_root: str | Path, bids_path) -> Path:
    """Where one recording's outputs go: ``sub-XX/[ses-YY/]eeg/<basename>/``."""
    ent = entities_of(bids_path)
    d = Path(deriv_root) / f"sub-{ent['subject']}"
    if ent["session"]:
        d = d / f"ses-{ent['session']}"
    base = bids_path.copy().update(suffix=None, extension=None, datatype=None).basename
    return d / "eeg" / base


def write_derivatives_description(deriv_root: str | Path, cfg: Config | dict,
                                  source_root: str | Path | None = None) -> Path:
    """``dataset_description.json`` of the derivatives plus the configuration used.

    Parameters
    ----------
    deriv_root : path
        ``<bids_root>/derivatives/tmseeg`` (created).
    cfg : dict
        The pipeline configuration (written to ``tmseeg_config.json`` with its hash).
    source_root : path, optional
        The raw dataset (recorded in ``SourceDatasets``).

    Returns
    -------
    Path
        The description file.
    """
    root = Path(deriv_root)
    root.mkdir(parents=True, exist_ok=True)
    version = code_version()
    desc = {
        "Name": "tmseeg derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "tmseeg", "Version": version,
                         "Description": "TMS-EEG pipeline: pulse artifact removal, epochs, "
                                        "TEP/MEP/oscillation/connectivity/plasticity metrics"}],
        "PipelineConfigHash": (cfg_hash := config_hash(cfg)),
    }
    if source_root is not None:
        desc["SourceDatasets"] = [{"URL": Path(source_root).resolve().as_uri()}]
    path = root / "dataset_description.json"
    path.write_text(json.dumps(desc, indent=2))
    (root / "tmseeg_config.json").write_text(json.dumps(
        {"config_hash": cfg_hash, "tmseeg_version": version, "config": jsonable(cfg)},
        indent=2, default=str))
    return path
