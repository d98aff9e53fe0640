"""Montages and channel names: where electrodes are, and what a stream's channels are called.

Where recordings (:func:`tmseeg.io.files.read_recording`) and LSL streams
(:func:`tmseeg.stream.inlet.meta_from_info`) enter the engine, their channel names are tidied to
the montage's labels (``"EEG Fp1-REF"`` -> ``"Fp1"``) and typed as the user said
(``[channels] types``), so that a file and its live stream get the same names and every spatial
step (coil site, bad channels, interpolation, reference, ROI, lead field, topographies) finds
its electrodes. :func:`use_montage` sets the montage all of them use.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import re
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from tmseeg.stream.block import StreamMeta

log = logging.getLogger(__name__)

__all__ = [
    "use_montage", "resolve_montage", "standard_montage", "ten_five_montage",
    "montage_positions", "tidy_channel_names", "tidy_meta", "CHANNEL_TYPES",
    "parse_channel_types", "with_channel_types", "without_unplaced_eeg",
]


#: the montage "auto" stands for (``[channels] montage``, ``--montage``; see use_montage)
_ACTIVE_MONTAGE = "auto"
#: montage files MNE reads with read_custom_montage (and .fif digitisations)
MONTAGE_FILE_SUFFIXES = (".loc", ".locs", ".eloc", ".sfp", ".csd", ".elc", ".txt", ".elp",
                         ".hpts", ".bvef", ".xyz", ".fif")


def use_montage(montage: str = "auto") -> None:
    """Make ``montage`` the one every spatial step uses (electrode positions by label).

    Parameters
    ----------
    montage : str
        ``"auto"`` (MNE's 10-05 positions), an MNE built-in montage name (e.g.
        ``"GSN-HydroCel-129"``, ``"easycap-M1"``, ``"biosemi64"``), or a file MNE reads:
        ``.elc``, ``.sfp``, ``.bvef``, ``.loc``/``.locs``/``.eloc``, ``.csd``, ``.txt``,
        ``.elp``, ``.hpts``, ``.xyz``, or a ``.fif`` digitisation. A cap whose labels are not
        10-05 names (EGI ``E1`` ... ``E129``) works with its own montage.

    Raises
    ------
    ValueError
        Neither a built-in name nor a readable file (the message lists the built-ins).
    """
    global _ACTIVE_MONTAGE
    montage = str(montage or "auto")
    if montage != _ACTIVE_MONTAGE:
        standard_montage(montage)  # fails here, with the reason, not in a later stage
        _ACTIVE_MONTAGE = montage


def resolve_montage(montage: str = "auto") -> str:
    """The montage ``montage`` stands for: ``"auto"`` is the one in use (:func:`use_montage`)."""
    return _ACTIVE_MONTAGE if montage == "auto" else montage


def standard_montage(montage: str = "auto"):
    """The montage in use: ``"auto"`` = the one set by :func:`use_montage`, by default MNE's
    ``colin27_1005`` (MNE >= 1.13) or ``standard_1005``.

    Parameters
    ----------
    montage : str
        ``"auto"``, a built-in montage name or a montage file (see :func:`use_montage`).

    Returns
    -------
    mne.channels.DigMontage
    """
    return _montage(resolve_montage(montage))


def ten_five_montage():
    """MNE's built-in 10-05 montage, whatever montage is in use (the simulator's cap)."""
    return _montage("auto")


@functools.lru_cache(maxsize=8)
def _montage(spec: str):
    import mne

    builtin = mne.channels.get_builtin_montages()
    if spec == "auto":
        spec = "colin27_1005" if "colin27_1005" in builtin else "standard_1005"
    if spec in builtin:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return mne.channels.make_standard_montage(spec)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"montage {spec!r} is neither an MNE built-in montage ({', '.join(builtin)})"
                         f" nor a file; montage files: {', '.join(MONTAGE_FILE_SUFFIXES)}")
    try:
        with warnings.catch_warnings(), mne.utils.use_log_level("error"):
            warnings.simplefilter("ignore")
            if path.suffix.lower() == ".fif":
                return mne.channels.read_dig_fif(path)
            return mne.channels.read_custom_montage(path)
    except Exception as exc:
        raise ValueError(f"montage file {path}: MNE cannot read it ({type(exc).__name__}: "
                         f"{exc}); formats: {', '.join(MONTAGE_FILE_SUFFIXES)}") from exc


#: A leading ``EEG`` with a separator (``"EEG Fp1"``, ``"EEG-Fp1"``, ``"EEG_Fp1"``).
_EEG_PREFIX = re.compile(r"^eeg[\s_\-]+", re.IGNORECASE)
#: A trailing reference (``"Fp1-REF"``, ``"Fp1_A1"``, ``"Fp1/M2"``, ``"C3 LE"``, ``"Cz-AVG"``):
#: common references only, so a bipolar derivation such as ``"C3-C4"`` is never cut.
_REF_SUFFIX = re.compile(
    r"[\s_\-/]+(?:ref|reference|a1|a2|a1a2|m1|m2|m1m2|le|re|lm|rm|avg|av|ar|car|cz)$",
    re.IGNORECASE,
)


def montage_positions(montage: str = "auto") -> dict[str, np.ndarray]:
    """3-D electrode positions (m) of the montage in use (or ``montage``) by lower-case label
    (cached; do not modify the returned arrays)."""
    return _positions(resolve_montage(montage))


@functools.lru_cache(maxsize=8)
def _positions(spec: str) -> dict[str, np.ndarray]:
    return {k.lower(): np.asarray(v, float)
            for k, v in _montage(spec).get_positions()["ch_pos"].items()}


def _montage_labels(montage: str) -> dict[str, str]:
    """Lower-case label -> the montage's own spelling, for :func:`standard_montage`."""
    return _labels(resolve_montage(montage))


