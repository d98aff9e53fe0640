"""Closed-loop protocols: a small Python class decides, from the live state, when a pulse fires.

Writing a protocol
------------------
Subclass :class:`Protocol`, set its configuration as class attributes, and implement any of the
callbacks; each returns a :class:`~tmseeg.closedloop.guard.TriggerRequest` (most easily
``state.trigger(...)``) or ``None``::

    from tmseeg.closedloop import Protocol

    class MuTrough(Protocol):
        channels = "C3 Laplacian"      # spatial filter of the window (None: all channels)
        estimator = "ar"               # phase/power at newest sample + delay_ms
        delay_ms = 20.0
        warmup_s = 10.0

        def on_block(self, state):
            if state.warming_up or abs(state.phase.phase_rad) < 2.8:
                return None
            return state.trigger(intensity_pct=60, label="mu-trough")

Callbacks (all optional): ``setup(info)`` once; ``on_block(state)`` for the newest data;
``on_pulse(pulse)`` when a pulse's epoch (TEP row, MEP columns) is complete;
``on_marker(marker)`` for other markers; ``on_decision(decision)`` after the guard ruled on a
request of this protocol; ``on_early_tep(early)``, the fast path, a pulse's early TEP 60 ms
after it (:mod:`tmseeg.closedloop.earlytep`). See :class:`State`, :class:`PulseInfo`,
:class:`MarkerInfo`, :class:`EarlyTEP`.

Running it
----------
:class:`~tmseeg.closedloop.runner.ProtocolRunner` (:mod:`tmseeg.closedloop.runner`) is an
engine sink (``Engine(..., sinks=[runner])``) and, through
:meth:`~tmseeg.closedloop.runner.ProtocolRunner.attach`, a session listener. It never lets the
protocol slow acquisition:

* the acquisition thread only copies the newest window (spatially filtered) into a one-slot
  mailbox (newest wins) and returns; the protocol runs on a **worker thread**;
* with ``tmseeg run/demo --protocol`` (``isolate``) the callbacks run in a **process of their
  own** (:mod:`tmseeg.closedloop.isolation`): one that overruns ``callback_timeout_ms`` is
  killed there and started again, so even a callback that holds the interpreter cannot stop
  acquisition, recording or Ctrl-C;
* in this process (a protocol given as a class), a callback running longer than
  ``callback_timeout_ms`` is **abandoned** (reported; its late result is discarded; an
  exception is injected into it when it next runs Python code); while it is stuck, later calls
  are **skipped** and counted, and acquisition continues;
* a callback that **raises** is reported with its traceback; the protocol is then disabled
  (``on_error = "disable"``, default) or called again (``"continue"``);
* a return that is not ``None`` or a ``TriggerRequest`` is **rejected** with the reason;
* every request goes through :meth:`SafetyGuard.check` (min interval, rates, counts, stale
  data, gaps, intensity): nothing reaches an output without an accepted guard decision, so a
  protocol that floods requests is held by the guard;
* every decision (accepted or not) is sent to the outputs (the LSL ``tmseeg-triggers`` stream
  by default) and logged with its latency trace: block received, newest sample time, decision
  time, send time, target time, estimated phase and power.

:func:`load_protocol` imports a protocol file and finds the class, with clear errors.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tmseeg.closedloop.earlytep import EarlyTEPData
from tmseeg.closedloop.guard import TriggerRequest
from tmseeg.dsp.phase import PhaseEstimate
from tmseeg.dsp.spatial import SpatialFilter

__all__ = ["Protocol", "ProtocolInfo", "State", "PulseInfo", "MarkerInfo", "EarlyTEP",
           "ProtocolLoadError", "ProtocolConfigError", "ProtocolTimeout", "load_protocol"]

log = logging.getLogger(__name__)



class ProtocolLoadError(ValueError):
    """A protocol file could not be loaded (syntax error, import error, no Protocol class)."""


class ProtocolConfigError(ValueError):
    """A protocol's configuration attributes are invalid."""


class ProtocolTimeout(BaseException):
    """Injected into a callback that overran its deadline (BaseException: hard to swallow)."""


# -- what callbacks receive ---------------------------------------------------------------------

