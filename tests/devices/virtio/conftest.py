"""Fixtures for the virtio tests (the rigs and the driver are in driver.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[False, True], ids=["v2", "legacy"])
def legacy(request) -> bool:
    """Both interfaces: version 2 and the legacy version 1."""
    return request.param
