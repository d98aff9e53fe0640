"""One processing session: stages -> epochs -> TEP, the same object live and offline.

:class:`TEPSession` is built from a configuration (:mod:`tmseeg.config`) and a stream's
:class:`~tmseeg.stream.block.StreamMeta`. Give it raw blocks in order (from LSL or cut from a
file); it runs the stage chain, cuts epochs, updates the running TEP, keeps one row per pulse,
and tells its listeners about every pulse and TEP update. ``tmseeg run`` and ``tmseeg analyze``
both drive this class, which is why their numbers agree.
"""
from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from tmseeg import __version__
from tmseeg.config import Config, config_hash, fixed_cut_window, planning_cut_window
from tmseeg.metrics import PLUGINS
from tmseeg.metrics.base import MetricContext, SessionMetric, ordered_by_dependencies
from tmseeg.metrics.tep import RunningTEP
from tmseeg.pipeline.base import Chain
from tmseeg.pipeline.channels import BadChannelDetector, BadChannelInterpolation, ChannelTypes
from tmseeg.pipeline.coil import CoilSiteDetector
from tmseeg.pipeline.cutwindow import CutWindow
from tmseeg.pipeline.decay import DecayRemoval
from tmseeg.pipeline.epochs import Epoch, Epocher
from tmseeg.pipeline.filters import BandpassFilter, EpochFilter, NotchFilter
from tmseeg.pipeline.interpolation import PulseInterpolation, RechargeInterpolation
from tmseeg.pipeline.pulses import (DEFAULT_PULSE_PATTERN, MARKER_TOL_MS, DataPulses,
                                   MarkerPulses, PulsePlausibility, TriggerChannelPulses)
from tmseeg.pipeline.pulsesource import CheckedMarkerPulses
from tmseeg.pipeline.reference import AverageReference
from tmseeg.stream.block import EVENT_GAP, EVENT_MARKER, EVENT_PULSE, Block, Event, StreamMeta
from tmseeg.stream.montage import use_montage, with_channel_types
from tmseeg.stream.pulseinfo import PulseInfoJoin, PulseTable, pulse_info, with_info
from tmseeg.utils import now_s

log = logging.getLogger(__name__)


@dataclass
class SessionStages:
    """The stage objects of a session, by role (for displays and reports)."""

    coil: CoilSiteDetector
    bad_detector: BadChannelDetector | None
    chain: Chain
    cut_window: CutWindow | None = None
    decay: DecayRemoval | None = None
    names: list[str] = field(default_factory=list)
    cleaning: Any = None  # tmseeg.pipeline.cleaning.ArtifactCleaning when [cleaning] is on
    pulse_source: CheckedMarkerPulses | None = None  # markers checked against the data
    meta: StreamMeta | None = None  # the stream as the stages see it ([channels] types)
    plausibility: PulsePlausibility | None = None  # refuses pulses no stimulator can fire
    pulse_infos: PulseInfoJoin | None = None  # metadata sent apart from the pulses


def data_pulse_stage(cfg: Config) -> DataPulses:
    """The :class:`~tmseeg.pipeline.pulses.DataPulses` stage ``[pulses]`` declares."""
    p = cfg.pulses
    return DataPulses(channels=p.data_channels or None,
                      threshold_uv_per_ms=p.data_threshold_uv_per_ms or None,
                      refractory_ms=p.refractory_ms)


def cut_window_stage(cfg: Config) -> CutWindow:
    """The :class:`~tmseeg.pipeline.cutwindow.CutWindow` ``[interpolation]`` declares (the
    window measured on the first pulses, or the fixed one)."""
    i = cfg.interpolation
    return CutWindow(fixed_ms=fixed_cut_window(cfg), n_pulses=i.auto_pulses,
                     min_window_ms=tuple(i.auto_min_ms), max_window_ms=tuple(i.auto_max_ms),
                     correct_lag=cfg.pulses.correct_marker_lag)


