"""The live monitor window: what an experimenter watches during a TMS-EEG session.

Panels: scrolling raw EEG (min/max decimated; bad channels in red, reason on hover), the
running butterfly TEP with the ROI average, GMFP and peak labels, the latest single trial over
the average, the single-trial image (ROI, trials x time), early-TEP amplitude and SNR per pulse
with the trials-needed estimate, a scalp map at a clicked latency, MEP trace and amplitudes
when an EMG channel is present, a session-quality panel (traffic lights with one line of
advice each, :mod:`tmseeg.gui.quality`), and the plug-in metrics' summaries. Clicking a pulse
in the early-TEP panel says why it was kept or rejected and draws its single trial.

The window never drives acquisition: a Qt timer (<= 60 Hz) reads the latest state from a feed
(:mod:`tmseeg.gui.feed`) whose engine runs in its own thread.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyqtgraph as pg
from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tmseeg._ext.decimate import minmax_decimate
from tmseeg.gui.decimate import RawDecimator
from tmseeg.gui.metrics_view import metrics_lines
from tmseeg.gui.feed import MonitorSnapshot
from tmseeg.gui.quality import Light, reason_counts, session_quality
from tmseeg.gui.topo import TopoInterpolator

SHORTCUTS = [
    ("Space", "pause / resume the display (acquisition never pauses)"),
    ("R", "reset the average (new coil position)"),
    ("S", "save a snapshot PNG"),
    ("A", "save the current average (-ave.fif)"),
    ("+ / -", "raw EEG scale (µV per channel)"),
    ("click on the TEP", "scalp map at that latency"),
    ("click a pulse (early TEP)", "why it was kept or rejected, and its single trial"),
    ("L", "the latest trial again in the trial panel"),
    ("F1 / H", "this help"),
    ("Q / Esc", "quit"),
]

GOOD_PEN = pg.mkPen((30, 30, 30), width=1)
BAD_PEN = pg.mkPen((220, 30, 30), width=1)
ROI_PEN = pg.mkPen((20, 90, 200), width=2)
TRIAL_PEN = pg.mkPen((230, 140, 20), width=1)


def metrics_text(metrics: dict) -> str:
    """The plug-in summaries as labelled numbers with units, a few lines per plug-in
    (:func:`tmseeg.gui.metrics_view.metrics_lines`)."""
    if not metrics:
        return "metrics: (no plug-in metric in this session yet)"
    return "\n".join(metrics_lines(metrics))


class MonitorWindow(QtWidgets.QMainWindow):
    """The monitor on a running feed.

    Parameters
    ----------
    feed : LiveFeed or AttachedFeed
        Started or not (:meth:`start` starts it).
    window_s : float
        Seconds of raw EEG shown.
    n_buckets : int
        Min/max buckets across the raw display (about its width in pixels).
    fps : float
        Display rate limit (<= 60).
    scale_uv : float
        Raw EEG: µV per channel spacing.
    save_dir : str or Path
        Where snapshots and averages go.

    Attributes
    ----------
    before_frame : list of callable
        Called at the start of every frame (test and debugging hooks).
    frame_ms : deque of float
        Duration of the last frames (drawing included), for fps figures.
    """

    def __init__(self, feed, window_s: float = 5.0, n_buckets: int = 1000, fps: float = 60.0,
                 scale_uv: float = 60.0, save_dir: str | Path = ".") -> None:
        super().__init__()
        self.feed = feed
        self.meta = feed.meta
        self.save_dir = Path(save_dir)
        self.scale_uv = float(scale_uv)
        self.paused = False
        self.before_frame: list[Callable[[], None]] = []
        self.frame_ms: deque[float] = deque(maxlen=600)
        self.frame_t: deque[float] = deque(maxlen=120)
        self.n_frames = 0
        self.snap: MonitorSnapshot | None = None
        self._version = -1
        self._bads: dict[str, str] = {}
        self._latency_ms = 100.0
        self._channel: str | None = None
        self._last_status_t = 0.0
        self._dc = np.zeros(self.meta.n_channels)
        self._dc_t = 0.0
        self.setWindowTitle(f"tmseeg monitor — {self.meta.name}")
        pg.setConfigOptions(antialias=False, background="w", foreground="k")
        self.dec = RawDecimator(feed.ring, self.meta.sfreq, window_s, n_buckets)
        self.eeg_rows = np.array([i for i, t in enumerate(self.meta.ch_types)
                                  if t in ("eeg", "emg", "eog")], dtype=np.intp)
        self._build_controls()
        self._build_raw()
        self._build_tep_panels()
        self._build_help()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, int(round(1000.0 / min(fps, 60.0)))))
        self.timer.timeout.connect(self.frame)

    # -- construction ------------------------------------------------------------------------
    def _build_controls(self) -> None:
        tb = self.addToolBar("controls")
        tb.setMovable(False)
        self.pause_action = tb.addAction("Pause", self.toggle_pause)
        tb.addAction("Reset average", self.reset)
        tb.addSeparator()
        tb.addWidget(QtWidgets.QLabel(" ROI "))
        self.roi_edit = QtWidgets.QLineEdit()
        self.roi_edit.setPlaceholderText("coil site + neighbours; e.g. C3,FC1,CP1")
        self.roi_edit.setMaximumWidth(220)
        self.roi_edit.returnPressed.connect(lambda: self.set_roi(
            [s.strip() for s in self.roi_edit.text().split(",") if s.strip()]))
        tb.addWidget(self.roi_edit)
        tb.addWidget(QtWidgets.QLabel(" channel "))
        self.channel_box = QtWidgets.QComboBox()
        self.channel_box.addItem("(none)")
        self.channel_box.addItems(list(self.meta.ch_names))
        self.channel_box.currentTextChanged.connect(self.set_channel)
        tb.addWidget(self.channel_box)
        tb.addWidget(QtWidgets.QLabel(" scale µV "))
        self.scale_box = QtWidgets.QDoubleSpinBox()
        self.scale_box.setRange(1.0, 100000.0)
        self.scale_box.setDecimals(0)
        self.scale_box.setValue(self.scale_uv)
        self.scale_box.valueChanged.connect(self.set_scale)
        tb.addWidget(self.scale_box)
        tb.addSeparator()
        tb.addAction("Snapshot", lambda: self.save_snapshot())
        tb.addAction("Save average", lambda: self.save_average())
        tb.addAction("Help", self.toggle_help)
        for key, fn in [("Space", self.toggle_pause), ("R", self.reset),
                        ("S", lambda: self.save_snapshot()), ("A", lambda: self.save_average()),
                        ("+", lambda: self.set_scale(self.scale_uv / 1.5)),
                        ("=", lambda: self.set_scale(self.scale_uv / 1.5)),
                        ("-", lambda: self.set_scale(self.scale_uv * 1.5)),
                        ("F1", self.toggle_help), ("H", self.toggle_help),
                        ("L", self.latest_trial),
                        ("Q", self.close), ("Esc", self.close)]:
            sc = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            sc.activated.connect(fn)
        self.status_label = QtWidgets.QLabel("starting…")
        self.statusBar().addWidget(self.status_label, 1)

    def _build_raw(self) -> None:
        self.raw_plot = pg.PlotWidget(title=f"raw EEG (last {self.dec.window_s:g} s, as "
                                            "acquired; red = bad channel)")
        p = self.raw_plot.getPlotItem()
        p.setMenuEnabled(False)
        p.setMouseEnabled(x=False, y=False)
        p.hideButtons()
        n = self.meta.n_channels
        p.setYRange(-n + 0.5, 0.5, padding=0)
        p.setXRange(-self.dec.window_s, 0, padding=0)
        p.setLabel("bottom", "time (s)")
        p.getAxis("left").setTicks([[(-i, nm) for i, nm in enumerate(self.meta.ch_names)]])
        p.getAxis("left").setStyle(tickFont=QtGui.QFont("Sans", 6))
        self.raw_curve = pg.PlotCurveItem(pen=GOOD_PEN, connect="finite", skipFiniteCheck=True)
        self.raw_bad_curve = pg.PlotCurveItem(pen=BAD_PEN, connect="finite", skipFiniteCheck=True)
        p.addItem(self.raw_curve)
        p.addItem(self.raw_bad_curve)
        self._offsets = -np.arange(n, dtype=float)
        nb2 = 2 * self.dec.n_buckets
        x = np.append(self.dec.times_s(), np.nan)
        self._raw_x = np.tile(x, n)
        self._raw_y = np.full((n, nb2 + 1), np.nan)
        p.scene().sigMouseMoved.connect(self._raw_hover)

    def _build_tep_panels(self) -> None:
        g = pg.GraphicsLayoutWidget()
        self.tep_view = g
        ci = g.ci
        self.butterfly = ci.addPlot(row=0, col=0, colspan=2, title="TEP (butterfly; blue = ROI)")
        self.butterfly.setLabel("left", "µV")
        self.butterfly.setMenuEnabled(False)
        self.butterfly.addLine(x=0, pen=pg.mkPen((150, 150, 150), style=QtCore.Qt.DashLine))
        self.butterfly_curve = pg.PlotCurveItem(pen=pg.mkPen((170, 170, 170), width=1),
                                                connect="finite", skipFiniteCheck=True)
        self.channel_curve = pg.PlotCurveItem(pen=pg.mkPen((0, 160, 0), width=1))
        self.roi_curve = pg.PlotCurveItem(pen=ROI_PEN)
        for it in (self.butterfly_curve, self.channel_curve, self.roi_curve):
            self.butterfly.addItem(it)
        # one ROI average per block of the session (pre/post ...), when there are blocks
        self.block_curves: dict[str, pg.PlotCurveItem] = {}
        self.block_legend = pg.LegendItem(offset=(-10, 10), labelTextSize="8pt")
        self.block_legend.setParentItem(self.butterfly.getViewBox())
        self.peak_points = pg.ScatterPlotItem(size=7, brush=pg.mkBrush(200, 0, 0))
        self.butterfly.addItem(self.peak_points)
        self.peak_labels: dict[str, pg.TextItem] = {}
        self.latency_line = pg.InfiniteLine(pos=self._latency_ms, angle=90, movable=True,
                                            pen=pg.mkPen((200, 0, 200), width=1))
        self.latency_line.sigPositionChanged.connect(
            lambda line: self.set_latency(float(line.value()), move_line=False))
        self.butterfly.addItem(self.latency_line)
        self.butterfly.scene().sigMouseClicked.connect(self._tep_click)
        self.butterfly.setXRange(-100, 350, padding=0)

        self.gmfp_plot = ci.addPlot(row=1, col=0, title="GMFP (µV)")
        self.gmfp_curve = self.gmfp_plot.plot(pen=pg.mkPen((0, 0, 0), width=1))
        self.gmfp_plot.setXLink(self.butterfly)
        self.topo_plot = ci.addPlot(row=1, col=1, title="scalp map")
        self.topo_plot.setAspectLocked(True)
        self.topo_plot.hideAxis("left")
        self.topo_plot.hideAxis("bottom")
        self.topo_plot.setMouseEnabled(x=False, y=False)
        self.topo = TopoInterpolator(self.meta.ch_names)
        e = self.topo.extent
        self.topo_image = pg.ImageItem()
        self.topo_image.setRect(QtCore.QRectF(-e, -e, 2 * e, 2 * e))
        self.topo_image.setColorMap(pg.colormap.get("CET-D1"))
        self.topo_plot.addItem(self.topo_image)
        t = np.linspace(0, 2 * np.pi, 100)
        self.topo_plot.plot(np.cos(t), np.sin(t), pen=pg.mkPen("k", width=1))
        self.topo_plot.plot([-0.1, 0, 0.1], [0.99, 1.12, 0.99], pen=pg.mkPen("k", width=1))
        if len(self.topo.pos):
            self.topo_plot.addItem(pg.ScatterPlotItem(self.topo.pos[:, 0], self.topo.pos[:, 1],
                                                      size=3, brush=pg.mkBrush("k")))

        self.trial_plot = ci.addPlot(row=2, col=0, title="latest trial (orange) over the ROI average")
        self.trial_curve = self.trial_plot.plot(pen=TRIAL_PEN)
        self.trial_avg_curve = self.trial_plot.plot(pen=ROI_PEN)
        self.trial_plot.setXLink(self.butterfly)
        self.image_plot = ci.addPlot(row=2, col=1, title="single trials (ROI), trials x time")
        self.trial_image = pg.ImageItem()
        self.trial_image.setColorMap(pg.colormap.get("CET-D1"))
        self.image_plot.addItem(self.trial_image)
        self.image_plot.setLabel("left", "trial")

        self.early_plot = ci.addPlot(row=3, col=0, title="early TEP per pulse")
        self.early_plot.setLabel("left", "ptp 15-60 ms (µV)")
        tip = self._pulse_tip
        self.early_kept = pg.ScatterPlotItem(size=5, brush=pg.mkBrush(20, 90, 200),
                                             hoverable=True, tip=tip)
        self.early_rej = pg.ScatterPlotItem(size=7, symbol="x", brush=pg.mkBrush(150, 150, 150),
                                            pen=pg.mkPen(150, 150, 150), hoverable=True,
                                            tip=tip)
        for item in (self.early_kept, self.early_rej):
            self.early_plot.addItem(item)
            item.sigClicked.connect(lambda _item, points, _ev=None: points is not None and len(
                points) and self.show_pulse(int(points[0].data())))
        self.early_plot.setLabel("bottom", "pulse")
        self.snr_plot = ci.addPlot(row=3, col=1, title="SNR vs trials")
        self.snr_curve = self.snr_plot.plot(pen=pg.mkPen((20, 90, 200), width=1), symbol="o",
                                            symbolSize=3)
        self.snr_pred_curve = self.snr_plot.plot(pen=pg.mkPen((120, 120, 120),
                                                              style=QtCore.Qt.DashLine))
        self.snr_target = pg.InfiniteLine(angle=0, pen=pg.mkPen((0, 150, 0),
                                                                style=QtCore.Qt.DotLine))
        self.snr_plot.addItem(self.snr_target)
        self.snr_plot.setLabel("bottom", "trials")

        emg = [self.meta.ch_names[i] for i in self.meta.picks("emg")]
        self.mep_plot = ci.addPlot(row=4, col=0, title=f"MEP ({emg[0]}, latest)" if emg
                                   else "MEP: no EMG channel in this stream")
        self.mep_curve = self.mep_plot.plot(pen=pg.mkPen((120, 0, 160), width=1))
        self.mep_amp_plot = ci.addPlot(row=4, col=1, title="MEP peak-to-peak (µV) per pulse")
        self.mep_amp = pg.ScatterPlotItem(size=5, brush=pg.mkBrush(120, 0, 160))
        self.mep_amp_plot.addItem(self.mep_amp)
        if not emg:
            ci.layout.setRowStretchFactor(4, 0)
            self.mep_plot.setMaximumHeight(60)
            self.mep_amp_plot.setMaximumHeight(60)

        self.metrics_box = QtWidgets.QPlainTextEdit()
        self.metrics_box.setReadOnly(True)
        self.metrics_box.setMaximumHeight(150)
        self.metrics_box.setPlainText(metrics_text({}))
        right = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(right)
        lay.setContentsMargins(0, 0, 0, 0)
        self.tep_info = QtWidgets.QLabel("TEP: waiting for the first complete epoch")
        lay.addWidget(self.tep_info)
        self.quality_label = QtWidgets.QLabel("session quality: waiting for data")
        self.quality_label.setTextFormat(QtCore.Qt.RichText)
        self.quality_label.setWordWrap(True)
        self.quality_lights: list[Light] = []
        lay.addWidget(self.quality_label)
        self.pulse_label = QtWidgets.QLabel("")
        self.pulse_label.setWordWrap(True)
        for label in (self.tep_info, self.quality_label, self.pulse_label):
            # long texts wrap or clip; they never widen the pane beyond the window
            label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
            label.setMinimumWidth(1)
        self.selected_pulse: int | None = None
        lay.addWidget(self.pulse_label)
        lay.addWidget(g, 1)
        lay.addWidget(self.metrics_box)
        split = QtWidgets.QSplitter()
        split.addWidget(self.raw_plot)
        split.addWidget(right)
        split.setSizes([700, 900])
        self.setCentralWidget(split)

    def _build_help(self) -> None:
        text = "<b>tmseeg monitor — keys</b><br>" + "<br>".join(
            f"<b>{k}</b>: {v}" for k, v in SHORTCUTS)
        self.help = QtWidgets.QLabel(text, self.centralWidget())
        self.help.setStyleSheet("background: rgba(255,255,230,235); border: 1px solid #888;"
                                " padding: 10px; font-size: 12px")
        self.help.adjustSize()
        self.help.move(30, 30)
        self.help.hide()

    # -- controls ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the feed (if not running) and the display timer."""
        if not self.feed.running:
            self.feed.start()
        self.timer.start()

    def toggle_pause(self) -> None:
        """Freeze / unfreeze the display; acquisition and averaging go on."""
        self.paused = not self.paused
        self.pause_action.setText("Resume" if self.paused else "Pause")
        self.update_status()

    def toggle_help(self) -> None:
        self.help.setVisible(not self.help.isVisible())
        self.help.raise_()

    def latest_trial(self) -> None:
        """Back from a clicked pulse to the latest trial in the trial panel."""
        self.selected_pulse = None
        self.pulse_label.setText("")
        self.trial_plot.setTitle("latest trial (orange) over the ROI average")

    def reset(self) -> None:
        """New coil position: the running average and per-pulse panels start again."""
        self.latest_trial()
        self.feed.reset()
        self._version = -1
        self.snap = None
        for c in (self.butterfly_curve, self.roi_curve, self.channel_curve, self.gmfp_curve,
                  self.trial_curve, self.trial_avg_curve, self.snr_curve, self.snr_pred_curve,
                  self.mep_curve):
            c.setData([], [])
        for s in (self.early_kept, self.early_rej, self.peak_points, self.mep_amp):
            s.setData([], [])
        for curve in self.block_curves.values():
            curve.setData([], [])
        for lab in self.peak_labels.values():
            lab.hide()
        self.trial_image.clear()
        self.topo_image.clear()
        self.tep_info.setText("TEP: reset — waiting for the next epoch")
        self.statusBar().showMessage("average reset", 3000)

    def set_roi(self, names: Sequence[str]) -> None:
        """ROI for the displayed average (empty = the session's)."""
        try:
            names = self.feed.set_roi(names) if names else []
        except (KeyError, RuntimeError) as err:
            self.statusBar().showMessage(str(err), 8000)
            return
        self.roi_edit.setText(",".join(names))
        self._version = -1

    def set_channel(self, name: str) -> None:
        self._channel = name if name in self.meta.ch_names else None
        self._version = -1

    def set_scale(self, scale_uv: float) -> None:
        """µV per channel spacing in the raw display."""
        self.scale_uv = float(max(1.0, scale_uv))
        if abs(self.scale_box.value() - self.scale_uv) > 0.5:
            self.scale_box.setValue(self.scale_uv)

    def set_latency(self, latency_ms: float, move_line: bool = True) -> None:
        """Scalp map at ``latency_ms`` after the pulse."""
        self._latency_ms = float(latency_ms)
        if move_line:
            self.latency_line.setValue(self._latency_ms)
        self._draw_topo()

    # -- frame -------------------------------------------------------------------------------
    def frame(self) -> None:
        """One display update (called by the timer)."""
        t0 = time.perf_counter()
        for hook in self.before_frame:
            hook()
        if not self.paused:
            self._draw_raw()
            snap = self.feed.snapshot(self._version)
            if snap is not None:
                self._version = snap.version
                self.snap = snap
                self._draw_tep(snap)
        if t0 - self._last_status_t > 0.5:
            self._last_status_t = t0
            self.update_status()
        self.n_frames += 1
        self.frame_t.append(t0)
        self.frame_ms.append((time.perf_counter() - t0) * 1e3)

    def _draw_raw(self) -> None:
        self.dec.update()
        env = self.dec.envelope()
        now = time.monotonic()
        if now - self._dc_t > 0.5:  # display offset per channel (amplifier DC), twice a second
            self._dc_t = now
            with np.errstate(all="ignore"):
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    dc = np.nanmedian(env[:, ::8], axis=1)
            self._dc = np.where(np.isfinite(dc), dc, 0.0)
        y = self._raw_y
        np.subtract(env, self._dc[:, None], out=y[:, :-1])
        y[:, :-1] *= 1.0 / self.scale_uv
        np.clip(y[:, :-1], -1.5, 1.5, out=y[:, :-1])
        y[:, :-1] += self._offsets[:, None]
        self._bads = self.feed.bads()
        bad_rows = [i for i, n in enumerate(self.meta.ch_names) if n in self._bads]
        if bad_rows:
            good = y.copy()
            good[bad_rows] = np.nan
            bad = np.full_like(y, np.nan)
            bad[bad_rows] = y[bad_rows]
            self.raw_curve.setData(self._raw_x, good.ravel())
            self.raw_bad_curve.setData(self._raw_x, bad.ravel())
        else:
            self.raw_curve.setData(self._raw_x, y.ravel())
            self.raw_bad_curve.setData([], [])

    def raw_channel_info(self, y: float) -> str:
        """Hover text for the raw display at height ``y``: channel, and why it is bad."""
        i = int(round(-y))
        if not 0 <= i < self.meta.n_channels:
            return ""
        name = self.meta.ch_names[i]
        reason = self._bads.get(name)
        return f"{name}: BAD — {reason}" if reason else f"{name} ({self.meta.ch_types[i]})"

    def _raw_hover(self, pos) -> None:
        vb = self.raw_plot.getPlotItem().vb
        if not vb.sceneBoundingRect().contains(pos):
            return
        y = vb.mapSceneToView(pos).y()
        self.raw_plot.setToolTip(self.raw_channel_info(y))

    def _tep_click(self, ev) -> None:
        vb = self.butterfly.vb
        if vb.sceneBoundingRect().contains(ev.scenePos()):
            self.set_latency(vb.mapSceneToView(ev.scenePos()).x())

    def _draw_tep(self, s: MonitorSnapshot) -> None:
        info = [f"TEP: {s.n_averaged} epochs averaged"]
        if s.roi:
            info.append("ROI " + ",".join(s.roi))
        if s.snr.size and math.isfinite(s.snr[-1]):
            info.append(f"SNR {s.snr[-1]:.2f}")
        if math.isfinite(s.trials_needed):
            info.append(f"~{s.trials_needed:.0f} trials for SNR {s.target_snr:g}")
        if s.bads:
            info.append("bad: " + ", ".join(s.bads))
        if s.note:
            info.append(s.note)
        self.tep_info.setText(" | ".join(info))
        if s.roi_average_uv is not None and s.times_ms is not None:
            self._draw_curves(s)
            self._draw_blocks(s)
        self._draw_peaks(s)
        self._draw_per_pulse(s)
        self._draw_mep(s)
        self._draw_topo()
        self.metrics_box.setPlainText(metrics_text(s.metrics))

    def _draw_curves(self, s: MonitorSnapshot) -> None:
        t = s.times_ms
        self.roi_curve.setData(t, s.roi_average_uv)
        self.trial_avg_curve.setData(t, s.roi_average_uv)
        if s.gmfp_uv is not None:
            self.gmfp_curve.setData(t, s.gmfp_uv)
        avg = s.average_uv
        if avg is None:  # attached: the metrics stream carries the ROI average and GMFP only
            self.butterfly_curve.setData([], [])
            self.channel_curve.setData([], [])
            return
        n_ch, n_t = avg.shape
        bucket = max(1, n_t // 1000)
        nb = n_t // bucket
        env = np.empty((n_ch, 2 * nb + 1))
        env[:, -1] = np.nan
        minmax_decimate(np.ascontiguousarray(avg), bucket, env)
        tx = np.append(np.repeat(t[:nb * bucket:bucket], 2), np.nan)
        self.butterfly_curve.setData(np.tile(tx, n_ch), env.ravel())
        if self._channel is not None and self._channel in s.ch_names:
            self.channel_curve.setData(t, avg[s.ch_names.index(self._channel)])
        else:
            self.channel_curve.setData([], [])
        if s.last_trial_roi_uv is not None and self.selected_pulse is None:
            self.trial_curve.setData(t, s.last_trial_roi_uv)
        if s.trial_image_uv is not None and s.trial_image_uv.size:
            img = s.trial_image_uv
            fin = np.abs(img[np.isfinite(img)])
            lim = float(np.percentile(fin, 98)) if fin.size else 1.0
            lim = lim if lim > 0 else 1.0
            self.trial_image.setImage(img.T, levels=(-lim, lim), autoLevels=False)
            tt = s.trial_times_ms
            dt = (tt[1] - tt[0]) if tt.size > 1 else 1.0
            self.trial_image.setRect(QtCore.QRectF(tt[0], 0, dt * tt.size, img.shape[0]))

    def _draw_peaks(self, s: MonitorSnapshot) -> None:
        xs, ys = [], []
        for name, pk in s.peaks.items():
            lab = self.peak_labels.get(name)
            if lab is None:
                lab = pg.TextItem(name, color=(200, 0, 0), anchor=(0.5, 1.2))
                self.butterfly.addItem(lab)
                self.peak_labels[name] = lab
            lat, amp = pk.get("latency_ms", math.nan), pk.get("amplitude_uv", math.nan)
            if pk.get("found") and math.isfinite(lat) and math.isfinite(amp):
                lab.setText(f"{name}")
                lab.setAnchor((0.5, 1.2) if name.startswith("P") else (0.5, -0.2))
                lab.setPos(lat, amp)
                lab.show()
                xs.append(lat)
                ys.append(amp)
            else:
                lab.hide()
        self.peak_points.setData(xs, ys)

    def _draw_per_pulse(self, s: MonitorSnapshot) -> None:
        k = s.kept
        idx = s.pulse_index.astype(int)
        self.early_kept.setData(s.pulse_index[k], s.early_ptp_uv[k], data=idx[k])
        # a rejected pulse without a finite early TEP still shows (at 0), so it can be asked
        rej = ~k
        y = np.where(np.isfinite(s.early_ptp_uv), s.early_ptp_uv, 0.0)
        self.early_rej.setData(s.pulse_index[rej], y[rej], data=idx[rej])
        self._reasons = dict(zip(idx.tolist(), s.reasons)) if s.reasons else {}
        n_rej = int(rej.sum())
        counts = reason_counts([r for r, kk in zip(s.reasons, k) if not kk])
        title = "early TEP per pulse"
        if k.size:  # two short lines: a long title widens its column beyond the window
            title += f"<br>{int(k.sum())} kept, {n_rej} rejected" + (
                ": " + ", ".join(f"{kind.split()[0]} {m}" for kind, m in counts[:3])
                if counts else "")
        if title != getattr(self, "_early_title", None):
            self._early_title = title
            self.early_plot.setTitle(title, size="9pt")
        if s.snr.size:
            fin = np.isfinite(s.snr)
            self.snr_curve.setData(s.snr_n[fin], s.snr[fin])
        else:
            self.snr_curve.setData([], [])
        if s.snr_predicted.size:
            self.snr_pred_curve.setData(np.arange(1, s.snr_predicted.size + 1), s.snr_predicted)
        if math.isfinite(s.target_snr):
            self.snr_target.setValue(s.target_snr)
        need = (f"~{s.trials_needed:.0f} trials for SNR {s.target_snr:g}"
                if math.isfinite(s.trials_needed) else "trials needed: n/a")
        self.snr_plot.setTitle(f"SNR vs trials ({need})")

    def _pulse_tip(self, x, y, data) -> str:
        """Hover text of a pulse in the early-TEP panel."""
        why = getattr(self, "_reasons", {}).get(int(data), "")
        return f"pulse {int(data)}: " + (f"rejected: {why}" if why else "kept") + \
            f"\nearly TEP {y:.1f} µV (click: its single trial)"

    def show_pulse(self, pulse_index: int) -> str:
        """Say why a pulse was kept or rejected, and draw its single trial (ROI) over the
        average in the trial panel; returns the text shown."""
        self.selected_pulse = int(pulse_index)
        got = self.feed.pulse_trial(pulse_index)
        why = getattr(self, "_reasons", {}).get(int(pulse_index))
        if got is not None:
            times, trace, row = got
            why = row.get("reason", why) or ""
            self.trial_curve.setData(times, trace)
            t = row.get("time_s")
            where = f" at {t:.1f} s" if isinstance(t, float) and math.isfinite(t) else ""
            self.trial_plot.setTitle(f"pulse {pulse_index}{where} (orange) over the ROI average")
        else:
            where = ""
        text = (f"pulse {pulse_index}{where}: "
                + (f"REJECTED — {why}" if why else "kept in the average")
                + ("" if got is not None else " (its single trial is not kept for display)"))
        self.pulse_label.setText(text)
        return text

    def update_quality(self, status=None) -> list[Light]:
        """Recompute the session-quality lights and show them."""
        if self.snap is None:
            return self.quality_lights
        lights = session_quality(self.snap, status, self.feed.line_noise())
        self.quality_lights = lights
        rows = []
        for light in lights:
            r, g, b = light.colour
            advice = f" — <i>{light.advice}</i>" if light.advice else ""
            rows.append(f'<span style="color: rgb({r},{g},{b}); font-size: 13px">&#9679;</span>'
                        f" <b>{light.name}</b>: {light.value}{advice}")
        self.quality_label.setText('<div style="font-size: 11px">' + "<br>".join(rows)
                                   + "</div>")
        return lights

    #: colours of the blocks' ROI averages, in block order (the first is the baseline)
    BLOCK_COLOURS = [(60, 60, 60), (220, 90, 20), (30, 150, 60), (150, 40, 170), (0, 140, 170)]

    def block_labels(self, s: MonitorSnapshot) -> dict[str, str]:
        """Legend text per block: its epochs, and for the others the early TEP's change
        against the baseline with Hedges' g and its 95 % CI (the plasticity plug-in's)."""
        plast = (s.metrics or {}).get("plasticity") or {}
        early = ((plast.get("per_trial") or {}).get("early_tep_ptp_uv") or {})
        vs = early.get("vs_baseline") or {}
        out = {}
        for label, n in s.block_n.items():
            text = f"{label} ({n})"
            comp = vs.get(label) or {}
            if "hedges_g" in comp and comp["hedges_g"] is not None \
                    and math.isfinite(comp["hedges_g"]):
                lo, hi = (comp.get("g_ci") or [math.nan, math.nan])[:2]
                text += (f": early TEP {comp['diff']:+.1f} µV, g {comp['hedges_g']:+.2f}"
                         + (f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else ""))
            elif comp.get("note"):
                text += f": {comp['note']}"
            elif label == plast.get("baseline"):
                text += ": baseline"
            out[label] = text
        return out

    def _draw_blocks(self, s: MonitorSnapshot) -> None:
        if len(s.block_roi_uv) < 2 or s.times_ms is None:
            return
        labels = self.block_labels(s)
        if set(labels) != set(self.block_curves) or \
                labels != getattr(self, "_block_texts", None):
            self.block_legend.clear()
            for k, label in enumerate(labels):
                if label not in self.block_curves:
                    colour = self.BLOCK_COLOURS[k % len(self.BLOCK_COLOURS)]
                    curve = pg.PlotCurveItem(pen=pg.mkPen(colour, width=2))
                    self.butterfly.addItem(curve)
                    self.block_curves[label] = curve
                self.block_legend.addItem(self.block_curves[label], labels[label])
            self._block_texts = labels
        for label, y in s.block_roi_uv.items():
            self.block_curves[label].setData(s.times_ms, y)

    def _draw_mep(self, s: MonitorSnapshot) -> None:
        if s.mep_last_uv is not None and s.mep_times_ms is not None:
            self.mep_curve.setData(s.mep_times_ms, s.mep_last_uv)
        if s.mep_ptp_uv.size:
            self.mep_amp.setData(np.arange(s.mep_ptp_uv.size), s.mep_ptp_uv)
        # a threshold hunt or a motor map: what the MEP plug-in concluded so far
        mep = (s.metrics or {}).get("mep") or {}
        said = []
        if mep.get("motor_threshold_ml_pct") is not None:
            ci = mep.get("motor_threshold_ml_ci_pct") or [None, None]
            said.append(f"MT {mep['motor_threshold_ml_pct']:.1f} % MSO" + (
                f" [{ci[0]:.1f}, {ci[1]:.1f}]" if None not in ci else ""))
        if mep.get("hotspot"):
            hs = mep["hotspot"]
            said.append(f"hotspot {hs['hotspot']} (best in {100 * hs['p_best']:.0f} %)")
        title = "MEP peak-to-peak (µV) per pulse" + (": " + "; ".join(said) if said else "")
        if title != getattr(self, "_mep_title", None):
            self._mep_title = title
            self.mep_amp_plot.setTitle(title)

    def _draw_topo(self) -> None:
        s = self.snap
        if s is None or s.average_uv is None or s.times_ms is None:
            return
        i = int(np.argmin(np.abs(s.times_ms - self._latency_ms)))
        img = self.topo.image(s.average_uv[:, i])
        lim = float(np.nanmax(np.abs(img))) if np.isfinite(img).any() else 1.0
        self.topo_image.setImage(img, levels=(-lim, lim), autoLevels=False)
        self.topo_plot.setTitle(f"scalp map at {s.times_ms[i]:.0f} ms (±{lim:.1f} µV)")

    def update_status(self) -> None:
        """Status bar: stream, rate, gaps, latency, display rate."""
        st = self.feed.status()
        fps = self.fps()
        text = (f"{st.stream}  {st.n_channels} ch @ {st.rate_hz:.0f} Hz (nominal "
                f"{st.sfreq_hz:g})  |  gaps {st.n_gaps} ({st.n_missing} samples dropped)  |  "
                f"transport {st.transport_latency_ms:.2f} ms, processing p50 "
                f"{st.processing_latency_ms_p50:.2f} / p99 {st.processing_latency_ms_p99:.2f} ms"
                + (f", updates p99 {st.update_latency_ms_p99:.0f} ms"
                   if np.isfinite(st.update_latency_ms_p99) else "")
                + (f"  |  {st.n_skipped_samples} samples NOT PROCESSED (processing behind)"
                   if st.n_skipped_samples else "")
                + f"  |  pulses {st.n_pulses}  |  display {fps:.0f} fps")
        if st.no_data_s > 0:  # the stream is gone: say so first, while it lasts
            text = f"NO DATA for {st.no_data_s:.1f} s (stream gone? waiting for it)  |  " + text
        if self.paused:
            text += "  |  DISPLAY PAUSED (acquiring)"
        if self.feed.error is not None:
            text += f"  |  ENGINE STOPPED: {self.feed.error}"
        self.status_label.setText(text)
        self.update_quality(st)

    def fps(self) -> float:
        """Display frames per second over the last frames."""
        if len(self.frame_t) < 2:
            return 0.0
        return (len(self.frame_t) - 1) / max(self.frame_t[-1] - self.frame_t[0], 1e-9)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        """Stop drawing, then stop the engine thread and wait for it."""
        self.timer.stop()
        self.feed.stop()
        super().closeEvent(event)

    # -- outputs -----------------------------------------------------------------------------
    def save_snapshot(self, path: str | Path | None = None) -> Path:
        """Write the window as a PNG (works offscreen); returns the path."""
        if path is None:
            path = self.save_dir / time.strftime("tmseeg-monitor-%Y%m%d-%H%M%S.png")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write the snapshot {path}")
        self.statusBar().showMessage(f"snapshot saved: {path}", 5000)
        return path

    def save_average(self, path: str | Path | None = None) -> Path:
        """Save the current average: MNE ``-ave.fif`` or ``.npz`` (+ ``.json`` sidecar)."""
        s = self.feed.snapshot()
        if s is None or s.average_uv is None:
            self.statusBar().showMessage("no average yet", 5000)
            raise RuntimeError("no average to save yet")
        if path is None:
            path = self.save_dir / time.strftime("tmseeg-%Y%m%d-%H%M%S-ave.fif")
        return save_average(s, path, self.meta.sfreq)


def save_average(snap: MonitorSnapshot, path: str | Path, sfreq: float) -> Path:
    """Write a snapshot's average TEP as MNE ``-ave.fif`` or as ``.npz`` + ``.json``.

    Parameters
    ----------
    snap : MonitorSnapshot
    path : str or Path
        ``*-ave.fif`` / ``*_ave.fif`` (MNE Evoked, volts) or ``*.npz`` (µV arrays; a JSON
        sidecar with ROI, peaks, SNR and bad channels is written next to it).
    sfreq : float
        Sampling rate of the epochs (Hz).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"n_averaged": snap.n_averaged, "roi": snap.roi, "bad_channels": snap.bads,
            "peaks": snap.peaks, "trials_needed": snap.trials_needed,
            "snr": float(snap.snr[-1]) if snap.snr.size else None}
    if path.suffix == ".fif":
        import mne
        from tmseeg.stream.montage import standard_montage
        info = mne.create_info(list(snap.ch_names), sfreq, "eeg")
        info["bads"] = [b for b in snap.bads if b in snap.ch_names]
        ev = mne.EvokedArray(np.nan_to_num(snap.average_uv) * 1e-6, info,
                             tmin=float(snap.times_ms[0]) / 1000.0, nave=max(snap.n_averaged, 1),
                             comment="tmseeg live average")
        try:
            ev.set_montage(standard_montage(), on_missing="ignore")
        except Exception:
            pass
        ev.save(path, overwrite=True, verbose="error")
    else:
        path = path.with_suffix(".npz")
        np.savez(path, times_ms=snap.times_ms, average_uv=snap.average_uv,
                 roi_average_uv=snap.roi_average_uv, gmfp_uv=snap.gmfp_uv,
                 ch_names=np.array(snap.ch_names))
    from tmseeg.utils import jsonable
    path.with_suffix(".json").write_text(json.dumps(jsonable(meta), indent=1))
    return path
