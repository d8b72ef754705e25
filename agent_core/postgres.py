"""The one connection helper: pooled autocommit connections to any database.

``agent.postgres.connect(dbname)`` lends a pooled connection for a request:
autocommit (each statement sees fresh statistics), ``application_name`` set,
the monitoring timeouts ``statement_timeout`` and ``lock_timeout`` from
``[postgresql]`` (a query stuck behind an ``ACCESS EXCLUSIVE`` lock fails
with ``LockNotAvailable`` instead of holding the connection). A connection
that cannot be made raises :class:`~agent_core.errors.PostgresUnavailable`
(answered 503 naming the cause, the password never shown) within
``connect_timeout``; broken pooled connections are dropped so the agent
recovers by itself once PostgreSQL is back. A connection to a database that
does not exist raises :class:`~agent_core.errors.DatabaseNotFound` instead
(answered 404 ``Database '<name>' not found.``): plugins need not look
``pg_database`` up themselves (see :meth:`Postgres._missing`).

Connections use ``[postgresql]`` host (a socket directory or an address),
port, user, password, dbname, sslmode, and ``conninfo`` for any other libpq
parameter; libpq's ``PG*`` environment variables and ``~/.pgpass`` fill in
what none of them sets.

``agent.postgres.dedicated(dbname, application_name)`` opens a connection of
its own for long work (maintenance operations, with their own timeouts); the
caller closes it.

``agent.postgres.locality()`` tells whether PostgreSQL runs on this host (so
its processes can be read in ``/proc``), and why: see :func:`detect_local`.

The backend pids of every connection the agent holds are in ``own_pids`` (a
snapshot), so monitoring can leave the agent's own connections out.

Only connections to the default database (``[postgresql] dbname``) are
pooled, and only for ``[postgresql] pool_idle`` seconds (a reaper thread
closes older ones). A connection to any other database is closed as soon as
the request that borrowed it returns it: an idle session in ``template1``
makes every ``CREATE DATABASE`` of the instance fail (``source database
"template1" is being accessed by other users``), one in any database makes
``DROP DATABASE`` and ``ALTER DATABASE ... RENAME`` fail, so the agent never
leaves one behind.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import psycopg2
import psycopg2.extensions
import psycopg2.extras

from agent_core.errors import ConfigError, DatabaseNotFound, PostgresUnavailable, first_line

log = logging.getLogger("pgwarden.postgres")
#: The attribute :meth:`Postgres.connect` sets on a driver error raised in its block: the database's name.
DBNAME_ATTRIBUTE = "pgwarden_dbname"

APPLICATION_NAME = "pgwarden"
_MAX_IDLE_PER_DB = 4
_PING_AFTER = 2.0
#: Default of ``[postgresql] pool_idle``: seconds an idle pooled connection to the default database is kept.
POOL_IDLE = 5.0
#: Seconds a detected locality is trusted before it is checked again.
LOCALITY_TTL = 60.0
#: Names (``/proc/<pid>/comm``) a PostgreSQL server process has.
POSTGRES_NAMES = ("postgres", "postmaster")


@dataclass(frozen=True)
class Locality:
    """Whether PostgreSQL runs on this host (its processes readable here), and why."""

    local: bool
    reason: str


# Server processes that live as long as the postmaster, children of it.
_LOCALITY_SQL = """
SELECT pg_backend_pid() AS pid,
       coalesce(array_agg(pid ORDER BY pid) FILTER (
           WHERE backend_type IN ('checkpointer', 'background writer', 'walwriter', 'startup')), '{}') AS aux
  FROM pg_stat_activity
