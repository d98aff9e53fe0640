"""Simulated TMS-EEG amplifier + stimulator: ground truth for tests and the demo.

:class:`TMSEEGSimulator` generates the data offline (deterministic, chunking-invariant),
:class:`SimulatedAmplifier` streams it in real time over LSL, :func:`simulate_recording` returns
an MNE Raw; every injected quantity is kept in :class:`GroundTruth`.
"""
from tmseeg.sim.config import CAPS, TEP_COMPONENTS, SimConfig, mep_recruitment, paired_pulse_factor
from tmseeg.sim.model import TMSEEGSimulator, simulate_recording
from tmseeg.sim.sources import KnotPhase
from tmseeg.sim.truth import GroundTruth, PulseTruth

__all__ = [
    "CAPS", "TEP_COMPONENTS", "GroundTruth", "KnotPhase", "PulseTruth", "SimConfig",
    "TMSEEGSimulator", "SimulatedAmplifier", "mep_recruitment", "paired_pulse_factor",
    "simulate_recording",
]


def __getattr__(name):  # pylsl is imported only when the real-time amplifier is used
    if name == "SimulatedAmplifier":
        from tmseeg.sim.amplifier import SimulatedAmplifier

        return SimulatedAmplifier
    raise AttributeError(name)
