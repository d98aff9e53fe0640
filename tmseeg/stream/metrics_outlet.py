"""The engine's outputs on LSL: ``tmseeg-metrics`` (type ``Metrics``), one JSON string per update.

Other programs (a stimulator controller, a lab dashboard, LabRecorder) subscribe to it. Each
message is a JSON object with a ``"type"``: ``"pulse"`` (one per epoch: the pulse's row and the
running TEP summary, with ``latency_ms`` from the arrival of the sample that completed the epoch
to the publication) or ``"status"`` (stream rate, gaps, latencies, about once a second).
NaN and infinity become ``null`` (strict JSON).
"""
from __future__ import annotations

import json

from tmseeg.utils import jsonable

METRICS_STREAM_NAME = "tmseeg-metrics"
METRICS_STREAM_TYPE = "Metrics"


class MetricsOutlet:
    """Publish engine updates as JSON strings on an LSL stream.

    Parameters
    ----------
    name : str
        Stream name (default ``tmseeg-metrics``).
    source_id : str
        Stable id so consumers reconnect after a restart (default derived from the name).
    """

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
        """Send one update (a listener of :class:`~tmseeg.session.TEPSession`)."""
        self.outlet.push_sample([json.dumps(jsonable(update), separators=(",", ":"))])
        self.n_sent += 1

    def send_status(self, status) -> None:
        """Send an engine status snapshot (:class:`~tmseeg.engine.EngineStatus`)."""
        from dataclasses import asdict
        self({"type": "status", **asdict(status)})
