"""The persistent scheduler: operations stored with SQLAlchemy, run by task types.

An operation is a row of ``core_operations``: a task name registered by a
plugin (``maintenance.vacuum``), JSON parameters, a target (database, schema,
table, index), a scheduled time and a status:

``todo`` -> ``doing`` -> ``done`` | ``failed`` | ``canceled`` | ``aborted``
``todo`` -> ``canceled`` | ``aborted``

Every transition is one ``UPDATE ... WHERE status = <expected>``: a cancel and
a start racing each other have exactly one winner.

A dispatcher thread sleeps on a condition until the next operation is due or
something wakes it (submit, cancel, an operation ending) and starts due ones
in worker threads, at most ``[agent] scheduler_workers`` at a time.

At start-up, operations found ``doing`` end ``aborted`` (their task's
``abort`` hook runs first), and ``todo`` ones that fell due more than
``scheduler_grace`` seconds ago end ``aborted`` with the reason; the others
run.

Bounds (enforced as rows are written, not by a job that could fall behind):
at most ``scheduler_pending_max`` operations wait to run (``todo``); one more
is refused with 429 and nothing is written. When an operation finishes, the
same transaction deletes the finished ones beyond the newest
``scheduler_retention_count`` and those that ended more than
``scheduler_retention`` seconds ago (also checked once a minute).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agent_core.errors import Conflict, NotFound, TooMany, first_line
from agent_core.operations.context import TaskContext
from agent_core.operations.model import FILTERS, FINISHED, Listed, Operation, decode_cursor, encode_cursor, raw_columns
from agent_core.store import Store, StoreUnavailable, UTCDateTime, now, operations

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.interfaces import Agent
    from agent_core.registrations import TaskType

log = logging.getLogger("pgwarden.scheduler")


class TooManyPending(TooMany):
    """``scheduler_pending_max`` operations already wait to run (retry after 60 s)."""

    def __init__(self, maximum: int):
        super().__init__(
            f"Too many operations waiting to run: {maximum} ([agent] scheduler_pending_max);"
            " cancel some or wait for them to run.",
            retry_after=60,
        )


class Scheduler:
    """Submit, list, get and cancel operations; run them when due."""

    def __init__(
        self,
        store: Store,
        agent: Agent | None = None,
        *,
        workers: int = 2,
        grace: float = 300,
        retention: float = 7 * 86400,
        retention_count: int = 1000,
        pending_max: int = 1000,
        stop_timeout: float = 5.0,
    ):
        self.store = store
        self.agent = agent
        self.workers = workers
        self.grace = grace
        self.retention = retention
        self.retention_count = retention_count
        self.pending_max = pending_max
        # the count of pending operations and the insert of one more, one submit at a time
        self._submit_lock = threading.Lock()
        self.stop_timeout = stop_timeout
        self.tasks: dict[str, TaskType] = {}
        self._cond = threading.Condition()
        self._running: dict[str, TaskContext] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._dispatcher: threading.Thread | None = None
        self._stopping = False
        self._woken = False
        self._next_purge = 0.0
        #: Called with (task, status) when an operation ends in this process (GET /metrics).
        self.observe_end: Callable[[str, str], None] = lambda task, status: None

    # -- registration and lifecycle -----------------------------------

    @property
    def running(self) -> int:
        """How many operations run now in this agent."""
        return len(self._running)

    def register(self, task: TaskType) -> None:
        if task.name in self.tasks:
            raise ValueError(f"task {task.name!r} registered twice")
        self.tasks[task.name] = task

    def start(self) -> None:
        """Recover what the last run left, then start the dispatcher."""
        self._recover()
        self._purge()
        for task in self.tasks.values():
            if task.interval and not self.list(task=task.name, status=("todo", "doing")):
                self.submit(
                    task.name, run_at=now() + timedelta(seconds=task.interval), requested_by="agent", capped=False
                )
        self._stopping = False
        self._dispatcher = threading.Thread(target=self._dispatch, name="pgwarden-scheduler", daemon=True)
        self._dispatcher.start()

    def stop(self) -> None:
        """Stop starting operations; let running ones finish for ``stop_timeout``
        seconds, then cancel them (they end ``aborted``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._dispatcher:
            self._dispatcher.join()
        deadline = now() + timedelta(seconds=self.stop_timeout)
        for _op_id, thread in list(self._threads.items()):
            thread.join(max(0.0, (deadline - now()).total_seconds()))
        for _op_id, ctx in list(self._running.items()):
            ctx.stop_reason = "canceled because the agent stopped"
            self._call_cancel(ctx)
        for thread in list(self._threads.values()):
            thread.join(30)

    # -- public API ----------------------------------------------------

    def submit(
        self,
        task: str,
        params: dict[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        dbname: str | None = None,
        schema: str | None = None,
        table: str | None = None,
        index: str | None = None,
        requested_by: str | None = None,
        capped: bool = True,
    ) -> str:
        """Store a new ``todo`` operation and return its id (8 lowercase hex).

        ``run_at`` (timezone-aware) defaults to now; a past time means now.
        Raises :class:`TooManyPending` (429) when ``pending_max`` operations
        already wait, writing nothing (``capped=False``: the agent's own
        recurring operations, one per task type, are not refused).
        """
        if task not in self.tasks:
            raise ValueError(f"unknown task {task!r}")
        created = now()
        when = run_at if run_at is not None and run_at > created else created
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
                            scheduled_at=when,
                            status="todo",
                            created_at=created,
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
        log.info("operation %s %s submitted for %s by %s", op_id, task, when.isoformat(), requested_by)
        self._wake()
        return op_id

    def get(self, op_id: str) -> Operation | None:
        with self.store.connect() as conn:
            row = conn.execute(operations.select().where(operations.c.id == op_id)).first()
        return Operation.from_row(row) if row else None

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

    def cancel(self, op_id: str, task: str | None = None, wait: float = 10.0) -> Operation:
        """Cancel an operation and return it as it is afterwards.

        ``todo``: it becomes ``canceled`` at once. ``doing``: the task's
        ``cancel`` is called and this waits up to ``wait`` seconds for it to
        end (``canceled``). Raises :class:`NotFound` for an unknown id (or one
        of another ``task``) and :class:`Conflict` for a finished operation or
        a running one whose task cannot be canceled.
        """
        op = self.get(op_id)
        if op is None or (task is not None and op.task != task):
            raise NotFound(f"Operation {op_id!r} not found.")
        if self._transition(op_id, "todo", "canceled", error="canceled before it started"):
            self._wake()
            return self.get(op_id)  # type: ignore[return-value]
        op = self.get(op_id)
        assert op is not None
        if op.status != "doing":
            raise Conflict(f"Operation {op_id!r} is already {op.status}.")
        task_type = self.tasks.get(op.task)
        if task_type is None or task_type.cancel is None:
            raise Conflict(f"Operation {op_id!r} is running and cannot be canceled.")
        with self.store.begin() as conn:
            conn.execute(operations.update().where(operations.c.id == op_id).values(cancel_requested=True))
        ctx = self._running.get(op_id)
        if ctx is not None:
            self._call_cancel(ctx)
            thread = self._threads.get(op_id)
            if thread is not None:
                thread.join(wait)
        op = self.get(op_id)
        assert op is not None
        if op.status in ("done", "failed"):
            raise Conflict(f"Operation {op_id!r} ended ({op.status}) before it could be canceled.")
        return op

    # -- internals -----------------------------------------------------

    def _wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _transition(self, op_id: str, old: str, new: str, **values: Any) -> bool:
        stamp = now()
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
                self._prune(conn, stamp)
        return res.rowcount == 1

    def _save(self, op_id: str, **values: Any) -> None:
        with self.store.begin() as conn:
            conn.execute(operations.update().where(operations.c.id == op_id).values(**values))

    def _update_info(self, op_id: str, values: dict[str, Any]) -> None:
        with self.store.begin() as conn:
            row = conn.execute(sa.select(operations.c.info).where(operations.c.id == op_id)).first()
            info = dict(row[0] or {}) if row else {}
            info.update(values)
            conn.execute(operations.update().where(operations.c.id == op_id).values(info=info))

    def _recover(self) -> None:
        for op in self.list(status="doing"):
            task = self.tasks.get(op.task)
            notices = list(op.notices)
            if task is not None and task.abort is not None:
                try:
                    notices += [str(n) for n in task.abort(op, self.agent) or []]  # type: ignore[arg-type]
                except BaseException as e:  # a plugin's SystemExit must not stop the agent either
                    log.exception("abort hook of %s failed for operation %s", op.task, op.id)
                    notices.append(f"clean-up after the restart failed: {e}")
            self._transition(
                op.id, "doing", "aborted", error="the agent stopped while the operation was running", notices=notices
            )
            log.warning("operation %s (%s) was running when the agent stopped: aborted", op.id, op.task)
        limit = now() - timedelta(seconds=self.grace)
        for op in self.list(status="todo"):
            if op.scheduled_at < limit:
                late = int((now() - op.scheduled_at).total_seconds())
                self._transition(
                    op.id,
                    "todo",
                    "aborted",
                    error=f"missed: due {late} s ago while the agent was down (grace {int(self.grace)} s)",
                )
                log.warning("operation %s (%s) missed its time while the agent was down: aborted", op.id, op.task)

    def _prune(self, conn: Any, stamp: datetime) -> int:
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

    def _purge(self) -> None:
        with self.store.begin() as conn:
            deleted = self._prune(conn, now())
        if deleted:
            log.info("purged %d finished operations", deleted)

    def _dispatch(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                self._woken = False
            try:
                timeout = self._dispatch_once()
            except Exception:
                log.exception("scheduler dispatch failed; retrying")
                timeout = 1.0
            with self._cond:
                # a wake-up that came while we were dispatching is not lost
                if self._stopping:
                    return
                if not self._woken:
                    self._cond.wait(timeout)

    def _dispatch_once(self) -> float:
        """Start what is due; return seconds until something may be due."""
        stamp = now()
        if stamp.timestamp() >= self._next_purge:
            self._purge()
            self._next_purge = stamp.timestamp() + 60
        free = self.workers - len(self._threads)
        if not self.tasks:
            return 60.0
        base = operations.select().where(operations.c.status == "todo", operations.c.task.in_(list(self.tasks)))
        if free > 0:
            with self.store.connect() as conn:
                due = [
                    Operation.from_row(r)
                    for r in conn.execute(
                        base.where(operations.c.scheduled_at <= stamp)
                        .order_by(operations.c.scheduled_at, operations.c.created_at)
                        .limit(free)
                    )
                ]
            for op in due:
                if self._transition(op.id, "todo", "doing"):
                    self._start(op)
            if len(due) == free:
                return 0.0
        else:
            return 60.0  # woken when a worker ends
        with self.store.connect() as conn:
            nxt = conn.execute(
                sa.select(sa.func.min(operations.c.scheduled_at)).where(
                    operations.c.status == "todo", operations.c.task.in_(list(self.tasks))
                )
            ).scalar()
        if nxt is None:
            return 60.0
        if nxt.tzinfo is None:  # aggregate results bypass the column type on SQLite
            nxt = datetime.fromisoformat(str(nxt)).replace(tzinfo=stamp.tzinfo)
        return max(0.0, min(60.0, (nxt - now()).total_seconds() + 0.001))

    def _start(self, op: Operation) -> None:
        try:
            current = self.get(op.id)
        except Exception as e:  # it is ``doing`` now: it must get its thread
            log.warning("could not read operation %s before starting it: %s", op.id, e)
            current = None
        ctx = TaskContext(operation=current or op, agent=self.agent, scheduler=self)
        thread = threading.Thread(target=self._run, args=(ctx,), name=f"pgwarden-op-{op.id}", daemon=True)
        self._running[op.id] = ctx
        self._threads[op.id] = thread
        thread.start()

    def _call_cancel(self, ctx: TaskContext) -> None:
        ctx.cancel_requested.set()
        task = self.tasks.get(ctx.operation.task)
        if task is not None and task.cancel is not None:
            try:
                task.cancel(ctx)
            except BaseException:  # a plugin's SystemExit included
                log.exception("cancel of operation %s failed", ctx.operation.id)

    def _run(self, ctx: TaskContext) -> None:
        op = ctx.operation
        task = self.tasks[op.task]
        log.info("operation %s (%s) started", op.id, op.task)
        values: dict[str, Any]
        try:
            result = task.run(ctx)
            values = {"status": "done", "result": result}
        except BaseException as e:  # SystemExit too: the thread would end with the operation 'doing'
            if ctx.stop_reason:
                values = {"status": "aborted", "error": f"{ctx.stop_reason}: {e}"}
            elif ctx.cancel_requested.is_set():
                values = {"status": "canceled", "error": f"canceled while running: {e}"}
            else:
                log.warning("operation %s (%s) failed: %s", op.id, op.task, e)
                text = str(e).strip()
                values = {"status": "failed", "error": text if isinstance(e, Exception) and text else repr(e)}
        status = values.pop("status")

        def record() -> None:
            try:
                self._transition(op.id, "doing", status, notices=list(ctx.notices), **values)
            except StoreUnavailable:
                raise
            except Exception as e:  # a result the store cannot hold (not JSON): the operation failed
                log.exception("operation %s (%s): could not store how it ended", op.id, op.task)
                error = f"it ended {status} but the agent could not store its result: {first_line(e)}"
                self._transition(op.id, "doing", "failed", notices=list(ctx.notices), error=error)

        if self._retry(f"record the end ({status}) of operation {op.id}", record):
            log.info("operation %s (%s) ended %s", op.id, op.task, status)
        self.observe_end(op.task, status)
        with self._cond:
            self._running.pop(op.id, None)
            self._threads.pop(op.id, None)
            self._woken = True
            self._cond.notify_all()
        if task.interval and not self._stopping:
            self._retry(
                f"schedule the next {task.name}",
                lambda: self.submit(
                    task.name, run_at=now() + timedelta(seconds=task.interval), requested_by="agent", capped=False
                ),
            )

    def _retry(self, what: str, write: Any) -> bool:
        """Call ``write`` again while the store is unavailable (it may fail
        for a while: an operation must not stay ``doing`` after it ended, a
        recurring one must stay scheduled). False when the agent stops first
        (the next start sees ``doing`` operations as ``aborted``) or on any
        other error (logged)."""
        delay = 0.5
        while True:
            try:
                write()
                return True
            except StoreUnavailable as e:
                log.warning("could not %s: %s; retrying in %.1f s", what, e, delay)
            except Exception:
                log.exception("could not %s", what)
                return False
            with self._cond:
                if self._stopping:
                    log.error("could not %s: the agent is stopping", what)
                    return False
                self._cond.wait(delay)
            delay = min(delay * 2, 10.0)
