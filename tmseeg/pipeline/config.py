"""The pipeline's configuration: its sections, their defaults and their rules.

The defaults below are the documentation: ``tmseeg config`` prints them (with every metric
plug-in's own sections, which :mod:`tmseeg.config` adds: the pipeline knows no plug-in), a
user's file only needs the keys it changes, and unknown keys are refused with the list of valid
ones (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tmseeg.pipeline.cleaning.stage import METHODS as CLEANING_METHODS
from tmseeg.pipeline.decay import CONFIG_FIT_ON, DECAY_MODELS, FIT_REFERENCES
from tmseeg.pipeline.interpolation import INTERP_METHODS
from tmseeg.pipeline.epochs import REJECT_MODES
from tmseeg.sections import ConfigError, ConfigSection
from tmseeg.utils import compile_pattern

PIPELINE_CONFIG_TOML = """\
# tmseeg pipeline configuration (defaults). Times in ms relative to the pulse, µV, Hz.

[pulses]
# where TMS pulses come from: "markers" (LSL markers / file annotations), "trigger"
# (a trigger channel), "data" (steep jumps in the EEG itself), or "markers+data".
source = "markers"
# regex (case-insensitive) for marker labels that are pulses; "" = the built-in pattern
# (TMS, pulse, stim, BrainVision "Stimulus/S  1" ...)
pattern = ""
marker_offset_ms = 0.0      # added to marker times (negative if markers lag the pulse)
# move marker/trigger pulses to the artifact onset when the first pulses show a constant lag
# (measured with the cut window, [interpolation]; see tmseeg.pipeline.cutwindow)
correct_marker_lag = true
# with source = "markers": check the markers against the pulse artifacts in the data, the same
# way live and offline (tmseeg.pipeline.pulsesource): a label nobody named that falls on the
# artifacts becomes the pulse marker, no markers at all -> the artifacts are the pulses, an
# artifact no marker names (a paired pulse's conditioning pulse) is cut but gets no epoch.
# Costs a constant 60 ms delay of the processed stream. false: markers as they are.
check_markers = true
# per-pulse metadata (intensity_pct, coil position, condition ...) from a CSV file: joined to
# the pulses by time when it has a time_s column (s from the recording's start, nearest within
# table_tolerance_ms), else in order (row n = the n-th pulse found, as a stimulator logs them:
# a paired pulse's conditioning pulse takes a row, though only the pair has one in
# pulses.csv). Its columns go into
# pulses.csv, the metrics stream and the plug-ins (intensity_pct -> motor threshold).
# Named groups of the pattern do the same from the marker text: "TMS/(?P<intensity_pct>\\d+)".
table = ""
table_tolerance_ms = 50.0
trigger_channel = ""        # for source = "trigger"
data_channels = []          # for source = "data"; [] = all EEG channels
data_threshold_uv_per_ms = 0.0   # 0 = automatic (robust, 20 x MAD of the derivative)
refractory_ms = 1.0
# pulses faster than any stimulator fires are refused (a stuck trigger line, a marker loop),
# whatever their source, with one warning per second of flood (tmseeg.pipeline.pulses.
# PulsePlausibility): closer than min_interval_ms to the previous pulse (paired-pulse and
# quadripulse protocols go down to 1-1.5 ms; a pair's unmarked conditioning pulse found in the
# data counts too), or more than max_rate_hz in a second (no stimulator repeats faster than
# 100 Hz; theta bursts are 50 Hz). Refused pulses count against the limits, so a flood stays
# refused until it stops. 0 = no limit.
min_interval_ms = 1.0
max_rate_hz = 100.0

[channels]
# electrode positions by label for every spatial step (coil site, ROI, bad-channel
# interpolation, reference, lead field, topographies): "auto" (MNE's 10-05 positions), an MNE
# built-in montage ("GSN-HydroCel-129", "easycap-M1", "biosemi64" ...) or a file MNE reads
# (.elc .sfp .bvef .loc .locs .eloc .csd .txt .elp .hpts .xyz, .fif digitisation); --montage
montage = "auto"
# channel types by name, for files that store none (BrainVision, EDF) and streams that send
# none, where the name does not say it (EMG*, FDI, APB, EOG, ECG ... are typed by name):
# e.g. types = { Aux1 = "emg", Aux2 = "misc" }; --channel-types Aux1=emg,Aux2=misc
types = {}

