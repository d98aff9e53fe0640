"""The cleaning stage: fit SOUND / SSP-SIR / ICA on calibration epochs, apply as matrices.

:class:`ArtifactCleaning` collects the stream until ``calibration_pulses`` pulses have their
calibration window (``calibration_window_ms``, default -500..500 ms) complete, cuts those
epochs, fits the configured methods in the configured order (each on the epochs cleaned by the
ones before it), and from then on applies the result per block as

``out = A x + w(t - t_pulse) B x``

on the EEG rows: ``A`` the product of the static filters (SOUND, ICA, control-data SSP-SIR,
all on the average reference), ``B`` the time-limited part of the muscle SSP-SIR filter and
``w`` its weight after each pulse. That is one or two small matrix products per block.

While calibrating, the stage holds the data back (``during_calibration = "hold"``, default:
every epoch, the first ones included, is cleaned by the same filter, live exactly as offline),
or passes it through uncleaned (``"pass"``: the live display keeps running; the first epochs
stay uncleaned). At the end of a file with fewer pulses than asked for, the fit uses what there
is (at least ``min_pulses``; otherwise the data pass uncleaned and :attr:`status` says why).

:meth:`refit` refits on the most recent ``calibration_pulses`` epochs (kept as they arrive);
the new filter applies from the next block on (:attr:`history` records where).

Place it after pulse-window interpolation and decay removal (the filters are fitted on data
whose pulse window is already interpolated) and before the average reference and the
epochs. Bad channels known at fit time (from ``bads_from``) are left out of the fits (SOUND
reconstructs them; ICA and SSP-SIR pass them to the bad-channel interpolation).
"""
from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from typing import Sequence

import numpy as np

from tmseeg.pipeline.base import concat_blocks, empty_block_like
from tmseeg.pipeline.channels import resolve_picks
from tmseeg.stream.block import Block

log = logging.getLogger(__name__)

__all__ = ["ArtifactCleaning", "CleaningFilter", "METHODS"]

METHODS = ("sound", "sspsir", "sspsir_control", "ica")


class CleaningFilter:
    """The fitted filter: ``out = A x + w(t) B x`` plus what each method found.

    Attributes
    ----------
    A, B : ndarray, shape (n_eeg, n_eeg)
    weights : ndarray
        ``w`` at sample offsets ``weight_offsets`` after the pulse.
    weight_offsets : ndarray of int
    results : dict
        Per method, its result object (:class:`~.sound.SoundResult`,
        :class:`~.sspsir.SSPSIRResult`, :class:`~.ica.ICAResult`).
    n_epochs : int
        Epochs fitted on.
    fitted_at : int
        Absolute sample at which the fit happened.
    """

    def __init__(self, n: int) -> None:
        self.A = np.eye(n)
        self.B = np.zeros((n, n))
        self.weights = np.empty(0)
        self.weight_offsets = np.empty(0, dtype=np.intp)
        self.results: dict = {}
        self.n_epochs = 0
        self.fitted_at = 0

    def apply_epochs(self, epochs: np.ndarray, times_ms: np.ndarray, sfreq: float) -> np.ndarray:
        """Filter pulse-locked epochs ``(n_epochs, n_eeg, n_times)`` as the stream would be."""
        out = np.einsum("ij,ejt->eit", self.A, epochs)
        if self.weights.size:
            w = self._w_on(np.round(times_ms * sfreq / 1e3).astype(np.intp))
            out += w[None, None, :] * np.einsum("ij,ejt->eit", self.B, epochs)
        return out

    def _w_on(self, offsets: np.ndarray) -> np.ndarray:
        w = np.zeros(offsets.size)
        if self.weights.size:
            lo = self.weight_offsets[0]
            pos = offsets - lo
            ok = (pos >= 0) & (pos < self.weights.size)
            w[ok] = self.weights[pos[ok]]
        return w