@dataclass(kw_only=True)
class _Context:
    newest_sample: int
    newest_time_s: float
    now_s: float
    phase: PhaseEstimate | None = None
    delay_ms: float = 0.0

    def trigger(self, intensity_pct: float, label: str = "TMS", at_s: float | None = None,
                after_ms: float | None = None) -> TriggerRequest:
        """A request for one pulse, carrying this state's phase and amplitude for the log.

        Parameters
        ----------
        intensity_pct : float
            Stimulator output (% of maximum).
        label : str
            Marker text of the pulse.
        at_s : float, optional
            Absolute target time on the LSL clock.
        after_ms : float, optional
            Target = newest sample time + ``after_ms``. Without ``at_s`` and ``after_ms`` the
            target is the phase estimate's target, ``newest_time_s + delay_ms``.

        Returns
        -------
        TriggerRequest
        """
        if at_s is not None and after_ms is not None:
            raise ValueError("trigger(): give at_s or after_ms, not both.")
        if at_s is None:
            off_ms = self.delay_ms if after_ms is None else float(after_ms)
            at_s = self.newest_time_s + off_ms / 1000.0
        ph = self.phase
        return TriggerRequest(target_time_s=at_s, intensity_pct=intensity_pct, label=label,
                              requested_at_s=self.newest_time_s,
                              phase_rad=None if ph is None else ph.phase_rad,
                              amplitude_uv=None if ph is None else ph.amplitude_uv)


@dataclass(kw_only=True)
class State(_Context):
    """The live state handed to :meth:`Protocol.on_block`.

    Attributes
    ----------
    window : ndarray
        The newest ``window_ms`` of raw data (µV), spatially filtered to shape ``(n,)`` when
        the protocol sets ``channels``, else ``(n_channels, n)``; a read-only copy. Shorter
        than ``window_ms`` right after the start or a gap.
    sfreq : float
    newest_sample : int
        Absolute index of the newest sample.
    newest_time_s : float
        Its LSL timestamp.
    received_s : float
        LSL time at which the block holding it was pulled.
    now_s : float
        LSL time when this state was built (just before the callback).
    elapsed_s : float
        Seconds of data since the first sample the runner saw.
    warming_up : bool
        True for the protocol's first ``warmup_s`` (requests are refused then).
    phase : PhaseEstimate or None
        Phase/amplitude/power at ``newest_time_s + delay_ms`` when an estimator is configured
        and the window is full; None otherwise.
    delay_ms : float
        The technical delay the estimate looks ahead.
    tep : dict
        Running TEP summary (``TEPSession.tep_summary()``) as of the last completed epoch.
    metrics : dict
        Plug-in metric summaries (MEP, ...) as of the last completed epoch.
    n_pulses : int
        Pulses seen so far (any source).
    last_pulse_time_s : float
        LSL time of the last pulse seen (NaN: none).
    last_trigger_time_s : float
        Target time of the last accepted request of this protocol (NaN: none).
    n_accepted : int
        Accepted requests so far.
    """

    window: np.ndarray
    sfreq: float
    received_s: float = math.nan
    elapsed_s: float = 0.0
    warming_up: bool = False
    tep: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    n_pulses: int = 0
    last_pulse_time_s: float = math.nan
    last_trigger_time_s: float = math.nan
    n_accepted: int = 0

    @property
    def target_time_s(self) -> float:
        """Time the phase estimate refers to: ``newest_time_s + delay_ms``."""
        return self.newest_time_s + self.delay_ms / 1000.0


@dataclass(kw_only=True)
class PulseInfo(_Context):
    """A pulse whose epoch is complete, handed to :meth:`Protocol.on_pulse`.

    Attributes
    ----------
    sample : int
        Absolute sample of the pulse.
    time_s : float
        Its LSL time.
    row : dict
        The session's per-pulse row (``pulses.csv`` columns: ``early_tep_ptp_uv``, ``kept``,
        MEP columns such as ``mep_ptp_uv`` when there is an EMG channel, ...); empty when the
        runner is not attached to a session.
    tep, metrics : dict
        Running TEP and plug-in summaries after this pulse.
    trigger : dict or None
        The accepted decision of this protocol whose target matches the pulse (within
        ``match_tolerance_ms``), else None (a pulse the protocol did not ask for).
    intensity_pct : float
        From the matching trigger, else the row's ``intensity_pct``, else NaN.
    """

    sample: int
    time_s: float
    row: dict = field(default_factory=dict)
    tep: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    trigger: dict | None = None
    intensity_pct: float = math.nan


