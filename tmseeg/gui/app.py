"""Running the monitor: on screen, or offscreen writing snapshots (``--snapshot-every``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def has_display() -> bool:
    """True if a window can be shown (X11 or Wayland display set, or macOS / Windows)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def gui_available() -> tuple[bool, str]:
    """Whether the GUI stack imports; the reason when it does not."""
    try:
        import pyqtgraph  # noqa: F401
        from pyqtgraph.Qt import QtWidgets  # noqa: F401
    except Exception as err:  # missing package or system library
        return False, (f"the monitor needs pyqtgraph + PySide6 ({err}); install them with "
                       "`pip install tmseeg[gui]`")
    return True, ""


def run_monitor(feed, duration_s: float | None = None, snapshot_every_s: float | None = None,
                snapshot_dir: str | Path = ".", headless: bool = False, window_s: float = 5.0,
                size: tuple[int, int] = (1600, 1000), on_snapshot=None) -> int:
    """Open the monitor on ``feed`` and run the Qt event loop until closed or ``duration_s``.

    Parameters
    ----------
    feed : LiveFeed or AttachedFeed
        Not yet started (the window starts it and stops it on close).
    duration_s : float or None
        Close after this many seconds (None: until the window is closed / Ctrl-C).
    snapshot_every_s : float or None
        Write ``monitor-NNNN.png`` into ``snapshot_dir`` at this interval (and at the end).
    headless : bool
        Render offscreen (``QT_QPA_PLATFORM=offscreen``): nothing is shown, snapshots are
        still written.
    on_snapshot : callable, optional
        Called with each snapshot path.

    Returns
    -------
    int
        0 (the exit status).
    """
    if headless or not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import pyqtgraph as pg
    from pyqtgraph.Qt import QtCore

    from tmseeg.gui.monitor import MonitorWindow

    # the engine thread waits for the GIL at most this long while the GUI thread runs Python
    sys.setswitchinterval(0.001)
    app = pg.mkQApp("tmseeg monitor")
    win = MonitorWindow(feed, window_s=window_s, save_dir=snapshot_dir)
    win.resize(*size)
    win.show()
    win.start()
    timers = []
    n_snap = [0]
    snap_dir = Path(snapshot_dir)

    def snapshot() -> None:
        n_snap[0] += 1
        path = win.save_snapshot(snap_dir / f"monitor-{n_snap[0]:04d}.png")
        print(f"snapshot {path}", flush=True)
        if on_snapshot is not None:
            on_snapshot(path)

    if snapshot_every_s:
        t = QtCore.QTimer()
        t.timeout.connect(snapshot)
        t.start(int(snapshot_every_s * 1000))
        timers.append(t)
    if duration_s:
        def finish() -> None:
            if snapshot_every_s:
                snapshot()
            win.close()
        QtCore.QTimer.singleShot(int(duration_s * 1000), finish)
    # Ctrl-C / SIGTERM close the window (the engine thread is then joined); Python signal
    # handlers run only between Qt events, so an idle timer gives them a turn
    import signal
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, lambda *_: win.close())
        except ValueError:  # not the main thread
            pass
    tick = QtCore.QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(200)
    timers.append(tick)
    try:
        app.exec()
    except KeyboardInterrupt:
        pass
    finally:
        if win.isVisible():
            win.close()
        feed.stop()
    st = feed.status()
    print("final: " + st.line())
    return 0