def interpolation_stage(cfg: Config, channels="eeg", window_from: CutWindow | None = None,
                        max_delay_ms: float | None = None) -> PulseInterpolation:
    """The :class:`~tmseeg.pipeline.interpolation.PulseInterpolation` ``[interpolation]`` declares
    (``max_delay_ms``: the late-marker wait it adds itself, default the whole
    ``[interpolation] max_delay_ms``; see :func:`late_marker_waits_ms`)."""
    i = cfg.interpolation
    return PulseInterpolation(window_ms=planning_cut_window(cfg), method=i.method,
                              fit_ms=i.fit_ms, channels=channels,
                              max_delay_ms=(i.max_delay_ms if max_delay_ms is None
                                            else max_delay_ms), window_from=window_from)


def decay_stage(cfg: Config, channels="eeg", window_from: CutWindow | None = None,
                max_delay_ms: float | None = None) -> DecayRemoval:
    """The :class:`~tmseeg.pipeline.decay.DecayRemoval` ``[decay]`` declares (it
    re-interpolates the cut window of ``[interpolation]`` when that is on; ``max_delay_ms`` as
    for :func:`interpolation_stage`)."""
    i, d = cfg.interpolation, cfg.decay
    return DecayRemoval(model=d.model, fit_window_ms=tuple(d.fit_window_ms),
                        tau_ms=tuple(d.tau_ms), min_snr=d.min_snr, channels=channels,
                        cut_window_ms=planning_cut_window(cfg) if i.enabled else None,
                        interp_method=i.method, interp_fit_ms=i.fit_ms,
                        max_delay_ms=(i.max_delay_ms if max_delay_ms is None
                                      else max_delay_ms), window_from=window_from,
                        fit_on=d.method, min_decay_uv=d.min_decay_uv,
                        min_r2=d.min_r2, fit_reference=d.fit_reference,
                        own_window_end_ms=d.own_window_end_ms)


def late_marker_waits_ms(cfg: Config, source: CheckedMarkerPulses | None = None
                         ) -> tuple[float, float]:
    """What the interpolation and the decay stage each wait for late pulse markers, so that a
    marker up to ``[interpolation] max_delay_ms`` after its sample is still cut and fitted.

    The waits add up along the chain (each stage holds its samples until a late event can no
    longer touch them), so each stage waits only for what is not already covered upstream:

    * a checking pulse ``source`` holds its samples ``source.hold_ms`` and sends every marker
      that arrives within it with its sample; the interpolation stage adds the rest, plus the
      largest shift from a marker to its pulse (``marker_offset_ms`` when negative, and the
      marker lag the source may measure, at most its matching tolerance);
    * the interpolation stage's output carries every pulse it was in time for with its sample,
      so the decay stage behind it needs no wait of its own (only without interpolation does
      it take the interpolation stage's place).

    The checking source's own wait is the allowance (:func:`build_stages`), so by default the
    interpolation stage waits only for that shift. Live, a TEP update goes out ~200 ms sooner
    than with each of the three stages waiting the whole allowance; offline (markers on time)
    nothing changes.
    """
    allowance = float(cfg.interpolation.max_delay_ms)
    interp = allowance
    if source is not None:
        shift = max(0.0, -float(cfg.pulses.marker_offset_ms)) + source.tol_ms
        interp = min(allowance, max(0.0, allowance - source.hold_ms) + shift)
    decay = 0.0 if cfg.interpolation.enabled else interp
    return interp, decay


def epoch_filter(cfg: Config) -> EpochFilter:
    """The TEP path's zero-phase :class:`~tmseeg.pipeline.filters.EpochFilter` ``[filter]``
    declares."""
    f = cfg.filter
    return EpochFilter(l_freq_hz=f.l_freq_hz, h_freq_hz=f.h_freq_hz, order=f.order,
                       notch_hz=f.notch_hz, notch_harmonics=f.notch_harmonics,
                       pad_ms=f.epoch_pad_ms, pad_after_ms=f.epoch_pad_after_ms)


