"""TESA-grade artifact cleaning: SOUND, SSP-SIR (muscle and control-data variants), ICA with
TMS-aware component labels, on a spherical-head lead field; one stage applies them live.

See :mod:`.leadfield`, :mod:`.sound`, :mod:`.sspsir`, :mod:`.ica` and :mod:`.stage`.
"""
from tmseeg.pipeline.cleaning.ica import ICARules, fit_ica, label_components
from tmseeg.pipeline.cleaning.leadfield import sphere_leadfield
from tmseeg.pipeline.cleaning.sound import sound
from tmseeg.pipeline.cleaning.sspsir import fit_sspsir, fit_sspsir_control, sir_matrix
from tmseeg.pipeline.cleaning.stage import ArtifactCleaning, CleaningFilter
from tmseeg.sections import ConfigSection

__all__ = ["ArtifactCleaning", "CleaningFilter", "ICARules", "fit_ica", "label_components",
           "sphere_leadfield", "sound", "fit_sspsir", "fit_sspsir_control", "sir_matrix",
           "make_stage"]


def make_stage(cfg: ConfigSection, bads_from=None) -> ArtifactCleaning:
    """The cleaning stage a configuration's ``[cleaning]`` section declares."""
    c = cfg.cleaning

    def windows_as_tuples(section: ConfigSection) -> dict:
        return {k: (tuple(v) if isinstance(v, list) else v) for k, v in section.items()}

    # plain tables, as the stage takes them (its ICA rules become ICARules from a dict)
    return ArtifactCleaning(
        methods=list(c.methods), calibration_pulses=c.calibration_pulses,
        min_pulses=c.min_pulses, calibration_window_ms=tuple(c.calibration_window_ms),
        during_calibration=c.during_calibration, control_label=c.control_label,
        sound=c.sound.to_dict(), sspsir=windows_as_tuples(c.sspsir),
        sspsir_control=windows_as_tuples(c.sspsir_control), ica=c.ica.to_dict(),
        leadfield=c.leadfield.to_dict(), bads_from=bads_from)
