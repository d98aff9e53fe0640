"""``tmseeg analyze FILE --out DIR``: the live pipeline, run over a recording.

The file is cut into blocks and fed through a :class:`~tmseeg.session.TEPSession`, exactly as
a live stream would be (file events enter as plain markers, as LSL markers do, so the same
pulse-detection stage decides what a pulse is). Outputs, in ``DIR``:

``summary.json``   pulses, rejections, TEP peaks (ROI and GMFP), SNR, trials needed, config
                   and its hash, tmseeg version, input file
``pulses.csv``     one row per pulse: time, kept or rejected and why, single-trial measures
``report.html``    an :class:`mne.Report` with the figures an analyst looks at first
``<stem>-epo.fif`` all epochs (rejected ones dropped with their reason in the drop log)
``<stem>-ave.fif`` the average TEP (accepted epochs)
"""
from __future__ import annotations

import csv
import importlib
import json
import logging
import math
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from tmseeg import __version__
from tmseeg.config import Config, load_config
from tmseeg.session import TEPSession
from tmseeg.engine import OFFLINE_BLOCK_MS, Engine, RecordingSource
from tmseeg.stream.block import StreamMeta
from tmseeg.stream.montage import standard_montage, use_montage
from tmseeg.io.files import Recording, read_recording
from tmseeg.utils import (jsonable, return_freed_memory, serial_rows, single_threaded_blas,
                          writable_dir)

log = logging.getLogger(__name__)

def run_session(recording: Recording, cfg: Config, roi: list[str] | None = None,
                keep_epochs: bool = True, progress: bool = False,
                block_ms: float = OFFLINE_BLOCK_MS) -> TEPSession:
    """Feed a whole recording through a fresh session with the one driver (the
    :class:`~tmseeg.engine.Engine` that runs it live), block by block, and finish it."""
    # offline: also track what decay removal took out (report, summary), which live would
    # only cost per-epoch time on the acquisition thread
    session = TEPSession(cfg, recording.meta, roi=roi, keep_epochs=keep_epochs,
                         track_decay=True, plugins_in_background=True)
    source = RecordingSource(recording, block_ms=block_ms, progress=progress)
    # the session spreads its own work over threads (plug-ins, decay fits, the reader): no
    # BLAS threads, no row threads on top of them
    with single_threaded_blas(), serial_rows():
        Engine.for_session(source, session, buffer_s=0.0).run_to_end()  # no display: no ring
    return session


