"""Rehearse a configuration: run it over a short simulated recording before a session does.

A configuration file is checked in two steps. :func:`tmseeg.config.load_config`
refuses unknown keys, wrong types and the values the pipeline's own sections forbid. Much of
what the metric plug-ins accept is only known to them, and they see it when a session builds
them or cuts its first epochs (``[connectivity] methods = ["nonsense"]``, a PCIst window the
epoch does not cover, a block pattern that is no regular expression). Rather than a second copy
of every plug-in's rules, :func:`rehearse_config` runs the configuration through the same
driver as ``tmseeg analyze``, on a simulated recording long enough for every plug-in to reach
its first summary, and lets whatever a session would refuse be refused now.

What a simulated stream cannot stand for is left to the session: channel names (ROI, channel
types, the MEP channel, a custom spatial filter, a trigger channel) are checked against the
real stream when it starts.
"""
from __future__ import annotations

from dataclasses import dataclass

from tmseeg.config import Config

__all__ = ["Rehearsal", "rehearse_config"]

#: between pulses (s): longer than the default epoch, as in single-pulse TMS-EEG
_ISI_RANGE_S = (1.0, 1.2)


@dataclass(frozen=True)
class Rehearsal:
    """What a rehearsal ran: the simulated stream and how many pulses went through."""

    n_channels: int
    sfreq_hz: float
    seconds: float
    n_pulses: int
    n_kept: int
    metrics: tuple[str, ...]

    def line(self) -> str:
        """One line for the command line."""
        return (f"rehearsed on a simulated {self.seconds:.0f}-s recording ({self.n_channels} EEG "
                f"channels + EMG, {self.sfreq_hz:g} Hz): {self.n_pulses} pulses, {self.n_kept} "
                f"kept; plug-ins {', '.join(self.metrics) or 'none'} ran")


def _pulses_needed(cfg: Config) -> int:
    """Enough pulses for every plug-in's first summary (and the cleaning's calibration)."""
    need = [20, cfg.pcist.min_epochs + cfg.pcist.every_n_epochs,
            cfg.spread.min_epochs + cfg.spread.every_n_epochs,
            cfg.connectivity.every_n_epochs + 2,
            cfg.interpolation.auto_pulses + 2]
    if cfg.cleaning.enabled:
        need.append(cfg.cleaning.calibration_pulses + 5)
    return int(min(max(need) + 3, 200))


def _for_a_simulated_stream(cfg: Config) -> Config:
    """``cfg`` with what names the real stream's channels or markers left to the session."""
    rehearsed = cfg.to_dict()
    rehearsed["pulses"]["pattern"] = ""  # the simulated markers say "TMS"
    if rehearsed["pulses"]["source"] == "trigger":
        rehearsed["pulses"]["source"] = "markers"
    rehearsed["pulses"]["data_channels"] = []
    rehearsed["coil"]["roi"] = []
    rehearsed["channels"]["types"] = {}
    rehearsed["mep"]["channel"] = ""
    rehearsed["state"]["spatial_filter"] = "auto"
    return Config.from_dict(rehearsed)


def rehearse_config(cfg: Config, n_channels: int = 64, sfreq_hz: float = 5000.0,
                    seed: int = 0) -> Rehearsal:
    """Run ``cfg`` over a simulated recording through the offline driver.

    Parameters
    ----------
    cfg : dict
        A configuration from :func:`~tmseeg.config.load_config`.
    n_channels : int
        EEG channels of the simulated cap (32, 64 or 128 standard 10-10 names); an EMG channel
        is added.
    sfreq_hz : float
        Sampling rate: give the amplifier's, since some limits depend on it (filters, wavelets).
    seed : int
        Seed of the simulated recording.

    Returns
    -------
    Rehearsal
        What was run.

    Raises
    ------
    ConfigError, ValueError, LookupError, OSError
        What a session would raise with this configuration, with the message it would give.
    """
    from tmseeg.report.analyze import run_session
    from tmseeg.sim.accuracy import simulated_recording
    from tmseeg.sim.model import SimConfig

    rehearsed = _for_a_simulated_stream(cfg)
    n_pulses = _pulses_needed(cfg)
    seconds = 1.5 + n_pulses * sum(_ISI_RANGE_S) / 2
    recording, _ = simulated_recording(
        SimConfig(n_channels=n_channels, sfreq=sfreq_hz, seed=seed, isi_range_s=_ISI_RANGE_S),
        seconds)
    session = run_session(recording, rehearsed, keep_epochs=False)
    session.metrics_summary()  # what only a summary computes (PCIst, spread, blocks)
    return Rehearsal(n_channels=n_channels, sfreq_hz=float(sfreq_hz), seconds=seconds,
                     n_pulses=len(session.pulses), n_kept=session.tep.n,
                     metrics=tuple(m.name for m in session.metrics))
