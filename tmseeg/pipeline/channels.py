"""Channel selection, live bad-channel detection and spherical-spline interpolation.

:class:`BadChannelDetector` is a pass-through stage that watches the EEG channels on pulse-free
stretches and keeps a live ``bads`` mapping (name -> reason). :class:`BadChannelInterpolation`
replaces the bad channels by a spherical-spline estimate from the good ones (Perrin et al.,
1989, via MNE); the mapping matrix is computed once per set of bad channels and cached, so each
block costs one small matrix product. :class:`~tmseeg.pipeline.reference.AverageReference` and
:class:`~tmseeg.pipeline.epochs.Epocher` read the same ``bads`` mapping.

Place the detector before the filters (clipping is only recognisable on unfiltered data: a
saturated amplifier returns the same value exactly, a filter smears it), and the interpolation
after them, before the average reference.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import warnings
from typing import Mapping, Sequence

import numpy as np

from tmseeg._ext.winstats import window_stats
from tmseeg.pipeline.base import StatelessStage
from tmseeg.stream.block import Block, StreamMeta
from tmseeg.stream.montage import montage_positions, standard_montage

log = logging.getLogger(__name__)

__all__ = [
    "resolve_picks", "BadChannelDetector", "BadChannelInterpolation", "ChannelTypes",
    "spline_matrix", "nearest_channels", "bad_segments", "edge_counts",
]


def resolve_picks(meta: StreamMeta, picks: str | Sequence[str]) -> np.ndarray:
    """Row indices for a pick specification.

    Parameters
    ----------
    meta : StreamMeta
        The stream's channels.
    picks : str or sequence of str
        ``"all"``, a channel type (``"eeg"``, ``"emg"``, ...), or a list of channel names.

    Returns
    -------
    ndarray of int
    """
    if isinstance(picks, str):
        if picks == "all":
            return np.arange(meta.n_channels, dtype=np.intp)
        if picks in set(meta.ch_types) or picks in ("eeg", "emg", "eog", "misc", "stim", "ecg"):
            return meta.picks(picks)
        return meta.index([picks])
    return meta.index(list(picks))


def _typical_rms(x: np.ndarray, piece: int) -> tuple[np.ndarray, np.ndarray]:
    """Median over pieces of ``piece`` samples of each channel's SD and first-difference RMS
    (the whole window's when it holds fewer than 4 pieces)."""
    n = x.shape[1] // piece
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if n < 4:
            return np.nanstd(x, axis=1), np.sqrt(np.nanmean(np.diff(x, axis=1) ** 2, axis=1))
        p = x[:, :n * piece].reshape(x.shape[0], n, piece)
        if np.isfinite(p).all():  # the usual case: the NaN-aware reductions cost 3x
            d = np.diff(p, axis=2)
            sd = np.median(np.std(p, axis=2), axis=1)
            hf = np.median(np.sqrt(np.mean(d * d, axis=2)), axis=1)
        else:
            sd = np.nanmedian(np.nanstd(p, axis=2), axis=1)
            hf = np.nanmedian(np.sqrt(np.nanmean(np.diff(p, axis=2) ** 2, axis=2)), axis=1)
    return sd, hf


def _finite_window_stats(x: np.ndarray, piece: int) -> tuple:
    """A finite window's SD, difference RMS, extremes, counts at the extremes and typical
    (SD, difference RMS) as :func:`_typical_rms` gives them, from the compiled
    :func:`tmseeg._ext.winstats.window_stats` (two passes instead of some fifteen)."""
    n_ch, n = x.shape
    n_pieces = n // piece if n // piece >= 4 else 0
    sd, hf, xmax, xmin = (np.empty(n_ch) for _ in range(4))
    at_max, at_min = np.empty(n_ch, np.intp), np.empty(n_ch, np.intp)
    piece_sd, piece_hf = np.empty((n_ch, n_pieces)), np.empty((n_ch, n_pieces))
    window_stats(x, piece, sd, hf, xmax, xmin, at_max, at_min, piece_sd, piece_hf)
    typical = (np.median(piece_sd, axis=1), np.median(piece_hf, axis=1)) if n_pieces \
        else (sd, hf)
    return sd, hf, xmax, xmin, at_max, at_min, typical


def nearest_channels(names: Sequence[str], k: int,
                     montage: str = "auto") -> dict[int, list[int]]:
    """Row -> rows of its ``k`` nearest channels on the scalp, nearest first (3-D positions
    of a 10-05 montage, ties by name; channels without a position have no entry and are
    nobody's neighbour)."""
    pos = montage_positions(montage)
    known = [i for i, n in enumerate(names) if n.lower() in pos]
    if not known:
        return {}
    xyz = np.array([pos[names[i].lower()] for i in known])
    d = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    return {known[a]: [known[b] for b in sorted((b for b in range(len(known)) if b != a),
                                                key=lambda b: (d[a, b], names[known[b]]))[:k]]
            for a in range(len(known))}


def _robust_z(x: np.ndarray, mad_floor: float) -> np.ndarray:
    """(x - median) / (1.4826 MAD), MAD floored at ``mad_floor``."""
    med = np.median(x)
    mad = max(float(np.median(np.abs(x - med))), mad_floor)
    return (x - med) / (1.4826 * mad)


class BadChannelDetector:
    """Live detection of flat, clipped and noisy EEG channels (data pass through unchanged).

    Windows of ``window_s`` on a fixed sample grid are evaluated on their samples outside the
    pulse windows, and :attr:`bads` is updated; :meth:`bads_at` says which set applies at any
    sample (what the interpolation, the reference and the epocher use). Tests, in order (the
    first that fires gives the reason):

    1. **no data**: fewer than ``min_valid_fraction`` (50 %) of the window's samples are finite
       (a channel sending NaN) in ``no_data_windows`` (3) windows in a row: a dead electrode.
       A shorter NaN stretch is no channel fault: the epochs it touches are rejected
       (:class:`~tmseeg.pipeline.epochs.Epocher`), the channel is kept. Samples where every
       channel is NaN (a gap in the recording) are left out of the window like pulse windows.
    2. **flat**: standard deviation over the window below ``flat_uv`` (default 0.5 µV; real
       scalp EEG is ~5-50 µV RMS, amplifier noise alone ~0.3-1 µV over a wide band).
    3. **clipped**: more than ``clip_fraction`` (default 0.5 %) of the samples sit exactly at the
       window's minimum or maximum (within ``1e-6`` of the range). Continuous-valued data hit
       each extreme once; an amplifier at its rail returns the same code many times.
    4. **noisy**: robust z-score (median / 1.4826 MAD across the good EEG channels, computed on
       log values) of the channel's RMS (over the window, or *typical*: the median over 250 ms
       pieces, which a brief blink leaves alone), or of the typical RMS of its first difference
       (a cheap high-frequency power proxy: muscle, bad contact), above ``noisy_z`` (default
       5), **and** either not shared by any of its 3 nearest neighbours (correlation below
       ``shared_corr``, 0.5; of the first differences for the high-frequency test) or more
       than ``neighbour_ratio`` (4) times the RMS of the largest of them. Brain
       rhythms (alpha at O1/O2, mu at C3/C4), blinks and eye movements are large on some
       channels but reach several electrodes at once; a bad contact is one electrode's own.
       Unless its typical RMS is grossly out (z above twice ``noisy_z``), a channel must be so
       in ``transient_windows`` (3) windows in a row: an electrode pop (a step that recovers
       over a second or two) or a burst of eye activity is not a broken electrode.
       Channels without a 10-05 position skip the neighbour test. The MAD is floored at ``mad_floor`` (0.1 in log units, i.e. ~10 % spread)
       so that channels that are almost identical (simulations, bridged caps) do not make tiny
       differences significant. Optionally, ``max_rms_uv`` marks any channel whose RMS exceeds
       it.

    Parameters
    ----------
    window_s : float
        Pulse-free data per evaluation (default 2 s).
    exclude_ms : (float, float)
        Window around each pulse left out (default ``(-10, 100)``: the pulse, the decay and the
        early TEP are not noise).
    flat_uv, clip_fraction, noisy_z, mad_floor, max_rms_uv, min_valid_fraction
        Thresholds, see above.
    picks : str or sequence of str
        Channels examined (default ``"eeg"``); others are never marked.
    min_usable_fraction : float
        A window with fewer pulse-free samples than this fraction is skipped (default 0.25).
    max_bad_fraction : float
        At most this fraction of the channels may be bad (default 0.2); when more look
        "noisy" at once, only the worst are marked (counted in ``n_noisy_capped``): many noisy
        channels at once is an artifact or a movement, not broken electrodes.
    sticky : bool
        If True (default) a channel once marked stays bad until :meth:`clear` (a dying
        electrode that flickers back would otherwise make the interpolation and reference
        change every few seconds). If False, :attr:`bads` is the latest evaluation only.
    initial_bads : mapping of str to str, optional
        Channels known to be bad before the session (name -> reason).
    transient_windows : int
        Consecutive windows an excess that is not gross must recur in (see 4.).
    no_data_windows : int
        Consecutive windows a channel must be mostly NaN in to be marked "no data" (see 1.;
        default 3, i.e. 4-6 s of NaN with 2-s windows).
    shared_corr, neighbour_ratio : float
        Correlation with a neighbour above which a channel's large activity is taken as shared
        (brain, eyes), not as an electrode fault, unless it is more than ``neighbour_ratio``
        times the largest neighbour's (see 4.).

    Attributes
    ----------
    bads : dict of str to str
        Current bad channels and why.
    history : list of (int, str, str)
        ``(absolute sample at the end of the window, channel, reason)`` each time a channel
        became bad.
    last_stats : dict
        Per-channel statistics of the latest evaluation (``rms_uv``, ``diff_rms_uv``,
        ``clip_fraction``, ``z_rms``, ``z_hf``), for displays.

    Notes
    -----
    A pulse event arriving late (after its samples were already collected) is still honoured
    as long as the window containing it has not been evaluated; evaluation waits until
    ``exclude_ms[1]`` beyond the window's last sample has been received for that reason.
    """

    name = "bad_channels"

    def __init__(
        self,
        window_s: float = 2.0,
        exclude_ms: tuple[float, float] = (-10.0, 100.0),
        flat_uv: float = 0.5,
        clip_fraction: float = 0.005,
        noisy_z: float = 5.0,
        mad_floor: float = 0.1,
        max_rms_uv: float | None = None,
        min_valid_fraction: float = 0.5,
        picks: str | Sequence[str] = "eeg",
        sticky: bool = True,
        min_usable_fraction: float = 0.25,
        max_bad_fraction: float = 0.2,
        initial_bads: Mapping[str, str] | None = None,
        shared_corr: float = 0.5,
        neighbour_ratio: float = 4.0,
        transient_windows: int = 3,
        no_data_windows: int = 3,
    ) -> None:
        if no_data_windows < 1:
            raise ValueError(f"no_data_windows must be >= 1, got {no_data_windows}")
        self.transient_windows = int(transient_windows)
        self.no_data_windows = int(no_data_windows)
        self.shared_corr = float(shared_corr)
        self.neighbour_ratio = float(neighbour_ratio)
        self.window_s = float(window_s)
        self.exclude_ms = exclude_ms
        self.flat_uv = float(flat_uv)
        self.clip_fraction = float(clip_fraction)
        self.noisy_z = float(noisy_z)
        self.mad_floor = float(mad_floor)
        self.max_rms_uv = max_rms_uv
        self.min_valid_fraction = float(min_valid_fraction)
        self.min_usable_fraction = float(min_usable_fraction)
        self.max_bad_fraction = float(max_bad_fraction)
        self.picks = picks
        self.sticky = sticky
        self._initial = dict(initial_bads or {})
        self.reset()

    def reset(self) -> None:
        """Forget collected data and detections (keeps ``initial_bads``)."""
        self.bads: dict[str, str] = dict(self._initial)
        self.history: list[tuple[int, str, str]] = []
        self.last_stats: dict[str, np.ndarray] = {}
        self._pending: list[tuple[int, np.ndarray]] = []
        self._store: tuple[int, np.ndarray, np.ndarray] | None = None
        self._pulses: list[int] = []
        self._rows: np.ndarray | None = None
        self._names: list[str] = []
        self._next_end: int | None = None
        self._newest = 0
        self.n_noisy_capped = 0
        self._strikes: dict[str, int] = {}  # consecutive windows with a transient excess
        self._nan_strikes: dict[str, int] = {}  # consecutive windows mostly NaN
        # (first sample from which a bad set applies, the set): see bads_at()
        self._timeline: list[tuple[int, dict[str, str]]] = [(-(2 ** 62), dict(self.bads))]

    def clear(self) -> None:
        """Mark every channel good again (e.g. after fixing electrodes); data kept."""
        self.bads = {}
        self._timeline.append((self._newest, {}))

    def bads_at(self, sample: int) -> dict[str, str]:
        """The bad channels in force at an absolute sample.

        A window's verdict applies from its *effective sample*: the window's end plus the
        late-marker wait (``exclude_ms[1]``), the first sample at which the verdict can exist
        whatever the block sizes. Stages downstream switch exactly there, which keeps live and
        offline results identical.
        """
        i = bisect.bisect_right(self._timeline, sample, key=lambda t: t[0]) - 1
        return self._timeline[max(i, 0)][1]

    def flush(self) -> Block | None:
        """Nothing is held back."""
        return None

    def process(self, block: Block) -> Block:
        """Collect the block's samples and pulse events; evaluate each complete window.

        Windows lie on a fixed grid of ``window_s`` from the first sample. A window is evaluated
        once data ``exclude_ms[1]`` past its end have arrived (late markers can still exclude
        their pulse), on its pulse-free samples; a window with fewer than
        ``min_usable_fraction`` of its samples usable (dense rTMS trains, gaps) is skipped.
        """
        if self._rows is None:
            self._rows = resolve_picks(block.meta, self.picks)
            self._names = [block.meta.ch_names[i] for i in self._rows]
            self._sfreq = block.meta.sfreq
            self._neighbours = nearest_channels(self._names, 3)
        for ev in block.pulses():
            self._pulses.append(ev.sample)
        sf = block.meta.sfreq
        win_n = max(1, int(round(self.window_s * sf)))
        lo = int(np.floor(self.exclude_ms[0] * sf / 1000.0))
        hi = int(np.ceil(self.exclude_ms[1] * sf / 1000.0))
        if block.n_samples:
            if self._next_end is None:
                self._next_end = block.first_sample + win_n
            self._pending.append((block.first_sample, block.data[self._rows]))
            self._newest = max(self._newest, block.stop_sample)
        while self._next_end is not None and self._next_end + max(hi, 0) <= self._newest:
            w1 = self._next_end
            w0 = w1 - win_n
            first, data, present = self._consolidate()
            a, b = max(w0, first), max(min(w1, first + data.shape[1]), max(w0, first))
            usable = self._usable_mask(a, present[a - first:b - first], b, lo, hi)
            # samples no channel has (a gap, the amplifier sending NaN on all channels) say
            # nothing about any one channel: left out like the pulse windows
            usable &= np.isfinite(data[:, a - first:b - first]).any(axis=0)
            if usable.sum() >= self.min_usable_fraction * win_n:
                self._evaluate(data[:, a - first:b - first][:, usable], w1)
                self._timeline.append((w1 + max(hi, 0), dict(self.bads)))
            keep = b - first
            self._store = (b, data[:, keep:], present[keep:])
            if self._store[1].shape[1] == 0:
                self._store = None
            self._pulses = [p for p in self._pulses if p + hi + 1 > w1]
            self._next_end = w1 + win_n
        return block

    # -- internals -----------------------------------------------------------------------------
    def _neighbour_corr(self, x: np.ndarray, i: int, cand: np.ndarray) -> float:
        """Largest correlation of channel ``i`` with one of its nearest good neighbours over
        the window (-1 when it has none with a position: no neighbour can vouch for it)."""
        best = -1.0
        xi = x[i] - np.nanmean(x[i])
        for j in self._neighbours.get(i, ()):
            if not cand[j]:
                continue
            xj = x[j] - np.nanmean(x[j])
            den = np.sqrt(np.nansum(xi * xi) * np.nansum(xj * xj))
            if den > 0:
                best = max(best, float(np.nansum(xi * xj) / den))
        return best

    def _neighbour_max(self, values: np.ndarray, i: int, cand: np.ndarray) -> float:
        """Largest value among channel ``i``'s nearest good neighbours (inf: none known)."""
        vals = [values[j] for j in self._neighbours.get(i, ()) if cand[j]]
        return float(np.max(vals)) if vals else np.inf

    def _consolidate(self) -> tuple[int, np.ndarray, np.ndarray]:
        """Merge newly arrived chunks into one contiguous store (NaN + absent where missing)."""
        parts = ([] if self._store is None else [self._store[:2]]) + self._pending
        if not parts:
            return self._next_end - 1, np.empty((len(self._rows), 0)), np.zeros(0, dtype=bool)
        first = parts[0][0]
        stop = max(f + d.shape[1] for f, d in parts)
        # the parts usually follow each other without a gap: then every sample is written
        # below and the NaN fill (a 2-s window of 128 ch at 20 kHz: 41 MB) is not needed
        covered, end = True, first
        for f, d in parts:
            covered &= f <= end
            end = max(end, f + d.shape[1])
        shape = (len(self._rows), stop - first)
        data = np.empty(shape) if covered else np.full(shape, np.nan)
        present = np.zeros(stop - first, dtype=bool)
        if self._store is not None:
            n = self._store[1].shape[1]
            data[:, :n] = self._store[1]
            present[:n] = self._store[2]
        for f, d in self._pending:
            data[:, f - first:f - first + d.shape[1]] = d
            present[f - first:f - first + d.shape[1]] = True
        self._pending = []
        self._store = (first, data, present)
        return first, data, present

    def _usable_mask(self, first: int, present: np.ndarray, stop: int, lo: int, hi: int) -> np.ndarray:
        mask = present[:max(stop - first, 0)].copy()
        for p in self._pulses:
            a, e = max(p + lo, first), min(p + hi + 1, stop)
            if e > a:
                mask[a - first:e - first] = False
        return mask

    def _evaluate(self, x: np.ndarray, end: int) -> None:
        n_ch = x.shape[0]
        piece = max(2, int(round(0.25 * self._sfreq)))
        if x.shape[1] > 1 and np.isfinite(x).all():  # the usual case: one compiled pass
            valid_frac = np.ones(n_ch)
            n_valid = np.full(n_ch, x.shape[1])
            rms, hf, xmax, xmin, at_max, at_min, typical = _finite_window_stats(x, piece)
        else:
            finite = np.isfinite(x)
            valid_frac = finite.mean(axis=1) if x.shape[1] else np.zeros(n_ch)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                d = np.diff(x, axis=1)
                rms = np.nanstd(x, axis=1)
                hf = np.sqrt(np.nanmean(d ** 2, axis=1)) if d.shape[1] \
                    else np.full(n_ch, np.nan)
                xmax = np.nanmax(x, axis=1)
                xmin = np.nanmin(x, axis=1)
            n_valid = np.maximum(finite.sum(axis=1), 1)
            at_max, at_min = edge_counts(x, xmax, xmin)
            typical = None
        clip = np.maximum(at_max, at_min) / n_valid

        reasons: dict[str, str] = {}
        nan_strikes: dict[str, int] = {}
        for i, nm in enumerate(self._names):
            if valid_frac[i] < self.min_valid_fraction:
                # a NaN stretch only rejects the epochs it touches; a channel is dead (and
                # interpolated from then on) only when it stays NaN window after window
                nan_strikes[nm] = self._nan_strikes.get(nm, 0) + 1
                if nan_strikes[nm] >= self.no_data_windows:
                    reasons[nm] = (f"no data ({100 * (1 - valid_frac[i]):.0f}% NaN, "
                                   f"{nan_strikes[nm]} windows of {self.window_s:g} s in a "
                                   "row)")
                continue
            if rms[i] < self.flat_uv:
                reasons[nm] = f"flat (RMS {rms[i]:.3g} uV < {self.flat_uv:g} uV)"
            elif clip[i] > self.clip_fraction and max(at_max[i], at_min[i]) >= 3:
                reasons[nm] = (f"clipped ({100 * clip[i]:.1f}% of samples at "
                               f"{xmax[i] if at_max[i] >= at_min[i] else xmin[i]:.6g} uV)")
        self._nan_strikes = nan_strikes  # consecutive windows only
        cand = np.array([nm not in reasons and nm not in nan_strikes for nm in self._names])
        z_rms = np.full(n_ch, np.nan)
        z_hf = np.full(n_ch, np.nan)
        if cand.sum() >= 3:
            # typical, not total, size: the median over 250 ms pieces, so that a blink or a
            # saccade (large, brief, on frontal channels) does not make a channel "noisy"
            rms_typ, hf_typ = typical if typical is not None else _typical_rms(x, piece)
            z_rms[cand] = _robust_z(np.log(rms_typ[cand]), self.mad_floor)
            z_hf[cand] = _robust_z(np.log(hf_typ[cand]), self.mad_floor)
            z_all = np.full(n_ch, np.nan)
            z_all[cand] = _robust_z(np.log(rms[cand]), self.mad_floor)
            d_x = None
            strikes: dict[str, int] = {}
            for i in np.flatnonzero(cand):
                nm = self._names[i]
                if max(z_rms[i], z_all[i]) > self.noisy_z:
                    # an electrode fault if its neighbours do not share it; brain rhythms
                    # (alpha, mu), blinks and eye movements reach several electrodes at once,
                    # and no scalp source makes one electrode several times all its neighbours
                    r = self._neighbour_corr(x, i, cand)
                    ratio = rms[i] / max(self._neighbour_max(rms, i, cand), 1e-12)
                    unshared = r < self.shared_corr or ratio > self.neighbour_ratio
                    if unshared and z_rms[i] <= 2 * self.noisy_z:
                        # not grossly broken: an electrode pop (a step that recovers over a
                        # second or two) or a burst of eye activity is no broken electrode
                        # until it keeps happening, window after window
                        strikes[nm] = self._strikes.get(nm, 0) + 1
                        unshared = strikes[nm] >= self.transient_windows
                    if unshared:
                        z = max(z_rms[i], z_all[i])
                        why = (f"not shared by its neighbours: r={r:.2f}" if r < self.shared_corr
                               else f"{ratio:.1f} x its largest neighbour")
                        reasons[nm] = (f"noisy (RMS {rms_typ[i]:.3g} uV typical, "
                                       f"{rms[i]:.3g} uV overall, robust z={z:.1f}; {why})")
                        continue
                if z_hf[i] > self.noisy_z:
                    d_x = np.diff(x, axis=1) if d_x is None else d_x
                    r = self._neighbour_corr(d_x, i, cand)
                    if r < self.shared_corr:
                        reasons[nm] = (f"noisy high-frequency (diff RMS {hf_typ[i]:.3g} uV, "
                                       f"robust z={z_hf[i]:.1f}; not shared by its "
                                       f"neighbours: r={r:.2f})")
        if self.max_rms_uv is not None:
            for i in np.flatnonzero(cand):
                nm = self._names[i]
                if nm not in reasons and rms[i] > self.max_rms_uv:
                    reasons[nm] = f"noisy (RMS {rms[i]:.3g} uV > {self.max_rms_uv:g} uV)"
        if cand.sum() >= 3:
            self._strikes = strikes  # consecutive windows only
        self.last_stats = {"rms_uv": rms, "diff_rms_uv": hf, "clip_fraction": clip,
                           "z_rms": z_rms, "z_hf": z_hf, "names": np.array(self._names)}
        # Never let "noisy" take a large part of the cap: if it would, the window is dominated by
        # something that is not a channel fault (an artifact on many channels, a movement); keep
        # only the worst few so interpolation still has good neighbours to draw on.
        budget = int(self.max_bad_fraction * n_ch) - len(
            [nm for nm in set(self.bads) | set(reasons) if not reasons.get(nm, "").startswith(
                "noisy")])
        noisy = [nm for nm, why in reasons.items() if why.startswith("noisy")
                 and nm not in self.bads]
        if len(noisy) > max(budget, 0):
            score = {nm: np.nanmax([z_rms[self._names.index(nm)], z_hf[self._names.index(nm)]])
                     for nm in noisy}
            keep = sorted(noisy, key=lambda nm: -score[nm])[:max(budget, 0)]
            for nm in noisy:
                if nm not in keep:
                    del reasons[nm]
            self.n_noisy_capped += len(noisy) - len(keep)
        for nm, why in reasons.items():
            if nm not in self.bads:
                self.history.append((end, nm, why))
        if self.sticky:
            for nm, why in reasons.items():
                self.bads.setdefault(nm, why)
        else:
            self.bads = {**self._initial, **reasons}


def bad_segments(bads_from, fixed: Sequence[str], start: int,
                 stop: int) -> list[tuple[int, int, frozenset]]:
    """Split samples ``[start, stop)`` where the bad-channel set changes.

    ``bads_from`` offers ``bads_at(sample)`` (a :class:`BadChannelDetector`) or just ``bads``
    (then one set applies to the whole range). Returns ``(a, b, set)`` runs.
    """
    fixed_set = frozenset(fixed)
    if bads_from is None:
        return [(start, stop, fixed_set)]
    if not hasattr(bads_from, "bads_at"):
        return [(start, stop, fixed_set | frozenset(bads_from.bads))]
    cuts = [t for t, _ in bads_from._timeline if start < t < stop]
    edges = [start] + cuts + [stop]
    return [(a, b, fixed_set | frozenset(bads_from.bads_at(a)))
            for a, b in zip(edges[:-1], edges[1:]) if b > a]


class ChannelTypes(StatelessStage):
    """First stage of a chain when the user gave channel types: every block leaves with the
    retyped ``meta`` (:func:`~tmseeg.stream.montage.with_channel_types`), live and offline alike."""

    name = "channel_types"

    def __init__(self, meta: StreamMeta) -> None:
        self.meta = meta

    def process(self, block: Block) -> Block:
        if block.meta is self.meta:
            return block
        if tuple(block.meta.ch_names) != tuple(self.meta.ch_names):
            raise ValueError(f"channel types were set for {self.meta.name!r}'s channels, but "
                             f"a block of {block.meta.name!r} came")
        return dataclasses.replace(block, meta=self.meta)


def edge_counts(x: np.ndarray, xmax: np.ndarray, xmin: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, how many samples of ``x`` sit at its maximum ``xmax`` and at its minimum
    ``xmin`` (within 1e-6 of its range; NaN counts at neither): a clipped or railed input
    holds its extremes, EEG touches them a few times."""
    tol = 1e-6 * np.maximum(xmax - xmin, 1e-12)
    with np.errstate(invalid="ignore"):
        return ((x >= (xmax - tol)[:, None]).sum(axis=1),
                (x <= (xmin + tol)[:, None]).sum(axis=1))


def spline_matrix(
    ch_names: Sequence[str], bads: Sequence[str], montage: str = "auto"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spherical-spline mapping from good to bad channels, through MNE's public API.

    A :class:`mne.io.RawArray` whose samples are unit impulses on each good channel in turn
    is interpolated with :meth:`~mne.io.Raw.interpolate_bads`; since interpolation is linear,
    the bad rows of the result are the mapping matrix.

    Parameters
    ----------
    ch_names : sequence of str
        The EEG channels (all of them, good and bad).
    bads : sequence of str
        Channels to estimate.
    montage : str
        MNE built-in montage name; ``"auto"`` uses ``colin27_1005`` (MNE >= 1.13) or
        ``standard_1005``.

    Returns
    -------
    bad_idx, good_idx : ndarray of int
        Row indices into ``ch_names``.
    matrix : ndarray, shape (n_bad, n_good)
        ``data[bad_idx] = matrix @ data[good_idx]``.
    """
    import mne

    names = list(ch_names)
    mont = standard_montage(montage)
    known = {n.lower() for n in mont.ch_names}
    missing = [n for n in names if n.lower() not in known]
    if missing:
        raise ValueError(
            f"no electrode position for channel(s) {missing} in montage {montage!r}: spherical-"
            "spline interpolation needs positions for all EEG channels. Rename them to 10-05 "
            "labels, pass another montage, or type them as non-EEG."
        )
    bad_idx = np.array([names.index(b) for b in bads], dtype=np.intp)
    good_idx = np.array([i for i in range(len(names)) if names[i] not in set(bads)], dtype=np.intp)
    if len(good_idx) < 3:
        raise ValueError(f"only {len(good_idx)} good EEG channels left: cannot interpolate {list(bads)}")
    info = mne.create_info(names, 1000.0, "eeg")
    info.set_montage(mont, match_case=False, verbose=False)
    impulses = np.zeros((len(names), len(good_idx)))
    impulses[good_idx, np.arange(len(good_idx))] = 1.0
    raw = mne.io.RawArray(impulses, info, verbose=False)
    raw.info["bads"] = list(bads)
    raw.interpolate_bads(reset_bads=True, verbose=False)
    return bad_idx, good_idx, raw.get_data()[bad_idx]


class BadChannelInterpolation:
    """Replace bad EEG channels by spherical-spline interpolation of the good ones.

    Parameters
    ----------
    bads_from : object with a ``bads`` mapping, optional
        Usually the session's :class:`BadChannelDetector`; read at every block so that
        channels found bad mid-session are interpolated from then on.
    bads : sequence of str
        Fixed bad channels (added to those of ``bads_from``).
    montage : str
        Electrode positions (see :func:`spline_matrix`).
    picks : str or sequence of str
        The channels interpolation draws on and may replace (default ``"eeg"``).

    Notes
    -----
    The mapping matrix costs ~0.1-0.5 s (MNE) the first time a given set of bad channels is
    seen and is cached (``cache``) per set; afterwards each block costs one
    ``(n_bad, n_good) @ (n_good, n_samples)`` product. NaN in a good channel propagates to the
    interpolated ones for those samples (a stream gap stays a gap).
    """

    name = "interpolate_bads"

    def __init__(
        self,
        bads_from=None,
        bads: Sequence[str] = (),
        montage: str = "auto",
        picks: str | Sequence[str] = "eeg",
    ) -> None:
        self.bads_from = bads_from
        self.fixed_bads = list(bads)
        self.montage = montage
        self.picks = picks
        self.cache: dict[frozenset, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._rows: np.ndarray | None = None

    def current_bads(self) -> list[str]:
        """The bad channels that apply now."""
        out = list(self.fixed_bads)
        if self.bads_from is not None:
            out += [b for b in self.bads_from.bads if b not in out]
        return out

    def process(self, block: Block) -> Block:
        """Return the block with its bad EEG channels interpolated.

        The bad set in force is taken per sample (:func:`bad_segments`), so a channel found bad
        is interpolated from the same sample whatever the block sizes.
        """
        if self._rows is None:
            self._rows = resolve_picks(block.meta, self.picks)
        if block.n_samples == 0:
            return block
        names = [block.meta.ch_names[i] for i in self._rows]
        data = None
        rows = self._rows
        for a, b, bad_set in bad_segments(self.bads_from, self.fixed_bads, block.first_sample,
                                          block.stop_sample):
            bads = [n for n in names if n in bad_set]
            if not bads:
                continue
            key = frozenset(bads)
            if key not in self.cache:
                self.cache[key] = spline_matrix(names, bads, self.montage)
            bad_idx, good_idx, mat = self.cache[key]
            if data is None:
                data = block.data.copy()
            sl = slice(a - block.first_sample, b - block.first_sample)
            data[rows[bad_idx], sl] = mat @ block.data[rows[good_idx], sl]
        return block if data is None else block.with_data(data)

    def flush(self) -> Block | None:
        """Nothing is held back."""
        return None

    def reset(self) -> None:
        """Forget the channel layout (the matrix cache is kept: it depends on names only)."""
        self._rows = None