[coil]
# the region of interest for LMFP / ROI TEP; [] = the coil site found from the pulse
# artifact plus its 4 nearest neighbours
roi = []
n_neighbors = 4

[interpolation]
enabled = true
# samples replaced around each pulse. "auto": measured on the first auto_pulses pulses (where
# the data come back within the EEG's range, + 1 ms; saturation counted on any channel) and
# then fixed, never shorter than auto_min_ms (TESA's usual -2..10 ms) nor beyond auto_max_ms;
# summary.json says what was measured and why. [start, stop] forces a fixed window.
window_ms = "auto"
auto_pulses = 5
auto_min_ms = [-2.0, 10.0]
auto_max_ms = [-10.0, 20.0]
method = "cubic"            # "cubic" or "linear"
fit_ms = 1.0                # clean data either side used by the cubic fit
# live: how late a pulse marker may arrive and still be cut, fitted and averaged as if on
# time; later ones are named as a live/offline difference. Every sample waits this long once
# (the pulse source holds it), not once per stage
max_delay_ms = 60.0
# the stimulator's capacitor recharge: a brief artifact at a fixed delay after every pulse
# (the recharge delay set on the stimulator, e.g. MagVenture's; 0 = none, or it comes after
# the epoch). When set, recharge_window_ms around it is cut and interpolated like the pulse
recharge_delay_ms = 0.0
recharge_window_ms = [-1.0, 5.0]

[decay]
enabled = true
# a (double) exponential + constant fitted per pulse and channel right after the cut window
# and subtracted; the long window pins the slow term so the early TEP survives (it costs that
# much hold-back live). Pulses whose decay does not stand out are left alone.
model = "double_exp"        # "double_exp" or "exp"
fit_window_ms = [10.0, 800.0]
# each pulse's own data are used up to here (its gain); the running average, whose fit gives
# the curves, takes the earlier pulses' full fit windows (the first 10 pulses wait for their
# own). Live, the TEP update waits for this, not for the fit window's end (at most that end):
# 700 = the epoch's end plus the filter's padding, so the update waits for nothing more. On
# the outside benchmark (3 seeds x 10 families) against 800: summed early-TEP RMS error
# 13.97 -> 13.61, over the kept epochs 13.46 -> 13.41; 100 ms sooner live (README)
own_window_end_ms = 700.0
min_snr = 3.0               # decay size (as min_decay_uv's) in residual-RMS units
tau_ms = [2.0, 500.0]       # allowed time constants
# how each pulse's decay is estimated (all from the running average's fit, which the TEP's
# trial-to-trial noise does not enter): "average_gain_scale" (its curves, per pulse one gain
# and one time scale, 0.70-1.43, common to all channels), "average_gain" (one gain only),
# "average_curve" (TESA: its curves, the same every pulse), "average" (its time constants,
# amplitudes per pulse and channel: absorbs more TEP). Chosen on the outside benchmark
# (benchmarks/outside/run.py, 3 seeds x 10 families): see the README.
method = "average_gain_scale"
# a channel's decay is removed only when the average shows one: at least min_decay_uv at the
# fit start (a TEP near the coil reaches ~10 uV early; decays are tens to thousands), or at its
# extremum when a fast term (tau <= 20 ms) and a slower one of the other sign cancel at the
# start, and an exponential explaining at least min_r2 of the fit window (a muscle burst or a
# TEP does not)
min_decay_uv = 20.0
min_r2 = 0.5
# what each channel's decay is fitted against: "median" (when fewer than half of the
# channels show a decay of their own: the median of all channels at each sample, so that the
# reference electrode's own decay, common to all channels, is left to the average reference
# instead of entering every fit and gate) or "recorded" (the recording's reference)
fit_reference = "median"