@functools.lru_cache(maxsize=8)
def _labels(spec: str) -> dict[str, str]:
    return {n.lower(): n for n in _montage(spec).ch_names}


def tidy_channel_names(
    names: Sequence[str], types: Sequence[str] | None = None, montage: str = "auto"
) -> tuple[list[str], dict[str, str]]:
    """Strip ``EEG`` prefixes and reference suffixes so that EEG channels get positions.

    EDF exports and some amplifiers label channels ``"EEG Fp1-REF"``, ``"Fp1-A1"``,
    ``"C3-LE"``, ``"Cz-AVG"`` ...; electrode positions (coil site, ROI, interpolation, lead
    field, topomaps) are looked up by 10-05 label in :func:`standard_montage`, so such names
    have none. An EEG channel is renamed only when

    - its name is not itself a label of the montage (case-insensitive; ``"CZ"`` stays
      ``"CZ"``),
    - removing a leading ``EEG`` followed by a space, ``-`` or ``_``, and/or a trailing
      reference (``REF``, ``A1``, ``A2``, ``M1``, ``M2``, ``LE``, ``RE``, ``AVG``, ``AV``,
      ``AR``, ``CAR``, ``CZ``, ... after a space, ``-``, ``_`` or ``/``; any case) gives a
      label of the montage, which becomes the new name in the montage's spelling (``"EEG
      FP1-REF"`` -> ``"Fp1"``), and
    - the new name collides (case-insensitively) with no other channel's name, old or new:
      when two channels would end up with the same name, all channels involved keep theirs.

    Non-EEG channels are never renamed; nor is a name that does not reduce to a montage label
    (``"EMG-REF"``, ``"Status"``, ``"C3-C4"``). Old 10-20 names (``T3``, ``T4``, ...) are kept
    as they are: the built-in montages hold them with their own positions.

    Parameters
    ----------
    names : sequence of str
        Channel names, in order.
    types : sequence of str or None
        MNE channel types, one per name; only ``"eeg"`` channels are considered. None treats
        every channel as EEG.
    montage : str
        Built-in montage whose labels are the target (see :func:`standard_montage`).

    Returns
    -------
    new_names : list of str
        The names, tidied where possible, same order and length.
    renamed : dict of str to str
        Old name -> new name, for the channels that were renamed only.
    """
    names = [str(n) for n in names]
    if types is not None and len(types) != len(names):
        raise ValueError(f"{len(names)} channel names but {len(types)} channel types")
    candidates: dict[int, str] = {}
    for i, name in enumerate(names):
        if types is not None and types[i] != "eeg":
            continue
        stripped = _REF_SUFFIX.sub("", _EEG_PREFIX.sub("", name.strip(), count=1), count=1)
        if stripped and stripped != name:
            candidates[i] = stripped
    if not candidates:  # the common case: no montage needed
        return names, {}
    labels = _montage_labels(montage)
    proposals = {i: labels[c.lower()] for i, c in candidates.items()
                 if c.lower() in labels and names[i].lower() not in labels}
    final = [proposals.get(i, n) for i, n in enumerate(names)]
    counts: dict[str, int] = {}
    for n in final:
        counts[n.lower()] = counts.get(n.lower(), 0) + 1
    # a proposal whose new name another channel has (or would get) is dropped; every channel
    # involved then keeps its name
    clashing = {i for i, new in proposals.items() if counts[new.lower()] > 1}
    new_names = [names[i] if i in clashing else n for i, n in enumerate(final)]
    renamed = {names[i]: new for i, new in proposals.items() if i not in clashing}
    return new_names, renamed


