"""Fixtures of the activity plugin tests: an agent with the plugin, real
PostgreSQL sessions that are always closed, blocked statements run in threads
that are always joined, and unique names for what the tests create."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import agent_activity.plugin as activity_plugin
import psycopg2
import pytest

from agent_core.testing import Cluster, wait_for

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
    """A suffix for names of tables and databases no other test uses."""
    return uuid.uuid4().hex[:10]


class Blocked:
    """A statement run in a thread on its own connection (it may block on a lock)."""

    def __init__(self, conn: Any, statement: str, params: Any = None):
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(statement, params), daemon=True)
        self.thread.start()

    def _run(self, statement: str, params: Any) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
        except BaseException as e:  # canceled or terminated: reported to the test
            self.error = e

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "statement still blocked"


class Sessions:
    """Opens real PostgreSQL sessions for a test and closes all of them."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.conns: list[Any] = []
        self.blocked: list[Blocked] = []

    def open(
        self, dbname: str = "postgres", autocommit: bool = True, unix: bool = False, user: str | None = None
    ) -> Any:
        """A new session, over TCP or (``unix``) the cluster's Unix socket."""
        if unix:
            c = self.cluster
            conn = psycopg2.connect(host=c.sockdir, port=c.port, user=user or c.superuser, dbname=dbname)
            conn.autocommit = autocommit
        else:
            conn = self.cluster.connect(dbname, user=user, autocommit=autocommit)
        self.conns.append(conn)
        return conn

    def idle(
        self, statement: str = "SELECT 1", dbname: str = "postgres", unix: bool = False, user: str | None = None
    ) -> Any:
        """A session that ran ``statement`` and now sits idle."""
        conn = self.open(dbname, unix=unix, user=user)
        with conn.cursor() as cur:
            cur.execute(statement)
        return conn

    def run(self, statement: str, params: Any = None, conn: Any = None, dbname: str = "postgres") -> Blocked:
        """Run ``statement`` in a thread (on ``conn`` or a new autocommit session)."""
        blocked = Blocked(conn if conn is not None else self.open(dbname), statement, params)
        self.blocked.append(blocked)
        return blocked

    def wait_state(self, pid: int, state: str = "active", wait_event_type: str | None = None) -> None:
        """Wait until backend ``pid`` is in ``state`` (and waits on ``wait_event_type``)."""

        def ready() -> bool:
            rows = self.cluster.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
            return bool(rows) and rows[0][0] == state and (wait_event_type is None or rows[0][1] == wait_event_type)

        wait_for(ready, timeout=15)

    def gone(self, pid: int) -> bool:
        """Backend ``pid`` is no longer in pg_stat_activity."""
        return not self.cluster.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))

    def close(self) -> None:
        for blocked in self.blocked:
            if blocked.thread.is_alive():
                self.cluster.execute("SELECT pg_cancel_backend(%s)", (blocked.pid,))
        for blocked in self.blocked:
            blocked.thread.join(30)
        for conn in self.conns:
            if not conn.closed:
                try:
                    if not conn.autocommit:
                        conn.rollback()
                except psycopg2.Error:
                    pass
                conn.close()


@pytest.fixture
def sessions(pg_cluster: Cluster) -> Iterator[Sessions]:
    s = Sessions(pg_cluster)
    try:
        yield s
    finally:
        s.close()
