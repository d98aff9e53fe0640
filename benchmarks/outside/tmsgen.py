"""Independent synthetic TMS-EEG recording generator (outside benchmark).

Written from published descriptions of TMS-EEG artifacts only (see README.md
in this folder for the literature behind every model and parameter).  It
shares no code with the project under test and imports nothing from it.

Usage
-----
    python benchmarks/outside/tmsgen.py --out DIR [--quick] [--family NAME ...] [--seed N]

Python API
----------
    FAMILIES                        name -> family specification (dict)
    make_recording(family, n_pulses=None, seed=0) -> Recording (in memory)
    write_recording(rec, out_dir) -> {'data_path', 'truth_path', 'meta_path'}
    generate_all(out_dir, quick=False, families=None, seed=0) -> list[dict]

Conventions
-----------
* All amplitudes are in microvolts; ``data_uv`` is what the amplifier records
  (incl. clipping at its rail), ``clean_uv`` is the same recording without any
  TMS-caused artifact (pulse, ringing, saturation, decay, recharge,
  TMS-evoked muscle), but with brain TEP, background EEG, ocular activity,
  drifts, pops, line noise, faulty electrode, ECG and EMG/MEPs.
* EEG channels are referenced to a single reference electrode that is not
  among the recorded channels (the "file reference"); analyses must
  re-reference.
* Pulses happen at continuous (sub-sample) times; ``pulse_samples`` is the
  rounded sample index of each physical onset.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import signal

__all__ = ["FAMILIES", "Recording", "make_recording", "write_recording",
           "generate_all"]

# --------------------------------------------------------------------------
# Montages (standard 10-20 / 10-10 / 10-05 labels)
# --------------------------------------------------------------------------
EEG32 = ["Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2",
         "FC6", "T7", "C3", "Cz", "C4", "T8", "TP9", "CP5", "CP1", "CP2",
         "CP6", "TP10", "P7", "P3", "Pz", "P4", "P8", "PO9", "O1", "Oz", "O2",
         "PO10"]
EEG64 = ["Fp1", "Fz", "F3", "F7", "FT9", "FC5", "FC1", "C3", "T7", "TP9",
         "CP5", "CP1", "Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "TP10",
         "CP6", "CP2", "Cz", "C4", "T8", "FT10", "FC6", "FC2", "F4", "F8",
         "Fp2", "AF7", "AF3", "AFz", "F1", "F5", "FT7", "FC3", "C1", "C5",
         "TP7", "CP3", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6",
         "P2", "CPz", "CP4", "TP8", "C6", "C2", "FC4", "FT8", "F6", "AF8",
         "AF4", "F2", "Iz"]
assert len(EEG32) == 32 and len(set(EEG32)) == 32
assert len(EEG64) == 64 and len(set(EEG64)) == 64

_POS_CACHE: dict = {}


def _all_positions() -> dict:
    """Electrode positions (m, MNE head coordinates) of the 10-05 system."""
    if not _POS_CACHE:
        import mne
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mont = mne.channels.make_standard_montage("standard_1005")
        _POS_CACHE.update({k: np.asarray(v, float) for k, v in
                           mont.get_positions()["ch_pos"].items()})
    return _POS_CACHE


def _montage(n: int, ref: str) -> list:
    if n == 32:
        return list(EEG32)
    if n == 64:
        return list(EEG64)
    if n == 128:
        # 64-channel cap + greedy farthest-point additions from the 10-05
        # labels above ear level (deterministic).
        pos = _all_positions()
        chosen = list(EEG64)
        cand = [k for k, p in pos.items()
                if k not in chosen and k != ref and p[2] > -0.01
                and not k.startswith(("M", "A1", "A2", "T9", "T10"))]
        P = np.array([pos[k] for k in chosen])
        C = np.array([pos[k] for k in cand])
        dmin = np.min(np.linalg.norm(C[:, None] - P[None], axis=2), axis=1)
        while len(chosen) < 128:
            i = int(np.argmax(dmin))
            chosen.append(cand[i])
            dmin = np.minimum(dmin, np.linalg.norm(C - C[i], axis=1))
            dmin[i] = -1
        return chosen
    raise ValueError(n)


def _fit_sphere(P):
    A = np.c_[2 * P, np.ones(len(P))]
    b = (P ** 2).sum(1)
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    c = sol[:3]
    R = np.sqrt(sol[3] + c @ c)
    return c, R


# --------------------------------------------------------------------------
# Family specifications
# --------------------------------------------------------------------------
_BASE_LIFE = dict(blinks_per_min=0.0, saccades_per_min=0.0, drift_uv=15.0,
                  pops=0, bad=None, line_freq=50, line_uv=1.5, ecg=False,
                  eog=False, emg=False, bg_rms_uv=14.0)

FAMILIES: dict = {
    "biphasic_exp_bv": dict(
        fmt="bv", n_eeg=64, sfreq=5000.0, coil="C3", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=6000.0, lambda_cm=3.5),
        ringing=None, saturation=None,
        decay=dict(model="exp1", amp_uv=900.0, lambda_cm=3.0, tau_ms=(3, 30),
                   trial_sd=0.2),
        muscle=None, recharge=None,
        markers=dict(mode="annot", label="Stimulus/S  1", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=120, life=dict(_BASE_LIFE)),
    "ringing_bv": dict(
        fmt="bv", n_eeg=64, sfreq=5000.0, coil="C3", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=5000.0, lambda_cm=4.0),
        ringing=dict(freq_hz=2200.0, tau_ms=1.1, rel=0.45),
        saturation=None,
        decay=dict(model="exp1", amp_uv=700.0, lambda_cm=4.0, tau_ms=(2, 40),
                   trial_sd=0.25),
        muscle=dict(amp_uv=120.0, lambda_cm=4.0, n_units=25, window_ms=(5, 25),
                    trial_logsd=0.5),
        recharge=None,
        markers=dict(mode="annot", label="Stimulus/S  1", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=100, life=dict(_BASE_LIFE, blinks_per_min=6.0)),
    "saturation_fif": dict(
        fmt="fif", n_eeg=64, sfreq=5000.0, coil="C3", ref="M1", rail_uv=8000.0,
        pulse=dict(shape="biphasic", amp_uv=40000.0, lambda_cm=4.5),
        ringing=None,
        saturation=dict(min_ms=2.0, max_ms=4.0, recovery_tau_ms=1.0),
        decay=dict(model="powerlaw", amp_uv=1400.0, lambda_cm=4.0,
                   t0_ms=(2, 6), power=(1.0, 1.5), trial_sd=0.2),
        muscle=None, recharge=None,
        markers=dict(mode="annot", label="TMS", code=1, lag_ms=0.6,
                     jitter_ms=0.0),
        paired=None, n_full=100, life=dict(_BASE_LIFE, blinks_per_min=4.0)),
    "muscle_edf": dict(
        fmt="edf", n_eeg=32, sfreq=2000.0, coil="F3", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=4000.0, lambda_cm=4.0),
        ringing=None, saturation=None, decay=None,
        muscle=dict(amp_uv=350.0, lambda_cm=4.5, n_units=45, window_ms=(5, 40),
                    trial_logsd=0.7),
        recharge=None,
        markers=dict(mode="annot", label="TMS", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=150,
        life=dict(_BASE_LIFE, blinks_per_min=12.0, saccades_per_min=3.0)),
    "fastslow_set": dict(
        fmt="set", n_eeg=64, sfreq=10000.0, coil="C3", ref="FCz",
        rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=7000.0, lambda_cm=4.0),
        ringing=None, saturation=None,
        decay=dict(model="exp2", amp_uv=1200.0, lambda_cm=6.0,
                   tau_fast_ms=(2, 8), tau_slow_ms=(30, 150),
                   slow_frac=(0.1, 0.35), trial_sd=0.3),
        muscle=None, recharge=None,
        markers=dict(mode="annot", label="TMS", code=1, lag_ms=1.5,
                     jitter_ms=0.3),
        paired=None, n_full=80, life=dict(_BASE_LIFE, emg=True,
                                          blinks_per_min=5.0)),
    "nodecay_edf": dict(
        fmt="edf", n_eeg=32, sfreq=1000.0, coil="C4", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="monophasic", amp_uv=3000.0, lambda_cm=4.0),
        ringing=None, saturation=None, decay=None, muscle=None, recharge=None,
        markers=dict(mode="annot", label="TMS", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=150, life=dict(_BASE_LIFE, blinks_per_min=12.0)),
    "variable_decay_fif": dict(
        fmt="fif", n_eeg=128, sfreq=2000.0, coil="C3", ref="M2",
        rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=6000.0, lambda_cm=3.5),
        ringing=None, saturation=None,
        decay=dict(model="exp2", amp_uv=1000.0, lambda_cm=4.0,
                   tau_fast_ms=(3, 10), tau_slow_ms=(30, 90),
                   slow_frac=(0.05, 0.25), trial_logsd=0.7, trial_sd=0.2,
                   trial_tau_range=(0.75, 1.33)),
        muscle=None,
        recharge=dict(delay_ms=80.0, amp_uv=30.0, tau_ms=3.0, lambda_cm=8.0),
        markers=dict(mode="stim", label="STI 014", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=120,
        life=dict(_BASE_LIFE, ecg=True, blinks_per_min=6.0,
                  bad=dict(kind="drift", channel="P8"))),
    "paired_bv": dict(
        fmt="bv", n_eeg=32, sfreq=20000.0, coil="C3", ref="FCz",
        rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=6000.0, lambda_cm=3.5),
        ringing=None, saturation=None,
        decay=dict(model="exp1", amp_uv=800.0, lambda_cm=3.5, tau_ms=(3, 25),
                   trial_sd=0.2),
        muscle=None, recharge=None,
        markers=dict(mode="annot", label="Stimulus/S  2", code=2, lag_ms=0.0,
                     jitter_ms=0.0, only_test=True),
        paired=dict(isi_ms=(3.0, 12.0), cond_brain_scale=0.3,
                    test_brain_scale={3.0: 0.7, 12.0: 1.15}),
        n_full=60, life=dict(_BASE_LIFE, blinks_per_min=4.0)),
    "life_nomarker_bv": dict(
        fmt="bv", n_eeg=64, sfreq=2000.0, coil="C3", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="biphasic", amp_uv=5000.0, lambda_cm=4.0),
        ringing=None, saturation=None,
        decay=dict(model="exp1", amp_uv=250.0, lambda_cm=3.0, tau_ms=(3, 15),
                   trial_sd=0.2),
        muscle=None, recharge=None,
        markers=dict(mode="none", label=None, code=None, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=120,
        life=dict(_BASE_LIFE, blinks_per_min=25.0, saccades_per_min=15.0,
                  drift_uv=80.0, pops=2, line_freq=60, line_uv=8.0, ecg=True,
                  eog=True, bg_rms_uv=16.0)),
    "badchan_bv": dict(
        fmt="bv", n_eeg=64, sfreq=5000.0, coil="C3", ref="FCz", rail_uv=16383.5,
        pulse=dict(shape="monophasic", amp_uv=5000.0, lambda_cm=3.5),
        ringing=None, saturation=None,
        decay=dict(model="exp1", amp_uv=900.0, lambda_cm=3.0, tau_ms=(3, 30),
                   trial_sd=0.2),
        muscle=None, recharge=None,
        markers=dict(mode="annot", label="Stimulus/S  1", code=1, lag_ms=0.0,
                     jitter_ms=0.0),
        paired=None, n_full=100,
        life=dict(_BASE_LIFE, blinks_per_min=10.0, line_freq=50, line_uv=3.0,
                  bad=dict(kind="noisy", channel="PO8"))),
}

# canonical TEP (latency ms, width sd ms, amplitude range at ROI in uV,
# generator depth as fraction of head radius, placement)
_TEP_COMPONENTS = [
    ("N15", 15.0, 2.5, (-4.0, -2.0), 0.72, "coil"),
    ("P30", 30.0, 4.0, (3.0, 5.0), 0.70, "coil"),
    ("N45", 45.0, 5.5, (-6.0, -4.0), 0.62, "coil_post"),
    ("P60", 60.0, 7.0, (3.0, 5.0), 0.60, "coil_front"),
    ("N100", 105.0, 17.0, (-10.0, -6.0), 0.45, "central"),
    ("P180", 185.0, 30.0, (4.0, 6.0), 0.40, "vertex"),
]


@dataclass
class Recording:
    name: str
    sfreq: float
    ch_names: list
    ch_types: list
    data_uv: np.ndarray
    clean_uv: np.ndarray
    pulse_samples: np.ndarray
    epoch_pulse_samples: np.ndarray
    markers: list
    roi: list
    coil_channel: str
    bad_channels: list
    line_freq: int
    info: dict = field(default_factory=dict)
    # extras (not part of the required API, but handy)
    brain_evoked_uv: np.ndarray | None = None
    clean_evoked_uv: np.ndarray | None = None
    evoked_times_s: np.ndarray | None = None
    pulse_times_s: np.ndarray | None = None
    family: str = ""


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def _rng(family, seed, salt=""):
    return np.random.default_rng(
        [int(seed), zlib.crc32((family + "|" + salt).encode())])


def _dipole_pot(r_el, r0, q):
    """Infinite homogeneous-medium dipole potential (arbitrary units)."""
    d = r_el - r0[None]
    return (d @ q) / np.linalg.norm(d, axis=1) ** 3


def _colored_noise(rng, n, fs, shape_fn):
    """Gaussian noise with amplitude spectrum shape_fn(freqs), unit RMS."""
    from scipy import fft as sfft
    nf = sfft.next_fast_len(n, real=True)
    X = rng.standard_normal(nf // 2 + 1) + 1j * rng.standard_normal(nf // 2 + 1)
    f = np.fft.rfftfreq(nf, 1.0 / fs)
    X *= shape_fn(f)
    x = sfft.irfft(X, nf, workers=2)[:n]
    s = x.std()
    return (x / s if s > 0 else x).astype(np.float32)


def _slow_noise(rng, n, fs, fmax, rate=20.0):
    """Smooth random process below fmax (generated on a coarse grid)."""
    m = int(np.ceil(n / fs * rate)) + 4
    w = rng.standard_normal(m)
    b, a = signal.butter(2, min(0.99, fmax / (rate / 2)))
    w = signal.filtfilt(b, a, w)
    w /= (w.std() + 1e-12)
    tc = np.arange(m) / rate
    return np.interp(np.arange(n) / fs, tc, w).astype(np.float32)


def _add_window(arr, start, block):
    """arr[:, start:start+L] += block with clipping to array bounds."""
    n = arr.shape[1]
    L = block.shape[-1]
    a0, a1 = max(start, 0), min(start + L, n)
    if a1 <= a0:
        return
    arr[..., a0:a1] += block[..., a0 - start:a1 - start]


def _epoch_mean(arr, centers, n_pre, n_post):
    acc = np.zeros((arr.shape[0], n_pre + n_post + 1), np.float64)
    for c in centers:
        acc += arr[:, c - n_pre:c + n_post + 1]
    return (acc / max(len(centers), 1)).astype(np.float32)


# --------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------
def make_recording(family: str, n_pulses: int | None = None,
                   seed: int = 0) -> Recording:
    if family not in FAMILIES:
        raise KeyError(f"unknown family {family!r}; known: {list(FAMILIES)}")
    spec = copy.deepcopy(FAMILIES[family])
    life = spec["life"]
    fs = float(spec["sfreq"])
    rng = _rng(family, seed)
    n_ev = int(n_pulses if n_pulses is not None else spec["n_full"])

    # ---------------- geometry ----------------
    allpos = _all_positions()
    eeg = _montage(spec["n_eeg"], spec["ref"])
    assert spec["ref"] not in eeg
    P = np.array([allpos[c] for c in eeg])
    centre, R = _fit_sphere(P)
    P = P - centre
    Pref = allpos[spec["ref"]] - centre
    Pall = np.vstack([P, Pref[None]])           # electrodes + reference
    U = Pall / np.linalg.norm(Pall, axis=1, keepdims=True)
    n_eeg = len(eeg)
    coil = spec["coil"]
    coil_pos = allpos[coil] - centre
    coil_u = coil_pos / np.linalg.norm(coil_pos)
    dist_coil = np.linalg.norm(Pall - coil_pos[None], axis=1)   # m

    def rereference(g):        # electrode-level gains (n_eeg+1,) -> channels
        return g[:n_eeg] - g[n_eeg]

    # ROI: coil electrode + nearest EEG neighbours (5 in total)
    d_eeg = dist_coil[:n_eeg]
    order = np.argsort(d_eeg)
    roi = [eeg[i] for i in order[:5]]

    # ---------------- channels ----------------
    ch_names = list(eeg)
    ch_types = ["eeg"] * n_eeg
    if life["eog"]:
        ch_names.append("EOG"); ch_types.append("eog")
    if life["ecg"]:
        ch_names.append("ECG"); ch_types.append("ecg")
    if life["emg"]:
        ch_names += ["FDI", "APB"]; ch_types += ["emg", "emg"]
    stim_mode = spec["markers"]["mode"] == "stim"
    if stim_mode:
        ch_names.append("STI 014"); ch_types.append("stim")
    n_ch = len(ch_names)
    idx = {c: i for i, c in enumerate(ch_names)}

    # ---------------- timing ----------------
    paired = spec["paired"]
    ipi = (3.0, 5.0) if paired else (1.5, 3.0)
    t = 5.0 + rng.uniform(0.0, 0.5)
    ev_times = []
    for _ in range(n_ev):
        ev_times.append(t)
        t += rng.uniform(*ipi)
    ev_times = np.array(ev_times)
    duration = float(np.ceil(ev_times[-1] + 2.5 + rng.uniform(0.0, 0.5)))
    N = int(round(duration * fs))          # whole seconds (EDF records fit)
    # the true physical onsets are continuous -> sub-sample offsets
    ev_times = np.round(ev_times * fs) / fs + rng.uniform(-0.5, 0.5, n_ev) / fs
    pulses = []          # (time_s, role, isi_ms)
    if paired:
        isis = np.array([paired["isi_ms"][i % 2] for i in range(n_ev)])
        rng.shuffle(isis)
        for tt, isi in zip(ev_times, isis):
            pulses.append((tt - isi / 1000.0, "cond", float(isi)))
            pulses.append((tt, "test", float(isi)))
    else:
        isis = np.zeros(n_ev)
        for tt in ev_times:
            pulses.append((tt, "single", 0.0))
    pulse_times = np.array([p[0] for p in pulses])
    pulse_samples = np.round(pulse_times * fs).astype(np.int64)
    epoch_pulse_samples = np.round(ev_times * fs).astype(np.int64)
    tvec_dt = 1.0 / fs

    clean = np.zeros((n_ch, N), np.float32)
    brain = np.zeros((n_eeg, N), np.float32)

    # ---------------- background EEG ----------------
    bg = np.zeros((n_eeg + 1, N), np.float32)
    n_src = 36
    src_list, gains = [], []
    rb = _rng(family, seed, "bg")
    beta = rb.uniform(0.9, 1.4)
    for s in range(n_src):
        u = rb.standard_normal(3); u /= np.linalg.norm(u)
        if u[2] < -0.3:
            u[2] = -u[2]
        r0 = u * R * rb.uniform(0.35, 0.75)
        q = rb.standard_normal(3)
        gains.append(_dipole_pot(Pall, r0, q))
        src_list.append(("pink", None))
    # alpha (occipito-parietal) and mu (sensorimotor) generators
    rhythm = []
    for nm, f0, depth in [("O1", 10.0, 0.6), ("O2", 10.0, 0.6),
                          ("Pz", 9.5, 0.55), ("C3", 11.0, 0.7),
                          ("C4", 11.0, 0.7)]:
        pu = (allpos[nm] - centre); pu /= np.linalg.norm(pu)
        r0 = pu * R * depth
        q = pu + 0.3 * rb.standard_normal(3)
        gains.append(_dipole_pot(Pall, r0, q))
        rhythm.append((nm, f0 * rb.uniform(0.95, 1.05)))
    G = np.array(gains).T                          # (n_eeg+1, n_src+5)
    G = G / np.linalg.norm(G, axis=0, keepdims=True)
    # source time courses, projected in chunks
    chunk = 8
    cols = list(range(G.shape[1]))
    for c0 in range(0, len(cols), chunk):
        cs = cols[c0:c0 + chunk]
        S = np.empty((len(cs), N), np.float32)
        for k, ci in enumerate(cs):
            if ci < n_src:
                S[k] = _colored_noise(
                    rb, N, fs,
                    lambda f: np.where(f > 0, 1.0 / np.maximum(f, 0.5) ** (beta / 2), 0)
                    * (1.0 / (1.0 + (f / 70.0) ** 4)))
            else:
                nm, f0 = rhythm[ci - n_src]
                bw = 1.2
                base = _colored_noise(
                    rb, N, fs, lambda f: np.exp(-0.5 * ((f - f0) / bw) ** 2)
                    + (0.4 * np.exp(-0.5 * ((f - 2 * f0) / 2.0) ** 2)
                       if nm in ("C3", "C4") else 0.0))
                amp = 1.2 if nm.startswith(("O", "P")) else 0.8
                S[k] = base * amp * (1.0 + 0.6 * _slow_noise(rb, N, fs, 0.3))
        bg += G[:, cs].astype(np.float32) @ S
        del S
    bg_ch = bg[:n_eeg] - bg[n_eeg][None]
    del bg
    rms = np.median(bg_ch.std(axis=1))
    bg_ch *= np.float32(life["bg_rms_uv"] * rng.uniform(0.85, 1.15) / rms)
    clean[:n_eeg] += bg_ch
    del bg_ch

    # ---------------- brain TEP ----------------
    rt = _rng(family, seed, "tep")
    tep_params = []
    cz = (allpos["Cz"] - centre); cz /= np.linalg.norm(cz)
    fwd = np.array([0.0, 1.0, 0.0])
    topo_list = []
    for name, lat, wid, arange, depth, place in _TEP_COMPONENTS:
        lat_f = lat * rt.uniform(0.9, 1.1)
        wid_f = wid * rt.uniform(0.85, 1.15)
        amp = rt.uniform(*arange)
        if place == "coil":
            c = coil_u
        elif place == "coil_post":
            c = coil_u - 0.25 * fwd
        elif place == "coil_front":
            c = coil_u + 0.25 * fwd + 0.15 * cz
        elif place == "central":
            c = 0.55 * coil_u + 0.45 * cz
        else:
            c = 0.3 * coil_u + 0.7 * cz
        c = c / np.linalg.norm(c)
        r0 = c * R * depth
        q = c + 0.35 * rt.standard_normal(3)          # mostly radial
        g = rereference(_dipole_pot(Pall, r0, q))
        gav = g - g.mean()
        roi_idx = [eeg.index(r) for r in roi]
        norm = gav[roi_idx].mean()
        if abs(norm) < 0.3 * np.abs(gav).max():       # keep ROI well covered
            q = c.copy()
            g = rereference(_dipole_pot(Pall, r0, q))
            gav = g - g.mean()
            norm = gav[roi_idx].mean()
        topo_list.append(g / norm * amp)               # uV at ROI (avg ref)
        tep_params.append(dict(name=name, latency_ms=round(lat_f, 2),
                               width_ms=round(wid_f, 2),
                               roi_amp_uv=round(amp, 3), depth=depth,
                               placement=place))
    lat_j = np.array([p["latency_ms"] for p in tep_params]) / 1000.0
    wid_j = np.array([p["width_ms"] for p in tep_params]) / 1000.0
    # trial-to-trial variability: lognormal amplitude (sd 0.3 in log units)
    # and Gaussian latency jitter (sd 0.5 ms + 4 % of the latency)
    amp_logsd = 0.3
    lat_sd = 0.0005 + 0.04 * lat_j
    # calibrate so that the EXPECTED average ROI waveform (avg reference)
    # reaches the drawn peak amplitudes at the drawn latencies, despite the
    # overlap of neighbouring components and the jitter-induced smearing.
    w_eff = np.sqrt(wid_j ** 2 + lat_sd ** 2)
    g_eff = wid_j / w_eff * np.exp(amp_logsd ** 2 / 2)
    M = g_eff[None] * np.exp(-0.5 * ((lat_j[:, None] - lat_j[None]) / w_eff[None]) ** 2)
    target = np.array([p["roi_amp_uv"] for p in tep_params])
    coef = np.linalg.solve(M, target) / target
    T = (np.array(topo_list).T * coef[None]).astype(np.float32)   # (n_eeg, n_comp)
    L_br = int(0.6 * fs)
    for (pt, role, isi) in pulses:
        scale = 1.0
        if paired:
            scale = (paired["cond_brain_scale"] if role == "cond"
                     else paired["test_brain_scale"][isi])
        s0 = int(np.floor(pt * fs))
        tt = (s0 + np.arange(L_br)) / fs - pt             # time since pulse
        a_tr = np.exp(rt.normal(0, amp_logsd, len(lat_j))) * scale
        l_tr = lat_j + rt.normal(0, 1, len(lat_j)) * lat_sd
        W = a_tr[:, None] * np.exp(-0.5 * ((tt[None] - l_tr[:, None])
                                           / wid_j[:, None]) ** 2)
        W[:, tt < 0] = 0
        _add_window(brain, s0, (T @ W.astype(np.float32)))
    clean[:n_eeg] += brain

    # ---------------- ordinary EEG life ----------------
    rl = _rng(family, seed, "life")
    # ocular generators (corneo-retinal dipoles) in front of the head
    eyes = []
    for side in (-1, 1):
        e = np.array([side * 0.032, 0.075, -0.035]) - centre
        eyes.append(e)
    Peog = None
    if life["eog"]:
        Peog = np.array([-0.032, 0.085, -0.065]) - centre   # below left eye
    def eye_gain(q):
        g = sum(_dipole_pot(Pall, e, q) for e in eyes)
        geog = (sum(_dipole_pot(Peog[None], e, q) for e in eyes)[0]
                if Peog is not None else 0.0)
        return g, geog
    gb, gb_eog = eye_gain(np.array([0.0, 0.3, 1.0]))        # blink (vertical)
    gbc = rereference(gb)
    fp = [eeg.index(c) for c in ("Fp1", "Fp2")]
    nb = gbc[fp].mean()
    gbc /= nb
    gb_eog = (gb_eog - gb[n_eeg]) / nb
    gs_l, gs_eog_l = eye_gain(np.array([1.0, 0.0, 0.0]))    # horizontal
    gsc = rereference(gs_l)
    f78 = [eeg.index("F7"), eeg.index("F8")]
    ns = (gsc[f78[1]] - gsc[f78[0]]) / 2.0
    gsc /= ns
    gs_eog = (gs_eog_l - gs_l[n_eeg]) / ns
    eog_trace = np.zeros(N, np.float32) if life["eog"] else None

    n_blinks = rl.poisson(life["blinks_per_min"] * duration / 60.0)
    Lb = int(0.5 * fs)
    tb = np.arange(Lb) / fs
    for _ in range(n_blinks):
        tb0 = rl.uniform(0.5, duration - 1.0)
        amp = rl.uniform(100.0, 300.0)
        tau = rl.uniform(0.045, 0.07)
        w = (tb / tau) ** 2 * np.exp(2 - tb / tau) / 1.0
        w = (amp * w / w.max()).astype(np.float32)
        s0 = int(tb0 * fs)
        _add_window(clean[:n_eeg], s0, np.outer(gbc, w).astype(np.float32))
        if eog_trace is not None:
            _add_window(eog_trace[None], s0, (gb_eog * w)[None].astype(np.float32))
    n_sacc = rl.poisson(life["saccades_per_min"] * duration / 60.0)
    for _ in range(n_sacc):
        ts0 = rl.uniform(0.5, duration - 2.5)
        amp = rl.choice([-1, 1]) * rl.uniform(40.0, 150.0)
        hold = rl.uniform(0.3, 1.5)
        Ls = int((hold + 0.1) * fs)
        ts = np.arange(Ls) / fs
        rise = 1.0 / (1.0 + np.exp(-(ts - 0.015) / 0.005))
        fall = 1.0 / (1.0 + np.exp(-(ts - 0.015 - hold) / 0.005))
        w = (amp * (rise - fall)).astype(np.float32)
        s0 = int(ts0 * fs)
        _add_window(clean[:n_eeg], s0, np.outer(gsc, w).astype(np.float32))
        if eog_trace is not None:
            _add_window(eog_trace[None], s0, (gs_eog * w)[None].astype(np.float32))
    # slow drifts (electrode potentials), per channel
    for i in range(n_eeg):
        clean[i] += np.float32(life["drift_uv"] * rl.uniform(0.3, 1.0)) * \
            _slow_noise(rl, N, fs, 0.05, rate=2.0)
    # electrode pops (step, then slow recovery) on random non-ROI channels
    pops = []
    cand = [c for c in eeg if c not in roi and c not in fp]
    for k in range(life["pops"]):
        ch = cand[int(rl.integers(len(cand)))]
        tp = rl.uniform(10.0, duration - 5.0)
        amp = rl.choice([-1, 1]) * rl.uniform(300.0, 800.0)
        tau = rl.uniform(0.4, 1.5)
        Lp = int(6 * tau * fs)
        w = (amp * np.exp(-np.arange(Lp) / fs / tau)).astype(np.float32)
        _add_window(clean[idx[ch]][None], int(tp * fs), w[None])
        pops.append(dict(channel=ch, time_s=round(tp, 3), amp_uv=round(amp, 1),
                         tau_s=round(tau, 3)))
    # ECG (PQRST from Gaussians) + small cardiac field on EEG
    ecg_trace = None
    if True:  # always: cardiac field leaks into EEG even without an ECG lead
        hr = rl.uniform(58, 78)
        beats = []
        tcur = rl.uniform(0, 1)
        while tcur < duration:
            beats.append(tcur)
            tcur += 60.0 / hr * (1 + 0.04 * rl.standard_normal())
        waves = [(-0.2, 0.025, 0.12), (-0.03, 0.01, -0.12), (0.0, 0.011, 1.0),
                 (0.03, 0.01, -0.25), (0.25, 0.05, 0.3)]
        Le = int(0.7 * fs)
        te = np.arange(Le) / fs - 0.3
        beat = sum(a * np.exp(-0.5 * ((te - m) / s) ** 2) for m, s, a in waves)
        ecg_trace = np.zeros(N, np.float32)
        amp_ecg = rl.uniform(800, 1500)
        for b in beats:
            _add_window(ecg_trace[None], int((b - 0.3) * fs),
                        (amp_ecg * beat)[None].astype(np.float32))
        # cardiac field leakage ~2-4 uV, left-right gradient
        lr = P[:, 0] / np.abs(P[:, 0]).max()
        leak = (rl.uniform(2, 4) / amp_ecg * (0.5 * lr - 0.3 * P[:, 2] / R)).astype(np.float32)
        clean[:n_eeg] += leak[:, None] * ecg_trace[None]
    if life["ecg"]:
        clean[idx["ECG"]] = ecg_trace
    if life["eog"]:
        clean[idx["EOG"]] = eog_trace
    # sensor white noise ~1 uV
    for i in range(n_ch):
        if ch_types[i] == "stim":
            continue
        clean[i] += rl.standard_normal(N).astype(np.float32) * np.float32(
            rl.uniform(0.7, 1.3))
    # line noise (50/60 Hz + harmonics), common + channel-specific
    lf = life["line_freq"]
    tt_all = (np.arange(N) / fs).astype(np.float64)
    line_base = []
    for h, rel in [(1, 1.0), (2, 0.3), (3, 0.15)]:
        if h * lf < fs / 2:
            ph = rl.uniform(0, 2 * np.pi)
            line_base.append((np.sin(2 * np.pi * h * lf * tt_all + ph) * rel)
                             .astype(np.float32))
    line_sig = sum(line_base)
    line_sig2 = sum(np.roll(x, int(fs / lf / 4)) for x in line_base)
    for i in range(n_ch):
        if ch_types[i] == "stim":
            continue
        a1 = life["line_uv"] * rl.uniform(0.3, 1.2)
        a2 = life["line_uv"] * rl.uniform(-0.3, 0.3)
        clean[i] += np.float32(a1) * line_sig + np.float32(a2) * line_sig2
    del line_base, tt_all
    # EMG channels: background EMG + MEPs (physiological response -> clean)
    meps = []
    if life["emg"]:
        emg_shape = lambda f: ((f > 20) & (f < min(450, fs / 2 - 1))).astype(float)
        for nm, lat0, med in [("FDI", 22.0, 900.0), ("APB", 23.5, 600.0)]:
            clean[idx[nm]] += 6.0 * _colored_noise(rl, N, fs, emg_shape)
            Lm = int(0.05 * fs)
            for (pt, role, isi) in pulses:
                a = med * np.exp(rl.normal(0, 0.6))
                lat = (lat0 + rl.normal(0, 0.8)) / 1000.0
                s0 = int(np.floor(pt * fs))
                tm = (s0 + np.arange(Lm)) / fs - pt - lat
                sd = 0.0025
                w = (-tm / sd * np.exp(-0.5 * (tm / sd) ** 2)
                     - 0.35 * np.exp(-0.5 * ((tm - 0.008) / 0.003) ** 2))
                w = np.where(tm > -0.006, w, 0)
                w = a * w / (np.ptp(w) + 1e-9)
                _add_window(clean[idx[nm]][None], s0, w[None].astype(np.float32))
                meps.append(float(a))
    # faulty electrode
    bad_channels = []
    if life["bad"]:
        bch = life["bad"]["channel"]
        kind = life["bad"]["kind"]
        i = idx[bch]
        if kind == "noisy":
            clean[i] += 60.0 * _colored_noise(
                rl, N, fs, lambda f: 1.0 / np.maximum(f, 1.0) ** 0.3)
            clean[i] += np.float32(40.0) * line_sig
        elif kind == "flat":
            clean[i] = rl.standard_normal(N).astype(np.float32) * 0.2
        elif kind == "drift":
            clean[i] += np.float32(2500.0) * _slow_noise(rl, N, fs, 0.05, rate=2.0)
            clean[i] += 25.0 * _colored_noise(
                rl, N, fs, lambda f: 1.0 / np.maximum(f, 1.0) ** 0.5)
        bad_channels = [bch]
    del line_sig, line_sig2

    # ======================================================================
    # TMS-caused artifacts -> art (file reference)
    # ======================================================================
    art = np.zeros((n_ch, N), np.float32)
    ra = _rng(family, seed, "art")
    # ---- pulse artifact (induced voltage ~ dI/dt, amplifier anti-aliasing)
    pspec = spec["pulse"]
    os_f = int(np.ceil(1.0e6 / fs))
    ffs = fs * os_f
    Tp = 0.29e-3                                      # biphasic period
    tf = np.arange(int(1.2e-3 * ffs)) / ffs
    if pspec["shape"] == "biphasic":
        wave = np.where(tf < Tp, np.cos(2 * np.pi * tf / Tp)
                        * np.exp(-tf / 0.4e-3), 0.0)
    else:  # monophasic: fast rise (~70 us) then slow ~0.6 ms decay of current
        tr = 0.07e-3
        cur = np.where(tf < tr, np.sin(np.pi / 2 * tf / tr),
                       np.exp(-(tf - tr) / 0.2e-3))
        wave = np.gradient(cur) * ffs * tr
    pad = int(0.5e-3 * ffs)
    wave = np.r_[np.zeros(pad), wave, np.zeros(int(4e-3 * ffs))]
    b_aa, a_aa = signal.butter(2, min(0.25 * fs, 8000.0) / (ffs / 2))
    wave_f = signal.lfilter(b_aa, a_aa, wave)
    t_fine = (np.arange(len(wave_f)) - pad) / ffs      # relative to onset
    # amplitude normalisation at zero sub-sample offset
    norm_p = np.abs(wave_f[pad::os_f]).max()
    wave_f /= norm_p
    # polarity pattern: electrodes on either side of the coil along the induced
    # E-field direction (tangential, 45 deg to the midline +- 20) see opposite
    # polarities; electrodes under the coil / perpendicular get random signs;
    # 15 % random flips (lead routing, contact).
    ang = np.deg2rad(45.0 + ra.uniform(-20, 20))
    e1 = np.cross(coil_u, [0, 0, 1.0]); e1 /= np.linalg.norm(e1)
    e2 = np.cross(coil_u, e1)
    e_dir = np.cos(ang) * e1 + np.sin(ang) * e2

    def polarity(flip=0.15):
        v = Pall - coil_pos[None]
        c = (v @ e_dir) / (np.linalg.norm(v, axis=1) + 1e-9)
        sg = np.where(np.abs(c) > 0.3, np.sign(c),
                      ra.choice([-1.0, 1.0], len(c)))
        sg *= np.where(ra.uniform(size=len(c)) < flip, -1.0, 1.0)
        return sg

    sgn = polarity() * ra.uniform(0.5, 1.0, n_eeg + 1)
    gp = pspec["amp_uv"] * (np.exp(-dist_coil / (pspec["lambda_cm"] / 100))
                            + 0.03) * sgn
    gp[n_eeg] *= 0.5
    gp_ch = np.zeros(n_ch); gp_ch[:n_eeg] = rereference(gp)
    for nm in ch_names[n_eeg:]:
        if ch_types[idx[nm]] in ("emg", "ecg", "eog"):
            gp_ch[idx[nm]] = ra.choice([-1, 1]) * ra.uniform(100, 400)
    ring = spec["ringing"]
    if ring:
        g_ring = gp_ch * ring["rel"] * ra.uniform(0.8, 1.2, n_ch)
    n_pre_p, n_post_p = 3, int(np.ceil(8e-3 * fs)) + 2
    for (pt, role, isi) in pulses:
        s0 = int(np.floor(pt * fs)) - n_pre_p
        ts = (s0 + np.arange(n_pre_p + n_post_p)) / fs - pt
        w = np.interp(ts, t_fine, wave_f, left=0.0, right=0.0)
        jit = ra.normal(1.0, 0.03)
        blk = np.outer(gp_ch * jit, w)
        if ring:
            wr = np.where(ts >= 0, np.exp(-ts / (ring["tau_ms"] / 1000))
                          * np.sin(2 * np.pi * ring["freq_hz"] * ts + 0.3), 0)
            blk += np.outer(g_ring * jit, wr)
        _add_window(art, s0, blk.astype(np.float32))

    # ---- decay artifacts (electrode-specific)
    dspec = spec["decay"]
    decay_info = None
    if dspec:
        m = dspec["model"]
        ne = n_eeg + 1
        amp_e = (dspec["amp_uv"] * np.exp(-dist_coil / (dspec["lambda_cm"] / 100))
                 * np.exp(ra.normal(0, 0.35, ne)) * polarity(0.25))
        amp_e[n_eeg] *= 0.5
        if m == "exp1":
            tau = np.exp(ra.uniform(np.log(dspec["tau_ms"][0]),
                                    np.log(dspec["tau_ms"][1]), ne)) / 1000
        elif m == "exp2":
            tf_ = np.exp(ra.uniform(*np.log(dspec["tau_fast_ms"]), ne)) / 1000
            tsl = np.exp(ra.uniform(*np.log(dspec["tau_slow_ms"]), ne)) / 1000
            sf = ra.uniform(*dspec["slow_frac"], ne)
            ssg = np.where(ra.uniform(0, 1, ne) < 0.7, 1.0, -1.0)
        else:
            t0 = ra.uniform(*dspec["t0_ms"], ne) / 1000
            pw = ra.uniform(*dspec["power"], ne)
        Ld = int(1.2 * fs)
        for (pt, role, isi) in pulses:
            s0 = int(np.floor(pt * fs))
            ts = (s0 + np.arange(Ld)) / fs - pt
            ts = np.maximum(ts, 0.0)
            valid = ((s0 + np.arange(Ld)) / fs >= pt).astype(float)
            taper = np.where(ts < 0.8, 1.0,
                             0.5 * (1 + np.cos(np.pi * np.clip((ts - 0.8) / 0.4, 0, 1))))
            fac = np.maximum(ra.normal(1.0, dspec.get("trial_sd", 0.2), ne), 0.2)
            if "trial_logsd" in dspec:
                fac = fac * np.exp(ra.normal(0, dspec["trial_logsd"]))
            a = amp_e * fac
            tscale = (np.exp(ra.uniform(*np.log(dspec["trial_tau_range"])))
                      if "trial_tau_range" in dspec else 1.0)
            if m == "exp1":
                E = np.exp(-ts[None] / (tau[:, None] * tscale))
            elif m == "exp2":
                E = ((1 - sf[:, None]) * np.exp(-ts[None] / (tf_[:, None] * tscale))
                     + ssg[:, None] * sf[:, None]
                     * np.exp(-ts[None] / (tsl[:, None] * tscale)))
            else:
                E = (1.0 + ts[None] / t0[:, None]) ** (-pw[:, None])
            E = (a[:, None] * E * (valid * taper)[None])
            blk = (E[:n_eeg] - E[n_eeg][None]).astype(np.float32)
            _add_window(art[:n_eeg], s0, blk)
        decay_info = dict(model=m, n_channels_over_100uv=int(
            (np.abs(rereference(amp_e)) > 100).sum()))

    # ---- TMS-evoked muscle (motor-unit-like polyphasic bursts)
    mspec = spec["muscle"]
    if mspec:
        # muscle sites: temporalis / frontalis below/lateral to the coil
        lat_side = np.sign(coil_pos[0]) if abs(coil_pos[0]) > 1e-3 else -1.0
        sites = []
        for dx, dy, dz in [(0.025, 0.0, -0.03), (0.02, 0.03, -0.035),
                           (0.0, 0.04, -0.02)]:
            s = coil_pos + np.array([lat_side * dx, dy, dz])
            s = s / np.linalg.norm(s) * R * 0.97
            sites.append(s)
        fib = [np.array([0, 0, 1.0]), np.array([0.0, 0.6, 0.8]),
               np.array([0.3, 0.0, 1.0])]
        topo_sites = []
        for s, fv in zip(sites, fib):
            fv = fv / np.linalg.norm(fv)
            d = Pall - s[None]
            dn = np.linalg.norm(d, axis=1)
            g = np.exp(-dn / (mspec["lambda_cm"] / 100)) * (
                0.3 + (d @ fv) / (dn + 1e-6))
            topo_sites.append(rereference(g))
        topo_sites = np.array(topo_sites)               # (3, n_eeg)
        topo_sites /= np.abs(topo_sites).max(axis=1, keepdims=True)
        Lm = int(0.06 * fs)
        w0, w1 = mspec["window_ms"]
        for (pt, role, isi) in pulses:
            if role == "cond":
                continue
            s0 = int(np.floor(pt * fs))
            ts = (s0 + np.arange(Lm)) / fs - pt
            fac = np.exp(ra.normal(0, mspec["trial_logsd"]))
            blk = np.zeros((n_eeg, Lm))
            # compound initial deflection + motor units
            onset = ra.uniform(w0, w0 + 4) / 1000
            sd = ra.uniform(1.5, 2.5) / 1000
            tc = (ts - onset - 2 * sd) / sd
            comp = -tc * np.exp(-0.5 * tc ** 2)
            mix = ra.dirichlet(np.ones(3))
            blk += np.outer(mix @ topo_sites, comp) * 1.0
            for u in range(mspec["n_units"]):
                tu = (w0 + ra.gamma(2.0, (w1 - w0) / 5.0)) / 1000
                if tu > w1 / 1000 + 0.01:
                    continue
                su = ra.uniform(0.4, 1.3) / 1000
                x = (ts - tu) / su
                if ra.uniform() < 0.5:
                    wu = -x * np.exp(-0.5 * x ** 2)
                else:
                    wu = (1 - x ** 2) * np.exp(-0.5 * x ** 2)
                k = int(ra.integers(3))
                blk += np.outer(topo_sites[k] * ra.uniform(-1, 1), wu) * \
                    ra.uniform(0.2, 0.6)
            blk *= mspec["amp_uv"] * fac
            blk[:, ts < 0] = 0
            _add_window(art[:n_eeg], s0, blk.astype(np.float32))

    # ---- recharge artifact (fixed delay after each pulse)
    rspec = spec["recharge"]
    if rspec:
        gr = (rspec["amp_uv"] * (np.exp(-dist_coil / (rspec["lambda_cm"] / 100))
                                 + 0.2) * ra.choice([-1.0, 1.0], n_eeg + 1))
        gr_ch = rereference(gr)
        Lr = int(0.03 * fs)
        for (pt, role, isi) in pulses:
            tr0 = pt + rspec["delay_ms"] / 1000
            s0 = int(np.floor(tr0 * fs))
            ts = (s0 + np.arange(Lr)) / fs - tr0
            w = np.where(ts >= 0, np.exp(-ts / (rspec["tau_ms"] / 1000)), 0)
            w *= ra.normal(1.0, 0.1)
            _add_window(art[:n_eeg], s0, np.outer(gr_ch, w).astype(np.float32))

    # ---- combine, saturation and rail clipping
    data = clean + art
    sat = spec["saturation"]
    sat_info = []
    if sat:
        rail = spec["rail_uv"]
        big = np.where(np.abs(gp_ch[:n_eeg]) > rail)[0]
        tau_r = sat["recovery_tau_ms"] / 1000
        for i in big:
            over = np.abs(gp_ch[i]) / rail
            dur = (sat["min_ms"] + (sat["max_ms"] - sat["min_ms"])
                   * np.clip((over - 1) / 2.0, 0, 1)) / 1000
            sat_info.append(dict(channel=ch_names[i], dur_ms=round(dur * 1000, 2)))
            for (pt, role, isi) in pulses:
                sA = int(np.ceil(pt * fs))
                sB = int(np.ceil((pt + dur) * fs))
                side = np.sign(np.mean(data[i, sB:sB + int(0.002 * fs) + 1]) + 1e-9)
                data[i, sA:sB] = side * rail
                Lrec = int(10 * tau_r * fs) + 1
                tr_ = (sB + np.arange(Lrec)) / fs - (pt + dur)
                x = data[i, sB:sB + Lrec]
                data[i, sB:sB + Lrec] = x + (side * rail - x[0]) * np.exp(-tr_ / tau_r)
    rail = spec["rail_uv"]
    for i in range(n_ch):
        if ch_types[i] != "stim":
            np.clip(data[i], -rail, rail, out=data[i])

    # ---- markers / stim channel
    mk = spec["markers"]
    markers = []
    if mk["mode"] in ("annot", "stim"):
        if mk.get("only_test"):
            src = [(p[0]) for p in pulses if p[1] == "test"]
        else:
            src = [p[0] for p in pulses]
        rmk = _rng(family, seed, "markers")
        for pt in src:
            tmk = pt + mk["lag_ms"] / 1000
            if mk["jitter_ms"]:
                tmk += rmk.uniform(-mk["jitter_ms"], mk["jitter_ms"]) / 1000
            s = int(np.round(tmk * fs))
            markers.append((s, mk["label"] if mk["mode"] == "annot"
                            else f"STI 014:{mk['code']}"))
        if mk["mode"] == "stim":
            k = idx["STI 014"]
            wlen = max(2, int(round(0.001 * fs)))
            for s, _ in markers:
                clean[k, s:s + wlen] = mk["code"]
                data[k, s:s + wlen] = mk["code"]

    # ---- truth evoked
    n_half = int(round(0.5 * fs))
    times = np.arange(-n_half, n_half + 1) / fs
    clean_ev = _epoch_mean(clean, epoch_pulse_samples, n_half, n_half)
    br_ev = np.zeros_like(clean_ev)
    br_ev[:n_eeg] = _epoch_mean(brain, epoch_pulse_samples, n_half, n_half)
    del brain, art

    info = dict(
        family=family, seed=int(seed), format=spec["fmt"], sfreq=fs,
        n_eeg=n_eeg, reference=spec["ref"], coil_channel=coil, roi=roi,
        duration_s=round(N / fs, 3), n_epochs=int(n_ev),
        n_pulses_physical=int(len(pulses)), rail_uv=spec["rail_uv"],
        pulse=spec["pulse"], ringing=spec["ringing"], saturation=spec["saturation"],
        saturated_channels=sat_info, decay=spec["decay"], decay_summary=decay_info,
        muscle=spec["muscle"], recharge=spec["recharge"], markers=spec["markers"],
        paired=({"isi_ms": list(paired["isi_ms"]),
                 "cond_brain_scale": paired["cond_brain_scale"],
                 "test_brain_scale": {str(k): v for k, v in
                                      paired["test_brain_scale"].items()},
                 "isi_per_epoch_ms": [float(x) for x in isis]}
                if paired else None),
        tep_components=tep_params, life={k: v for k, v in life.items()},
        pops=pops, n_blinks=int(n_blinks), n_saccades=int(n_sacc),
        mep_median_uv=(float(np.median(meps)) if meps else None),
        bad_channels=bad_channels,
    )
    info = json.loads(json.dumps(info, default=_json_default))
    rec = Recording(
        name=f"{family}_s{seed}", sfreq=fs, ch_names=ch_names, ch_types=ch_types,
        data_uv=data, clean_uv=clean, pulse_samples=pulse_samples,
        epoch_pulse_samples=epoch_pulse_samples, markers=markers, roi=roi,
        coil_channel=coil, bad_channels=bad_channels, line_freq=int(lf),
        info=info, brain_evoked_uv=br_ev, clean_evoked_uv=clean_ev,
        evoked_times_s=times, pulse_times_s=pulse_times, family=family)
    return rec


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


# --------------------------------------------------------------------------
# writers
# --------------------------------------------------------------------------
def _truth_arrays(rec: Recording) -> dict:
    if rec.clean_evoked_uv is None:
        n_half = int(round(0.5 * rec.sfreq))
        rec.evoked_times_s = np.arange(-n_half, n_half + 1) / rec.sfreq
        rec.clean_evoked_uv = _epoch_mean(rec.clean_uv, rec.epoch_pulse_samples,
                                          n_half, n_half)
    return dict(
        sfreq=np.float64(rec.sfreq), ch_names=np.array(rec.ch_names),
        ch_types=np.array(rec.ch_types), times_s=rec.evoked_times_s,
        clean_evoked_uv=rec.clean_evoked_uv.astype(np.float32),
        brain_evoked_uv=(rec.brain_evoked_uv if rec.brain_evoked_uv is not None
                         else np.zeros_like(rec.clean_evoked_uv)).astype(np.float32),
        pulse_samples=np.asarray(rec.pulse_samples, np.int64),
        pulse_times_s=(np.asarray(rec.pulse_times_s) if rec.pulse_times_s
                       is not None else np.asarray(rec.pulse_samples) / rec.sfreq),
        epoch_pulse_samples=np.asarray(rec.epoch_pulse_samples, np.int64),
        roi=np.array(rec.roi), bad_channels=np.array(rec.bad_channels, dtype=str),
        coil_channel=np.array(rec.coil_channel), line_freq=np.int64(rec.line_freq),
    )


def _mne_raw(rec: Recording):
    import mne
    info = mne.create_info(rec.ch_names, rec.sfreq, rec.ch_types)
    data = rec.data_uv.astype(np.float64) * 1e-6
    for i, t in enumerate(rec.ch_types):
        if t == "stim":
            data[i] = rec.data_uv[i]
    raw = mne.io.RawArray(data, info, verbose="error")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mont = mne.channels.make_standard_montage("standard_1005")
    raw.set_montage(mont, on_missing="ignore", verbose="error")
    raw.info["line_freq"] = float(rec.line_freq)
    raw.set_meas_date(1_600_000_000)
    return raw


def write_recording(rec: Recording, out_dir) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = FAMILIES[rec.family]["fmt"] if rec.family in FAMILIES else \
        rec.info.get("format", "fif")
    name = rec.name
    fs = rec.sfreq
    mk = rec.info.get("markers", {})
    if fmt == "bv":
        import pybv
        events = [dict(onset=int(s), description=int(mk["code"]),
                       type="Stimulus") for s, _ in rec.markers]
        for f in out_dir.glob(name + ".v*"):
            f.unlink()
        pybv.write_brainvision(
            data=rec.data_uv.astype(np.float64) * 1e-6, sfreq=fs,
            ch_names=rec.ch_names, ref_ch_names=rec.info["reference"],
            fname_base=name, folder_out=str(out_dir), overwrite=True,
            events=events if events else None, resolution=0.5, unit="µV",
            fmt="binary_int16", meas_date="20200913122640000000")
        data_path = out_dir / f"{name}.vhdr"
    elif fmt == "fif":
        import mne
        raw = _mne_raw(rec)
        if mk.get("mode") == "annot" and rec.markers:
            on = np.array([s for s, _ in rec.markers]) / fs
            raw.set_annotations(mne.Annotations(on, np.zeros(len(on)),
                                                [l for _, l in rec.markers],
                                                orig_time=raw.info["meas_date"]))
        data_path = out_dir / f"{name}_raw.fif"
        raw.save(data_path, fmt="single", overwrite=True, verbose="error")
    elif fmt == "edf":
        import mne
        raw = _mne_raw(rec)
        if rec.markers:
            on = np.array([s for s, _ in rec.markers]) / fs
            raw.set_annotations(mne.Annotations(on, np.zeros(len(on)),
                                                [l for _, l in rec.markers],
                                                orig_time=raw.info["meas_date"]))
        data_path = out_dir / f"{name}.edf"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mne.export.export_raw(data_path, raw, fmt="edf",
                                  physical_range="channelwise",
                                  overwrite=True, verbose="error")
    elif fmt == "set":
        from eeglabio.raw import export_set
        pos = _all_positions()
        locs = np.full((len(rec.ch_names), 3), np.nan)
        for i, c in enumerate(rec.ch_names):
            if c in pos and rec.ch_types[i] == "eeg":
                x, y, z = pos[c]
                locs[i] = [y, -x, z]      # ALS convention used by EEGLAB
        ann = None
        if rec.markers:
            ann = [[l for _, l in rec.markers],
                   np.array([s for s, _ in rec.markers], float) / fs,
                   np.zeros(len(rec.markers))]
        data_path = out_dir / f"{name}.set"
        export_set(str(data_path), data=rec.data_uv.astype(np.float64) * 1e-6,
                   sfreq=fs, ch_names=rec.ch_names, ch_locs=locs,
                   annotations=ann, ch_types=[t.upper() for t in rec.ch_types],
                   precision="single")
    else:
        raise ValueError(fmt)

    truth_path = out_dir / f"{name}.truth.npz"
    np.savez_compressed(truth_path, **_truth_arrays(rec))
    meta = dict(
        name=name, family=rec.family, format=fmt,
        data_file=data_path.name, data_path=str(data_path.resolve()),
        truth_file=truth_path.name, sfreq=fs, ch_names=rec.ch_names,
        ch_types=rec.ch_types, roi=rec.roi, coil_channel=rec.coil_channel,
        bad_channels=rec.bad_channels, line_freq=rec.line_freq,
        reference=rec.info["reference"],
        markers=dict(mode=mk.get("mode"), label=mk.get("label"),
                     code=mk.get("code"), lag_ms=mk.get("lag_ms"),
                     jitter_ms=mk.get("jitter_ms"),
                     only_test_pulse=bool(mk.get("only_test", False)),
                     n_markers=len(rec.markers),
                     note=("markers mark the TEST pulse of each pair only"
                           if mk.get("only_test") else
                           "no markers: pulses only visible in the data"
                           if mk.get("mode") == "none" else
                           "stim channel 'STI 014' (code 1) instead of annotations"
                           if mk.get("mode") == "stim" else
                           "annotations; marker time = pulse + lag (+ jitter)")),
        info=rec.info,
    )
    meta_path = out_dir / f"{name}.json"
    meta_path.write_text(json.dumps(meta, indent=1, default=_json_default))
    return dict(data_path=str(data_path), truth_path=str(truth_path),
                meta_path=str(meta_path))


def generate_all(out_dir, quick: bool = False, families: list | None = None,
                 seed: int = 0) -> list:
    out = []
    for fam in (families or list(FAMILIES)):
        t0 = time.time()
        n = 20 if quick else None
        if quick and FAMILIES[fam]["paired"]:
            n = 20
        rec = make_recording(fam, n_pulses=n, seed=seed)
        t1 = time.time()
        paths = write_recording(rec, out_dir)
        t2 = time.time()
        size = sum(os.path.getsize(p) for p in Path(out_dir).glob(rec.name + "*"))
        row = dict(family=fam, name=rec.name, **paths,
                   gen_s=round(t1 - t0, 2), write_s=round(t2 - t1, 2),
                   size_mb=round(size / 1e6, 1), n_epochs=len(rec.epoch_pulse_samples))
        print(json.dumps(row), flush=True)
        out.append(row)
        del rec
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--family", nargs="*", default=None)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    generate_all(a.out, quick=a.quick, families=a.family, seed=a.seed)


if __name__ == "__main__":
    main()
