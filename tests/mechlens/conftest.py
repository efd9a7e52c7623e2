"""Fixtures shared by the core's tests."""

from __future__ import annotations

import pytest
from toy_plugins import TOYS

from mechlens import registry


@pytest.fixture
def toys(make_dist):
    """The toy plugins installed as a distribution (``toy-models`` 0.3), the registry reloaded around the test."""
    make_dist("toy-models", {"toy_models_plugin": TOYS}, {"toys": "toy_models_plugin"}, version="0.3")
    registry.reset()
    yield
    registry.reset()
