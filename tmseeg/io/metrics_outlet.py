"""The engine's outputs on LSL: ``tmseeg-metrics`` (type ``Metrics``), one JSON string per update.

Other programs (a stimulator controller, a lab dashboard, LabRecorder) subscribe to it. Each
message is a JSON object with a ``"type"``: ``"pulse"`` (one per epoch, as soon as it is
averaged: the pulse's row as the TEP path made it and the running TEP summary, with
``latency_ms`` from the arrival of the sample that completed the epoch to the publication; once
something is averaged, also ``"curves"``: the running ROI-average TEP and GMFP at about 1 kHz,
see :func:`encode_curves`), ``"metrics"`` (right after each ``"pulse"``, once the metric
plug-ins took the epoch: the whole row with their columns, the TEP summary and the plug-ins'
summaries) or ``"status"`` (stream rate, gaps, latencies, about once a second). NaN and
infinity become ``null`` (strict JSON).
"""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np

from tmseeg.utils import jsonable

METRICS_STREAM_NAME = "tmseeg-metrics"
METRICS_STREAM_TYPE = "Metrics"
#: highest rate (Hz) at which ``"curves"`` are published (~1000 points for a 1-s epoch)
CURVE_MAX_RATE_HZ = 1000.0
#: published curve values are rounded to this many decimals of a µV (0.001 µV)
CURVE_DECIMALS = 3


def curve_decimation(sfreq_hz: float, h_freq_hz: float | None,
                     max_rate_hz: float = CURVE_MAX_RATE_HZ) -> tuple[int, str]:
    """Decimation factor and method for publishing TEP curves.

    The TEP path low-passes every epoch at ``h_freq_hz`` (zero-phase Butterworth,
    :class:`~tmseeg.pipeline.filters.EpochFilter`), so taking every k-th sample is an
    alias-free decimation as long as the new rate stays >= 2.5 x ``h_freq_hz`` (100 Hz default:
    1 kHz keeps 5 x the cut-off, and the 4th-order filter, run twice, is down > 70 dB at the new
    Nyquist). The
    published values are then the average's own samples, exactly. Without a low-pass
    (``h_freq_hz`` 0 or None), consecutive samples are averaged instead (a k-sample boxcar,
    which attenuates what would alias).

    Parameters
    ----------
    sfreq_hz : float
        Sampling rate of the epochs.
    h_freq_hz : float or None
        Low-pass edge of the TEP path's epoch filter (None or 0: none).
    max_rate_hz : float
        Rate not to exceed (unless 2.5 x ``h_freq_hz`` is higher: then that rate).

    Returns
    -------
    factor : int
        Samples per published point (>= 1).
    method : str
        ``"subsample"`` (every ``factor``-th sample) or ``"mean"`` (mean of ``factor``
        consecutive samples).
    """
    if h_freq_hz:
        return max(1, int(sfreq_hz // max(max_rate_hz, 2.5 * h_freq_hz))), "subsample"
    return max(1, int(sfreq_hz // max_rate_hz)), "mean"


def encode_curves(times_ms: np.ndarray, curves_uv: Mapping[str, np.ndarray], sfreq_hz: float,
                  h_freq_hz: float | None, **fields) -> dict:
    """The ``"curves"`` field of a pulse message: decimated, rounded, with a compact time axis.

    Parameters
    ----------
    times_ms : ndarray, shape (n_times,)
        Epoch time axis (uniform, ``1000 / sfreq_hz`` ms apart).
    curves_uv : mapping of str to ndarray, shape (n_times,)
        Curves by field name (``roi_average_uv``, ``gmfp_uv``), in µV.
    sfreq_hz : float
        Sampling rate of the epochs.
    h_freq_hz : float or None
        Low-pass edge of the TEP path (chooses the decimation, see :func:`curve_decimation`).
    **fields
        Added as they are (``n_averaged``, ``roi``).

    Returns
    -------
    dict
        ``tmin_ms``, ``step_ms``, ``n`` (point ``i`` is at ``tmin_ms + i * step_ms``),
        ``decimation`` (factor), ``method``, the extra fields, and each curve as a list of
        floats rounded to :data:`CURVE_DECIMALS` decimals (NaN as ``null`` once sent).
    """
    factor, method = curve_decimation(sfreq_hz, h_freq_hz)
    times_ms = np.asarray(times_ms, dtype=float)
    dt_ms = 1000.0 / sfreq_hz
    if method == "subsample":
        n = -(-times_ms.size // factor)
        tmin_ms = float(times_ms[0])
        values = {k: np.asarray(v, dtype=float)[::factor] for k, v in curves_uv.items()}
    else:
        n = times_ms.size // factor
        tmin_ms = float(times_ms[0]) + (factor - 1) / 2.0 * dt_ms  # centre of the first block
        values = {k: np.asarray(v, dtype=float)[:n * factor].reshape(n, factor).mean(axis=1)
                  for k, v in curves_uv.items()}
    out = {"tmin_ms": tmin_ms, "step_ms": factor * dt_ms, "n": int(n), "decimation": factor,
           "method": method, **fields}
    out.update({k: np.round(v, CURVE_DECIMALS) for k, v in values.items()})
    return out


def decode_curves(curves: Mapping) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Time axis and curves of a received ``"curves"`` field (inverse of :func:`encode_curves`).

    Parameters
    ----------
    curves : mapping
        The parsed ``"curves"`` object of a pulse message.

    Returns
    -------
    times_ms : ndarray, shape (n,)
    curves_uv : dict of str to ndarray, shape (n,)
        Every list field ending in ``_uv`` (``null`` back to NaN).
    """
    n = int(curves["n"])
    times_ms = float(curves["tmin_ms"]) + float(curves["step_ms"]) * np.arange(n)
    out = {k: np.array([math.nan if x is None else x for x in v], dtype=float)
           for k, v in curves.items() if k.endswith("_uv") and isinstance(v, list)}
    return times_ms, out


class MetricsOutlet:
    """Publish engine updates as JSON strings on an LSL stream.

    Parameters
    ----------
    name : str
        Stream name (default ``tmseeg-metrics``).
    source_id : str
        Stable id so consumers reconnect after a restart (default derived from the name).
    """

    #: the session adds the decimated TEP curves to the updates it sends here
    wants_curves = True

    def __init__(self, name: str = METRICS_STREAM_NAME, source_id: str | None = None) -> None:
        import pylsl

        info = pylsl.StreamInfo(name, METRICS_STREAM_TYPE, 1, pylsl.IRREGULAR_RATE,
                                pylsl.cf_string, source_id or f"{name}-outlet")
        info.desc().append_child_value("format", "json")
        info.desc().append_child_value("producer", "tmseeg")
        self._pylsl = pylsl
        self.outlet = pylsl.StreamOutlet(info)
        self.n_sent = 0

    def __call__(self, update: dict) -> None:
        """Send one update (a listener of :class:`~tmseeg.session.TEPSession`); nothing after
        :meth:`close`."""
        if self.outlet is None:
            return
        self.outlet.push_sample([json.dumps(jsonable(update), separators=(",", ":"))])
        self.n_sent += 1

    def close(self) -> None:
        """Withdraw the stream now (its port is freed; idempotent)."""
        self.outlet = None

    def send_status(self, status) -> None:
        """Send an engine status snapshot (:class:`~tmseeg.engine.EngineStatus`)."""
        from dataclasses import asdict
        self({"type": "status", **asdict(status)})
