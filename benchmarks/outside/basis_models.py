"""Decay models with structure shared across channels, against the stage's per-channel fit.

On each outside family's averages (:func:`benchmarks.outside.decompose.family_averages`: the
averaged artifact and clean data, scored as the ROI's early TEP after the average reference
against the truth), the decay estimated from the averaged recording by:

* ``per-channel`` — the decay stage's fit: two exponentials and a constant per channel, against
  the median of the channels when fewer than half decay, subtracted where the gate passes
  (>= 20 uV at the fit start, R2 >= 0.5);
* ``basis early`` / ``basis whole`` — the physical model of Freche et al. 2018 (PLoS Comput
  Biol 14:e1006177): basis time courses from the channels with the largest positive and the
  largest negative decay at the fit start (the mean of three each, smoothed by the same
  two-exponential fit), every channel a linear combination of them with weights by least
  squares over 10-40 ms (early) or the whole 10-800 ms window;
* ``shared tau`` / ``shared tau, gated`` — time constants common to all channels (fitted on the
  sign-aligned mean of the six largest decays), amplitudes per channel, gated like the stage
  (on its own fit / on the stage's gate);
* ``relaxation`` / ``relaxation, gated`` — a decay that only relaxes (a discharge): per
  channel a non-negative mixture of 16 exponentials (tau 1-3000 ms) of one sign and a
  constant, by NNLS (:func:`relaxation_fit`: it can follow a power-law tail and cannot take
  the TEP's alternating peaks), gated on its own fit / on the stage's gate;
  ``relaxation where signs agree``: the stage's two exponentials where their amplitudes share
  a sign, the relaxation elsewhere.

Measured 2026-12-07, error summed over the eight decay families, seed 0 / seed 1:
per-channel 3.34 / 4.81, basis early 17.60 / 46.77, basis whole 6.64 / 9.35, shared tau
6.20 / 5.49, shared tau gated 5.74 / 5.26. Better than per-channel only on saturation (seed 0
basis early 0.63 -> 0.17; seed 1 shared tau 0.30 -> 0.20) and variable decay seed 1 (shared
tau 0.69 -> 0.53): the generator's decays differ in time constant from channel to channel,
which a shared basis cannot follow, and weights fitted early take the TEP's early peaks.
Relaxation (2026-12-07): 6.39 / 9.40, gated 4.92 / 8.65, where signs agree 3.95 / 6.05: fast
and slow decays of opposite sign are common (15 of 44 gated channels on fastslow seed 0, 50
of 55 on ringing seed 1), and one sign cannot follow them.

    python -m benchmarks.outside.basis_models --seed 0
"""
from __future__ import annotations

import numpy as np

from benchmarks.outside.decompose import family_args, family_averages
from tmseeg.pipeline.decay import DecayFitter, _against_median, decay_gate

MODELS = ("per-channel", "basis early", "basis whole", "shared tau", "shared tau, gated",
          "relaxation", "relaxation, gated", "relaxation where signs agree")