def build_stages(cfg: Config, meta: StreamMeta) -> SessionStages:
    """The stage chain a configuration declares, in the documented order.

    Order: pulse detection -> pulse plausibility -> coil-site estimate -> pulse-window
    interpolation -> decay-artifact removal -> bad-channel detection -> (optional causal
    band-pass / notch) -> bad-channel interpolation -> average reference. The TEP path's
    zero-phase filter runs per epoch (:class:`~tmseeg.pipeline.filters.EpochFilter`), on data
    whose pulse window was already interpolated, so no filter ever smears the pulse.
    """
    # first: takes per-pulse metadata sent on a stream of its own out of the blocks, for the
    # pulses to claim as they leave the stages
    pulse_infos = PulseInfoJoin(tolerance_ms=cfg.pulses.table_tolerance_ms)
    stages: list = [pulse_infos]
    use_montage(cfg.channels.montage)
    typed = with_channel_types(meta, cfg.channels.types)
    if typed is not meta:  # the user's channel types, on every block from here on
        stages.append(ChannelTypes(typed))
        meta = typed
    p = cfg.pulses
    source = p.source
    pulse_source = None
    if source == "markers" and p.check_markers:
        # it waits for late markers as long as [interpolation] max_delay_ms allows (the
        # matching tolerance either side is part of its hold): one allowance for the chain
        allowance_ms = cfg.interpolation.max_delay_ms
        pulse_source = CheckedMarkerPulses(pattern=p.pattern or DEFAULT_PULSE_PATTERN,
                                           offset_ms=p.marker_offset_ms,
                                           detector=data_pulse_stage(cfg),
                                           wait_ms=max(0.0, allowance_ms - 2 * MARKER_TOL_MS))
        stages.append(pulse_source)
    elif source in ("markers", "markers+data"):
        kw = {"pattern": p.pattern} if p.pattern else {}
        stages.append(MarkerPulses(offset_ms=p.marker_offset_ms, **kw))
    if source == "trigger":
        stages.append(TriggerChannelPulses(channel=p.trigger_channel,
                                           refractory_ms=p.refractory_ms))
    if source in ("data", "markers+data"):
        stages.append(data_pulse_stage(cfg))
    # every pulse source's events, before anything cuts or counts them
    plausibility = PulsePlausibility(min_interval_ms=p.min_interval_ms,
                                     max_rate_hz=p.max_rate_hz)
    stages.append(plausibility)
    c = cfg.coil
    # a railed or flat channel (as the bad-channel detector would call flat) is no coil site
    coil = CoilSiteDetector(n_neighbors=c.n_neighbors,
                            flat_uv=cfg.bad_channels.flat_uv)
    stages.append(coil)
    i = cfg.interpolation
    cut = None
    if i.enabled or cfg.decay.enabled:
        # measured on the raw artifact (before anything is cut); holds the first pulses' data
        # until the window is decided, so every later stage cuts every pulse the same way
        cut = cut_window_stage(cfg)
        stages.append(cut)
    # late markers: what the checking pulse source's own hold does not cover
    interp_wait_ms, decay_wait_ms = late_marker_waits_ms(cfg, pulse_source)
    if i.enabled:
        stages.append(interpolation_stage(cfg, window_from=cut, max_delay_ms=interp_wait_ms))
    if i.recharge_delay_ms:
        # before the decay fit, whose window it lies in; the pulses arrive with their sample
        # from the stage above (the decay stage's wait covers the case without it)
        stages.append(RechargeInterpolation(
            delay_ms=i.recharge_delay_ms, window_ms=tuple(i.recharge_window_ms),
            method=i.method, fit_ms=i.fit_ms, max_delay_ms=decay_wait_ms))
    decay = None
    if cfg.decay.enabled:
        decay = decay_stage(cfg, window_from=cut, max_delay_ms=decay_wait_ms)
        stages.append(decay)
    # after the artifact stages (they hold samples back, so the detector sees clean data);
    # before the filters (clipping is only visible unfiltered)
    b = cfg.bad_channels
    detector = None
    if b.detect:
        detector = BadChannelDetector(window_s=b.window_s, flat_uv=b.flat_uv,
                                      noisy_z=b.noisy_z, exclude_ms=tuple(b.exclude_ms),
                                      max_bad_fraction=b.max_bad_fraction,
                                      initial_bads={n: "marked bad in the configuration"
                                                    for n in b.bads})
        stages.append(detector)
    cleaning = None
    if cfg.get("cleaning", {}).get("enabled"):
        # SOUND / SSP-SIR / ICA: after interpolation and decay removal (fitted on clean pulse
        # windows), before filters, bad-channel interpolation and the reference
        from tmseeg.pipeline.cleaning import make_stage
        cleaning = make_stage(cfg, bads_from=detector)
        stages.append(cleaning)
    f = cfg.filter
    if f.continuous:
        if f.l_freq_hz or f.h_freq_hz:
            stages.append(BandpassFilter(l_freq_hz=f.l_freq_hz or None,
                                         h_freq_hz=f.h_freq_hz or None, order=f.order))
        if f.notch_hz:
            stages.append(NotchFilter(freq_hz=f.notch_hz, harmonics=f.notch_harmonics))
    fixed_bads = [] if detector is not None else list(b.bads)
    interpolated = bool(b.interpolate and (detector is not None or b.bads))
    if interpolated:
        stages.append(BadChannelInterpolation(bads_from=detector, bads=fixed_bads))
    if cfg.reference.type == "average":
        # interpolated channels stay in the average: the reference then does not depend on
        # which channels happen to be bad (a channel failing mid-session would otherwise shift
        # every later TEP; on the simulator it biased the ROI N100/P180 by 10-25 %)
        stages.append(AverageReference(exclude_bads=not interpolated, bads_from=detector,
                                       bads=fixed_bads))
    return SessionStages(coil=coil, bad_detector=detector, chain=Chain(stages),
                         names=[getattr(s, "name", type(s).__name__) for s in stages],
                         cleaning=cleaning, cut_window=cut, decay=decay,
                         pulse_source=pulse_source, meta=meta, plausibility=plausibility,
                         pulse_infos=pulse_infos)