@dataclass(kw_only=True)
class EarlyTEP(_Context):
    """A pulse's early TEP from the fast path, handed to :meth:`Protocol.on_early_tep` as
    soon as the stream holds 60 ms after the pulse (see :mod:`tmseeg.closedloop.earlytep`:
    interpolated, average referenced, baseline corrected; no decay or muscle removal, no
    filter).

    Attributes
    ----------
    sample : int
        The pulse's sample.
    time_s : float
        Its LSL time.
    tep : EarlyTEPData
        ``times_ms``, ``data_uv``, ``gmfp_uv``, ``roi_uv`` (with ``early_tep_channels`` or
        ``channels``), ``ptp_uv()``, ``mean_uv(window_ms)``, how the pulse was found.
    """

    sample: int
    time_s: float
    tep: EarlyTEPData

    def ptp_uv(self, window_ms: tuple[float, float] | None = None) -> float:
        """Peak-to-peak of the ROI signal (else the GMFP) in ``window_ms`` (default 15-60)."""
        return self.tep.ptp_uv(window_ms)


@dataclass(kw_only=True)
class MarkerInfo(_Context):
    """A (non-pulse) marker, handed to :meth:`Protocol.on_marker`.

    Attributes
    ----------
    label : str
    sample : int
    time_s : float
        LSL time of the marker.
    extra : dict
        Fields of a JSON marker.
    """

    label: str
    sample: int
    time_s: float
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ProtocolInfo:
    """What :meth:`Protocol.setup` learns about the stream.

    Attributes
    ----------
    ch_names : tuple of str
    ch_types : tuple of str
    sfreq : float
    stream : str
    spatial_filter : SpatialFilter or None
    """

    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    sfreq: float
    stream: str
    spatial_filter: SpatialFilter | None


# -- the protocol base class ----------------------------------------------------------------------

class Protocol:
    """Base class of closed-loop protocols: configuration attributes + callbacks.

    Attributes (configuration; override in the subclass)
    ------------------------------------------------------
    name : str
        Shown in logs and decisions (default: the class name).
    window_ms : float
        Length of ``state.window`` (default 500 ms; raised to what the estimator needs).
    channels : str, dict or None
        Spatial filter spec (``"C3"``, ``"C3 Laplacian"``, ``{"C3": 1, "CP3": -1}``); None
        (default) gives all channels.
    estimator : {"ar", "etp", None}
        Phase/power estimator (needs ``channels``). ``"etp"`` learns its cycle length from the
        warm-up data (``warmup_s`` >= 10 s recommended).
    band_hz : tuple of float
        Band of the rhythm (default mu, 8-13 Hz).
    delay_ms : float
        Technical delay compensated by the estimator: ``state.phase`` is the phase at
        ``newest sample + delay_ms``, and ``state.trigger()`` targets that time (default 0).
    warmup_s : float
        Seconds from the first sample during which requests are refused (default 0).
    callback_timeout_ms : float
        Deadline of one callback (default 100 ms).
    on_error : {"disable", "continue"}
        After a callback raises: stop calling the protocol (default), or go on.
    guard : dict
        Stricter safety limits for this protocol (``SafetyGuard`` parameters). They can only
        tighten the runner's limits, never loosen them.
    early_tep_channels : str, dict or None
        The ROI signal of :meth:`on_early_tep` (same forms as ``channels``; default:
        ``channels``; neither: only the GMFP).
    """

    name: str = ""
    window_ms: float = 500.0
    channels: str | Mapping[str, float] | None = None
    estimator: str | None = None
    band_hz: tuple[float, float] = (8.0, 13.0)
    delay_ms: float = 0.0
    warmup_s: float = 0.0
    callback_timeout_ms: float = 100.0
    on_error: str = "disable"
    guard: Mapping[str, Any] = {}
    early_tep_channels: str | Mapping[str, float] | None = None

    def setup(self, info: ProtocolInfo) -> None:
        """Called once, on the worker thread, before any other callback."""

    def on_block(self, state: State) -> TriggerRequest | None:
        """New data arrived; return a request or None."""
        return None

    def on_pulse(self, pulse: PulseInfo) -> TriggerRequest | None:
        """A pulse's epoch (TEP row, MEP columns) is complete; return a request or None."""
        return None

    def on_marker(self, marker: MarkerInfo) -> TriggerRequest | None:
        """A non-pulse marker arrived; return a request or None."""
        return None

    def on_early_tep(self, early: EarlyTEP) -> TriggerRequest | None:
        """The fast path (opt-in: defining this turns it on): a pulse's early TEP as soon as
        the stream holds 60 ms after it, long before its epoch completes (``on_pulse``);
        return a request or None."""
        return None

    def on_decision(self, decision: dict) -> None:
        """The guard ruled on one of this protocol's requests (the logged decision record)."""


