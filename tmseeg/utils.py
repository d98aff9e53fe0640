"""Small helpers shared across the package."""
from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np


def jsonable(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars/arrays by Python types, recursively."""
    if isinstance(obj, Mapping):  # dicts, and configuration sections
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def float_or_nan(x: Any) -> float:
    """``float(x)``, or NaN when ``x`` is no number (None, a text that is not one)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def now_s() -> float:
    """The LSL clock when pylsl is there (latencies compare with LSL timestamps)."""
    try:
        import pylsl
        return float(pylsl.local_clock())
    except Exception:  # pragma: no cover - pylsl is a core dependency
        return time.monotonic()


def writable_dir(out_dir: str | Path, option: str = "--out") -> Path:
    """``out_dir``, created if needed and checked to take a file's data.

    A 64 kB test file is written and removed: an empty file would fit on a full disk (it needs
    an inode, not space).

    Parameters
    ----------
    out_dir : str or Path
        The folder.
    option : str
        The command-line option that named it, for the message.

    Raises
    ------
    OSError
        Naming the directory, the cause and the option to change, before any work starts.
    """
    import tempfile

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tmseeg-write-test-") as f:
            f.write(bytes(64 * 1024))
            f.flush()
    except OSError as exc:
        raise OSError(f"cannot write the outputs to {out} ({type(exc).__name__}: "
                      f"{exc.strerror or exc}); free space there or choose another {option} "
                      "directory") from exc
    return out


def single_threaded_blas():
    """Limit BLAS (OpenBLAS, MKL) to one thread in this process; returns the limiter (a
    context manager that restores the previous limits on exit).

    The engine's products are small (a decay fit's grid, a decimation, a cross-spectrum per
    epoch) and its own threads already share the cores (:func:`over_rows`, plug-in threads):
    OpenBLAS's threads then mostly spin waiting for work. A 10-minute 64 ch / 5 kHz analysis
    took 34-39 s of CPU with them and 21-25 s without, and ~2 s less wall time.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


class BackgroundWork:
    """Work on a thread of its own, one item at a time in the order given: a plug-in's
    per-epoch work, the decay stage's fits of its running average.

    The results are those of running the items in that order on the caller's thread (each
    item sees what the ones before it left), while the session goes on with its stages and
    epochs: on two cores the heaviest plug-in (the wavelets) overlaps the rest instead of
    adding to it. At most ``max_pending`` items wait (their epochs in memory); one more makes
    :meth:`submit` wait for the oldest. :meth:`wait` finishes everything and raises what an
    item raised; call it before reading the state the items change.

    ``enabled=False`` runs each item at once on the caller's thread. ``name`` names the
    thread.
    """

    def __init__(self, enabled: bool, max_pending: int = 8, name: str = "tmseeg-plugin") -> None:
        self.enabled = bool(enabled)
        self.name = name
        self.max_pending = max(1, int(max_pending))
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` after the items submitted before it; its future (done at once
        when not ``enabled``)."""
        if not self.enabled:
            done: Future = Future()
            done.set_result(fn(*args))
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)
        while len(self._pending) >= self.max_pending:
            self._pending.popleft().result()
        future = self._pool.submit(fn, *args)
        self._pending.append(future)
        return future

    def wait(self) -> None:
        """Finish every submitted item (re-raising the first failure)."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """:meth:`wait`, then end the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


_ROW_POOL: ThreadPoolExecutor | None = None
#: below this many values in all, one thread is faster than handing work to another
PARALLEL_MIN_SIZE = 100_000


def _forget_row_pool() -> None:
    # a forked child has the pool object but not its threads: work handed to it would wait
    # forever; the child makes its own
    global _ROW_POOL
    _ROW_POOL = None


os.register_at_fork(after_in_child=_forget_row_pool)


#: > 0 while :func:`serial_rows` is in force
_SERIAL_ROWS = 0


@contextlib.contextmanager
def serial_rows():
    """:func:`over_rows` runs every call on the caller's thread while this is in force (the
    whole process, not just this thread).

    For an offline analysis, whose work is already spread over threads of its own (the
    stages, the plug-ins' per-epoch work, the decay fits, the file reader): handing each
    filter or transform to the row threads as well only adds hand-offs and waits for the
    interpreter lock. A 10-minute 64 ch / 5 kHz analysis took 12.8-13.3 s without them and
    13.7-15.4 s with (2 cores).
    """
    global _SERIAL_ROWS
    _SERIAL_ROWS += 1
    try:
        yield
    finally:
        _SERIAL_ROWS -= 1