def tidy_meta(meta: StreamMeta, montage: str = "auto") -> StreamMeta:
    """``meta`` with its channels renamed by :func:`tidy_channel_names`, logged once.

    Used where recordings (:func:`tmseeg.io.files.read_recording`) and LSL streams
    (:func:`tmseeg.stream.inlet.meta_from_info`) enter the engine, so that a file and its live
    stream get the same names. The labels as received are kept in
    :attr:`StreamMeta.original_names <tmseeg.stream.block.StreamMeta>` when any changed.

    Parameters
    ----------
    meta : StreamMeta
        As read from the file or the stream description.
    montage : str
        Built-in montage whose labels are the target.

    Returns
    -------
    StreamMeta
        ``meta`` itself when nothing was renamed (and every EEG channel has a position, see
        :func:`without_unplaced_eeg`).
    """
    new_names, renamed = tidy_channel_names(meta.ch_names, meta.ch_types, montage)
    if renamed:
        pairs = ", ".join(f"{old!r}->{new!r}" for old, new in renamed.items())
        log.warning("%s: renamed %d channel(s) to 10-05 labels for electrode positions: %s",
                    meta.name or "stream", len(renamed), pairs)
        meta = dataclasses.replace(meta, ch_names=tuple(new_names),
                                   original_names=meta.original_names or meta.ch_names)
    return without_unplaced_eeg(meta, montage)


#: channel types ``[channels] types`` / ``--channel-types`` may give
CHANNEL_TYPES = ("eeg", "emg", "eog", "ecg", "misc", "stim")


def parse_channel_types(text: str) -> dict[str, str]:
    """``"FDI=emg,APB=emg,Aux1=misc"`` (the ``--channel-types`` option) as a dict."""
    out: dict[str, str] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, sep, kind = item.partition("=")
        if not sep or not name.strip() or not kind.strip():
            raise ValueError(f"--channel-types: {item!r} is not NAME=TYPE (e.g. "
                             f"'FDI=emg,VEOG=eog'; types: {', '.join(CHANNEL_TYPES)})")
        out[name.strip()] = kind.strip().lower()
    return out


