"""A protocol's callbacks in a process of their own, so a stuck protocol cannot stop the engine.

A protocol runs Python the scientist wrote. On the engine's worker thread, a callback that
holds the interpreter (a long C call such as ``sum(range(10**10))``, a C extension that never
releases the GIL) freezes the whole process: acquisition, recording, Ctrl-C. In a process of
its own it can only freeze itself: :class:`ProtocolProcess` sends each call (callback name and
its argument, pickled) through a pipe, waits at most the callback's deadline, and kills the
process when it overruns (SIGKILL: nothing a protocol does survives it). The guard, the trigger
outputs and every decision stay in the engine's process; only the protocol's own code moves.

The state's data window (all channels: megabytes a call at 5 kHz) goes through shared memory,
the rest of the state through the pipe; the protocol gets its own copy of the window, as in the
engine's process. The cost is a pipe round trip and the other process's wake-up
(``benchmarks/bench_closedloop.py`` prints the latency both ways).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import signal
import traceback
from multiprocessing import shared_memory
from typing import Any

import numpy as np

__all__ = ["ProtocolProcess", "ProtocolProcessError"]

#: seconds a new protocol process may take to import tmseeg and the protocol file
START_TIMEOUT_S = 60.0


class ProtocolProcessError(RuntimeError):
    """The protocol process could not start (the message says why)."""


def _host(spec: str, conn) -> None:
    """The protocol process: load the protocol, then answer calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    try:
        from tmseeg.closedloop.protocol import load_protocol

        protocol = load_protocol(spec)()
    except BaseException as err:  # the engine reports it; this process ends
        conn.send(("failed", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    shm = None
    while True:
        try:
            kind, arg, window = conn.recv()
        except (EOFError, OSError):
            return
        if kind == "stop":
            return
        if window is not None:  # (shared-memory name, shape): the state's data window
            name, shape = window
            if shm is None or shm.name != name:
                if shm is not None:
                    shm.close()
                shm = shared_memory.SharedMemory(name=name)
            view = np.ndarray(shape, dtype=np.float64, buffer=shm.buf)
            data = view.copy()  # the protocol's own copy, as in the engine's process
            data.setflags(write=False)
            arg = dataclasses.replace(arg, window=data)
        try:
            result = getattr(protocol, kind)(arg)
        except Exception as err:
            conn.send(("raised", (type(err).__name__, str(err),
                                  traceback.format_exc(limit=6))))
            continue
        try:
            conn.send(("ok", result))
        except Exception as err:  # a result that cannot cross the pipe
            conn.send(("raised", (type(err).__name__, f"its return value cannot be sent "
                                  f"to the engine: {err}", "")))


class ProtocolProcess:
    """The callbacks of the protocol ``spec`` (``FILE.py`` or ``FILE.py:Class``) in a
    process of their own (see the module description).

    Raises
    ------
    ProtocolProcessError
        The process did not start or could not load the protocol.
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.n_started = 0
        self._shm: shared_memory.SharedMemory | None = None
        self._start()

    def _window(self, arg: Any):
        """Put a state's data window into shared memory: (the state without it, (name,
        shape)); other arguments go as they are."""
        window = getattr(arg, "window", None)
        if not isinstance(window, np.ndarray) or not dataclasses.is_dataclass(arg):
            return arg, None
        x = np.ascontiguousarray(window, dtype=np.float64)
        if self._shm is None or self._shm.size < x.nbytes:
            self._free_shm()
            self._shm = shared_memory.SharedMemory(create=True, size=max(x.nbytes, 8))
        np.ndarray(x.shape, dtype=np.float64, buffer=self._shm.buf)[...] = x
        return dataclasses.replace(arg, window=np.empty(0)), (self._shm.name, x.shape)

    def _free_shm(self) -> None:
        if self._shm is not None:
            self._shm.close()
            self._shm.unlink()
            self._shm = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded engine
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_host, args=(self.spec, child), daemon=True,
                                   name="tmseeg-protocol")
        self.process.start()
        child.close()
        self.n_started += 1
        if not self.conn.poll(START_TIMEOUT_S):
            self.kill()
            raise ProtocolProcessError(f"protocol process for {self.spec} did not start "
                                       f"within {START_TIMEOUT_S:g} s")
        try:
            what, detail = self.conn.recv()
        except EOFError:
            what, detail = "failed", f"it ended with exit code {self.process.exitcode}"
        if what != "ready":
            self.kill()
            raise ProtocolProcessError(f"protocol process for {self.spec} could not load the "
                                       f"protocol: {detail}")

    def call(self, kind: str, arg: Any, timeout_s: float) -> tuple[str, Any]:
        """Run one callback there.

        Returns
        -------
        (status, value)
            ``("ok", result)``, ``("raised", (type, message, traceback))``,
            ``("timeout", None)`` (the process is still busy: :meth:`restart` it) or
            ``("died", exit_code)``.
        """
        arg, window = self._window(arg)
        try:
            self.conn.send((kind, arg, window))
        except (BrokenPipeError, OSError, EOFError):
            return "died", self.process.exitcode
        if not self.conn.poll(timeout_s):
            return "timeout", None
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(0.5)
            return "died", self.process.exitcode

    def kill(self) -> None:
        """End the process now (SIGKILL)."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(2.0)
        self.conn.close()

    def restart(self) -> None:
        """Kill the process and start a fresh one (the protocol's state starts over)."""
        self.kill()
        self._start()

    def close(self) -> None:
        """Ask the process to end; kill it when it does not within 0.5 s."""
        try:
            self.conn.send(("stop", None, None))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(0.5)
        self.kill()
        self._free_shm()