[bad_channels]
detect = true
interpolate = true
bads = []                   # channels known to be bad from the start
window_s = 2.0
flat_uv = 0.5
noisy_z = 5.0
exclude_ms = [-10.0, 500.0]  # around each pulse: artifact tails and the TEP are not noise
max_bad_fraction = 0.2      # never more than this share of channels (see the docs)

[filter]
# Epochs are band-passed and notched forward-backward (zero phase, no latency shift of the
# TEP) with epoch_pad_ms of real data on each side, live exactly as offline.
# Defaults as TESA's (Rogasch et al. 2017): 1-100 Hz, 4th-order Butterworth per edge. A lower
# or gentler low-pass rounds sharp early peaks off (an 80 Hz 2nd-order one took N15 down
# 15-35 % against the unfiltered truth; benchmarks/bench_tep_accuracy.py --raw-truth).
l_freq_hz = 1.0             # 0 = no high-pass
h_freq_hz = 100.0           # 0 = no low-pass; dropped (with a warning) at or above 0.9 x Nyquist
order = 4                   # Butterworth order per edge (doubled by the two passes)
notch_hz = 50.0             # 0 = no notch; 60 in the Americas
notch_harmonics = 2
epoch_pad_ms = 500.0        # real data before the epoch the filter runs over
# and after it: live, the epoch (and its TEP update) cannot go out sooner than this after
# tmax_ms. 200 (not 500) brings the update 300 ms sooner; on the outside benchmark it changed
# the early-TEP error summed over the families 4.24 -> 4.15 (seed 0), 5.50 -> 5.34 (seed 1),
# the worst single change nodecay seed 1 0.15 -> 0.20 (README, "Live latency")
epoch_pad_after_ms = 200.0
# Also filter the continuous stream causally with the same band (for displays and closed-loop
# use; phase-shifting, so TEP metrics do not depend on it).
continuous = false

[cleaning]
# TESA-grade cleaning after pulse interpolation / decay removal, before the reference:
# fitted on the first calibration_pulses epochs, then applied per block as a matrix product.
# Off by default: the fits take seconds (SOUND/SSP-SIR ~1 s, ICA ~10-30 s) while calibrating.
enabled = false
# any of "sound" (channel noise, Mutanen 2018), "sspsir" (TMS-evoked muscle, Mutanen 2016),
# "sspsir_control" (sensory responses estimated from control epochs), "ica" (TESA-style
# component labels); fitted and applied in this order. Add "sound" first when channels are
# noisy: it smooths the topography a little (ROI peaks ~5-10 % lower on clean data).
methods = ["sspsir"]
calibration_pulses = 30
min_pulses = 5              # fewest epochs a fit at the end of a short file accepts
calibration_window_ms = [-500.0, 500.0]
during_calibration = "hold" # "hold": clean every epoch (data wait for the fit); "pass": raw
control_label = ""          # regex of control-condition labels (e.g. "sham") for sspsir_control
[cleaning.leadfield]        # spherical head (MNE sphere model + shell source space), no MRI
n_locations = 500
shell_fraction = 0.8        # source shell radius / head radius
min_elevation = -0.3
orientation = "free"        # "free" (3 dipoles per location) or "fixed" (radial)
[cleaning.sound]
lambda0 = 1.0               # noise-to-signal ratio (~1 single trials, 0.01-0.1 averages)
max_iter = 100
tol = 0.001                 # convergence: largest relative change of a channel's noise SD
[cleaning.sspsir]
highpass_hz = 100.0         # artifact subspace from the >100 Hz content ...
artifact_window_ms = [0.0, 50.0]   # ... of this post-pulse window
baseline_ms = [-500.0, -10.0]
estimator = "whitened"      # "whitened" (early vs baseline power) or "pca" (plain, as the paper)
min_ratio = 3.0             # early/baseline high-frequency power a component must exceed
variance_pct = 90.0         # "pca": components explaining up to this much
n_components = 0            # 0 = automatic
max_components = 5
lambda0 = 0.01              # SIR regularisation (relative to the mean eigenvalue)
weighting = "window"        # "window" (1 in apply_window_ms, cosine taper) or "envelope"
apply_window_ms = [-2.0, 50.0]
taper_ms = 10.0
[cleaning.sspsir_control]
control_window_ms = [0.0, 300.0]
variance_pct = 90.0
n_components = 0
max_components = 5
lambda0 = 0.01
[cleaning.ica]
method = "picard"           # "picard", "fastica" (needs scikit-learn) or "infomax"
n_components = 0            # 0 = channels - 1 (rank after average reference), max 60
max_fit_hz = 500.0          # the fit uses every k-th sample (the decomposition is spatial)
seed = 0
max_iter = 500
keep = []                   # component indices kept whatever the rules say
remove = []                 # component indices removed whatever the rules say
[cleaning.ica.rules]        # TESA-style labels (Rogasch et al. 2017), first that fires wins
muscle_window_ms = [11.0, 30.0]
tms_muscle_ratio = 8.0      # mean |average| in the window / over the epoch outside the pulse window
pulse_window_ms = [-2.0, 10.0]  # interpolated, so left out of that epoch mean (TESA zeroes it)
blink_channels = ["Fp1", "Fp2"]
blink_z = 2.5               # mean z-scored topography weight there
move_channels = ["F7", "F8"]
move_z = 2.0                # opposite-sign z at both
muscle_freq_hz = [7.0, 70.0]
muscle_slope = -0.31        # log-log spectral slope above this = persistent muscle
electrode_z = 4.0           # one electrode's |z| above this = electrode noise