def with_channel_types(meta: StreamMeta, types: Mapping[str, str],
                       montage: str = "auto") -> StreamMeta:
    """``meta`` with the channel types the user gave (``[channels] types``), by name.

    Names match case-insensitively, the channel's name as tidied or as the file or stream gave
    it. A name the stream does not have, or a type tmseeg does not know, is an error naming
    it and the channels there are (a typo must not silently leave an EMG channel in the EEG).
    A channel typed ``eeg`` that has no electrode position becomes ``misc`` as in
    :func:`without_unplaced_eeg`.
    """
    if not types:
        return meta
    lookup: dict[str, int] = {}
    for names in (meta.original_names or (), meta.ch_names):
        for i, n in enumerate(names):
            lookup[str(n).lower()] = i
    new = list(meta.ch_types)
    missing = []
    for name, kind in types.items():
        if kind not in CHANNEL_TYPES:
            raise ValueError(f"channel type {kind!r} for {name!r} is not one of "
                             f"{', '.join(CHANNEL_TYPES)}")
        i = lookup.get(str(name).lower())
        if i is None:
            missing.append(name)
            continue
        new[i] = kind
    if missing:
        shown = ", ".join(meta.ch_names[:12]) + (" ..." if meta.n_channels > 12 else "")
        where = meta.name or "the stream"
        raise ValueError(f"channel types were given for {missing}, which {where} does not "
                         f"have (channels: {shown}); fix the names in [channels] types / "
                         "--channel-types")
    changed = {meta.ch_names[i]: f"{old}->{t}" for i, (old, t) in
               enumerate(zip(meta.ch_types, new)) if old != t}
    if not changed:
        return meta
    log.info("%s: channel types as configured: %s", meta.name or "stream", changed)
    return without_unplaced_eeg(dataclasses.replace(meta, ch_types=tuple(new)), montage)


def without_unplaced_eeg(meta: StreamMeta, montage: str = "auto") -> StreamMeta:
    """``meta`` with EEG channels that have no electrode position typed ``misc``, said once.

    On a cap whose other EEG channels are 10-05 electrodes, a channel without a position (an
    auxiliary input, an unnamed EMG, a typo) cannot take part in any spatial step: the coil
    site, bad-channel detection and interpolation, the average reference, the ROI, the lead
    field and topographies. It is left out of all of them (and of the TEP), instead of stopping
    the analysis when it turns bad. On a cap where no EEG channel has a 10-05 position nothing
    changes (those steps then say what they need).
    """
    eeg = meta.picks("eeg")
    if eeg.size == 0:
        return meta
    known = montage_positions(montage)
    unplaced = [int(i) for i in eeg if meta.ch_names[i].lower() not in known]
    if not unplaced:
        return meta
    if len(unplaced) > eeg.size / 2:  # not stray channels: the cap is not this montage's
        log.warning("%s: %d of %d EEG channels (%s) have no position in the montage %r: every "
                    "spatial step (coil site, bad channels, ROI, topographies) needs one. Pass "
                    "the cap's montage: --montage NAME|FILE or [channels] montage (an MNE "
                    "built-in such as GSN-HydroCel-129, or an .elc/.sfp/.bvef ... file).",
                    meta.name or "stream", len(unplaced), eeg.size,
                    ", ".join(meta.ch_names[i] for i in unplaced[:6])
                    + (" ..." if len(unplaced) > 6 else ""), resolve_montage(montage))
        return meta
    names = [meta.ch_names[i] for i in unplaced]
    log.warning("%s: channel(s) %s have no electrode position in the montage: left out of "
                "every spatial step (coil site, bad channels, reference, ROI, topographies) "
                "and of the TEP. If they are scalp electrodes, give them their 10-05 labels or "
                "pass the cap's montage (--montage NAME|FILE).",
                meta.name or "stream", names)
    types = list(meta.ch_types)
    for i in unplaced:
        types[i] = "misc"
    return dataclasses.replace(meta, ch_types=tuple(types))
