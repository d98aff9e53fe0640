"""Small helpers shared across the package."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars/arrays by Python types, recursively."""
    if isinstance(obj, dict):
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
