"""Metrics computed from epochs: TEP (always), and plug-ins listed in :data:`PLUGINS`.

See :mod:`tmseeg.metrics.base` for the plug-in contract.
"""

#: modules whose ``make_metric`` the session calls (see tmseeg.metrics.base); order = column
#: order in pulses.csv, except that a plug-in runs after those it names in ``after``
PLUGINS: list[str] = [
    "tmseeg.metrics.mep",
    "tmseeg.metrics.pcist",
    "tmseeg.metrics.connectivity",
    "tmseeg.metrics.spread",
    "tmseeg.metrics.oscillations",
    "tmseeg.metrics.state",
    "tmseeg.metrics.plasticity",
]