class TEPSession:
    """Stages, epochs, running TEP and the per-pulse table of one recording or live stream.

    Parameters
    ----------
    cfg : dict
        From :func:`tmseeg.config.load_config`.
    meta : StreamMeta
        The input stream.
    roi : list of str, optional
        Overrides ``cfg.coil.roi``; empty = the detected coil site and its neighbours.
    keep_epochs : bool
        Keep every epoch (offline analysis writes them to ``-epo.fif``).
    track_decay : bool
        Accumulate what decay removal took out of the averaged epochs
        (:meth:`decay_removed_uv`; offline analysis shows the TEP with and without it).
    plugins_in_background : bool
        Let metric plug-ins do their per-epoch work on threads of their own
        (:class:`~tmseeg.metrics.base.BackgroundWork`; the same numbers). For an offline
        analysis, where nothing reads a plug-in until the end; live, the monitor reads them
        from its own thread while the session runs.

    Attributes
    ----------
    tep : RunningTEP or None
        Created with the first epoch (its time axis and ROI are known then).
    pulses : list of dict
        One row per pulse (see :meth:`_pulse_row` for the columns).
    epochs : list of Epoch
        Kept when ``keep_epochs`` (offline analysis writes them to ``-epo.fif``), their data
        in float32: what ``-epo.fif`` stores (MNE writes single precision), at half the
        memory of a 10-minute session's epochs.
    roi_trials_uv : list of ndarray
        With ``keep_epochs``: each epoch's ROI average (n_times,), one per row of
        ``pulses`` (the report's single-trial image; it outlives ``epochs``, which
        :func:`tmseeg.report.analyze.to_mne` may release).
    """

    def __init__(self, cfg: Config, meta: StreamMeta, roi: list[str] | None = None,
                 keep_epochs: bool = False, track_decay: bool = False,
                 plugins_in_background: bool = False) -> None:
        self.cfg = cfg
        self.config_hash = config_hash(cfg)
        self.version = __version__
        self.stages = build_stages(cfg, meta)
        #: the stream's description as the stages see it (with [channels] types applied)
        self.meta = self.stages.meta
        self.chain = self.stages.chain
        e = cfg.epochs
        self.epocher = Epocher(tmin_ms=e.tmin_ms, tmax_ms=e.tmax_ms,
                               baseline_ms=tuple(e.baseline_ms),
                               reject_uv=e.reject_uv or None,
                               reject_mode=e.reject_mode, fast_ms=e.fast_ms,
                               fast_uv=e.fast_uv,
                               pulse_window_ms=(self.stages.cut_window
                                                if self.stages.cut_window is not None
                                                else planning_cut_window(cfg)),
                               bads_from=self.stages.bad_detector,
                               group_ms=e.pulse_group_ms,
                               epoch_filter=epoch_filter(cfg))
        self.fixed_roi = list(roi or cfg.coil.roi)
        p = cfg.pulses
        #: per-pulse metadata from a file ([pulses] table), joined to the pulse events as they
        #: leave the stages (before the epochs and plug-ins see them)
        self.pulse_table = (PulseTable(p.table, p.table_tolerance_ms) if p.table
                            else None)
        self._n_table_pulses = 0
        self.tep: RunningTEP | None = None
        self.pulses: list[dict] = []
        self.n_rejected = 0  # pulses whose epoch did not enter the average (running count)
        self.epochs: list[Epoch] = []
        self.roi_trials_uv: list[np.ndarray] = []
        self.keep_epochs = keep_epochs
        self.listeners: list[Callable[[dict], None]] = []
        #: called as ``f(epoch, row)`` after each epoch entered the TEP (displays need the data)
        self.epoch_listeners: list[Callable[[Epoch, dict], None]] = []
        self.markers: list[tuple[int, str]] = []
        self.n_gaps = 0  # gaps in the input stream (samples lost on the way)
        self.n_missing = 0
        self._decay_sum: np.ndarray | None = None  # unfiltered, over the padded epoch
        self._decay_names: list[str] = []  # the epochs' channels, in their order
        self._decay_n = 0
        self.track_decay = track_decay
        #: what the plug-ins may know of this session (tmseeg.metrics.base)
        self.context = MetricContext(meta=self.meta, cfg=cfg, roi=self.roi,
                                     bads_from=self.stages.bad_detector, tep=lambda: self.tep,
                                     background=plugins_in_background)
        built = [importlib.import_module(module).make_metric(cfg, self.context)
                 for module in PLUGINS]
        #: the plug-ins that apply (tmseeg.metrics.base), each after those whose columns it reads
        self.metrics: list[SessionMetric] = ordered_by_dependencies(
            [m for m in built if m is not None])

    # -- feeding (the driver, live and offline, is tmseeg.engine.Engine.for_session) ---------
    def _with_table_row(self, event: Event) -> Event:
        """A pulse event with its info message and its row of the pulse table (every pulse
        the pipeline found, in the order found: before the epochs and plug-ins see it)."""
        if event.kind != EVENT_PULSE:
            return event
        info = self.stages.pulse_infos.lookup(event.sample, self.meta.sfreq)
        if self.pulse_table is not None:
            info = {**info, **self.pulse_table.lookup(self._n_table_pulses,
                                                      event.sample / self.meta.sfreq)}
            self._n_table_pulses += 1
        return replace(event, extra=with_info(event.extra, info))

    def after_stages(self, block: Block, received_s: float = math.nan) -> None:
        """Epochs and metrics from a processed block (the engine calls this as ``on_processed``)."""
        if (self.pulse_table is not None or self.stages.pulse_infos.active) and block.events:
            block = replace(block, events=[self._with_table_row(e) for e in block.events])
        for ev in block.events:
            if ev.kind == EVENT_MARKER:
                self.markers.append((ev.sample, ev.label))
            elif ev.kind == EVENT_GAP:
                self.n_gaps += 1
                self.n_missing += int(ev.duration)
        for metric in self.metrics:
            metric.on_block(block)
        for epoch in self.epocher.push(block):
            self._take_epoch(epoch, received_s)

    def finish(self) -> None:
        """End of the recording: release held samples and the last epochs."""
        for rest in self.chain.flush():
            self.after_stages(rest)
        for epoch in self.epocher.flush():
            self._take_epoch(epoch, math.nan)
        for metric in self.metrics:
            metric.finish()
        site = self.stages.coil.site
        if self.tep is not None and not self.fixed_roi and site and site not in self.tep.roi:
            # the ROI is fixed with the first epoch (per-pulse values must go out at once, a
            # closed-loop protocol may be waiting for them); say so if the site moved later
            log.warning("the coil site estimate moved to %s after the ROI was fixed on %s with "
                        "the first epoch; to average over the final site, rerun with --roi %s",
                        site, ",".join(self.tep.roi), ",".join(self.stages.coil.roi))

    # -- epochs -> metrics -------------------------------------------------------------------
    def roi(self) -> list[str]:
        """The ROI in force: configured, else around the detected coil site."""
        if self.fixed_roi:
            return self.fixed_roi
        if self.stages.coil.roi:
            return list(self.stages.coil.roi)
        return list(self.epocher.ch_names)

    def _take_epoch(self, epoch: Epoch, received_s: float) -> None:
        if self.tep is None:
            t = self.cfg.tep
            self.tep = RunningTEP(epoch.ch_names, epoch.times_ms, self.roi(),
                                  peak_windows_ms={k: tuple(v) for k, v in
                                                   t.peak_windows_ms.items()},
                                  early_window_ms=tuple(t.early_window_ms),
                                  post_window_ms=tuple(t.post_window_ms),
                                  pre_window_ms=tuple(t.pre_window_ms))
        added = self.tep.add(epoch)
        if added and self.track_decay and self.stages.decay is not None:
            self._add_decay_removed(epoch)
        if self.keep_epochs:
            self.epochs.append(replace(epoch, data_uv=epoch.data_uv.astype(np.float32)))
            self.roi_trials_uv.append(self.tep.roi_trace_uv(epoch))
        row = self._pulse_row(epoch, added)
        self.n_rejected += not row["kept"]
        # offline analysis has no listeners: no per-epoch summaries to build. Live, the TEP
        # goes out first: the monitor and the metrics stream do not wait for the plug-ins
        # (~10-20 ms an epoch at 64 ch, ~40 ms more when PCIst or a block comparison is due);
        # their columns and summaries follow in a "metrics" update
        if self.listeners:
            tep_summary = self.tep_summary()
            self._publish(self._tep_update(dict(row), tep_summary, received_s))
        for metric in self.metrics:
            metric.on_epoch(epoch, row)
        self.pulses.append(row)
        if self.listeners:
            self._publish(self._metrics_update(row, tep_summary, received_s))
        for epoch_listener in self.epoch_listeners:
            try:
                epoch_listener(epoch, row)
            except Exception:
                log.exception("session epoch listener %r failed", epoch_listener)

    def _add_decay_removed(self, epoch: Epoch) -> None:
        """Accumulate what decay removal took out of this epoch, as the epoch would show it
        (average reference, the epoch filter, baseline), so that the report can show the TEP
        with and without it from this one run."""
        decay = self.stages.decay
        before, after = self._epoch_pad()
        n = epoch.data_uv.shape[1]
        model = decay.removed_uv(epoch.first_sample - before, n + before + after)
        if model is None:
            return
        # summed on the decay rows in the stream's channels; the channel pick and the
        # reference are linear and the same for every epoch: applied once to the sum, at the end
        if self._decay_sum is None:
            self._decay_sum = np.zeros((self.meta.n_channels, n + before + after))
            self._decay_names = list(epoch.ch_names)
        self._decay_sum[decay.rows] += model
        self._decay_n += 1

    def _epoch_pad(self) -> tuple[int, int]:
        """Samples of padding before and after the epoch the epoch filter filters it with."""
        return self.epocher.n_pad, self.epocher.n_pad_after

    def decay_removed_roi_uv(self) -> np.ndarray | None:
        """:meth:`decay_removed_uv` averaged over the TEP's ROI, (n_times,)."""
        removed = self.decay_removed_uv()
        if removed is None or self.tep is None:
            return None
        return removed[self._roi_rows()].mean(axis=0)

    def _roi_rows(self) -> np.ndarray:
        """Rows of the TEP's channels that form its ROI."""
        names = [n.lower() for n in self.tep.ch_names]
        return np.array([names.index(r.lower()) for r in self.tep.roi], dtype=np.intp)

    def decay_removed_uv(self) -> np.ndarray | None:
        """Mean over the averaged epochs of what decay removal took out, (n_channels,
        n_times), in the TEP's channels, reference, filter and baseline (None: no decay stage
        or no epoch). The TEP without decay removal is ``tep.average_uv`` plus this."""
        if self._decay_sum is None or not self._decay_n:
            return None
        x = self._decay_sum[self.meta.index(self._decay_names)] / self._decay_n
        if self.cfg.reference.type == "average":
            x = x - x.mean(axis=0)
        filt, (before, after) = self.epocher.epoch_filter, self._epoch_pad()
        if filt is not None:
            x = filt(x, self.meta.sfreq)
        x = x[:, before:x.shape[1] - after]
        base = self.epocher.baseline_mask
        if base is not None:
            x = x - x[:, base].mean(axis=1, keepdims=True)
        return x

    def _tep_update(self, row: dict, tep_summary: dict, received_s: float) -> dict:
        """The ``"pulse"`` update: this pulse's row as the TEP path made it (the plug-ins'
        columns come with the ``"metrics"`` update), the running TEP's summary and, for a
        metrics outlet, its curves."""
        update = {"type": "pulse", "pulse": row, "tep": tep_summary,
                  "latency_ms": _latency_ms(received_s)}
        if any(getattr(f, "wants_curves", False) for f in self.listeners):  # a metrics outlet
            update["curves"] = self.tep_curves()
        return update

    def _metrics_update(self, row: dict, tep_summary: dict, received_s: float) -> dict:
        """The ``"metrics"`` update that follows each ``"pulse"`` update once the plug-ins took
        the epoch: the whole row (their columns too), the TEP summary again (so one message
        has all a closed-loop protocol reads) and the plug-ins' summaries."""
        return {"type": "metrics", "pulse": row, "tep": tep_summary,
                "metrics": self.metrics_summary(), "latency_ms": _latency_ms(received_s)}

    def _publish(self, update: dict) -> None:
        differences = self.live_offline_differences()
        if differences:  # named where the experimenter's programs see them, not hidden
            update["live_offline_differences"] = differences
        for listener in self.listeners:
            try:
                listener(update)
            except Exception:
                log.exception("session listener %r failed", listener)

    def _pulse_row(self, epoch: Epoch, added: bool) -> dict:
        tep = self.tep
        early = tep.single_trial_early_uv(epoch) if tep is not None else math.nan
        windows = tep.single_trial_window_means_uv(epoch) if tep is not None else {}
        row = {
            "pulse_index": len(self.pulses),
            "sample": int(epoch.sample),
            "time_s": float(epoch.sample / self.meta.sfreq),
            "label": epoch.event.label,
            "kept": bool(added),
            "reason": epoch.reason if epoch.rejected else ("" if added else "non-finite data"),
            "early_tep_ptp_uv": float(early),
            "max_ptp_uv": (float(np.nanmax(epoch.ptp_uv))  # all-NaN: an overwritten epoch
                           if np.isfinite(epoch.ptp_uv).any() else math.nan),
            "n_bad_channels": len(epoch.bads),
            "bad_channels": " ".join(epoch.bads),
            "n_averaged": int(tep.n) if tep is not None else 0,
            "snr_after": float(tep.snr()) if tep is not None and tep.n else math.nan,
            **({"cleaning": self.stages.cleaning.applied_at(epoch.sample)}
               if self.stages.cleaning is not None else {}),
            **(self.stages.decay.pulse_columns(epoch.sample)
               if self.stages.decay is not None else {}),
            **windows,
        }
        # what the lab says about the pulse (intensity, coil position ...), after the columns
        # tmseeg computes; a name that clashes with one of those gets an "info_" prefix
        for key, value in pulse_info(epoch.event).items():
            row[f"info_{key}" if key in row else key] = value
        return row

    def live_offline_differences(self) -> list[str]:
        """Why this run's numbers may differ from ``tmseeg analyze`` of its recording (or the
        reverse): samples lost on the way, markers that came after the decisions they belong
        to. Empty when both must agree to rounding."""
        out = []
        if self.n_gaps:
            out.append(f"{self.n_gaps} gaps in the input stream ({self.n_missing} samples "
                       "lost): the recording and this run saw different data there")
        if self.stages.pulse_source is not None:
            out += self.stages.pulse_source.differences()
        return out

    def metric(self, name: str) -> SessionMetric | None:
        """The plug-in called ``name`` (``"mep"``, ``"plasticity"`` ...), None when it does not
        run in this session (disabled, or nothing to measure: no EMG channel for MEPs)."""
        return next((m for m in self.metrics if m.name == name), None)

    def metrics_summary(self) -> dict[str, Any]:
        """Summaries of the plug-in metrics, by name (JSON-ready)."""
        return {m.name: m.summary() for m in self.metrics}

    def tep_summary(self) -> dict[str, Any]:
        """Peaks, SNR and trial counts of the running TEP, JSON-ready."""
        if self.tep is None:
            return {"n_averaged": 0}
        tep = self.tep
        target = self.cfg.tep.target_snr
        return {
            "n_averaged": int(tep.n),
            "n_rejected": self.n_rejected,
            "roi": list(tep.roi),
            "coil_site": self.stages.coil.site,
            "peaks": {k: {kk: (float(vv) if isinstance(vv, (float, np.floating)) else vv)
                          for kk, vv in v.items() if kk != "window_ms"}
                      for k, v in tep.peaks().items()},
            "snr": _finite_or_none(tep.snr()),
            "target_snr": target,
            "trials_needed": _finite_or_none(tep.trials_needed(target)),
            "bad_channels": dict(self.stages.bad_detector.bads)
            if self.stages.bad_detector is not None else {},
        }

    def tep_curves(self) -> dict[str, Any]:
        """The running ROI-average TEP and GMFP, decimated to ~1 kHz for the metrics stream.

        See :func:`tmseeg.io.metrics_outlet.encode_curves` (every k-th sample of the
        epoch-filtered average, values rounded to 0.001 µV); ``{}`` before the first epoch.
        """
        from tmseeg.io.metrics_outlet import encode_curves

        tep = self.tep
        if tep is None or tep.n == 0:
            return {}
        return encode_curves(tep.times_ms, {"roi_average_uv": tep.roi_average_uv,
                                            "gmfp_uv": tep.gmfp_uv},
                             sfreq_hz=self.meta.sfreq, h_freq_hz=self.cfg.filter.h_freq_hz,
                             n_averaged=int(tep.n), roi=list(tep.roi))


def _latency_ms(received_s: float) -> float:
    """From the arrival of the block that completed an epoch to now (NaN offline)."""
    return (now_s() - received_s) * 1e3 if not math.isnan(received_s) else math.nan


def _finite_or_none(x: float) -> float | None:
    """JSON has no NaN/inf: missing values become null."""
    return float(x) if x is not None and math.isfinite(x) else None
