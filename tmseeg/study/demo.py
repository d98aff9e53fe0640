"""Generated BIDS studies with known effects (for tests, benchmarks and trying the batch).

:func:`simulate_block_session` runs the simulated amplifier + stimulator
(:class:`~tmseeg.sim.model.TMSEEGSimulator`) through a ``pre`` block and a ``post`` block,
changing the TEP gain between them; :func:`make_demo_study` writes several such sessions as a
BIDS dataset with :func:`tmseeg.study.bids.write_bids`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmseeg.stream.montage import ten_five_montage
from tmseeg.sim.model import SimConfig, TMSEEGSimulator


@dataclass(frozen=True)
class DemoSession:
    """One generated session of a demo study.

    Parameters
    ----------
    subject, session : str
        BIDS labels (``session`` may be ``None``).
    seed : int
        Simulator seed.
    gain_pre, gain_post : float
        TEP gain of the simulator in the ``pre`` and ``post`` blocks.
    background_scale : float
        See :func:`simulate_block_session`.
    """

    subject: str
    session: str | None
    seed: int
    gain_pre: float = 1.0
    gain_post: float = 1.0
    background_scale: float = 1.0


def simulate_block_session(seed: int, gain_pre: float = 1.0, gain_post: float = 1.0,
                           block_s: float = 20.0, n_channels: int = 32,
                           sfreq_hz: float = 1000.0, isi_range_s: tuple[float, float] = (1.0, 1.4),
                           intensity_pct: float = 70.0, background_scale: float = 1.0):
    """Simulate one session with a ``pre`` and a ``post`` block of single pulses.

    Parameters
    ----------
    seed : int
        Simulator seed.
    gain_pre, gain_post : float
        TEP gain during each block (``set_tep_gain`` at the ``post`` marker).
    block_s : float
        Length of each block in seconds.
    n_channels : int
        32, 64 or 128 EEG channels (plus EMG).
    sfreq_hz : float
        Sampling rate.
    isi_range_s : (float, float)
        Inter-pulse interval range.
    intensity_pct : float
        Stimulator output (% of maximum), also written to the BIDS sidecar.
    background_scale : float
        Factor on every background amplitude (pink noise, smooth sources, alpha, mu, blinks
        on/off at 0): below 1 makes a TEP change visible with fewer trials.

    Returns
    -------
    raw : mne.io.RawArray
        Volts, 10-05 montage; annotations ``TMS`` at each pulse and ``pre``/``post`` at the
        block starts.
    stimulation : dict
        What the stimulator did (for :func:`tmseeg.study.bids.write_bids`).
    """
    import mne

    base = SimConfig()
    cfg = SimConfig(n_channels=n_channels, sfreq=sfreq_hz, seed=seed, tep_gain=gain_pre,
                    isi_range_s=isi_range_s, intensity_pct=intensity_pct, first_pulse_s=1.0,
                    noise_uv=base.noise_uv * background_scale,
                    smooth_uv=base.smooth_uv * background_scale,
                    alpha_uv=base.alpha_uv * background_scale,
                    mu_amplitude_uv=base.mu_amplitude_uv * max(background_scale, 1e-3),
                    blinks=background_scale > 0)
    sim = TMSEEGSimulator(cfg)
    n_block = int(round(block_s * sim.sfreq))
    parts, events = [], []
    for label, gain in (("pre", gain_pre), ("post", gain_post)):
        sim.set_tep_gain(gain)
        sim.mark_block(label)
        data, ev = sim.generate(n_block)
        parts.append(data)
        events.extend(ev)
    info = mne.create_info(list(sim.meta.ch_names), sim.sfreq, list(sim.meta.ch_types))
    raw = mne.io.RawArray(np.concatenate(parts, axis=1) * 1e-6, info, verbose="error")
    raw.set_montage(ten_five_montage(), on_missing="ignore", verbose="error")
    raw.set_annotations(mne.Annotations(onset=[e.sample / sim.sfreq for e in events],
                                        duration=[0.0] * len(events),
                                        description=[e.label for e in events]))
    stimulation = {"intensity_pct": intensity_pct, "schedule": cfg.schedule,
                   "isi_range_s": list(isi_range_s), "coil_site": cfg.coil_site,
                   "simulated": True, "tep_gain_by_block": {"pre": gain_pre, "post": gain_post},
                   "background_scale": background_scale}
    return raw, stimulation


def make_demo_study(bids_root: str | Path, sessions: list[DemoSession], task: str = "tms",
                    block_s: float = 20.0, n_channels: int = 32,
                    sfreq_hz: float = 1000.0) -> list:
    """Write generated sessions as a BIDS dataset (BrainVision, events.tsv with the pulses).

    Parameters
    ----------
    bids_root : path
        Dataset root (created).
    sessions : list of DemoSession
        What to generate.
    task : str
        BIDS task label.
    block_s, n_channels, sfreq_hz : float, int, float
        Passed to :func:`simulate_block_session`.

    Returns
    -------
    list of mne_bids.BIDSPath
        The written recordings.
    """
    from tmseeg.study.bids import write_bids

    out = []
    for s in sessions:
        raw, stim = simulate_block_session(s.seed, s.gain_pre, s.gain_post, block_s=block_s,
                                           n_channels=n_channels, sfreq_hz=sfreq_hz,
                                           background_scale=s.background_scale)
        out.append(write_bids(raw, bids_root, subject=s.subject, session=s.session, task=task,
                              stimulation=stim, overwrite=True))
    return out