def analyze_file(path: str | Path, out_dir: str | Path, config: str | Path | None = None,
                 roi: list[str] | None = None, progress: bool = True,
                 overrides: dict | None = None, report: bool = True,
                 recording: Recording | None = None) -> dict:
    """Analyze one recording and write all outputs; returns the summary dict.

    Parameters
    ----------
    path : path
        Any file :func:`~tmseeg.io.files.read_recording` reads.
    out_dir : path
        Created if needed; existing outputs of the same names are replaced.
    config : path, optional
        TOML configuration (defaults: :mod:`tmseeg.config`).
    roi : list of str, optional
        ROI channels (default: detected coil site and neighbours).
    progress : bool
        Show a progress bar.
    overrides : dict, optional
        Configuration keys overriding the file (same structure).
    report : bool
        Write ``report.html`` (the slowest output).
    recording : Recording, optional
        Already read (e.g. from a BIDS dataset by :func:`tmseeg.study.bids.read_bids_recording`);
        ``path`` then only names the outputs.
    """
    path = Path(path)
    out = writable_dir(out_dir)  # before any work: a result that cannot be written is lost
    cfg = load_config(config, overrides)
    use_montage(cfg.channels.montage)  # before reading: channel names are tidied by it
    # preload=False: a BrainVision data file is read block by block as the session runs
    recording = read_recording(path, preload=False) if recording is None else recording
    if not recording.meta.picks("eeg").size:
        raise ValueError(f"{path} has no EEG channel (types: "
                         f"{sorted(set(recording.meta.ch_types))}); nothing to analyze")
    eeg = recording.meta.picks("eeg")
    check_eeg_scale(recording, path)
    if eeg.size < 3 and cfg.reference.type == "average":
        names = [recording.meta.ch_names[i] for i in eeg]
        raise ValueError(f"{path} has {eeg.size} EEG channel(s) ({', '.join(names)}): the "
                         "average reference of fewer than 3 channels is zero or a mirror image "
                         "of itself, so every TEP would be. Set [reference] type = \"none\" to "
                         "analyse the channel(s) as recorded, or type the other channels as EEG "
                         "(--channel-types).")
    if report:  # its modules (0.4 s of imports) load beside the analysis, not after it
        threading.Thread(target=importlib.import_module, args=("mne.report",),
                         name="tmseeg-report-import", daemon=True).start()
    session = run_session(recording, cfg, roi=roi, progress=progress)
    # where the pulses came from was decided by the pipeline, as it is live
    # (tmseeg.pipeline.pulsesource): what it decided and found is said here
    source = session.stages.pulse_source
    warnings = list(recording.warnings) + (source.messages() if source is not None else [])
    if session.pulse_table is not None:
        warnings += session.pulse_table.messages()
    warnings += session.stages.pulse_infos.messages()
    if session.stages.plausibility is not None:
        warnings += session.stages.plausibility.messages()
    if not session.pulses:
        warnings.append(
            f"no TMS pulse found in {path.name} (pulse source {cfg['pulses']['source']!r}): "
            "nothing was averaged. Check how the pulses are recorded: a marker or annotation "
            "(--pulse-pattern REGEX), a trigger channel ([pulses] source = \"trigger\", "
            "trigger_channel), or the artifact in the data (--pulse-source data).")
    for text in warnings[len(recording.warnings):]:  # the reader said its own already
        log.warning(text)
    summary = build_summary(session, recording, path)
    if session.pulses and not summary["n_kept"]:
        text = (f"every one of the {len(session.pulses)} epochs was rejected "
                f"({summary['rejection_reasons']}): no -epo.fif or -ave.fif is written; "
                "pulses.csv gives each pulse's reason ([epochs] reject_uv sets the amplitude "
                "limit)")
        log.warning(text)
        warnings.append(text)
    summary["warnings"] = warnings
    recording = None  # ours is no longer needed: its memory goes before the epochs are built
    stem = path.name.split(".")[0]
    (out / "summary.json").write_text(json.dumps(jsonable(summary), indent=2))
    write_pulses_csv(session.pulses, out / "pulses.csv")
    if session.tep is not None and summary["n_kept"]:
        # the evoked first: the epochs are let go of as they are written
        evoked_to_mne(session, session.meta).save(out / f"{stem}-ave.fif", overwrite=True,
                                                  verbose="error")
        save_epochs(session, session.meta, out / f"{stem}-epo.fif", release=True)
    if report:
        from tmseeg.report.html import write_report
        comparison = None
        removed = session.decay_removed_roi_uv()
        if removed is not None:
            # the TEP without decay removal, from this run: what the stage took out, added back
            # (through the same reference, filter and baseline); no second pass over the file
            comparison = SimpleNamespace(tep=SimpleNamespace(
                roi_average_uv=session.tep.roi_average_uv + removed))
        write_report(session, summary, out / "report.html", comparison=comparison)
    return summary


