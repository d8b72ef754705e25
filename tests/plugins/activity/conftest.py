"""Fixtures of the activity plugin tests: an agent with the plugin and unique
names for what the tests create. Real PostgreSQL sessions and statements
blocked in threads come from ``agent_core.testing``'s ``backends`` fixture,
throwaway databases from its ``databases`` fixture."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import agent_activity.plugin as activity_plugin

#: Fast sampling so rates exist soon after a backend appears.
SAMPLE_INTERVAL = 0.2


@pytest.fixture
def plugin() -> Any:
    return activity_plugin


@pytest.fixture
def activity_agent(make_agent: Any) -> Any:
    """A running agent with the activity plugin only."""
    return make_agent(plugins={"activity": activity_plugin}, config={"activity": {"sample_interval": SAMPLE_INTERVAL}})


@pytest.fixture
def api(activity_agent: Any) -> Any:
    """A client with a session of ``alice`` on ``activity_agent``."""
    return activity_agent.login()


@pytest.fixture
def unique() -> str:
    """A suffix for names (tables, roles, queries) no other test uses."""
    return uuid.uuid4().hex[:10]
