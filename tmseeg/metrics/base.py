"""How a metric joins a session: the plug-in contract.

A metric module (e.g. :mod:`tmseeg.metrics.mep`) that the session should run exposes two names:

``CONFIG_TOML``
    Its configuration section(s) with commented defaults, e.g. ``"[mep]\\nenabled = true\\n..."``.
    They are appended to the pipeline configuration by :mod:`tmseeg.config` (``tmseeg config``
    prints them), so a user's file can set them and typos are refused like every other key.
``FREE_KEYS`` (optional)
    Tables of those sections whose keys the user names, e.g.
    ``frozenset({("connectivity", "bands_hz")})``: not checked against the defaults.
``make_metric(cfg: dict, session) -> SessionMetric | None``
    Build the metric from the whole configuration and the session (for ``session.meta``,
    ``session.roi()``, ``session.stages``...). Return None when it does not apply (disabled,
    or no suitable channel: no EMG channel for MEPs). Refuse a bad value of the section with a
    ``ValueError`` naming the key, here or on the first epoch: ``tmseeg config --check``
    rehearses every plug-in on a simulated recording (:mod:`tmseeg.report.rehearse`), so the
    user hears of it before a session starts.

and is listed in :data:`tmseeg.metrics.PLUGINS`. The session then calls, in this order:

- ``on_block(block)`` with every processed block (continuous data after the stages, events
  included) — for metrics that need data the epoch does not carry (EMG, pre-stimulus state);
- ``on_epoch(epoch, row)`` with every EEG epoch and the pulse's row of ``pulses.csv``; the
  metric adds its per-pulse columns to ``row`` (units in the names, NaN when unknown);
- ``summary()`` whenever a summary is requested (live updates, ``summary.json``): JSON-ready
  and cheap (accumulate in ``on_epoch``, finalize here);
- ``finish()`` at the end of a recording (optional);
- ``report(report, session)`` when ``report.html`` is written (optional): add figures/HTML
  to the :class:`mne.Report`.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from tmseeg.pipeline.epochs import Epoch
from tmseeg.stream.block import Block


@runtime_checkable
class SessionMetric(Protocol):
    """A metric that accumulates per block / per epoch and summarises cheaply."""

    #: key of the metric in summaries (``summary.json``, the metrics stream)
    name: str

    def on_block(self, block: Block) -> None: ...

    def on_epoch(self, epoch: Epoch, row: dict[str, Any]) -> None: ...

    def summary(self) -> dict[str, Any]: ...
