"""Trigger outputs: where a closed-loop decision goes once the safety guard has ruled on it.

Every output receives every decision as a JSON-ready ``dict`` (the *message*, built by
:class:`~tmseeg.closedloop.runner.ProtocolRunner`): ``{"accepted", "code", "reason",
"decision_id", "target_time_s", "intensity_pct", "label", "last_sample_time_s",
"received_s", "decision_time_s", "send_time_s", "phase_rad", "amplitude_uv", "power_uv2",
"callback", "protocol"}`` -- times on the local LSL clock in seconds, NaN as ``null``. What an
output does with it:

:class:`LSLTriggerOutput` (the default)
    publishes every decision, accepted or rejected, as one JSON string on an LSL ``Markers``
    stream named ``tmseeg-triggers``. A stimulator bridge, or the simulated amplifier
    (:class:`~tmseeg.sim.amplifier.SimulatedAmplifier` listens to that stream), fires the
    accepted ones at ``target_time_s``; the stream is also the session's decision log.
:class:`SerialTriggerOutput`
    a TTL-style trigger over a serial port (pyserial): one configurable byte written at the
    target time of each accepted decision by a scheduler thread (coarse sleep, then a short
    spin on the LSL clock). Rejected decisions send nothing.
:class:`SimulatorTriggerOutput`
    hands accepted decisions straight to an in-process
    :class:`~tmseeg.sim.amplifier.SimulatedAmplifier` (no network hop), so a demo or a test can
    close the loop without a second LSL stream.

:func:`make_output` turns the command-line spelling (``lsl``, ``lsl:NAME``,
``serial:/dev/ttyUSB0``, ``serial:/dev/ttyUSB0@115200:0x01``, ``sim``) into an output.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import threading
from typing import Callable

from tmseeg.utils import jsonable, now_s

__all__ = ["TriggerOutput", "LSLTriggerOutput", "SerialTriggerOutput",
           "SimulatorTriggerOutput", "make_output", "message_json", "lsl_clock"]

log = logging.getLogger(__name__)

#: ``on_fired(decision_id, fired_at_s)`` / ``on_failed(decision_id, reason)``
FiredCallback = Callable[[int, float], None]
FailedCallback = Callable[[int, str], None]


#: the local LSL clock (seconds), the time base of every trigger time
lsl_clock = now_s


def message_json(message: dict) -> str:
    """One decision as strict JSON (NaN/inf become ``null``)."""
    return json.dumps(jsonable(message), separators=(",", ":"), default=str)


class TriggerOutput:
    """Base class of trigger outputs.

    Subclasses implement :meth:`send`. The runner sets :attr:`on_fired` / :attr:`on_failed`
    to learn when an accepted pulse actually went out (outputs that act at once call
    ``on_fired`` from :meth:`send`; scheduled ones later, from their own thread).

    Attributes
    ----------
    name : str
        Short description for logs and status lines.
    """

    name = "output"

    def __init__(self) -> None:
        self.on_fired: FiredCallback | None = None
        self.on_failed: FailedCallback | None = None

    def send(self, message: dict) -> float:
        """Deliver one decision; returns the LSL time it was sent (NaN if nothing was sent)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the output (pending scheduled triggers are cancelled and reported)."""

    def _fired(self, decision_id: int, at_s: float) -> None:
        if self.on_fired is not None:
            try:
                self.on_fired(decision_id, at_s)
            except Exception:
                log.exception("on_fired callback failed")

    def _failed(self, decision_id: int, reason: str) -> None:
        log.error("trigger output %s: decision %s not fired: %s", self.name, decision_id, reason)
        if self.on_failed is not None:
            try:
                self.on_failed(decision_id, reason)
            except Exception:
                log.exception("on_failed callback failed")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LSLTriggerOutput(TriggerOutput):
    """Every decision as a JSON string on an LSL ``Markers`` stream (default ``tmseeg-triggers``).

    Parameters
    ----------
    name : str
        Stream name (default ``"tmseeg-triggers"``; the simulator listens to this name).
    source_id : str, optional
        LSL source id (default ``name``).

    Notes
    -----
    The sample's LSL timestamp is the send time; the message carries the target time. An
    accepted decision counts as fired when it is pushed (``send_time_s``): the consumer fires
    it at ``target_time_s``.
    """

    def __init__(self, name: str = "tmseeg-triggers", source_id: str | None = None) -> None:
        super().__init__()
        import pylsl

        if not name:
            raise ValueError("LSLTriggerOutput: give a non-empty stream name.")
        self.name = f"lsl:{name}"
        self.stream_name = name
        info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string,
                                source_id or name)
        info.desc().append_child_value("content", "tmseeg closed-loop trigger decisions (JSON)")
        self._outlet = pylsl.StreamOutlet(info)
        self._lock = threading.Lock()
        self.n_sent = 0

    def send(self, message: dict) -> float:
        t = lsl_clock()
        message["send_time_s"] = t
        text = message_json(message)
        with self._lock:
            if self._outlet is None:
                raise RuntimeError(f"LSLTriggerOutput {self.stream_name!r} is closed.")
            self._outlet.push_sample([text], t)
            self.n_sent += 1
        if message.get("accepted"):
            self._fired(int(message["decision_id"]), t)
        return t

    def close(self) -> None:
        with self._lock:
            self._outlet = None


class SimulatorTriggerOutput(TriggerOutput):
    """Accepted decisions go straight to an in-process simulated amplifier.

    Parameters
    ----------
    amplifier : SimulatedAmplifier
        Its :meth:`~tmseeg.sim.amplifier.SimulatedAmplifier.handle_trigger` receives the JSON.
    """

    name = "sim"

    def __init__(self, amplifier) -> None:
        super().__init__()
        if not hasattr(amplifier, "handle_trigger"):
            raise ValueError("SimulatorTriggerOutput: give a SimulatedAmplifier (an object with "
                             "handle_trigger).")
        self.amplifier = amplifier

    def send(self, message: dict) -> float:
        if not message.get("accepted"):
            return float("nan")
        t = lsl_clock()
        message["send_time_s"] = t
        sample = self.amplifier.handle_trigger(message_json(message))
        if sample is None:
            self._failed(int(message["decision_id"]), "the simulator ignored the trigger")
        else:
            self._fired(int(message["decision_id"]), t)
        return t


class SerialTriggerOutput(TriggerOutput):
    """A trigger byte on a serial port at each accepted decision's target time.

    Parameters
    ----------
    port : str
        Device (``/dev/ttyUSB0``, ``COM3``, a pseudo-terminal ``/dev/pts/N``).
    baudrate : int
        Default 115200.
    trigger_byte : int
        The byte written (default ``0x01``); most TTL converters raise a line for it.
    spin_s : float
        The scheduler sleeps until ``spin_s`` before the target, then spins on the LSL clock
        (default 2 ms): sub-millisecond timing without a real-time kernel.
    late_tolerance_s : float
        A trigger whose target already passed by more than this is not sent (reported as
        failed), because a pulse at the wrong time is worse than none (default 5 ms).
    serial_kw : dict, optional
        More ``serial.Serial`` arguments.

    Raises
    ------
    RuntimeError
        pyserial is not installed.
    ValueError
        The port cannot be opened, or the byte is not 0-255.
    """

    def __init__(self, port: str, baudrate: int = 115200, trigger_byte: int = 0x01,
                 spin_s: float = 0.002, late_tolerance_s: float = 0.005,
                 serial_kw: dict | None = None) -> None:
        super().__init__()
        try:
            import serial
        except ImportError as err:
            raise RuntimeError("SerialTriggerOutput needs pyserial: `pip install pyserial`.") \
                from err
        if not (isinstance(trigger_byte, int) and 0 <= trigger_byte <= 255):
            raise ValueError(f"SerialTriggerOutput: trigger_byte={trigger_byte!r} must be an "
                             "integer 0-255.")
        self.name = f"serial:{port}"
        self.port = port
        self.trigger_byte = bytes([trigger_byte])
        self.spin_s = float(spin_s)
        self.late_tolerance_s = float(late_tolerance_s)
        try:
            self._serial = serial.Serial(port, baudrate=baudrate, timeout=0, write_timeout=0.1,
                                         **(serial_kw or {}))
        except (serial.SerialException, OSError, ValueError) as err:
            raise ValueError(f"SerialTriggerOutput: cannot open serial port {port!r} ({err}). "
                             "Check the device name (ls /dev/tty*), that it is plugged in and "
                             "that you may use it (group dialout).") from err
        self._heap: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        #: ``(decision_id, target_time_s, written_at_s)`` of every byte written
        self.fired: list[tuple[int, float, float]] = []
        self._thread = threading.Thread(target=self._run, name=f"serial-trigger-{port}",
                                        daemon=True)
        self._thread.start()

    def send(self, message: dict) -> float:
        if not message.get("accepted"):
            return float("nan")
        target = message.get("target_time_s")
        did = int(message["decision_id"])
        if target is None or not math.isfinite(float(target)):
            raise ValueError(f"SerialTriggerOutput: decision {did} has no finite target time.")
        t = lsl_clock()
        message["send_time_s"] = t
        with self._cv:
            if self._closed:
                raise RuntimeError(f"SerialTriggerOutput {self.port!r} is closed.")
            heapq.heappush(self._heap, (float(target), next(self._seq), did))
            self._cv.notify()
        return t

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._heap:
                    self._cv.wait()
                if self._closed:
                    return
                target, _, did = self._heap[0]
                wait = target - lsl_clock() - self.spin_s
                if wait > 0:
                    self._cv.wait(min(wait, 0.5))
                    continue  # re-check: an earlier trigger may have been queued
                heapq.heappop(self._heap)
            while lsl_clock() < target:  # spin the last couple of ms
                pass
            now = lsl_clock()
            if now - target > self.late_tolerance_s:
                self._failed(did, f"{(now - target) * 1e3:.1f} ms late (tolerance "
                             f"{self.late_tolerance_s * 1e3:g} ms): not sent")
                continue
            try:
                self._serial.write(self.trigger_byte)
                self._serial.flush()
            except Exception as err:  # serial.SerialException, OSError
                self._failed(did, f"write failed: {err}")
                continue
            self.fired.append((did, target, now))
            self._fired(did, now)

    def close(self) -> None:
        with self._cv:
            self._closed = True
            pending = [did for _, _, did in self._heap]
            self._heap.clear()
            self._cv.notify_all()
        self._thread.join(timeout=1.0)
        for did in pending:
            self._failed(did, "output closed before the target time")
        try:
            self._serial.close()
        except Exception:
            pass


def make_output(spec: str, amplifier=None) -> TriggerOutput:
    """Build an output from its command-line spelling.

    Parameters
    ----------
    spec : str
        ``"lsl"`` (stream ``tmseeg-triggers``), ``"lsl:NAME"``, ``"serial:PORT"``,
        ``"serial:PORT@BAUD"``, ``"serial:PORT@BAUD:BYTE"`` (byte in decimal or ``0x..``), or
        ``"sim"`` (needs ``amplifier``).
    amplifier : SimulatedAmplifier, optional
        For ``"sim"``.

    Returns
    -------
    TriggerOutput
    """
    s = (spec or "").strip()
    if s == "lsl" or s.startswith("lsl:"):
        return LSLTriggerOutput(s[4:] or "tmseeg-triggers")
    if s == "sim":
        if amplifier is None:
            raise ValueError("--trigger-output sim needs the in-process simulator: use it with "
                             "`tmseeg demo`; with `tmseeg run` use lsl (the simulator listens "
                             "to tmseeg-triggers).")
        return SimulatorTriggerOutput(amplifier)
    if s.startswith("serial:") and len(s) > 7:
        rest = s[7:]
        port, _, opts = rest.partition("@")
        baud, byte = 115200, 1
        if opts:
            b, _, by = opts.partition(":")
            try:
                baud = int(b)
                byte = int(by, 0) if by else 1
            except ValueError:
                raise ValueError(f"--trigger-output {spec!r}: write serial:PORT@BAUD:BYTE, e.g. "
                                 "serial:/dev/ttyUSB0@115200:0x01.") from None
        return SerialTriggerOutput(port, baudrate=baud, trigger_byte=byte)
    raise ValueError(f"--trigger-output {spec!r}: use lsl, lsl:NAME, serial:/dev/ttyX "
                     "(optionally @BAUD:BYTE) or sim.")