def check_eeg_scale(recording: Recording, path: Path) -> None:
    """Refuse EEG whose size says its unit is wrong: scalp EEG is tens of µV, so channels
    whose typical sample-to-sample change is below 0.02 µV (real EEG: ~1 µV) are volts or
    millivolts labelled µV."""
    eeg = recording.meta.picks("eeg")
    x = recording.data_uv[eeg, :min(recording.n_samples, int(20 * recording.meta.sfreq))]
    with np.errstate(all="ignore"):
        step = np.abs(np.diff(x, axis=1))
        # the NaN-aware median costs 4x; most recordings hold no NaN
        spread = np.median(step, axis=1) if np.isfinite(step).all() \
            else np.nanmedian(step, axis=1)
    live = spread[np.isfinite(spread) & (spread > 0)]
    if live.size >= max(1, eeg.size // 2) and np.median(live) < 0.02:
        level = float(np.nanmedian(np.abs(x)))
        raise ValueError(f"{path}: the EEG is {level:.3g} µV in size (sample-to-sample "
                         f"{np.median(live):.2g} µV), 1000 to a million times smaller than EEG: "
                         "the data look like volts or millivolts labelled µV. Fix the unit in "
                         "the file (BrainVision: the resolution/unit in the .vhdr; EDF: the "
                         "physical dimension) and analyse again.")


def build_summary(session: TEPSession, recording: Recording, path: Path) -> dict:
    """``summary.json`` content."""
    tep = session.tep_summary()
    n_pulses = len(session.pulses)
    return {
        "tmseeg_version": __version__,
        "input": {"file": str(path), "n_channels": recording.meta.n_channels,
                  "sfreq_hz": recording.meta.sfreq, "duration_s": recording.duration_s},
        "config_hash": session.config_hash,
        "config": session.cfg.to_dict(),
        "stages": session.stages.names,
        "n_pulses": n_pulses,
        "n_kept": int(sum(p["kept"] for p in session.pulses)),
        "n_rejected": int(sum(not p["kept"] for p in session.pulses)),
        "rejection_reasons": _count_reasons(session.pulses),
        "coil_site": session.stages.coil.site,
        # railed or flat channels the site search and the ROI left out (name -> why)
        "coil_excluded": session.stages.coil.excluded,
        **({"pulse_source": session.stages.pulse_source.summary()}
           if session.stages.pulse_source is not None else {}),
        "live_offline_differences": session.live_offline_differences(),
        **({"pulse_plausibility": session.stages.plausibility.summary()}
           if session.stages.plausibility is not None else {}),
        **({"pulse_table": session.pulse_table.summary()}
           if session.pulse_table is not None else {}),
        **({"pulse_info_messages": session.stages.pulse_infos.summary()}
           if session.stages.pulse_infos.active else {}),
        **({"cut_window": session.stages.cut_window.summary()}
           if session.stages.cut_window is not None else {}),
        **({"decay_effect": decay_effect(session)} if session.stages.decay is not None else {}),
        "roi": tep.get("roi", []),
        "peaks": tep.get("peaks", {}),
        "snr": tep.get("snr"),
        "target_snr": session.cfg.tep.target_snr,
        "trials_needed": tep.get("trials_needed"),
        "bad_channels": tep.get("bad_channels", {}),
        "renamed_channels": recording.meta.renamed,
        "markers": [{"sample": s, "time_s": s / recording.meta.sfreq, "label": lab}
                    for s, lab in session.markers],
        "metrics": session.metrics_summary(),
        **({"cleaning": session.stages.cleaning.summary()}
           if getattr(session.stages, "cleaning", None) is not None else {}),
    }


def decay_effect(session: TEPSession) -> dict:
    """What decay removal did to the early TEP at the ROI (15-60 ms, or the configured early
    window), from this run: the RMS of what it took out, relative to the RMS of the TEP
    without it, and the correlation of the TEP with and without it; and on how many pulses it
    acted at all."""
    rows = [r for r in session.pulses if r.get("kept")]
    acted = sum(1 for r in rows if r.get("decay_channels", 0))
    out = {"pulses_corrected": acted, "pulses_averaged": len(rows)}
    removed = session.decay_removed_roi_uv()
    tep = session.tep
    if removed is None:
        return out
    lo, hi = session.cfg.tep.early_window_ms
    m = (tep.times_ms >= lo) & (tep.times_ms <= hi)
    after = tep.roi_average_uv[m]
    took = removed[m]
    before = after + took
    rms = float(np.sqrt(np.mean(took ** 2)))
    rms_before = float(np.sqrt(np.mean(before ** 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = float(np.corrcoef(after, before)[0, 1]) if np.std(after) and np.std(before) else 1.0
    out.update({"early_removed_rms_uv": rms,
                "early_removed_rel": rms / rms_before if rms_before > 0 else None,
                "early_r_with_without": r})
    return out


def _count_reasons(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        if not r["kept"]:
            key = r["reason"].split(":")[0] or "unknown"
            counts[key] = counts.get(key, 0) + 1
    return counts


PULSE_COLUMNS = ["pulse_index", "sample", "time_s", "label", "kept", "reason",
                 "early_tep_ptp_uv", "max_ptp_uv", "n_bad_channels", "bad_channels",
                 "n_averaged", "snr_after"]


def write_pulses_csv(rows: list[dict], path: Path) -> None:
    """One row per pulse; extra keys (from later metrics) become extra columns."""
    columns = list(PULSE_COLUMNS)
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in r.items()})


def _mne_info(ch_names: list[str], sfreq: float):
    """MNE ``Info`` of EEG channels with the montage in use ([channels] montage)."""
    import mne

    info = mne.create_info(ch_names, sfreq, ch_types="eeg")
    with mne.utils.use_log_level("error"):
        info.set_montage(standard_montage(), on_missing="ignore", match_case=False)
    return info


def evoked_to_mne(session: TEPSession, meta: StreamMeta):
    """The running average TEP as an MNE ``Evoked`` (accepted epochs), without building the
    epochs (the report's maps need only this)."""
    import mne

    tep = session.tep
    return mne.EvokedArray(tep.average_uv * 1e-6, _mne_info(list(tep.ch_names), meta.sfreq),
                           tmin=float(tep.times_ms[0]) / 1e3, nave=tep.n,
                           comment="TMS (tmseeg running average)", verbose="error")


def _epochs_layout(session: TEPSession, meta: StreamMeta) -> SimpleNamespace:
    """What an MNE epochs file holds besides the data: channels, the kept epochs, their events,
    and every epoch in the drop log (the rejected ones with their reasons)."""
    epochs_list = session.epochs
    kept = [i for i in range(len(epochs_list)) if session.pulses[i]["kept"]]
    return SimpleNamespace(
        info=_mne_info(list(epochs_list[0].ch_names), meta.sfreq), kept=kept,
        events=np.array([[epochs_list[i].sample, 0, 1] for i in kept],
                        dtype=int).reshape(-1, 3),
        drop_log=tuple(() if session.pulses[i]["kept"]
                       else (session.pulses[i]["reason"] or "rejected",)
                       for i in range(len(epochs_list))),
        tmin_s=float(epochs_list[0].times_ms[0]) / 1e3, n_times=epochs_list[0].data_uv.shape[1],
        event_id={"TMS": 1})


def _kept_epochs_v(session: TEPSession, kept: list[int], release: bool):
    """The kept epochs in volts (NaN as 0, as MNE stores them), one at a time; ``release``: the
    session lets go of each epoch once it is taken (``session.epochs`` is empty afterwards)."""
    epochs_list = session.epochs
    for k, i in enumerate(kept):
        # float32 product, as the file stores (a float64 one would round differently)
        yield np.nan_to_num(epochs_list[i].data_uv) * 1e-6
        if release:
            epochs_list[i] = replace(epochs_list[i], data_uv=np.empty((0, 0), np.float32))
            if k % 32 == 31:  # what is freed goes back to the system as the copy grows
                return_freed_memory()
    if release:
        epochs_list.clear()
        return_freed_memory()


def save_epochs(session: TEPSession, meta: StreamMeta, path: Path,
                release: bool = False) -> None:
    """``-epo.fif`` of the kept epochs (the rejected ones in the drop log with their reasons).

    Written one epoch at a time (:mod:`tmseeg.io.epochs_fif`): no copy of all epochs is made,
    where MNE's ``EpochsArray.save`` needs them in float64 and then in float32 again. Epochs
    larger than one FIF file go through MNE's split save. ``release`` as in :func:`to_mne`.
    """
    from tmseeg.io.epochs_fif import fits_one_file, write_epochs_fif

    lay = _epochs_layout(session, meta)
    if not fits_one_file(len(lay.kept), len(lay.info["ch_names"]), lay.n_times):
        epochs, _ = to_mne(session, meta, release=release)
        epochs.save(path, overwrite=True, split_size="2GB", verbose="error")
        return
    write_epochs_fif(path, lay.info, _kept_epochs_v(session, lay.kept, release),
                     len(lay.kept), lay.events, lay.tmin_s, lay.event_id,
                     np.asarray(lay.kept), lay.drop_log)


def to_mne(session: TEPSession, meta: StreamMeta, release: bool = False):
    """MNE ``EpochsArray`` (rejected epochs dropped with their reasons) and ``Evoked``.

    ``release``: the session lets go of each epoch once it is copied (``session.epochs`` is
    empty afterwards), so a long recording's epochs are held once at the peak, not twice.
    """
    import mne

    evoked = evoked_to_mne(session, meta)
    lay = _epochs_layout(session, meta)
    # the kept epochs only, and the others in the drop log with their reasons (dropping them
    # from a full EpochsArray one by one copied the whole array each time: 15 s on 10 min)
    data_v = np.empty((len(lay.kept), len(lay.info["ch_names"]), lay.n_times))
    for k, epoch_v in enumerate(_kept_epochs_v(session, lay.kept, release)):
        data_v[k] = epoch_v
    epochs = mne.EpochsArray(data_v, lay.info, events=lay.events, tmin=lay.tmin_s,
                             event_id=lay.event_id, baseline=None, selection=lay.kept,
                             drop_log=lay.drop_log, verbose="error")
    return epochs, evoked
