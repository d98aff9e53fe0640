"""Test-wide setup: liblsl on loopback only, Qt offscreen, unique stream names per test."""
import os
import uuid

from tmseeg.stream.lslconfig import use_loopback_only

use_loopback_only(force=True)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402


@pytest.fixture
def uid() -> str:
    """A short unique suffix for LSL stream names / source ids, so parallel tests never collide."""
    return uuid.uuid4().hex[:8]