def relaxation_fit(y: np.ndarray, sfreq: float, tau_ms: np.ndarray, n_boxes: int = 300
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decay that only relaxes, per channel: a non-negative mixture of exponentials with the
    time constants ``tau_ms``, of one sign (the better of the two), and a free constant, by
    NNLS on box means. Returns the model without the constant (n_channels, n_times), its R2
    and its size at the first sample over the residual RMS."""
    from scipy.optimize import nnls

    n_ch, n_t = y.shape
    m = max(1, n_t // n_boxes)
    nb = n_t // m
    yb = y[:, :nb * m].reshape(n_ch, nb, m).mean(axis=2)
    t_box = (np.arange(nb) * m + (m - 1) / 2.0) * 1000.0 / sfreq
    e_box = np.exp(-t_box[:, None] / tau_ms[None])
    e_all = np.exp(-(np.arange(n_t) * 1000.0 / sfreq)[:, None] / tau_ms[None])
    model, r2, snr = np.zeros_like(y), np.zeros(n_ch), np.zeros(n_ch)
    ones = np.ones((nb, 1))
    for c in range(n_ch):
        fits = []
        for sign in (1.0, -1.0):
            w, resid = nnls(np.hstack([sign * e_box, ones, -ones]), yb[c])
            fits.append((resid, sign, w))
        resid, sign, w = min(fits, key=lambda fit: fit[0])
        model[c] = sign * e_all @ w[:tau_ms.size]
        dev = yb[c] - yb[c].mean()
        r2[c] = 1.0 - resid ** 2 / max(float(dev @ dev), 1e-12)
        snr[c] = abs(model[c, 0]) / (resid / np.sqrt(nb) + 1e-12)
    return model, r2, snr


def model_errors(family: str, seed: int, n_extreme: int = 3) -> dict[str, float]:
    """Relative early-TEP error of each model (:data:`MODELS`) on one family."""
    fam = family_averages(family, seed)
    fs, n_t, n = fam.sfreq, fam.n_times, len(fam.names)
    fitter = DecayFitter(n_t, fs, 2, (2.0, 500.0))

    def gated(fit):  # the stage's gates at the pipeline's defaults
        return decay_gate(fit, n_t * 1000.0 / fs, 0.5, 3.0, 20.0)

    y = fam.artifact + fam.tep
    fit = fitter.fit(y)
    if 0 < gated(fit).sum() < n / 2:
        y = _against_median(y)
        fit = fitter.fit(y)
    keep = gated(fit)
    out = {"per-channel": fam.error(fit.model_uv(n_t, fs) * keep[:, None])}
    # the decay's size at the fit start, over the channel's own late level
    start = y[:, :max(2, int(0.002 * fs))].mean(axis=1) - y[:, -int(0.2 * fs):].mean(axis=1)
    order = np.argsort(start)
    basis = [fitter.fit(y[group].mean(axis=0)[None]).model_uv(n_t, fs)[0]
             for group in (order[-n_extreme:], order[:n_extreme])
             if np.abs(start[group]).mean() >= 20.0]
    if basis:
        b = np.array(basis)
        for label, span in (("basis early", (fam.t_ms >= 10.0) & (fam.t_ms <= 40.0)),
                            ("basis whole", np.ones(n_t, dtype=bool))):
            design = np.concatenate([b[:, span].T, np.ones((span.sum(), 1))], axis=1)
            weights = np.linalg.lstsq(design, y[:, span].T, rcond=None)[0]
            model = weights[:-1].T @ b
            out[label] = fam.error(model * (np.abs(model[:, 0]) >= 20.0)[:, None])
    else:  # no decay stands out: the stage's answer
        out["basis early"] = out["basis whole"] = out["per-channel"]
    largest = np.argsort(np.abs(start))[-2 * n_extreme:]
    common = fitter.fit((y[largest] * np.sign(start[largest])[:, None]).mean(axis=0)[None])
    shared = fitter.fit_amplitudes(y, np.repeat(common.tau_ms, n, axis=0))
    own_gate = shared.ok & (shared.r2 >= 0.5) & (np.abs(shared.amps_uv.sum(axis=1)) >= 20.0)
    model = shared.model_uv(n_t, fs)
    out["shared tau"] = fam.error(model * own_gate[:, None])
    out["shared tau, gated"] = fam.error(model * keep[:, None])
    relax, r2, snr = relaxation_fit(y, fs, np.geomspace(1.0, 3000.0, 16))
    own = (r2 >= 0.5) & (snr >= 3.0) & (np.abs(relax[:, 0]) >= 20.0)
    out["relaxation"] = fam.error(relax * own[:, None])
    out["relaxation, gated"] = fam.error(relax * keep[:, None])
    agree = np.sign(fit.amps_uv[:, 0]) == np.sign(fit.amps_uv[:, 1])
    out["relaxation where signs agree"] = fam.error(
        np.where(agree[:, None], fit.model_uv(n_t, fs), relax) * keep[:, None])
    return out


def main(argv: list[str] | None = None) -> None:
    a = family_args(argv, __doc__.split("\n\n")[0])
    print("| family | " + " | ".join(MODELS) + " |")
    print("|---" * (len(MODELS) + 1) + "|")
    sums = dict.fromkeys(MODELS, 0.0)
    for family in a.families.split(","):
        errors = model_errors(family, a.seed)
        for k in MODELS:
            sums[k] += errors[k]
        print(f"| {family} | " + " | ".join(f"{errors[k]:.2f}" for k in MODELS) + " |",
              flush=True)
    print("| sum | " + " | ".join(f"{sums[k]:.2f}" for k in MODELS) + " |")


if __name__ == "__main__":
    main()
