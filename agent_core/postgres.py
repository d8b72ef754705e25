"""The one connection helper: pooled autocommit connections to any database.

``agent.postgres.connect(dbname)`` lends a pooled connection for a request:
autocommit (each statement sees fresh statistics), ``application_name`` set,
``statement_timeout`` from ``[postgresql] statement_timeout``. A connection
that cannot be made raises :class:`~agent_core.errors.PostgresUnavailable`
(answered 503 naming the cause) within ``connect_timeout``; broken pooled
connections are dropped so the agent recovers by itself once PostgreSQL is
back.

``agent.postgres.dedicated(dbname, application_name)`` opens a connection of
its own for long work (maintenance operations); the caller closes it.

The backend pids of every connection the agent holds are in ``own_pids`` (a
snapshot), so monitoring can leave the agent's own connections out.

Idle pooled connections are closed after ``POOL_IDLE`` seconds by a reaper
thread, so the agent does not keep a database busy (``DROP DATABASE`` would
fail) once it stopped using it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from .errors import PostgresUnavailable, first_line

log = logging.getLogger("pgwarden.postgres")

APPLICATION_NAME = "pgwarden"
_MAX_IDLE_PER_DB = 4
_PING_AFTER = 2.0
POOL_IDLE = 10.0


class Postgres:
    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._idle: dict[str, list[tuple[float, Any]]] = {}
        self._lock = threading.Lock()
        self._own: set[int] = set()
        self.server_version: int | None = None
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def own_pids(self) -> frozenset[int]:
        """Backend pids of every connection the agent holds now (a snapshot)."""
        with self._lock:
            return frozenset(self._own)

    @property
    def default_dbname(self) -> str:
        return str(self.settings["dbname"])

    def _params(self, dbname: str | None, application_name: str, statement_timeout: bool) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {
            "host": s["host"],
            "port": s["port"],
            "user": s["user"],
            "dbname": dbname or s["dbname"],
            "application_name": application_name,
            "connect_timeout": s["connect_timeout"],
            "client_encoding": "UTF8",
        }
        if s.get("password"):
            params["password"] = s["password"]
        if statement_timeout:
            params["options"] = f"-c statement_timeout={int(s['statement_timeout']) * 1000}"
        return params

    def _open(self, dbname: str | None, application_name: str, statement_timeout: bool) -> Any:
        try:
            conn = psycopg2.connect(**self._params(dbname, application_name, statement_timeout))
        except psycopg2.OperationalError as e:
            raise PostgresUnavailable(first_line(e)) from None
        conn.autocommit = True
        self.server_version = conn.server_version
        with self._lock:
            self._own.add(conn.info.backend_pid)
        return conn

    def _discard(self, conn: Any) -> None:
        with self._lock:
            self._own.discard(conn.info.backend_pid)
        with contextlib.suppress(Exception):  # closing a dead socket may fail
            conn.close()

    @contextmanager
    def connect(self, dbname: str | None = None) -> Iterator[Any]:
        """A pooled autocommit connection to ``dbname`` (default database if None).

        Use ``conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)`` for
        rows as dicts. A connection error inside the block drops the
        connection and raises PostgresUnavailable.
        """
        key = dbname or self.default_dbname
        conn = self._checkout(key)
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            if conn.closed or _is_connection_error(e):
                self._discard(conn)
                raise PostgresUnavailable(first_line(e)) from None
            self._checkin(key, conn)
            raise
        except BaseException:
            self._checkin(key, conn)
            raise
        else:
            self._checkin(key, conn)

    def dedicated(
        self, dbname: str | None = None, application_name: str = APPLICATION_NAME, statement_timeout: bool = False
    ) -> Any:
        """A new autocommit connection, by default without statement timeout
        (``statement_timeout=True`` applies ``[postgresql] statement_timeout``).
        Release it with :meth:`release` (which closes it)."""
        return self._open(dbname, application_name, statement_timeout=statement_timeout)

    def release(self, conn: Any) -> None:
        """Close a dedicated connection and forget its pid."""
        self._discard(conn)

    def _checkout(self, key: str) -> Any:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                item = idle.pop() if idle else None
            if item is None:
                return self._open(key, APPLICATION_NAME, statement_timeout=True)
            since, conn = item
            if conn.closed:
                self._discard(conn)
                continue
            if time.monotonic() - since > _PING_AFTER:
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                except psycopg2.Error:
                    self._discard(conn)
                    continue
            return conn

    def _checkin(self, key: str, conn: Any) -> None:
        if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            self._discard(conn)
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _MAX_IDLE_PER_DB and not self._closed.is_set():
                idle.append((time.monotonic(), conn))
                if self._reaper is None:
                    self._reaper = threading.Thread(target=self._reap, name="pgwarden-pg-reaper", daemon=True)
                    self._reaper.start()
                return
        self._discard(conn)

    def _reap(self) -> None:
        """Close pooled connections idle for more than POOL_IDLE seconds."""
        while not self._closed.wait(POOL_IDLE / 4):
            self.close_idle(older_than=POOL_IDLE)

    def close_idle(self, dbname: str | None = None, older_than: float = 0.0) -> None:
        """Close idle pooled connections (of ``dbname``, or all) idle longer than ``older_than`` s."""
        limit = time.monotonic() - older_than
        stale = []
        with self._lock:
            for key, idle in self._idle.items():
                if dbname is not None and key != dbname:
                    continue
                keep = [(t, c) for t, c in idle if t > limit]
                stale += [c for t, c in idle if t <= limit]
                idle[:] = keep
        for conn in stale:
            self._discard(conn)

    def query(self, sql: Any, params: Any = None, dbname: str | None = None) -> list[dict[str, Any]]:
        """Run one statement on a pooled connection; rows as dicts."""
        with self.connect(dbname) as conn, conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, params)
            return [dict(r) for r in cur.fetchall()] if cur.description else []

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for _, conn in idle:
                self._discard(conn)


def _is_connection_error(error: Exception) -> bool:
    code = getattr(error, "pgcode", None)
    return code is None or code.startswith("08") or code.startswith("57P")