class ArtifactCleaning:
    """Stage: SOUND, SSP-SIR (muscle and control-data variants) and ICA as spatial filters.

    Parameters
    ----------
    methods : sequence of str
        Any of ``"sound"``, ``"sspsir"``, ``"sspsir_control"``, ``"ica"``, fitted and applied
        in this order (default ``("sspsir",)``).
    calibration_pulses : int
        Pulses whose epochs the fit uses (default 30).
    min_pulses : int
        Fewest pulses a fit at the end of a file accepts (default 5).
    calibration_window_ms : (float, float)
        Epoch cut for the fits (default -500..500 ms).
    during_calibration : {"hold", "pass"}
    control_label : str
        Regex (case-insensitive, ``re.search``) for the labels of control-condition events
        (pulses or markers, e.g. ``"sham"``) used by ``"sspsir_control"``; these epochs are not
        used by the other fits.
    sound, sspsir, sspsir_control, ica : dict
        Keyword arguments of :func:`~.sound.sound`, :func:`~.sspsir.fit_sspsir`,
        :func:`~.sspsir.fit_sspsir_control`, :func:`~.ica.fit_ica`.
    leadfield : dict
        Keyword arguments of :func:`~.leadfield.sphere_leadfield`.
    picks : str or sequence of str
        Channels cleaned (default ``"eeg"``).
    bads_from : object with ``bads`` / ``bads_at``, optional
        The session's bad-channel detector.
    release_s : float
        After the fit, data held during calibration are released at most this much per block
        beyond the incoming block (default 1 s: downstream buffers hold 5 s), so the delay
        shrinks to zero within about ``hold / release_s`` blocks.

    Attributes
    ----------
    filter : CleaningFilter or None
        The filter in force (None while calibrating).
    status : str
        ``"calibrating"``, ``"fitted"``, or why nothing is applied.
    history : list of (int, CleaningFilter)
        ``(first sample it applies to, filter)`` for every fit.
    """

    name = "cleaning"

    def __init__(
        self,
        methods: Sequence[str] = ("sspsir",),
        calibration_pulses: int = 30,
        min_pulses: int = 5,
        calibration_window_ms: tuple[float, float] = (-500.0, 500.0),
        during_calibration: str = "hold",
        control_label: str = "",
        sound: dict | None = None,
        sspsir: dict | None = None,
        sspsir_control: dict | None = None,
        ica: dict | None = None,
        leadfield: dict | None = None,
        picks: str | Sequence[str] = "eeg",
        bads_from=None,
        release_s: float = 1.0,
    ) -> None:
        import re

        bad = [m for m in methods if m not in METHODS]
        if bad:
            raise ValueError(f"unknown cleaning method(s) {bad}; valid: {', '.join(METHODS)}")
        if during_calibration not in ("hold", "pass"):
            raise ValueError("during_calibration must be 'hold' or 'pass'")
        if "sspsir_control" in methods and not control_label:
            raise ValueError("method 'sspsir_control' needs control_label (the marker label of "
                             "the control-condition events, e.g. 'sham')")
        self.methods = list(methods)
        self.calibration_pulses = int(calibration_pulses)
        self.min_pulses = int(min_pulses)
        self.calibration_window_ms = tuple(calibration_window_ms)
        self.during_calibration = during_calibration
        self.control_label = control_label
        self._control_re = re.compile(control_label, re.I) if control_label else None
        self.kw = {"sound": dict(sound or {}), "sspsir": dict(sspsir or {}),
                   "sspsir_control": dict(sspsir_control or {}), "ica": dict(ica or {}),
                   "leadfield": dict(leadfield or {})}
        self.picks = picks
        self.bads_from = bads_from
        self.release_s = float(release_s)
        self.reset()

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget data, pulses and fits."""
        self.filter: CleaningFilter | None = None
        self.status = "calibrating"
        self.history: list[tuple[int, CleaningFilter]] = []
        self._rows: np.ndarray | None = None
        self._meta = None
        self._held: list[Block] = []
        self._recent: list[Block] = []  # raw data still needed to cut pending epochs
        self._pulses: list[int] = []  # all pulse samples seen (sorted)
        self._pending: list[tuple[int, bool]] = []  # (sample, is_control) awaiting data
        self._epochs: deque = deque()
        self._control: deque = deque()
        self._refit_requested = False

    def _setup(self, block: Block) -> None:
        self._meta = block.meta
        self._rows = resolve_picks(block.meta, self.picks)
        self.ch_names = [block.meta.ch_names[i] for i in self._rows]
        sf = block.meta.sfreq
        self._n0 = int(round(-self.calibration_window_ms[0] * sf / 1e3))
        self._n1 = int(round(self.calibration_window_ms[1] * sf / 1e3))
        self.times_ms = np.arange(-self._n0, self._n1 + 1) * 1e3 / sf
        self._epochs = deque(maxlen=self.calibration_pulses)
        self._control = deque(maxlen=self.calibration_pulses)

    # -- public -----------------------------------------------------------------------------
    def refit(self) -> None:
        """Refit on the most recent calibration epochs; applies from the next block on."""
        self._refit_requested = True

    def applied_at(self, sample: int) -> str:
        """What cleaned the data at an absolute sample (for the per-pulse table)."""
        i = bisect.bisect_right([h[0] for h in self.history], sample) - 1
        if i < 0:
            return "uncleaned (" + ("calibrating" if self.status == "calibrating"
                                    else self.status) + ")"
        f = self.history[i][1]
        parts = []
        for m in self.methods:
            r = f.results.get(m)
            if m == "ica" and r is not None:
                parts.append(f"ica -{len(r.removed)} comp")
            elif m.startswith("sspsir") and r is not None:
                parts.append(f"{m} -{r.n_components} dim")
            else:
                parts.append(m)
        return f"fit {i + 1}: " + ", ".join(parts)

    def summary(self) -> dict:
        """JSON-ready account of the fit: methods, components removed and why, noise levels."""
        f = self.filter
        out: dict = {"status": self.status, "methods": list(self.methods),
                     "n_fits": len(self.history)}
        if f is None:
            return out
        out["n_epochs_fitted"] = f.n_epochs
        out["fitted_at_sample"] = int(f.fitted_at)
        r = f.results
        if "sound" in r:
            s = r["sound"]
            out["sound"] = {"noise_sd_uv": {n: (None if not math.isfinite(v) else float(v))
                                            for n, v in zip(self.ch_names, s.sigma_uv)},
                            "n_iter": s.n_iter, "converged": s.converged,
                            "lambda0": s.lambda0}
        for key in ("sspsir", "sspsir_control"):
            if key in r:
                s = r[key]
                out[key] = {"n_components": s.n_components,
                            "explained_pct": [float(v) for v in s.explained_pct],
                            "power_ratio": [None if not math.isfinite(v) else float(v)
                                            for v in s.power_ratio],
                            "kind": s.kind}
        if "ica" in r:
            s = r["ica"]
            out["ica"] = {"n_components": len(s.labels),
                          "removed": [{"index": c.index, "label": c.label, "reason": c.reason}
                                      for c in s.labels if c.removed],
                          "components": [{"index": c.index, "label": c.label,
                                          "removed": c.removed, "reason": c.reason,
                                          "scores": c.scores} for c in s.labels]}
        return out

    # -- streaming --------------------------------------------------------------------------
    def process(self, block: Block) -> Block:
        """Collect calibration epochs; once fitted, return the block cleaned."""
        if self._rows is None:
            self._setup(block)
        self._take_events(block)
        if block.n_samples:
            self._recent.append(block)
        self._cut_ready()
        if self.filter is None:
            if len(self._epochs) >= self.calibration_pulses:
                self._fit(at=block.first_sample if self.during_calibration == "pass"
                          else self._first_held(block))
            else:
                if self.during_calibration == "hold":
                    self._held.append(block)
                    return empty_block_like(block)
                return block
        elif self._refit_requested:
            self._refit_requested = False
            self._fit(at=block.first_sample)
        if self._held:
            # drain what was held during calibration a bounded chunk at a time (downstream
            # buffers, e.g. the epocher's, hold a few seconds), faster than data arrive
            self._held.append(block)
            limit = max(block.n_samples * 2, int(self.release_s * self._meta.sfreq))
            out_blocks, n = [], 0
            while self._held and (not out_blocks or n + self._held[0].n_samples <= limit):
                b = self._held.pop(0)
                out_blocks.append(b)
                n += b.n_samples
            return self._apply(_join(out_blocks))
        return self._apply(block)

    def flush(self) -> Block | None:
        """End of the stream: fit on what there is if still calibrating, release held data."""
        if self._rows is None:
            return None
        self._cut_ready(at_end=True)
        if self.filter is None:
            if len(self._epochs) >= self.min_pulses:
                self._fit(at=self._first_held(None))
            else:
                self.status = (f"not fitted: only {len(self._epochs)} complete pulse epochs "
                               f"(min_pulses = {self.min_pulses}); data passed uncleaned")
        if not self._held:
            return None
        held = self._held
        self._held = []
        out = _join(held)
        return self._apply(out) if self.filter is not None else out

    # -- internals --------------------------------------------------------------------------
    def _first_held(self, block: Block | None) -> int:
        for b in self._held:
            if b.n_samples:
                return b.first_sample
        return block.first_sample if block is not None else 0

    def _take_events(self, block: Block) -> None:
        for ev in block.events:
            is_control = bool(self._control_re and self._control_re.search(ev.label))
            if ev.kind == "pulse" or (is_control and ev.kind == "marker"):
                if ev.kind == "pulse" and not is_control:
                    bisect.insort(self._pulses, int(ev.sample))
                self._pending.append((int(ev.sample), is_control))

    def _cut_ready(self, at_end: bool = False) -> None:
        if not self._recent:
            return
        stop = self._recent[-1].stop_sample
        keep = []
        for s, ctl in sorted(self._pending):
            a, b = s - self._n0, s + self._n1 + 1
            if b <= stop:
                ep = self._read(a, b)
                if ep is not None:
                    (self._control if ctl else self._epochs).append(ep)
            elif not at_end:
                keep.append((s, ctl))
        self._pending = keep
        # drop raw data no pending epoch needs
        need = min([s - self._n0 for s, _ in self._pending], default=stop)
        need = min(need, stop - self._n0 - self._n1 - 1)
        while len(self._recent) > 1 and self._recent[0].stop_sample <= need:
            self._recent.pop(0)

    def _read(self, a: int, b: int) -> np.ndarray | None:
        out = np.full((len(self._rows), b - a), np.nan)
        got = 0
        for blk in self._recent:
            lo, hi = max(a, blk.first_sample), min(b, blk.stop_sample)
            if hi > lo:
                out[:, lo - a:hi - a] = blk.data[self._rows, lo - blk.first_sample:hi - blk.first_sample]
                got += hi - lo
        if got < b - a:
            return None  # before the stream start or across a gap
        return out - np.nanmean(out[:, :self._n0 - int(round(10 * self._meta.sfreq / 1e3))]
                                if self._n0 > 0 else out, axis=1, keepdims=True)

    def _bads_mask(self, sample: int) -> np.ndarray:
        bads = set()
        if self.bads_from is not None:
            at = getattr(self.bads_from, "bads_at", None)
            bads = set(at(sample) if at is not None else self.bads_from.bads)
        return np.array([n in bads for n in self.ch_names], dtype=bool)

    def _fit(self, at: int) -> None:
        from tmseeg.pipeline.cleaning.leadfield import sphere_leadfield
        from tmseeg.pipeline.cleaning.ica import ICARules, fit_ica
        from tmseeg.pipeline.cleaning.sound import sound
        from tmseeg.pipeline.cleaning.sspsir import fit_sspsir, fit_sspsir_control

        sf = self._meta.sfreq
        ep = np.stack(list(self._epochs))
        ctl = np.stack(list(self._control)) if self._control else None
        n = ep.shape[1]
        exclude = self._bads_mask(at) | ~np.isfinite(ep).all(axis=(0, 2))
        ep = np.nan_to_num(ep)
        f = CleaningFilter(n)
        use = (~exclude).astype(float)
        f.A = np.eye(n) - np.outer(np.ones(n), use / use.sum())  # average of the used channels
        L = None
        if any(m in ("sound", "sspsir", "sspsir_control") for m in self.methods):
            L = sphere_leadfield(self.ch_names, **self.kw["leadfield"])
        cur = f.apply_epochs(ep, self.times_ms, sf)
        for m in self.methods:
            if m == "sound":
                r = sound(cur, L, exclude=exclude, **self.kw["sound"])
                M = r.matrix
            elif m == "sspsir":
                if f.weights.size:
                    raise ValueError("only one time-limited 'sspsir' per chain")
                r = fit_sspsir(cur[:, ~exclude], self.times_ms, sf, _masked_lf(L, exclude),
                               **self.kw["sspsir"])
                S = _embed(r.filter, exclude)
                f.B = (S - np.eye(n)) @ f.A
                f.weights = r.weights
                f.weight_offsets = np.round(r.weight_times_ms * sf / 1e3).astype(np.intp)
                M = None
            elif m == "sspsir_control":
                if ctl is None or len(ctl) < 1:
                    raise ValueError(f"'sspsir_control' found no control epochs with a label "
                                     f"matching {self.control_label!r}")
                cc = np.einsum("ij,ejt->eit", f.A, np.nan_to_num(ctl))[:, ~exclude]
                r = fit_sspsir_control(cc, self.times_ms, _masked_lf(L, exclude),
                                       **self.kw["sspsir_control"])
                M = _embed(r.filter, exclude)
            else:  # ica
                kw = dict(self.kw["ica"])
                rules = kw.pop("rules", None)
                if isinstance(rules, dict):
                    rules = ICARules(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in rules.items()})
                r = fit_ica(cur, self.times_ms, sf, self.ch_names, exclude=exclude,
                            rules=rules, **kw)
                M = r.matrix
            f.results[m] = r
            if M is not None:
                f.A = M @ f.A
                f.B = M @ f.B
            cur = f.apply_epochs(ep, self.times_ms, sf)
        f.n_epochs = len(ep)
        f.fitted_at = int(at)
        self.filter = f
        self.history.append((int(at), f))
        self.status = "fitted"
        log.info("cleaning fitted on %d epochs (%s) at sample %d", len(ep),
                 ", ".join(self.methods), at)

    def _apply(self, block: Block) -> Block:
        f = self.filter
        if f is None or block.n_samples == 0:
            return block
        data = block.data.copy()
        x = block.data[self._rows]
        finite = np.isfinite(x)
        if not finite.all():  # a gap: NaN must not spread to every channel
            x = np.where(finite, x, 0.0)
        y = f.A @ x
        if f.weights.size:
            w = np.zeros(block.n_samples)
            lo_off = f.weight_offsets[0]
            hi_off = f.weight_offsets[-1]
            i0 = bisect.bisect_left(self._pulses, block.first_sample - hi_off)
            for p in self._pulses[i0:]:
                if p + lo_off >= block.stop_sample:
                    break
                a = max(block.first_sample, p + lo_off)
                b = min(block.stop_sample, p + hi_off + 1)
                if b > a:
                    seg = f.weights[a - (p + lo_off):b - (p + lo_off)]
                    w[a - block.first_sample:b - block.first_sample] = np.maximum(
                        w[a - block.first_sample:b - block.first_sample], seg)
            if w.any():
                nz = np.flatnonzero(w)
                sl = slice(nz[0], nz[-1] + 1)
                y[:, sl] += w[sl] * (f.B @ x[:, sl])
        if not finite.all():
            y[:, ~finite.all(axis=0)] = np.nan
        data[self._rows] = y
        return block.with_data(data)


def _join(blocks: list[Block]) -> Block:
    """Consecutive blocks (some possibly empty, carrying events only) as one block."""
    data_blocks = [b for b in blocks if b.n_samples]
    out = concat_blocks(data_blocks) if data_blocks else blocks[-1]
    out.events = [e for b in blocks for e in b.events]
    return out


def _masked_lf(L: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """Lead field rows of the used channels, average-referenced among them."""
    Lu = L[~exclude]
    return Lu - Lu.mean(axis=0, keepdims=True)


def _embed(S_used: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    """A filter on the used channels as a full matrix (excluded channels pass unchanged)."""
    n = exclude.size
    idx = np.flatnonzero(~exclude)
    M = np.eye(n)
    M[np.ix_(idx, idx)] = S_used
    return M
