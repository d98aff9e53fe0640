"""Closed loop: protocol API and runner, safety guard, trigger outputs (the phase estimators and
spatial filters it uses are in :mod:`tmseeg.dsp`).

The names a protocol script needs are importable from here::

    from tmseeg.closedloop import Protocol, TriggerRequest
"""
from tmseeg.closedloop.guard import GuardDecision, SafetyGuard, TriggerRequest
from tmseeg.closedloop.earlytep import EarlyTEPData
from tmseeg.closedloop.protocol import (EarlyTEP, MarkerInfo, Protocol, ProtocolInfo,
                                        ProtocolLoadError, PulseInfo, State, load_protocol)
from tmseeg.closedloop.runner import ProtocolRunner, build_runner

__all__ = ["Protocol", "ProtocolInfo", "State", "PulseInfo", "MarkerInfo", "EarlyTEP",
           "EarlyTEPData", "ProtocolRunner",
           "ProtocolLoadError", "load_protocol", "build_runner", "TriggerRequest",
           "GuardDecision", "SafetyGuard"]