def over_rows(work: Callable[[int, int], Any], n_rows: int, size: int) -> list:
    """``work(start, stop)`` over consecutive row ranges covering ``n_rows``, on the machine's
    cores (at most 4), results in row order.

    For numpy and scipy loops that run without the interpreter lock (filters, resampling,
    elementwise updates), where each row's result does not depend on the others: the results
    are the same as one call over all rows. ``size`` (values in all) below
    :data:`PARALLEL_MIN_SIZE` runs one call on this thread.
    """
    global _ROW_POOL
    n_workers = min(os.cpu_count() or 1, 4, n_rows)
    if n_workers < 2 or size < PARALLEL_MIN_SIZE or _SERIAL_ROWS:
        return [work(0, n_rows)]
    if _ROW_POOL is None:
        _ROW_POOL = ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4),
                                       thread_name_prefix="tmseeg-rows")
    bounds = np.linspace(0, n_rows, n_workers + 1).astype(int)
    futures = [_ROW_POOL.submit(work, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]
    return [f.result() for f in futures]


def map_rows(func: Callable[[np.ndarray], np.ndarray], data: np.ndarray) -> np.ndarray:
    """``func(data)`` for a ``func`` that treats each row on its own (a filter along the last
    axis), the rows split over the cores by :func:`over_rows` and joined again."""
    parts = over_rows(lambda a, b: func(data[a:b]), data.shape[0], data.size)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library when it is glibc (has ``malloc_trim`` and ``mallopt``), else None;
    looked up once (``find_library`` runs ``ldconfig``: ~4 ms, and the live processing thread
    trims every few seconds)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 (musl, macOS: AttributeError)
    except (OSError, AttributeError):
        return None
    return libc


def return_freed_memory() -> None:
    """Hand memory the process has freed back to the system (glibc's ``malloc_trim``).

    Many freed arrays of a few MB (a session's epochs) stay in the C heap, counted in the
    process's resident memory, until something trims it; an analysis that frees them just
    before it allocates its largest array calls this in between. No-op where there is no glibc.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.lru_cache(maxsize=1)
def _mallinfo2():
    """glibc's ``mallinfo2`` with its result type declared, or None (no glibc 2.33+)."""
    import ctypes

    libc = _glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


def c_heap_mb() -> tuple[float, float] | None:
    """The C heap as glibc's ``mallinfo2`` counts it, over every arena: (MB obtained from the
    system, heap and large mapped blocks; MB of it in use). Tells a growing resident memory
    that is held (in use rises) from one that is kept free (the heap rises, in use does not).
    None where there is no glibc 2.33+."""
    mallinfo2 = _mallinfo2()
    if mallinfo2 is None:
        return None
    info = mallinfo2()
    return (info.arena + info.hblkhd) / 1e6, (info.uordblks + info.hblkhd) / 1e6


#: glibc's ``mallopt`` parameter for the most heap arenas
_M_ARENA_MAX = -8


def limit_malloc_arenas(n: int = 2) -> bool:
    """Let glibc's allocator keep at most ``n`` heap arenas from now on (``mallopt``).

    By default every thread that meets a locked arena gets one of its own (up to 8 per core),
    and each keeps what its thread freed; a live session's threads (acquisition, processing,
    plug-ins, LSL) then hold tens of MB each that the others cannot reuse, and the resident
    memory sits higher. Measured at 64 ch / 5 kHz (``benchmarks/bench_live.py``, 12 to 20
    minutes): each minute's median resident memory 338-351 MB with 2 arenas against 361-376
    MB without, at the same processing cost. It does not stop the rise over an hour's first
    25 minutes (383 -> 419 MB, then flat; see the README). Returns whether it was applied
    (False where there is no glibc).
    """
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_ARENA_MAX, int(n)))


def compile_pattern(pattern: str, key: str, fix: str,
                    error: type[Exception] = ValueError) -> re.Pattern:
    """A user's regular expression (``[pulses] pattern``, ``[blocks] pattern`` ...), compiled
    case-insensitively; ``error`` naming ``key``, the cause and ``fix`` when it is none."""
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as err:
        raise error(f"{key} {pattern!r} is not a regular expression: {err}; {fix}") from err
