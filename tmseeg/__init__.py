"""tmseeg: real-time TMS-EEG acquisition and analysis over Lab Streaming Layer."""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("tmseeg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
