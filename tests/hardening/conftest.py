"""Fixtures of the hardening suites: an agent with the in-repo plugins on the
session's throwaway cluster, an ``admin`` (alice) and a ``read`` user (dash),
and the agent's log captured as text."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agent_activity.plugin as activity_plugin
import agent_dashboard.plugin as dashboard_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.auth import UsersFile
from agent_core.testing import (
    PASSWORD,
    Cluster,
    Databases,
    RunningAgent,
    add_user,
    agent_config,
)

PLUGINS = {"activity": activity_plugin, "maintenance": maintenance_plugin, "dashboard": dashboard_plugin}
USERS = {"alice": PASSWORD, "dash": (PASSWORD, "read")}


@pytest.fixture
def start_full(databases: Databases, make_agent: Callable[..., RunningAgent]) -> Callable[..., RunningAgent]:
    """``start_full(**config_sections)``: an agent with both plugins and both
    users. Depends on ``databases`` first so agents stop before databases are
    dropped."""

    def start(**sections: dict[str, Any]) -> RunningAgent:
        config: dict[str, dict[str, Any]] = {"agent": {"log_level": "DEBUG"}, "activity": {"sample_interval": 0.5}}
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        return make_agent(plugins=PLUGINS, config=config, users=USERS)

    return start


@pytest.fixture
def full_agent(start_full: Callable[..., RunningAgent]) -> RunningAgent:
    return start_full()


@pytest.fixture(scope="module")
def shared_agent(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """One agent like ``full_agent`` for a whole module, for tests that change
    nothing (an agent per test costs about a second)."""
    home = tmp_path_factory.mktemp("shared_agent")
    users = UsersFile(os.path.join(str(home), "users"))
    add_user(users, "alice", PASSWORD, "admin")
    add_user(users, "dash", PASSWORD, "read")
    running = RunningAgent(agent_config(pg_cluster, home, PLUGINS, {"agent": {"log_level": "DEBUG"}}), PLUGINS, {})
    try:
        yield running
    finally:
        running.stop()


class LogText(logging.Handler):
    """Every log record of the process (root logger at DEBUG: the agent's,
    cheroot's, SQLAlchemy's...), formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def agent_log() -> Iterator[LogText]:
    handler = LogText()
    logger = logging.getLogger()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
