"""Fixtures of the dashboard plugin tests: an agent with the plugin sampling
fast. Helpers shared by the test files are in ``dashboard_helpers``."""

from __future__ import annotations

from typing import Any

import pytest
from dashboard_helpers import INTERVAL

import agent_dashboard.plugin as dashboard_plugin


@pytest.fixture
def plugin() -> Any:
    return dashboard_plugin


@pytest.fixture
def dashboard_agent(make_agent: Any) -> Any:
    """A running agent with the dashboard plugin only, sampling every INTERVAL s."""
    return make_agent(plugins={"dashboard": dashboard_plugin}, config={"dashboard": {"interval": INTERVAL}})