[reference]
type = "average"            # "average" or "none"

[epochs]
tmin_ms = -500.0
tmax_ms = 500.0
baseline_ms = [-500.0, -10.0]
reject_uv = 150.0           # peak-to-peak outside the pulse window; 0 = no rejection
# what reject_uv limits: "ptp" (the epoch's peak-to-peak) or "ptp_unless_slow" (the same, but
# a channel over reject_uv rejects only when the peak-to-peak of what is faster than a moving
# average over fast_ms is over fast_uv too: muscle and artifact residue reject, a blink or a
# drift keeps the pulse)
reject_mode = "ptp"
fast_ms = 50.0
fast_uv = 100.0
# a pulse followed by another within this interval (conditioning pulse of a pair, first pulses
# of a 50-Hz burst) gets no epoch of its own ("grouped"): the group's epoch is locked to its
# last pulse, the test pulse; 0 = every pulse its own epoch
pulse_group_ms = 20.0

[tep]
early_window_ms = [15.0, 60.0]
post_window_ms = [15.0, 250.0]   # SNR numerator
pre_window_ms = [-400.0, -10.0]  # SNR denominator
target_snr = 3.0                 # trials-needed estimate aims at this SNR
[tep.peak_windows_ms]   # a table in your file replaces this whole list
N15 = [10.0, 20.0]
P30 = [22.0, 38.0]
N45 = [38.0, 55.0]
P60 = [55.0, 80.0]
N100 = [85.0, 140.0]
P180 = [150.0, 250.0]
"""


#: keys whose own keys are free (user-named), not checked against the defaults
PIPELINE_FREE_KEYS = frozenset({("channels", "types"), ("tep", "peak_windows_ms")})


def merge_config(base: dict, override: dict, free_keys: frozenset = PIPELINE_FREE_KEYS,
                 path: tuple[str, ...] = ()) -> dict:
    """``base`` updated by ``override``: unknown keys and wrong types are refused.

    ``free_keys`` are tables whose keys the user names (extra TEP peaks, channel types)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        here = path + (key,)
        if key not in base:
            valid = ", ".join(sorted(base)) or "(none)"
            where = ".".join(path) or "top level"
            raise ConfigError(f"unknown configuration key {'.'.join(here)!r} (in [{where}]); "
                              f"valid keys there: {valid}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"configuration key {'.'.join(here)!r} must be a table")
            if here == ("channels", "types"):  # a file's types, then the command line's
                out[key] = {**base[key], **copy.deepcopy(value)}
            elif here in free_keys:  # user-named keys (e.g. extra TEP peaks)
                out[key] = copy.deepcopy(value)
            else:
                out[key] = merge_config(base[key], value, free_keys, here)
        elif here == ("interpolation", "window_ms"):
            out[key] = _window_value(value)
        else:
            expected = type(base[key])
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise ConfigError(f"configuration key {'.'.join(here)!r} must be "
                                  f"{expected.__name__}, got {value!r}")
            out[key] = value
    return out


def _window_value(value: Any) -> str | list[float]:
    """``interpolation.window_ms``: "auto" or [start, stop] in ms."""
    if value == "auto":
        return value
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return [float(v) for v in value]
    raise ConfigError(f"configuration key 'interpolation.window_ms' must be \"auto\" or "
                      f"[start, stop] in ms, got {value!r}")


def fixed_cut_window(cfg: ConfigSection) -> tuple[float, float] | None:
    """The configuration's fixed cut window, or None when it is measured ("auto")."""
    win = cfg.interpolation.window_ms
    return None if win == "auto" else (float(win[0]), float(win[1]))


def planning_cut_window(cfg: ConfigSection) -> tuple[float, float]:
    """A cut window known before any data: the fixed one, else the least measured one.

    For what must be laid out before the first pulse (e.g. the oscillations' baseline) and for
    tools that cut a recording outside a session."""
    fixed = fixed_cut_window(cfg)
    if fixed is not None:
        return fixed
    lo, hi = cfg.interpolation.auto_min_ms
    return (float(lo), float(hi))


PULSE_SOURCES = ("markers", "trigger", "data", "markers+data")


@dataclass(frozen=True)
class PulsesConfig(ConfigSection):
    """``[pulses]``."""
    SECTION = "pulses"

    source: str
    pattern: str
    marker_offset_ms: float
    correct_marker_lag: bool
    check_markers: bool
    table: str
    table_tolerance_ms: float
    trigger_channel: str
    data_channels: list[str]
    data_threshold_uv_per_ms: float
    refractory_ms: float
    min_interval_ms: float
    max_rate_hz: float

    def validate(self) -> None:
        self.check_choice("source", PULSE_SOURCES)
        for key in ("min_interval_ms", "max_rate_hz"):
            if self[key] < 0:
                raise ConfigError(f"pulses.{key} must be >= 0 (0 = no limit), got {self[key]}")
        if self.pattern:
            compile_pattern(self.pattern, "pulses.pattern",
                            "fix it, or leave it empty for the built-in pulse labels", ConfigError)
        if self.source == "trigger" and not self.trigger_channel:
            raise ConfigError("pulses.source = 'trigger' needs pulses.trigger_channel")


@dataclass(frozen=True)
class ChannelsConfig(ConfigSection):
    """``[channels]``."""
    SECTION = "channels"

    montage: str
    types: dict[str, str]

    def validate(self) -> None:
        from tmseeg.stream.montage import CHANNEL_TYPES
        for name, kind in self.types.items():
            if kind not in CHANNEL_TYPES:
                raise ConfigError(f"channels.types: {name} = {kind!r} is not one of "
                                  f"{', '.join(CHANNEL_TYPES)}")


@dataclass(frozen=True)
class CoilConfig(ConfigSection):
    """``[coil]``."""
    SECTION = "coil"

    roi: list[str]
    n_neighbors: int


@dataclass(frozen=True)
class InterpolationConfig(ConfigSection):
    """``[interpolation]``."""
    SECTION = "interpolation"

    enabled: bool
    window_ms: str | list[float]
    auto_pulses: int
    auto_min_ms: list[float]
    auto_max_ms: list[float]
    method: str
    fit_ms: float
    max_delay_ms: float
    recharge_delay_ms: float
    recharge_window_ms: list[float]

    def validate(self) -> None:
        for key in ("auto_min_ms", "auto_max_ms", "recharge_window_ms") + (
                () if self.window_ms == "auto" else ("window_ms",)):
            self.check_window(key)
        if self.recharge_delay_ms < 0:
            raise ConfigError("interpolation.recharge_delay_ms must be >= 0 (0: no recharge "
                              f"artifact to cut), got {self.recharge_delay_ms:g}")
        if self.recharge_delay_ms and not self.recharge_delay_ms + self.recharge_window_ms[0] > 0:
            raise ConfigError(
                f"interpolation.recharge_window_ms = {list(self.recharge_window_ms)} around "
                f"recharge_delay_ms = {self.recharge_delay_ms:g} must start after the pulse "
                "(the pulse's own window is window_ms)")
        (mn0, mn1), (mx0, mx1) = self.auto_min_ms, self.auto_max_ms
        if not (mx0 <= mn0 and mn1 <= mx1):
            raise ConfigError("interpolation.auto_max_ms must contain auto_min_ms")
        if self.auto_pulses < 1:
            raise ConfigError("interpolation.auto_pulses must be >= 1")
        self.check_choice("method", INTERP_METHODS)


@dataclass(frozen=True)
class DecayConfig(ConfigSection):
    """``[decay]``."""
    SECTION = "decay"

    enabled: bool
    model: str
    fit_window_ms: list[float]
    min_snr: float
    tau_ms: list[float]
    method: str
    min_decay_uv: float
    min_r2: float
    fit_reference: str
    own_window_end_ms: float

    def validate(self) -> None:
        if not self.own_window_end_ms > self.fit_window_ms[0]:
            raise ConfigError(f"[decay] own_window_end_ms = {self.own_window_end_ms:g} must come "
                              f"after the start of fit_window_ms = {list(self.fit_window_ms)} "
                              "(a value past its end means its end).")
        self.check_choice("method", CONFIG_FIT_ON)
        self.check_choice("fit_reference", FIT_REFERENCES)
        self.check_choice("model", DECAY_MODELS)


@dataclass(frozen=True)
class BadChannelsConfig(ConfigSection):
    """``[bad_channels]``."""
    SECTION = "bad_channels"

    detect: bool
    interpolate: bool
    bads: list[str]
    window_s: float
    flat_uv: float
    noisy_z: float
    exclude_ms: list[float]
    max_bad_fraction: float


@dataclass(frozen=True)
class FilterConfig(ConfigSection):
    """``[filter]``."""
    SECTION = "filter"

    l_freq_hz: float
    h_freq_hz: float
    order: int
    notch_hz: float
    notch_harmonics: int
    epoch_pad_ms: float
    epoch_pad_after_ms: float
    continuous: bool

    def validate(self) -> None:
        for key in ("epoch_pad_ms", "epoch_pad_after_ms"):
            if self[key] < 0:
                raise ConfigError(f"filter.{key} must be >= 0")


@dataclass(frozen=True)
class CleaningLeadfieldConfig(ConfigSection):
    """``[cleaning.leadfield]``."""
    SECTION = "cleaning.leadfield"

    n_locations: int
    shell_fraction: float
    min_elevation: float
    orientation: str


@dataclass(frozen=True)
class CleaningSoundConfig(ConfigSection):
    """``[cleaning.sound]``."""
    SECTION = "cleaning.sound"

    lambda0: float
    max_iter: int
    tol: float


@dataclass(frozen=True)
class CleaningSspsirConfig(ConfigSection):
    """``[cleaning.sspsir]``."""
    SECTION = "cleaning.sspsir"

    highpass_hz: float
    artifact_window_ms: list[float]
    baseline_ms: list[float]
    estimator: str
    min_ratio: float
    variance_pct: float
    n_components: int
    max_components: int
    lambda0: float
    weighting: str
    apply_window_ms: list[float]
    taper_ms: float


@dataclass(frozen=True)
class CleaningSspsirControlConfig(ConfigSection):
    """``[cleaning.sspsir_control]``."""
    SECTION = "cleaning.sspsir_control"

    control_window_ms: list[float]
    variance_pct: float
    n_components: int
    max_components: int
    lambda0: float


@dataclass(frozen=True)
class CleaningIcaRulesConfig(ConfigSection):
    """``[cleaning.ica.rules]``."""
    SECTION = "cleaning.ica.rules"

    muscle_window_ms: list[float]
    tms_muscle_ratio: float
    pulse_window_ms: list[float]
    blink_channels: list[str]
    blink_z: float
    move_channels: list[str]
    move_z: float
    muscle_freq_hz: list[float]
    muscle_slope: float
    electrode_z: float


@dataclass(frozen=True)
class CleaningIcaConfig(ConfigSection):
    """``[cleaning.ica]``."""
    SECTION = "cleaning.ica"

    method: str
    n_components: int
    max_fit_hz: float
    seed: int
    max_iter: int
    keep: list[int]
    remove: list[int]
    rules: CleaningIcaRulesConfig


@dataclass(frozen=True)
class CleaningConfig(ConfigSection):
    """``[cleaning]``."""
    SECTION = "cleaning"

    enabled: bool
    methods: list[str]
    calibration_pulses: int
    min_pulses: int
    calibration_window_ms: list[float]
    during_calibration: str
    control_label: str
    leadfield: CleaningLeadfieldConfig
    sound: CleaningSoundConfig
    sspsir: CleaningSspsirConfig
    sspsir_control: CleaningSspsirControlConfig
    ica: CleaningIcaConfig

    def validate(self) -> None:
        bad_methods = [m for m in self.methods if m not in CLEANING_METHODS]
        if bad_methods:
            raise ConfigError(f"cleaning.methods: unknown {bad_methods}; valid: "
                              f"{', '.join(CLEANING_METHODS)}")
        if "sspsir_control" in self.methods and not self.control_label:
            raise ConfigError("cleaning.methods has 'sspsir_control': set "
                              "cleaning.control_label to the marker label of the control "
                              "condition (e.g. 'sham')")
        self.check_choice("during_calibration", ("hold", "pass"))


@dataclass(frozen=True)
class ReferenceConfig(ConfigSection):
    """``[reference]``."""
    SECTION = "reference"

    type: str

    def validate(self) -> None:
        self.check_choice("type", ("average", "none"))


@dataclass(frozen=True)
class EpochsConfig(ConfigSection):
    """``[epochs]``."""
    SECTION = "epochs"

    tmin_ms: float
    tmax_ms: float
    baseline_ms: list[float]
    reject_uv: float
    reject_mode: str
    fast_ms: float
    fast_uv: float
    pulse_group_ms: float

    def validate(self) -> None:
        self.check_choice("reject_mode", REJECT_MODES)
        if not self.fast_ms > 0:
            raise ConfigError(f"epochs.fast_ms must be > 0, got {self.fast_ms}")


@dataclass(frozen=True)
class TepConfig(ConfigSection):
    """``[tep]``."""
    SECTION = "tep"

    early_window_ms: list[float]
    post_window_ms: list[float]
    pre_window_ms: list[float]
    target_snr: float
    peak_windows_ms: dict[str, list[float]]

    def validate(self) -> None:
        for name, win in self.peak_windows_ms.items():
            if name[:1].upper() not in ("N", "P") or len(win) != 2 or not win[0] < win[1]:
                raise ConfigError(f"tep.peak_windows_ms.{name} must be named N.../P... and be "
                                  "[start, stop] with start < stop")


#: the pipeline's sections, in the order of the defaults
PIPELINE_SECTIONS: dict[str, type[ConfigSection]] = {
    "pulses": PulsesConfig, "channels": ChannelsConfig, "coil": CoilConfig,
    "interpolation": InterpolationConfig, "decay": DecayConfig,
    "bad_channels": BadChannelsConfig, "filter": FilterConfig, "cleaning": CleaningConfig,
    "reference": ReferenceConfig, "epochs": EpochsConfig, "tep": TepConfig,
}
