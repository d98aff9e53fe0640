"""How a metric joins a session: the plug-in contract.

A metric module (e.g. :mod:`tmseeg.metrics.mep`) that the session should run exposes two names:

``CONFIG_TOML``
    Its configuration section(s) with commented defaults, e.g. ``"[mep]\\nenabled = true\\n..."``.
    They are appended to the pipeline configuration by :mod:`tmseeg.config` (``tmseeg config``
    prints them), so a user's file can set them and typos are refused like every other key.
``FREE_KEYS`` (optional)
    Tables of those sections whose keys the user names, e.g.
    ``frozenset({("connectivity", "bands_hz")})``: not checked against the defaults.
``make_metric(cfg: ConfigSection, context: MetricContext) -> SessionMetric | None``
    Build the metric from the whole configuration and what it may know of its session
    (:class:`MetricContext`: the stream's channels, the ROI, the bad channels, the running
    TEP). Return None when it does not apply (disabled,
    or no suitable channel: no EMG channel for MEPs). Refuse a bad value of the section with a
    ``ValueError`` naming the key, here or on the first epoch: ``tmseeg config --check``
    rehearses every plug-in on a simulated recording (:mod:`tmseeg.report.rehearse`), so the
    user hears of it before a session starts.

and is listed in :data:`tmseeg.metrics.PLUGINS`. The metric is a :class:`SessionMetric`: it
says its ``name``, the per-pulse ``columns`` it adds and the plug-ins it must run ``after``
(whose columns it reads), and overrides the hooks it needs; the session calls every hook of
every metric, in an order that honours ``after``:

- ``on_block(block)`` with every processed block (continuous data after the stages, events
  included) — for metrics that need data the epoch does not carry (EMG, pre-stimulus state);
- ``on_epoch(epoch, row)`` with every EEG epoch and the pulse's row of ``pulses.csv``; the
  metric adds its per-pulse ``columns`` to ``row`` (units in the names, NaN when unknown);
- ``summary()`` whenever a summary is requested (live updates, ``summary.json``): JSON-ready
  and cheap (accumulate in ``on_epoch``, finalize here);
- ``finish()`` at the end of a recording;
- ``report(report)`` when ``report.html`` is written: add figures/HTML to the
  :class:`mne.Report`.

``tests/metrics/test_metric_contract.py`` runs every plug-in through the same checks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from tmseeg.pipeline.epochs import Epoch
from tmseeg.stream.block import Block, StreamMeta
from tmseeg.utils import BackgroundWork  # re-exported: the plug-ins' per-epoch thread

if TYPE_CHECKING:
    from tmseeg.metrics.tep import RunningTEP
    from tmseeg.pipeline.channels import BadChannelDetector

__all__ = ["MetricContext", "SessionMetric", "ordered_by_dependencies", "BackgroundWork"]


@dataclass(frozen=True)
class MetricContext:
    """What a metric plug-in may know of its session, and nothing else.

    Parameters
    ----------
    meta : StreamMeta
        The stream's channels (names, types), as the stages give them.
    cfg : mapping
        The whole configuration (read it, never change it).
    roi : callable
        ``roi()``: the ROI channels, fixed with the first epoch.
    bads_from : BadChannelDetector or None
        The bad-channel timeline (``bads_at(sample)``), None when detection is off.
    tep : callable
        ``tep()``: the running TEP (None before the first epoch).
    background : bool
        Whether a plug-in may do its per-epoch work on a thread of its own
        (:class:`BackgroundWork`): the session's offline analysis, where nothing reads a
        plug-in's state until its summary (live, the monitor reads it from its own thread).
    """

    meta: StreamMeta
    cfg: Mapping[str, Any]
    roi: Callable[[], list[str]]
    bads_from: "BadChannelDetector | None" = None
    tep: Callable[[], "RunningTEP | None"] = lambda: None
    background: bool = False


class SessionMetric:
    """A metric that accumulates per block / per epoch and summarises cheaply.

    Subclasses set the class attributes and override the hooks they need; the others do
    nothing.
    """

    #: key of the metric in summaries (``summary.json``, the metrics stream)
    name: str = ""
    #: the per-pulse columns ``on_epoch`` adds to every row (``pulses.csv``)
    columns: tuple[str, ...] = ()
    #: plug-ins (by name) whose columns this one reads: it runs after them when they run;
    #: ``("*",)`` = after every other plug-in
    after: tuple[str, ...] = ()

    def on_block(self, block: Block) -> None:
        """Every processed block, events included, before its epochs."""

    def on_epoch(self, epoch: Epoch, row: dict[str, Any]) -> None:
        """Every EEG epoch with its pulse's row: add :attr:`columns` to ``row``."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready, cheap: what the live monitor, the metrics stream and summary.json show."""
        return {}

    def finish(self) -> None:
        """The end of a recording: release what is held, finalize."""

    def report(self, report) -> None:
        """Add this metric's section to the session's :class:`mne.Report`."""


def ordered_by_dependencies(metrics: Sequence[SessionMetric]) -> list[SessionMetric]:
    """``metrics`` in their given order, except that each comes after the ones it names in
    :attr:`SessionMetric.after` (those that are there: a disabled plug-in is no dependency).

    Raises
    ------
    ValueError
        Metrics that each wait for another (a cycle), named.
    """
    names = {m.name for m in metrics}
    waits = {m.name: (names - {m.name} if "*" in m.after else set(m.after) & names)
             for m in metrics}
    for m in metrics:  # "*" waits for every plug-in that does not itself wait for all
        if "*" in m.after:
            waits[m.name] -= {o.name for o in metrics if "*" in o.after}
    done: list[SessionMetric] = []
    left = list(metrics)
    while left:
        ready = next((m for m in left if waits[m.name] <= {d.name for d in done}), None)
        if ready is None:
            raise ValueError("metric plug-ins wait for each other: "
                             + ", ".join(f"{m.name} after {sorted(waits[m.name])}" for m in left))
        done.append(ready)
        left.remove(ready)
    return done
