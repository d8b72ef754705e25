"""The stored queue of operations: rows of ``core_operations``, written and read with SQLAlchemy.

An operation is a row of ``core_operations``: a task name registered by a
plugin (``maintenance.vacuum``), JSON parameters, a target (database, schema,
table, index), a scheduled time and a status:

``todo`` -> ``doing`` -> ``done`` | ``failed`` | ``canceled`` | ``aborted``
``todo`` -> ``canceled`` | ``aborted``

Every transition is one ``UPDATE ... WHERE status = <expected>``: a cancel and
a start racing each other have exactly one winner.

Bounds (enforced as rows are written, not by a job that could fall behind):
at most ``scheduler_pending_max`` operations wait to run (``todo``); one more
is refused with 429 and nothing is written. When an operation finishes, the
same transaction deletes the finished ones beyond the newest
``scheduler_retention_count`` and those that ended more than
``scheduler_retention`` seconds ago (also checked once a minute).

SQL only: what runs the operations is :mod:`agent_core.operations.scheduler`.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agent_core.errors import TooMany
from agent_core.operations.model import FILTERS, FINISHED, Listed, Operation, decode_cursor, encode_cursor, raw_columns
from agent_core.store import Store, UTCDateTime, now, operations

log = logging.getLogger("pgwarden.scheduler")


class TooManyPending(TooMany):
    """``scheduler_pending_max`` operations already wait to run (retry after 60 s)."""

    def __init__(self, maximum: int):
        super().__init__(
            f"Too many operations waiting to run: {maximum} ([agent] scheduler_pending_max);"
            " cancel some or wait for them to run.",
            retry_after=60,
        )


class OperationQueue:
    """The operations in the store: insert, read, transition, prune."""

    def __init__(
        self,
        store: Store,
        *,
        retention: float = 7 * 86400,
        retention_count: int = 1000,
        pending_max: int = 1000,
    ):
        self.store = store
        self.retention = retention
        self.retention_count = retention_count
        self.pending_max = pending_max
        #: The time of transitions and pruning (aware UTC); the scheduler's clock (:attr:`Scheduler.clock`).
        self.clock: Callable[[], datetime] = now
        # the count of pending operations and the insert of one more, one submit at a time
        self._submit_lock = threading.Lock()

    def insert(
        self,
        task: str,
        params: dict[str, Any] | None,
        *,
        scheduled_at: datetime,
        created_at: datetime,
        dbname: str | None = None,
        schema: str | None = None,
        table: str | None = None,
        index: str | None = None,
        requested_by: str | None = None,
        capped: bool = True,
    ) -> str:
        """Store a new ``todo`` operation and return its id (8 lowercase hex).

        Raises :class:`TooManyPending` (429) when ``pending_max`` operations
        already wait, writing nothing (``capped=False``: not refused).
        """
        for _ in range(20):
            op_id = secrets.token_hex(4)
            try:
                with self._submit_lock, self.store.begin() as conn:
                    if capped:
                        pending = conn.execute(
                            sa.select(sa.func.count()).select_from(operations).where(operations.c.status == "todo")
                        ).scalar()
                        if pending >= self.pending_max:
                            raise TooManyPending(self.pending_max)
                    conn.execute(
                        operations.insert().values(
                            id=op_id,
                            task=task,
                            params=params or {},
                            dbname=dbname,
                            schema=schema,
                            table=table,
                            index=index,
                            scheduled_at=scheduled_at,
                            status="todo",
                            created_at=created_at,
                            requested_by=requested_by,
                            cancel_requested=False,
                            notices=[],
                            info={},
                        )
                    )
                break
            except sa.exc.IntegrityError:
                continue
        else:  # pragma: no cover - 20 collisions in 2^32
            raise RuntimeError("could not allocate an operation id")
        return op_id

    # -- reads ---------------------------------------------------------

    def get(self, op_id: str) -> Operation | None:
        with self.store.connect() as conn:
            row = conn.execute(operations.select().where(operations.c.id == op_id)).first()
        return Operation.from_row(row) if row else None

    def due(self, tasks: Iterable[str], stamp: datetime, limit: int) -> list[Operation]:
        """At most ``limit`` ``todo`` operations of ``tasks`` due at ``stamp``, the oldest first."""
        base = operations.select().where(operations.c.status == "todo", operations.c.task.in_(list(tasks)))
        with self.store.connect() as conn:
            return [
                Operation.from_row(r)
                for r in conn.execute(
                    base.where(operations.c.scheduled_at <= stamp)
                    .order_by(operations.c.scheduled_at, operations.c.created_at)
                    .limit(limit)
                )
            ]

    def next_due(self, tasks: Iterable[str], stamp: datetime) -> datetime | None:
        """When the next ``todo`` operation of ``tasks`` is due (None: none waits)."""
        with self.store.connect() as conn:
            nxt = conn.execute(
                sa.select(sa.func.min(operations.c.scheduled_at)).where(
                    operations.c.status == "todo", operations.c.task.in_(list(tasks))
                )
            ).scalar()
        if nxt is None:
            return None
        if nxt.tzinfo is None:  # aggregate results bypass the column type on SQLite
            nxt = datetime.fromisoformat(str(nxt)).replace(tzinfo=stamp.tzinfo)
        return nxt

    def page(self, limit: int, cursor: str | None = None, **filters: Any) -> tuple[list[Operation], str | None]:
        """At most ``limit`` operations matching ``filters`` (as :meth:`list`),
        in the same order, after ``cursor``; and the cursor of the next page
        (None when this is the last). A keyset page: it reads ``limit + 1``
        rows along the ``core_operations_listing`` index, whatever the number
        of operations kept. ValueError for a cursor :func:`encode_cursor` did
        not give."""
        query = self._keyset(self._filtered(filters), limit, cursor)
        with self.store.connect() as conn:
            ops = [Operation.from_row(r) for r in conn.execute(query)]
        if len(ops) > limit:
            return ops[:limit], encode_cursor(ops[limit - 1])
        return ops, None

    def listing(self, limit: int, cursor: str | None = None, **filters: Any) -> tuple[list[Listed], str | None]:
        """:meth:`page`, read for a listing: :class:`Listed` rows, whose
        :meth:`Listed.to_json` writes an entry without decoding it first."""
        columns = raw_columns(self.store.engine.dialect.name)
        if columns is None:
            ops, next_cursor = self.page(limit, cursor, **filters)
            return [Listed.of(op) for op in ops], next_cursor
        query = self._keyset(self._filtered(filters, sa.select(*columns)), limit, cursor)
        with self.store.connect() as conn:
            rows = [Listed._make(r) for r in conn.execute(query)]
        if len(rows) > limit:
            return rows[:limit], encode_cursor(rows[limit - 1].operation())
        return rows, None

    @staticmethod
    def _keyset(query: Any, limit: int, cursor: str | None) -> Any:
        """``query`` in the listings' order, ``limit + 1`` rows after ``cursor``."""
        c = operations.c
        if cursor is not None:
            scheduled, created, op_id = decode_cursor(cursor)
            query = query.where(
                sa.tuple_(c.scheduled_at, c.created_at, c.id)
                > sa.tuple_(sa.literal(scheduled, UTCDateTime()), sa.literal(created, UTCDateTime()), sa.literal(op_id))
            )
        return query.order_by(c.scheduled_at, c.created_at, c.id).limit(limit + 1)

    def list(self, **filters: Any) -> list[Operation]:
        """Operations matching every filter given, by scheduled time.

        Filters: ``task``, ``dbname``, ``schema``, ``table``, ``index``,
        ``status``; a value of ``None`` matches NULL; a tuple or list matches
        any of its values. A filter not given does not filter.
        """
        query = self._filtered(filters).order_by(operations.c.scheduled_at, operations.c.created_at, operations.c.id)
        with self.store.connect() as conn:
            return [Operation.from_row(r) for r in conn.execute(query)]

    @staticmethod
    def _filtered(filters: dict[str, Any], query: Any = None) -> Any:
        query = operations.select() if query is None else query
        for name, value in filters.items():
            if name not in FILTERS:
                raise TypeError(f"unknown filter {name!r}")
            col = operations.c[name]
            if value is None:
                query = query.where(col.is_(None))
            elif isinstance(value, (list, tuple)):
                query = query.where(col.in_(list(value)))
            else:
                query = query.where(col == value)
        return query

    # -- writes --------------------------------------------------------

    def transition(self, op_id: str, old: str, new: str, **values: Any) -> bool:
        stamp = self.clock()
        if new == "doing":
            values["started_at"] = stamp
        elif new in FINISHED:
            values["finished_at"] = stamp
        with self.store.begin() as conn:
            res = conn.execute(
                operations.update()
                .where(operations.c.id == op_id, operations.c.status == old)
                .values(status=new, **values)
            )
            if new in FINISHED and res.rowcount == 1:
                self.prune(conn, stamp)
        return res.rowcount == 1

    def request_cancel(self, op_id: str) -> None:
        """Mark the operation ``cancel_requested`` (its status unchanged)."""
        with self.store.begin() as conn:
            conn.execute(operations.update().where(operations.c.id == op_id).values(cancel_requested=True))

    def save(self, op_id: str, **values: Any) -> None:
        with self.store.begin() as conn:
            conn.execute(operations.update().where(operations.c.id == op_id).values(**values))

    def update_info(self, op_id: str, values: dict[str, Any]) -> None:
        with self.store.begin() as conn:
            row = conn.execute(sa.select(operations.c.info).where(operations.c.id == op_id)).first()
            info = dict(row[0] or {}) if row else {}
            info.update(values)
            conn.execute(operations.update().where(operations.c.id == op_id).values(info=info))

    # -- retention -----------------------------------------------------

    def prune(self, conn: Any, stamp: datetime) -> int:
        """Delete the finished operations beyond the newest ``retention_count``
        and those that ended more than ``retention`` seconds before ``stamp``
        (in the caller's transaction); return how many."""
        finished = operations.c.status.in_(FINISHED)
        deleted = conn.execute(
            operations.delete().where(finished, operations.c.finished_at < stamp - timedelta(seconds=self.retention))
        ).rowcount
        oldest_kept = conn.execute(
            sa.select(operations.c.finished_at, operations.c.id)
            .where(operations.c.finished_at.is_not(None), finished)
            .order_by(operations.c.finished_at.desc(), operations.c.id.desc())
            .offset(self.retention_count - 1)
            .limit(1)
        ).first()
        if oldest_kept is not None:
            c = operations.c
            deleted += conn.execute(
                operations.delete().where(
                    finished,
                    c.finished_at.is_not(None),
                    sa.or_(
                        c.finished_at < oldest_kept.finished_at,
                        sa.and_(c.finished_at == oldest_kept.finished_at, c.id < oldest_kept.id),
                    ),
                )
            ).rowcount
        return int(deleted)

    def purge(self) -> None:
        with self.store.begin() as conn:
            deleted = self.prune(conn, self.clock())
        if deleted:
            log.info("purged %d finished operations", deleted)
