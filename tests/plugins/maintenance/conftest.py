"""Fixtures of the maintenance plugin tests: an agent with the plugin, throwaway
databases (always dropped), statements held open in threads (always
finished), helpers to build percent-encoded paths and wait for operations.

The cluster is the session's shared one: every database made here has a
unique name and is dropped with ``WITH (FORCE)`` at teardown.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import Client, Cluster, RunningAgent


@pytest.fixture
def plugin() -> Any:
    return maintenance_plugin


class Databases:
    """Create databases with unique names; drop them all at the end."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.names: list[str] = []

    def create(self, prefix: str = "mnt", setup: str | None = None) -> str:
        """A new database named ``<prefix>_<8 hex>`` (the prefix may hold any character)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.cluster.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.names.append(name)
        if setup:
            self.cluster.execute(setup, dbname=name)
        return name

    def drop_all(self) -> None:
        for name in reversed(self.names):
            self.cluster.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def databases(pg_cluster: Cluster) -> Iterator[Databases]:
    dbs = Databases(pg_cluster)
    try:
        yield dbs
    finally:
        dbs.drop_all()


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
    return databases.create()


class Held:
    """A statement run in a thread on its own connection: it may hold locks or
    block. :meth:`finish` commits (or rolls back) and joins."""

    def __init__(self, cluster: Cluster, dbname: str, statements: str, autocommit: bool = False, **connect: Any):
        self.conn = cluster.connect(dbname, autocommit=autocommit, **connect)
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(statements,), daemon=True)
        self.thread.start()

    def _run(self, statements: str) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statements)
        except BaseException as e:  # canceled: reported to the test
            self.error = e
        finally:
            self.done.set()

    def finish(self) -> None:
        self.done.wait(30)
        self.thread.join(30)
        if not self.conn.closed:
            try:
                self.conn.rollback()
            except psycopg2.Error:
                pass
            self.conn.close()


@pytest.fixture
def hold(pg_cluster: Cluster) -> Iterator[Callable[..., Held]]:
    """``hold(dbname, "BEGIN; LOCK TABLE t")``: statements kept open until the test ends."""
    held: list[Held] = []

    def start(dbname: str, statements: str, **kw: Any) -> Held:
        h = Held(pg_cluster, dbname, statements, **kw)
        held.append(h)
        h.done.wait(10)
        return h

    try:
        yield start
    finally:
        for h in held:
            h.finish()
