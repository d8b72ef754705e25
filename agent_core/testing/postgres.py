"""Real PostgreSQL objects of a test on a :class:`~agent_core.cluster.Cluster`:
:class:`Databases` with unique names, dropped at the end, and
:class:`Backends`, real sessions, some running a statement in a thread
(:class:`Held`), all ended at the end."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg2
from psycopg2 import sql

from agent_core.cluster import Cluster
from agent_core.testing.helpers import wait_for


class Databases:
    """Databases with unique names on a cluster, all dropped by :meth:`drop_all`."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        #: The names made, in order.
        self.names: list[str] = []

    def create(self, prefix: str = "pgw", setup: Any = None, options: str | None = None) -> str:
        """A new database named ``<prefix>_<8 hex>`` (the prefix may hold any
        character), made with ``CREATE DATABASE`` ``options`` (SQL, as in
        ``"ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"``);
        ``setup`` (SQL) is then run in it."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if options:
            create = sql.SQL(" ").join([create, sql.SQL(options)])
        self.cluster.execute(create)
        self.names.append(name)
        if setup:
            self.cluster.execute(setup, dbname=name)
        return name

    def drop_all(self) -> None:
        """Drop every database made, newest first, ending its sessions."""
        for name in reversed(self.names):
            self.cluster.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class Held:
    """A statement run in a thread on its own connection: it may block (on a
    lock) or return leaving a transaction open. ``error`` is what it raised
    (canceled, terminated...), ``done`` is set when it returned."""

    def __init__(self, conn: Any, statement: Any, params: Any = None):
        self.conn = conn
        self.pid: int = conn.info.backend_pid
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(statement, params), daemon=True)
        self.thread.start()

    def _run(self, statement: Any, params: Any) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
        except BaseException as e:  # canceled or terminated: reported to the test
            self.error = e
        finally:
            self.done.set()

    def join(self, timeout: float = 30) -> None:
        """Wait for the statement to return; fail if it is still blocked after ``timeout`` s."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "statement still blocked"


class Backends:
    """Real PostgreSQL sessions (server backends) of a test; :meth:`close` ends them all."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.conns: list[Any] = []
        self.held: list[Held] = []

    def open(
        self,
        dbname: str = "postgres",
        autocommit: bool = True,
        unix: bool = False,
        user: str | None = None,
        **connect: Any,
    ) -> Any:
        """A new psycopg2 connection, over TCP or (``unix``) the cluster's Unix socket."""
        if unix:
            c = self.cluster
            conn = psycopg2.connect(host=c.sockdir, port=c.port, user=user or c.superuser, dbname=dbname, **connect)
            conn.autocommit = autocommit
        else:
            conn = self.cluster.connect(dbname, user=user, autocommit=autocommit, **connect)
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

    def run(self, statement: Any, params: Any = None, conn: Any = None, dbname: str = "postgres") -> Held:
        """Run ``statement`` in a thread (on ``conn`` or a new autocommit session); return at once."""
        held = Held(conn if conn is not None else self.open(dbname), statement, params)
        self.held.append(held)
        return held

    def hold(self, statement: Any, dbname: str = "postgres", params: Any = None, timeout: float = 10) -> Held:
        """Run ``statement`` in a thread on a new autocommit session and wait up
        to ``timeout`` s for it to return: ``"BEGIN; LOCK TABLE t"`` then holds
        its lock until the test ends."""
        held = self.run(statement, params, dbname=dbname)
        held.done.wait(timeout)
        return held

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
        """Cancel the statements still running, join their threads, roll back and close every connection."""
        for held in self.held:
            if held.thread.is_alive():
                self.cluster.execute("SELECT pg_cancel_backend(%s)", (held.pid,))
        for held in self.held:
            held.thread.join(30)
        for conn in self.conns:
            if not conn.closed:
                try:
                    if not conn.autocommit:
                        conn.rollback()
                except psycopg2.Error:
                    pass
                conn.close()