# -- loading --------------------------------------------------------------------------------------

def load_protocol(path: str | Path, name: str | None = None) -> type[Protocol]:
    """Import a protocol file and return its :class:`Protocol` subclass.

    Parameters
    ----------
    path : str or Path
        A Python file; ``FILE.py:ClassName`` picks one class when the file defines several.
    name : str, optional
        Class name to pick (same as the ``:ClassName`` suffix).

    Returns
    -------
    type
        The protocol class (instantiate it, or give it to
        :class:`~tmseeg.closedloop.runner.ProtocolRunner`).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ProtocolLoadError
        Syntax error (with file and line), an exception while importing (with its line), no
        ``Protocol`` subclass, several without a name, or the named class is missing.
    """
    text = str(path)
    if name is None and ":" in text and not Path(text).exists():
        head, _, tail = text.rpartition(":")
        if tail.isidentifier():
            text, name = head, tail
    p = Path(text)
    if not p.is_file():
        raise FileNotFoundError(f"protocol file {str(p)!r} not found; give the path of a .py "
                                "file defining a tmseeg.closedloop.Protocol subclass (examples "
                                "in apps/protocol_*.py).")
    source = p.read_text(encoding="utf-8")
    try:
        code = compile(source, str(p), "exec")
    except SyntaxError as err:
        raise ProtocolLoadError(f"protocol {p}: syntax error at line {err.lineno}: {err.msg}"
                                f"\n    {(err.text or '').rstrip()}\nfix the file and retry.") \
            from None
    mod_name = f"tmseeg_protocol_{p.stem}_{abs(hash(str(p.resolve()))) % 10**8}"
    spec = importlib.util.spec_from_file_location(mod_name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        exec(code, module.__dict__)
    except Exception as err:
        sys.modules.pop(mod_name, None)
        tb = traceback.extract_tb(err.__traceback__)
        lines = [f.lineno for f in tb if f.filename == str(p)]
        where = f" at line {lines[-1]}" if lines else ""
        raise ProtocolLoadError(f"protocol {p}: {type(err).__name__} while importing{where}: "
                                f"{err}") from err
    found = [v for v in vars(module).values()
             if isinstance(v, type) and issubclass(v, Protocol) and v is not Protocol
             and v.__module__ == mod_name]
    if name is not None:
        match = [c for c in found if c.__name__ == name]
        if not match:
            raise ProtocolLoadError(f"protocol {p}: no Protocol subclass named {name!r}; it "
                                    f"defines {[c.__name__ for c in found] or 'none'}.")
        return match[0]
    if not found:
        raise ProtocolLoadError(f"protocol {p}: no Protocol subclass found; define "
                                "`class MyProtocol(tmseeg.closedloop.Protocol):` with an "
                                "on_block/on_pulse/on_marker method.")
    if len(found) > 1:
        names = ", ".join(c.__name__ for c in found)
        raise ProtocolLoadError(f"protocol {p}: several Protocol subclasses ({names}); pick one "
                                f"with {p}:ClassName.")
    return found[0]