"""


def detect_local(backend_pid: int, aux_pids: Iterable[int]) -> Locality:
    """Whether the server that reported these pids runs on this host.

    ``backend_pid`` is the server process of one of the agent's connections
    (``pg_backend_pid()``), ``aux_pids`` those of its checkpointer, background
    writer... (``pg_stat_activity``). PostgreSQL runs here when, in this
    host's process table, the backend is a ``postgres`` process and every
    auxiliary process is a child of the same parent (the postmaster). A server
    elsewhere (another machine, a container with its own pid namespace) would
    need all these pids to match by chance. Any user can read the names and
    parents of processes, so this needs no privilege; it does not depend on
    addresses (sockets, forwarders, NAT) nor on clocks.
    """
    aux = list(aux_pids)
    try:
        backend = psutil.Process(backend_pid)
        name = backend.name()
        if name not in POSTGRES_NAMES:
            return Locality(False, f"pid {backend_pid} of the agent's PostgreSQL backend is {name!r} on this host")
        postmaster = backend.ppid()
        strangers = [pid for pid in aux if psutil.Process(pid).ppid() != postmaster]
    except psutil.NoSuchProcess as e:
        return Locality(False, f"PostgreSQL's process {e.pid} does not exist on this host")
    except psutil.AccessDenied as e:
        return Locality(False, f"PostgreSQL's process {e.pid} cannot be read on this host")
    if not aux:
        return Locality(False, "PostgreSQL lists no checkpointer or background writer to check against this host")
    if strangers:
        return Locality(False, f"PostgreSQL's processes {strangers} are not children of postmaster {postmaster} here")
    return Locality(True, f"PostgreSQL's processes are children of postmaster {postmaster} on this host")


class Postgres:
    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self._idle: dict[str, list[tuple[float, Any]]] = {}
        self._lock = threading.Lock()
        self._own: set[int] = set()
        self.server_version: int | None = None
        self._reaper: threading.Thread | None = None
        self._closed = threading.Event()
        self._locality: tuple[float, Locality] | None = None

    @property
    def own_pids(self) -> frozenset[int]:
        """Backend pids of every connection the agent holds now (a snapshot)."""
        with self._lock:
            return frozenset(self._own)

    @property
    def default_dbname(self) -> str:
        return str(self.settings["dbname"])

    @property
    def pool_idle(self) -> float:
        """Seconds an idle connection to the default database stays pooled (``[postgresql] pool_idle``)."""
        value = self.settings.get("pool_idle")
        return POOL_IDLE if value is None else float(value)

    def _params(self, dbname: str | None, application_name: str, timeouts: bool) -> dict[str, Any]:
        s = self.settings
        params: dict[str, Any] = {
            "dsn": s.get("conninfo") or "",
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
        if s.get("sslmode"):
            params["sslmode"] = s["sslmode"]
        if timeouts:
            params["options"] = (
                f"-c statement_timeout={int(s['statement_timeout']) * 1000}"
                f" -c lock_timeout={int(s.get('lock_timeout') or 0) * 1000}"
            )
        return params

    def redact(self, text: str) -> str:
        """``text`` with the configured password replaced, for clients and logs."""
        password = self.settings.get("password")
        return text.replace(password, "REDACTED") if password else text

    def _open(self, dbname: str | None, application_name: str, timeouts: bool) -> Any:
        other = dbname is not None and dbname != self.default_dbname
        if other and not fits_name(str(dbname)):
            raise DatabaseNotFound(str(dbname))
        try:
            conn = psycopg2.connect(**self._params(dbname, application_name, timeouts))
        except psycopg2.OperationalError as e:
            if other and self._missing(str(dbname), e):
                raise DatabaseNotFound(str(dbname)) from None
            raise PostgresUnavailable(self.redact(first_line(e))) from None
        conn.autocommit = True
        self.server_version = conn.server_version
        with self._lock:
            self._own.add(conn.info.backend_pid)
        return conn

    def _missing(self, dbname: str, error: psycopg2.OperationalError) -> bool:
        """Whether connecting to ``dbname`` (not the default database) failed
        because it does not exist (SQLSTATE 3D000).

        psycopg2 gives no SQLSTATE for a failed connection (``pgcode`` is
        None), only libpq's text, and the server translates its part
        (``lc_messages``). So: the server's English message says so; or, for
        a failure that is not one of PostgreSQL being unreachable (then the
        answer stays 503 at once), ``pg_database`` has no such name, read on
        the default database (if that read fails too: not known, 503).
        """
        if getattr(error, "pgcode", None) == "3D000":
            return True
        text = str(error)
        if f'database "{dbname}" does not exist' in text:
            return True
        if any(phrase in text.lower() for phrase in _UNREACHABLE):
            return False
        try:
            return not self.query("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (dbname,))
        except (PostgresUnavailable, psycopg2.Error):
            return False

    def _discard(self, conn: Any) -> None:
        with self._lock:
            self._own.discard(conn.info.backend_pid)
        with contextlib.suppress(Exception):  # closing a dead socket may fail
            conn.close()

    @contextmanager
    def connect(self, dbname: str | None = None) -> Iterator[Any]:
        """A pooled autocommit connection to ``dbname`` (default database if None):
        one to another database is new and closed when the block ends.

        Use ``conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)`` for
        rows as dicts. A connection error inside the block drops the
        connection and raises PostgresUnavailable. Another driver error (a
        statement or lock time-out) goes through with the database's name as
        its :data:`DBNAME_ATTRIBUTE` (the web layer's 504 names it).
        """
        key = dbname or self.default_dbname
        conn = self._checkout(key)
        try:
            yield conn
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as e:
            # the connection may be closed by the time the error is answered: keep its database
            if getattr(e, DBNAME_ATTRIBUTE, None) is None:  # an inner block's database stays
                setattr(e, DBNAME_ATTRIBUTE, key)
            if conn.closed or _is_connection_error(e):
                self._discard(conn)
                raise PostgresUnavailable(self.redact(first_line(e))) from None
            self._checkin(key, conn)
            raise
        except BaseException:
            self._checkin(key, conn)
            raise
        else:
            self._checkin(key, conn)

    def dedicated(
        self, dbname: str | None = None, application_name: str = APPLICATION_NAME, timeouts: bool = False
    ) -> Any:
        """A new autocommit connection, by default without statement or lock
        timeout (``timeouts=True`` applies the monitoring timeouts,
        ``[postgresql] statement_timeout`` and ``lock_timeout``). Release it
        with :meth:`release` (which closes it)."""
        return self._open(dbname, application_name, timeouts=timeouts)

    def release(self, conn: Any) -> None:
        """Close a dedicated connection and forget its pid."""
        self._discard(conn)

    def _checkout(self, key: str) -> Any:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                item = idle.pop() if idle else None
            if item is None:
                return self._open(key, APPLICATION_NAME, timeouts=True)
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
        if (
            conn.closed
            or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE
            or key != self.default_dbname  # never an idle session in another database (template1...)
            or self.pool_idle <= 0
        ):
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
        """Close pooled connections idle for more than ``pool_idle`` seconds."""
        idle = self.pool_idle
        while not self._closed.wait(max(idle / 4, 0.05)):
            self.close_idle(older_than=idle)

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

    def locality(self) -> Locality:
        """Whether PostgreSQL runs on this host, and why: ``[postgresql] local``
        when ``yes`` or ``no``, else detected (:func:`detect_local`) and kept
        for ``LOCALITY_TTL`` seconds. Raises PostgresUnavailable when it must
        be detected and PostgreSQL cannot be reached."""
        setting = self.settings.get("local", "auto")
        if setting != "auto":
            return Locality(setting == "yes", f"[postgresql] local = {setting}")
        cached = self._locality
        if cached is not None and time.monotonic() - cached[0] < LOCALITY_TTL:
            return cached[1]
        try:
            row = self.query(_LOCALITY_SQL)[0]
        except psycopg2.Error as e:  # pg_stat_activity not readable, PostgreSQL before 10 (no backend_type)
            found = Locality(False, f"cannot list PostgreSQL's processes: {first_line(e)}")
        else:
            found = detect_local(row["pid"], row["aux"])
        if cached is None or cached[1] != found:
            log.info("PostgreSQL %s: %s", "runs on this host" if found.local else "is remote", found.reason)
        self._locality = (time.monotonic(), found)
        return found

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for _, conn in idle:
                self._discard(conn)


#: PostgreSQL keeps at most 63 bytes of a name (NAMEDATALEN - 1) and
#: silently truncates longer ones, at connection and when a value is compared
#: with a ``name``: a longer name would reach the object named by its first
#: 63 bytes.
NAME_MAX_BYTES = 63


def fits_name(name: str) -> bool:
    """Whether ``name`` can name a PostgreSQL object as given: at most
    :data:`NAME_MAX_BYTES` bytes in UTF-8, no NUL. A name that does not fit
    names nothing (answer 404), never the object of its first 63 bytes."""
    return "\x00" not in name and len(name.encode("utf-8", "surrogatepass")) <= NAME_MAX_BYTES


def _is_connection_error(error: Exception) -> bool:
    code = getattr(error, "pgcode", None)
    return code is None or code.startswith("08") or code.startswith("57P")


#: Connection failures that say nothing about the settings: PostgreSQL is
#: down, starting, stopping or full, or its host cannot be reached now.
_UNREACHABLE = (
    "connection refused",
    "no such file or directory",
    "timeout expired",
    "could not translate host name",
    "network is unreachable",
    "no route to host",
    "the database system is",  # starting up, shutting down, in recovery mode
    "too many clients",
    "remaining connection slots",
)


def check(settings: dict[str, Any]) -> str | None:
    """Connect once with ``[postgresql]`` ``settings``, as ``check-config`` does.

    None when it works; the reason when PostgreSQL cannot be reached now (the
    agent starts anyway and answers 503 until it can). Raises ConfigError
    naming the cause when the server refuses the settings (password, role,
    database, pg_hba.conf, SSL)."""
    pg = Postgres(settings)
    try:
        pg.release(pg.dedicated())
    except PostgresUnavailable as e:
        cause = e.message.removeprefix("PostgreSQL is unavailable: ")
        if any(text in cause.lower() for text in _UNREACHABLE):
            return cause
        raise ConfigError([f"postgresql: cannot connect as {settings['user']!r}: {cause}"]) from None
    return None
