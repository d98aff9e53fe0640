"""Where the decay stage's error comes from, family by family, against the truth.

For each outside family the averaged artifact (recording minus its artifact-free version, over
the test pulses, 10-800 ms after the pulse) and the averaged clean data (the TEP and what EEG
survives averaging) are taken from the generator. tmseeg's own :class:`DecayFitter` is run the
way the decay stage runs it on the running average, and the ROI error of the average-referenced
early TEP (15-60 ms, relative to the truth's RMS) is split into:

* ``gate_left``: artifact on the channels the stage's gate (>= 20 uV at the fit start,
  R2 >= 0.5) does not correct, as the average reference spreads it into the ROI (against the
  median: what differs from the median there);
* ``mismatch``: what the model cannot follow, fitted to the artifact alone (a power-law tail);
* ``absorbed``: the TEP the fit takes with the artifact (fit of artifact + TEP minus fit of
  the artifact alone);
* ``total``: the ROI error after subtracting the fit of artifact + TEP on the gated channels.

The three parts add up (as time courses) to the total. Each for ``fit_reference``
"recorded" and "median" (the median only when fewer than half of the channels decay, as the
stage does). Per-trial gains and the epoch filter are left out: this
isolates the fit. ``python benchmarks/outside/decompose.py --seed 1`` prints the table.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from benchmarks.outside import tmsgen
from tmseeg.pipeline.decay import DecayFitter, _against_median, decay_gate

DECAY_FAMILIES = ("biphasic_exp_bv", "ringing_bv", "saturation_fif", "fastslow_set",
                  "variable_decay_fif", "paired_bv", "life_nomarker_bv", "badchan_bv")


@dataclass
class FamilyAverages:
    """One family's averaged artifact and clean data 10-800 ms after the test pulses, and how
    the ROI's early TEP is scored against the truth (average reference, 15-60 ms)."""

    sfreq: float
    names: list[str]
    artifact: np.ndarray  # (n_channels, n_times): recording minus its artifact-free version
    tep: np.ndarray  # the clean data, baseline-corrected (the TEP and what EEG survives)
    t_ms: np.ndarray  # times after the pulse (ms)
    roi: np.ndarray  # bool, channels of the generator's ROI
    truth: np.ndarray  # the ROI's early TEP

    @property
    def n_times(self) -> int:
        return self.t_ms.size

    def roi_early(self, x: np.ndarray) -> np.ndarray:
        """The ROI's early trace of ``x`` (n_channels, n_times) after the average reference."""
        early = (self.t_ms >= 15.0) & (self.t_ms <= 60.0)
        return (x - x.mean(axis=0))[self.roi].mean(axis=0)[early]

    def rel(self, x: np.ndarray) -> float:
        """RMS of ``x`` relative to the truth's."""
        return float(np.sqrt(np.mean(x ** 2)) / np.sqrt(np.mean(self.truth ** 2)))

    def error(self, model: np.ndarray) -> float:
        """Relative early-TEP error in the ROI after subtracting ``model`` from the data."""
        return self.rel(self.roi_early(self.artifact + self.tep - model) - self.truth)


def family_averages(family: str, seed: int) -> FamilyAverages:
    """The averages of one generated family (see :class:`FamilyAverages`)."""
    rec = tmsgen.make_recording(family, seed=seed)
    fs = rec.sfreq
    eeg = (np.array([t == "eeg" for t in rec.ch_types])
           & ~np.isin(rec.ch_names, rec.bad_channels))
    names = list(np.array(rec.ch_names)[eeg])
    data, clean = rec.data_uv[eeg].astype(float), rec.clean_uv[eeg].astype(float)
    n0, n1 = int(round(0.010 * fs)) + 1, int(round(0.800 * fs))
    pulses = np.asarray(rec.epoch_pulse_samples)
    pulses = pulses[(pulses + n1 < data.shape[1]) & (pulses > int(0.5 * fs))]
    window = pulses[:, None] + np.arange(n0, n1)[None]
    base = pulses[:, None] + np.arange(-int(0.5 * fs), -int(0.01 * fs))[None]
    artifact = (data - clean)[:, window].mean(axis=1)
    tep = clean[:, window].mean(axis=1) - clean[:, base].mean(axis=1).mean(axis=1)[:, None]
    fam = FamilyAverages(sfreq=fs, names=names, artifact=artifact, tep=tep,
                         t_ms=np.arange(n0, n1) / fs * 1000.0, roi=np.isin(names, rec.roi),
                         truth=np.empty(0))
    fam.truth = fam.roi_early(tep)
    return fam


def decompose(family: str, seed: int, min_decay_uv: float = 20.0, min_r2: float = 0.5,
              min_snr: float = 3.0) -> dict[str, dict[str, float]]:
    """The error parts of one family (see the module description), by fit reference."""
    fam = family_averages(family, seed)
    fs, artifact, tep, n = fam.sfreq, fam.artifact, fam.tep, len(fam.names)
    n_t = fam.n_times
    roi_early, rel = fam.roi_early, fam.rel
    truth = fam.truth

    fitter = DecayFitter(n_t, fs, 2, (2.0, 500.0))

    def gated(fit):
        return decay_gate(fit, n_t * 1000.0 / fs, min_r2, min_snr, min_decay_uv)

    out = {}
    for reference in ("recorded", "median"):
        y, a = artifact + tep, artifact
        fit_y = fitter.fit(y)
        if reference == "median" and 0 < gated(fit_y).sum() < n / 2:
            y, a = _against_median(y), _against_median(a)
            fit_y = fitter.fit(y)
        keep = gated(fit_y)[:, None]
        model_y = fit_y.model_uv(n_t, fs) * keep
        model_a = fitter.fit(a).model_uv(n_t, fs) * keep
        out[reference] = {
            "gate_left": rel(roi_early(a - a * keep)),
            "mismatch": rel(roi_early(a * keep - model_a)),
            "absorbed": rel(roi_early(model_a - model_y)),
            "total": rel(roi_early(artifact + tep - model_y) - truth),
            "n_gated": int(keep.sum()), "n_channels": n,
        }
    return out


def family_args(argv: list[str] | None, description: str) -> argparse.Namespace:
    """``--seed`` and ``--families`` (the decay families by default), as these scripts take."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(DECAY_FAMILIES))
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    a = family_args(argv, __doc__.split("\n\n")[0])
    print("| family | reference | gated | gate left | mismatch | absorbed | total |")
    print("|---|---|---|---|---|---|---|")
    for family in a.families.split(","):
        for reference, r in decompose(family, a.seed).items():
            print(f"| {family} | {reference} | {r['n_gated']}/{r['n_channels']} | "
                  f"{r['gate_left']:.2f} | {r['mismatch']:.2f} | {r['absorbed']:.2f} | "
                  f"{r['total']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
