"""Fixtures of the maintenance plugin tests: an agent with the plugin, a fresh
database, a role without privileges. Helpers to build percent-encoded paths
and wait for operations are in ``maintenance_helpers``.

Throwaway databases (``databases``) and statements held open in threads
(``backends.hold``) come from ``agent_core.testing``. The cluster is the
session's shared one: every database made here has a unique name and is
dropped with ``WITH (FORCE)`` at teardown.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from psycopg2 import sql

import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import Client, Cluster, Databases, RunningAgent


@pytest.fixture
def plugin() -> Any:
    return maintenance_plugin


@pytest.fixture
def start_agent(databases: Databases, make_agent: Callable[..., RunningAgent]) -> Callable[..., RunningAgent]:
    """``start_agent(maintenance={...}, agent={...}, postgresql={...}, home=...)``.

    Depends on ``databases`` first so that agents stop before databases are dropped.
    """

    def start(home: Any = None, **sections: dict[str, Any]) -> RunningAgent:
        config = {"agent": {"scheduler_workers": 4, "log_level": "INFO"}}
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        return make_agent(plugins={"maintenance": maintenance_plugin}, config=config, home=home)

    return start


@pytest.fixture
def magent(start_agent: Callable[..., RunningAgent]) -> RunningAgent:
    return start_agent()


@pytest.fixture
def api(magent: RunningAgent) -> Client:
    """A client of ``magent`` with a session of ``alice``."""
    return magent.login()


@pytest.fixture
def key_api(magent: RunningAgent) -> Client:
    """A client of ``magent`` using the agent key (header)."""
    return magent.client()


@pytest.fixture
def role(pg_cluster: Cluster, databases: Databases) -> Iterator[str]:
    """A login role without privileges (dropped with what it was granted)."""
    name = f"mnt_role_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        for dbname in databases.names:
            pg_cluster.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)), dbname=dbname)
        pg_cluster.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def db(databases: Databases) -> str:
    """A fresh empty database."""
    return databases.create("mnt")
