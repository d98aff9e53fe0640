"""The session-quality panel: traffic lights, each from measured values with a documented
threshold, and one line of advice for the person at the coil.

:func:`session_quality` is pure (a snapshot and the engine status in, lights out), so it is
tested without Qt; the monitor draws its lights. The thresholds are :data:`THRESHOLDS`; the
README's "session quality" table lists them.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

__all__ = ["Light", "THRESHOLDS", "session_quality", "line_noise_pct", "reason_counts"]

OK, WARN, BAD, WAIT = "ok", "warn", "bad", "wait"

#: colours of the lights (RGB)
COLOURS = {OK: (30, 150, 60), WARN: (230, 150, 0), BAD: (210, 30, 30), WAIT: (150, 150, 150)}

#: (warn from, bad from) per light; see the README's "session quality" table
THRESHOLDS: dict[str, Any] = {
    # % of the 1-100 Hz power of the raw EEG within 1 Hz of 50/60 Hz and harmonics (median
    # over channels, last 2 s)
    "line_noise_pct": (10.0, 30.0),
    # share of EEG channels marked bad
    "bad_channels_pct": (1e-9, 10.0),
    # largest |ROI average| in the 10 ms after the interpolated window (µV): decay left over
    "residual_artifact_uv": (10.0, 30.0),
    # TMS-evoked muscle in the early TEP: peak-to-peak (µV) of the ROI average's fast part
    # (what a 10-ms moving average removes: > ~50 Hz) from 3 ms after the cut to 30 ms
    "muscle_fast_uv": (10.0, 30.0),
    # early TEP (15-60 ms ptp of the ROI average) over the ptp of as long a baseline stretch
    # (warn below the first, bad below the second: an inverted light)
    "early_tep_ratio": (3.0, 1.5),
    # share of pulses whose epoch was rejected
    "rejected_pct": (20.0, 50.0),
    # stream: |rate - nominal| in %
    "rate_error_pct": (2.0, 10.0),
    # stream: transport latency (LSL time of arrival - time stamp of the newest sample), ms
    "transport_latency_ms": (50.0, 500.0),
    # stream: p99 from a block's arrival to the end of its processing (TEP updates), ms
    "update_latency_ms": (1000.0, 5000.0),
    # epochs before the early-TEP and muscle lights judge (fewer: "wait")
    "min_trials": 10,
}

_LINE_HZ = (50.0, 60.0)


@dataclass(frozen=True)
class Light:
    """One line of the panel: what, how it stands, the value measured, what to do."""

    name: str
    level: str  # "ok", "warn", "bad" or "wait"
    value: str
    advice: str = ""

    @property
    def colour(self) -> tuple[int, int, int]:
        return COLOURS[self.level]


def _level(value: float, warn: float, bad: float) -> str:
    """Higher is worse when ``bad >= warn``; lower is worse when ``bad < warn``."""
    if not math.isfinite(value):
        return WAIT
    if bad >= warn:
        return BAD if value >= bad else WARN if value >= warn else OK
    return BAD if value < bad else WARN if value < warn else OK


def line_noise_pct(data_uv: np.ndarray, sfreq: float) -> tuple[float, float]:
    """Line noise of raw EEG: the median over channels of the share (%) of 1-100 Hz power
    within 1 Hz of the mains frequency and its harmonics, and that frequency (50 or 60 Hz,
    whichever holds more). ``data_uv`` is (n_channels, n_samples); NaN when too short."""
    x = np.asarray(data_uv, dtype=float)
    if x.ndim != 2 or x.shape[1] < int(sfreq) or sfreq < 250.0:
        return math.nan, math.nan
    x = x[np.isfinite(x).all(axis=1)]
    if not len(x):
        return math.nan, math.nan
    x = x - x.mean(axis=1, keepdims=True)
    spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[1]), axis=1)) ** 2
    f = np.fft.rfftfreq(x.shape[1], 1.0 / sfreq)
    band = (f >= 1.0) & (f <= 100.0)
    total = spec[:, band].sum(axis=1)
    best = (math.nan, math.nan)
    for mains in _LINE_HZ:
        near = np.zeros_like(f, dtype=bool)
        for k in range(1, int(100.0 // mains) + 1):
            near |= np.abs(f - k * mains) <= 1.0
        share = 100.0 * np.median(spec[:, near & band].sum(axis=1) / np.maximum(total, 1e-30))
        if not math.isfinite(best[0]) or share > best[0]:
            best = (float(share), mains)
    return best


def reason_counts(reasons: Sequence[str]) -> list[tuple[str, int]]:
    """Rejection reasons grouped by their kind (the text before ':'), most frequent first."""
    kinds = Counter(r.split(":", 1)[0].strip() for r in reasons if r)
    return kinds.most_common()


def _window(times_ms: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (times_ms >= lo) & (times_ms <= hi)


def session_quality(snap, status=None, line_noise: tuple[float, float] = (math.nan, math.nan),
                    thresholds: dict | None = None) -> list[Light]:
    """The panel's lights for a :class:`~tmseeg.gui.feed.MonitorSnapshot`, an
    :class:`~tmseeg.engine.EngineStatus` (None: no stream light) and the raw EEG's line noise
    (:func:`line_noise_pct`; NaN: no line-noise light).

    Returns
    -------
    list of Light
        Stream, line noise, bad channels, pulse/decay artifact, muscle, early TEP,
        rejections, trials to the target SNR (those whose inputs the snapshot has).
    """
    th = {**THRESHOLDS, **(thresholds or {})}
    lights: list[Light] = []
    if status is not None:
        lights.append(_stream_light(status, th))
    pct, hz = line_noise
    if math.isfinite(pct):
        level = _level(pct, *th["line_noise_pct"])
        lights.append(Light("line noise", level, f"{pct:.0f} % of EEG power at {hz:g} Hz",
                            "" if level == OK else "check the ground and reference electrodes "
                            "and cables near mains; a notch only hides it"))
    lights.append(_bad_channel_light(snap, th))
    n = int(getattr(snap, "n_averaged", 0))
    avg, times = snap.roi_average_uv, snap.times_ms
    have_avg = avg is not None and times is not None and n > 0
    artifact = _artifact_light(snap, th, avg if have_avg else None, times)
    lights.append(artifact)
    if have_avg and n >= th["min_trials"]:
        later = [_muscle_light(avg, times, th, getattr(snap, "cut_window_ms", None)),
                 _early_light(avg, times, th, n)]
        if artifact.level == BAD:  # a large decay left over is fast and large too: say so
            later = [Light(x.name, WARN, f"{x.value} (not judged: decay left over)",
                           "fix the decay first") for x in later]
        lights += later
    else:
        lights.append(Light("muscle artifact", WAIT, f"{n} of {th['min_trials']} epochs"))
        lights.append(Light("early TEP at the ROI", WAIT, f"{n} of {th['min_trials']} epochs"))
    lights.append(_rejection_light(snap, th))
    lights.append(_trials_light(snap, n))
    return lights


def _stream_light(st, th) -> Light:
    if st.no_data_s > 0:
        return Light("stream", BAD, f"no data for {st.no_data_s:.0f} s",
                     "the amplifier stream stopped: check the amplifier and its LSL app")
    if st.n_skipped_samples:
        return Light("stream", BAD, f"{st.n_skipped_samples} samples not processed",
                     "processing is behind: close other programs or use fewer channels")
    err = (100.0 * abs(st.rate_hz - st.sfreq_hz) / st.sfreq_hz
           if st.sfreq_hz and math.isfinite(st.rate_hz) else math.nan)
    level = _level(err, *th["rate_error_pct"]) if math.isfinite(err) else WAIT
    rate_level = level
    if st.n_gaps and level == OK:
        level = WARN
    transport = getattr(st, "transport_latency_ms", math.nan)
    update = getattr(st, "update_latency_ms_p99", math.nan)
    lat_levels = [_level(transport, *th["transport_latency_ms"]),
                  _level(update, *th["update_latency_ms"])]
    order = [OK, WAIT, WARN, BAD]
    worst_lat = max((x for x in lat_levels if x != WAIT), key=order.index, default=OK)
    if order.index(worst_lat) > order.index(level) and level != WAIT:
        level = worst_lat
    value = (f"{st.rate_hz:.0f} of {st.sfreq_hz:g} Hz, {st.n_gaps} gap(s)"
             if math.isfinite(st.rate_hz) else "measuring the rate")
    if math.isfinite(transport):
        value += f", latency {transport:.0f} ms"
    if math.isfinite(update):
        value += f", updates p99 {update:.0f} ms"
    advice = ""
    if st.n_gaps:
        advice = "samples were lost on the way (gaps): check the network and the amplifier's CPU"
    elif rate_level in (WARN, BAD):
        advice = "the stream's rate is off its nominal rate: check the amplifier settings"
    elif worst_lat in (WARN, BAD):
        advice = ("data arrive late or are processed late: check the network, close other "
                  "programs, or use fewer channels / a lower rate")
    return Light("stream", level, value, advice)


def _bad_channel_light(snap, th) -> Light:
    bads = dict(getattr(snap, "bads", {}) or {})
    n_eeg = max(1, int(getattr(snap, "n_eeg", 0)) or len(getattr(snap, "ch_names", ()) or ()))
    pct = 100.0 * len(bads) / n_eeg
    level = _level(pct, *th["bad_channels_pct"]) if bads else OK
    if not bads:
        return Light("bad channels", OK, "none")
    named = ", ".join(f"{ch} ({why.split(' (')[0]})" for ch, why in list(bads.items())[:4])
    more = f" and {len(bads) - 4} more" if len(bads) > 4 else ""
    return Light("bad channels", level, f"{len(bads)}: {named}{more}",
                 f"fix electrode{'s' if len(bads) > 1 else ''} "
                 f"{', '.join(list(bads)[:4])}{more} (gel, contact); they are interpolated "
                 "meanwhile")


def _artifact_light(snap, th, avg, times) -> Light:
    decay = np.asarray(getattr(snap, "decay_max_uv", np.empty(0)), dtype=float)
    decay = decay[np.isfinite(decay)][-20:]
    cut = getattr(snap, "cut_window_ms", None)
    decay_txt = (f"decay {np.median(decay):.0f} µV at the fit start"
                 if decay.size else "no decay fitted")
    if avg is None or cut is None:
        return Light("pulse/decay artifact", WAIT, decay_txt)
    w = _window(times, cut[1], cut[1] + 10.0)
    if not w.any() or not np.isfinite(avg[w]).any():
        return Light("pulse/decay artifact", WAIT, decay_txt)
    left = float(np.nanmax(np.abs(avg[w])))
    level = _level(left, *th["residual_artifact_uv"])
    return Light("pulse/decay artifact", level,
                 f"{left:.0f} µV left at the ROI {cut[1]:.0f}-{cut[1] + 10:.0f} ms; {decay_txt}",
                 "" if level == OK else "decay is left in the early TEP: press the electrodes "
                 "under the coil, lower their impedance, or turn the coil's wings off them")


def _muscle_light(avg, times, th, cut) -> Light:
    start = max(5.0, (cut[1] if cut is not None else 0.0) + 3.0)
    w = _window(times, start, 30.0)
    if w.sum() < 3:
        return Light("muscle artifact", WAIT, "epoch too short")
    from scipy.ndimage import uniform_filter1d

    dt_ms = float(np.median(np.diff(times)))
    fast = avg - uniform_filter1d(avg, max(1, int(round(10.0 / dt_ms))), mode="nearest")
    ptp = float(np.nanmax(fast[w]) - np.nanmin(fast[w]))
    level = _level(ptp, *th["muscle_fast_uv"])
    return Light("muscle artifact", level, f"{ptp:.0f} µV fast activity {start:.0f}-30 ms",
                 "" if level == OK else "TMS-evoked muscle: move or rotate the coil away from "
                 "the temporal muscles, or lower the intensity")


def _early_light(avg, times, th, n: int) -> Light:
    early = _window(times, 15.0, 60.0)
    base = _window(times, -100.0, -55.0)
    if early.sum() < 3 or base.sum() < 3:
        return Light("early TEP at the ROI", WAIT, "epoch too short")
    e = float(np.nanmax(avg[early]) - np.nanmin(avg[early]))
    b = float(np.nanmax(avg[base]) - np.nanmin(avg[base]))
    ratio = e / b if b > 0 else math.inf
    level = _level(ratio, *th["early_tep_ratio"])
    return Light("early TEP at the ROI", level,
                 f"{e:.1f} µV ptp 15-60 ms, {ratio:.1f}x baseline ({n} epochs)",
                 "" if level == OK else "no clear early TEP at the ROI yet: check the coil "
                 "position and orientation over the target, and the intensity")


def _rejection_light(snap, th) -> Light:
    kept = np.asarray(getattr(snap, "kept", np.empty(0)), dtype=bool)
    reasons = list(getattr(snap, "reasons", []) or [])
    if not kept.size:
        return Light("rejected pulses", WAIT, "no pulse yet")
    n_rej = int((~kept).sum())
    pct = 100.0 * n_rej / kept.size
    level = _level(pct, *th["rejected_pct"]) if n_rej else OK
    counts = reason_counts([r for r, k in zip(reasons, kept) if not k])
    why = ", ".join(f"{kind} {m}" for kind, m in counts[:3])
    advice = ""
    if level != OK and counts:
        top = counts[0][0].lower()
        advice = {"amplitude": "epochs exceed the amplitude limit: look for the noisy channel "
                               "or movement, or raise [epochs] reject_uv",
                  "nan in data": "the stream has NaN/gaps: check the amplifier connection",
                  "grouped": "pulses come too close together for an epoch each (pairs are "
                             "grouped on the last pulse)"}.get(
            top, f"most rejections: {counts[0][0]}")
    return Light("rejected pulses", level,
                 f"{n_rej} of {kept.size}" + (f": {why}" if why else ""), advice)


def _trials_light(snap, n: int) -> Light:
    need = getattr(snap, "trials_needed", math.nan)
    target = getattr(snap, "target_snr", math.nan)
    if n < 2 or not math.isfinite(target) or math.isnan(need):
        return Light("trials to SNR", WAIT, f"{n} epochs")
    if math.isinf(need):
        return Light("trials to SNR", WARN, f"no signal above noise yet ({n} epochs)",
                     "keep stimulating; if it stays so, check the coil placement")
    if need <= n:
        return Light("trials to SNR", OK, f"SNR {target:g} reached with {n} epochs")
    return Light("trials to SNR", WARN, f"~{math.ceil(need - n)} more for SNR {target:g} "
                 f"({n} so far)", "")
