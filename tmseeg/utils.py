"""Small helpers shared across the package."""
from __future__ import annotations

import math
import time
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


def now_s() -> float:
    """The LSL clock when pylsl is there (latencies compare with LSL timestamps)."""
    try:
        import pylsl
        return float(pylsl.local_clock())
    except Exception:  # pragma: no cover - pylsl is a core dependency
        return time.monotonic()
