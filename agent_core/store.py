"""The operations store: a SQLAlchemy engine and the core's tables.

Default: a SQLite file in ``[agent] home``, created 0600 with its -wal and
-shm files (the directory 0700); any SQLAlchemy URL works
(``postgresql+psycopg2://...`` is tested too). The core's tables below evolve
through Alembic revisions (``agent_core/migrations``): a change here needs a
new revision. Plugins add their own tables through ``agent_db_metadata``; the
store creates the missing ones, and each plugin owns their evolution.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from agent_core.errors import Unavailable, first_line
from agent_core.files import create_private

log = logging.getLogger("pgwarden.store")

metadata = sa.MetaData()

#: Seconds a write to a SQLite store waits for another writer's lock before it
#: fails (503): far more than any real contention needs (a write takes a few
#: ms), short enough that a store locked by another process does not hold
#: every HTTP thread for half a minute.
BUSY_TIMEOUT = 5.0


class UTCDateTime(sa.types.TypeDecorator):
    """Timestamps stored in UTC and always returned timezone-aware.

    SQLite keeps no zone; PostgreSQL gets ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


sessions = sa.Table(
    "core_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    sa.Column("address", sa.String(64)),
)

operations = sa.Table(
    "core_operations",
    metadata,
    sa.Column("id", sa.String(8), primary_key=True),
    sa.Column("task", sa.String(100), nullable=False, index=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("dbname", sa.Text),
    sa.Column("schema", sa.Text),
    sa.Column("table", sa.Text),
    sa.Column("index", sa.Text),
    sa.Column("scheduled_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("status", sa.String(10), nullable=False, index=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("requested_by", sa.Text),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("notices", sa.JSON, nullable=False),
    sa.Column("info", sa.JSON, nullable=False),
    # the listings' order, so a page after a cursor is an index range, not a sort of every row
    sa.Index("core_operations_listing", "task", "scheduled_at", "created_at", "id"),
    # the retention of finished operations (count and age), enforced as each one ends
    sa.Index("core_operations_finished_at", "finished_at"),
)

#: The audit log (``GET /notifications``): logins, logouts, kills, operations
#: scheduled and canceled; the newest ``[agent] notifications_max`` are kept,
#: none older than ``[agent] notifications_max_age`` (enforced on each write).
notifications = sa.Table(
    "core_notifications",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("username", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


class StoreUnavailable(Unavailable):
    """The operations store cannot be read or written (unreachable, locked,
    read-only, disk full, I/O error): naming the store and the cause."""

    def __init__(self, cause: str):
        super().__init__(f"The operations store is unavailable: {cause}")


#: Errors of the store itself, as opposed to a wrong statement (an
#: IntegrityError, for one, is left to the caller).
#: (PostgreSQL's read-only transactions and aborted ones are InternalErrors.)
_FAULTS = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.InternalError, sa.exc.TimeoutError)


@contextmanager
def _faults(store: Store) -> Iterator[None]:
    """Turn a failure of the store into :class:`StoreUnavailable` (logged, counted in ``store.errors``)."""
    try:
        yield
    except sa.exc.SQLAlchemyError as e:
        if not isinstance(e, _FAULTS) and not getattr(e, "connection_invalidated", False):
            raise
        store.errors += 1  # a lost increment under a race is acceptable for a metric
        cause = first_line(e)
        log.warning("operations store: %s", cause)
        raise StoreUnavailable(cause) from e


def add_notification(store: Store, username: str, message: str, keep: int, max_age: float | None = None) -> None:
    """Record an audit log entry; in the same transaction, delete all but the
    newest ``keep`` and those older than ``max_age`` seconds."""
    add_notifications(store, username, [message], keep, max_age)


def add_notifications(
    store: Store, username: str, messages: list[str], keep: int, max_age: float | None = None
) -> None:
    """Several audit log entries in one transaction (a kill of many backends),
    with the retention of :func:`add_notification`."""
    if not messages:
        return
    stamp = now()
    with store.begin() as conn:
        conn.execute(notifications.insert(), [{"at": stamp, "username": username, "message": m} for m in messages])
        oldest_dropped = conn.execute(
            sa.select(notifications.c.id).order_by(notifications.c.id.desc()).offset(keep).limit(1)
        ).scalar()
        if oldest_dropped is not None:
            conn.execute(notifications.delete().where(notifications.c.id <= oldest_dropped))
        if max_age is not None:
            conn.execute(notifications.delete().where(notifications.c.at < stamp - timedelta(seconds=max_age)))


def list_notifications(
    store: Store, limit: int | None = None, before: int | None = None
) -> tuple[list[dict[str, str]], int | None]:
    """The audit log, newest first: ``{"date": "YYYY-MM-DDTHH:MM:SS" (UTC),
    "username", "message"}``, at most ``limit`` entries with an id below
    ``before``; and the id to pass as ``before`` for the next page (None when
    this is the last)."""
    query = sa.select(notifications.c.id, notifications.c.at, notifications.c.username, notifications.c.message)
    if before is not None:
        query = query.where(notifications.c.id < before)
    query = query.order_by(notifications.c.id.desc())
    if limit is not None:
        query = query.limit(limit + 1)
    with store.begin() as conn:
        rows = conn.execute(query).all()
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    entries = [
        {
            "date": row.at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
            "username": row.username,
            "message": row.message,
        }
        for row in rows
    ]
    return entries, (rows[-1].id if more else None)


#: More directories of schema revisions than the package's own (tests).
migration_locations: list[str] = []


class Store:
    """The engine, and the creation of every table (core's and plugins')."""

    def __init__(self, url: str):
        self.url = url
        #: Failures of the store raised as StoreUnavailable since it was opened (GET /metrics).
        self.errors = 0
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                # 0600 (directories 0700) whatever the umask; SQLite gives the
                # -wal and -shm files it creates the main file's mode
                create_private(path)
            self.engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT},
                pool_size=10,
                max_overflow=20,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
            if self.engine.dialect.name == "postgresql":
                event.listen(self.engine, "connect", _postgresql_lock_timeout)

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    def check(self) -> None:
        """Connect once (raises SQLAlchemyError or OSError when unusable)."""
        with self.engine.connect():
            pass

    def create(self, *extra: sa.MetaData) -> None:
        """Bring the core's tables to this release's schema (Alembic:
        :func:`agent_core.migrations.migrate`, which raises
        :class:`~agent_core.migrations.StoreSchemaError` for a store written by
        a newer release); then create the missing tables of ``extra`` (the
        plugins'), and the missing indexes of those that already exist
        (``create_all`` skips existing tables with their indexes)."""
        from agent_core.migrations import migrate  # Alembic is imported only when a store is opened for the agent

        migrate(self.engine, migration_locations)
        for md in extra:
            md.create_all(self.engine)
            for table in md.sorted_tables:
                for index in table.indexes:
                    index.create(self.engine, checkfirst=True)

    @contextmanager
    def begin(self) -> Iterator[Any]:
        """A transaction: ``with store.begin() as conn: conn.execute(...)``.

        A failure of the store (cannot connect, locked, read-only, disk full)
        raises :class:`StoreUnavailable`, answered 503; the transaction is
        rolled back.
        """
        with _faults(self), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A connection for reads, with failures raised as :class:`StoreUnavailable`."""
        with _faults(self), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _postgresql_lock_timeout(dbapi_conn, _record):  # type: ignore[no-untyped-def]
    """A PostgreSQL store waits at most BUSY_TIMEOUT for a lock, as SQLite does
    (a table locked by another session then answers 503 instead of hanging)."""
    cur = dbapi_conn.cursor()
    cur.execute(f"SET lock_timeout = {int(BUSY_TIMEOUT * 1000)}")
    cur.close()
    dbapi_conn.commit()


def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")
    cur.close()
