"""The persistent scheduler: operations stored with SQLAlchemy, run by task types.

The operations, their statuses and transitions, and the bounds on how many
are kept are those of :mod:`agent_core.operations.queue` (SQL only), which the
:class:`Scheduler` composes.

A dispatcher thread sleeps on a condition until the next operation is due or
something wakes it (submit, cancel, an operation ending) and starts due ones
in worker threads, at most ``[agent] scheduler_workers`` at a time.

At start-up, operations found ``doing`` end ``aborted`` (their task's
``abort`` hook runs first), and ``todo`` ones that fell due more than
``scheduler_grace`` seconds ago end ``aborted`` with the reason; the others
run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from agent_core.errors import Conflict, NotFound, first_line
from agent_core.operations.context import TaskContext
from agent_core.operations.model import Listed, Operation
from agent_core.operations.queue import OperationQueue, TooManyPending
from agent_core.store import Store, StoreUnavailable

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.interfaces import Agent
    from agent_core.registrations import TaskType

log = logging.getLogger("pgwarden.scheduler")

__all__ = ["Scheduler", "TooManyPending"]


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
        #: The operations in the store (SQL only).
        self.queue = OperationQueue(
            store, retention=retention, retention_count=retention_count, pending_max=pending_max
        )
        self.agent = agent
        self.workers = workers
        self.grace = grace
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

    # the queue's bounds and clock, set on the queue

    @property
    def clock(self) -> Callable[[], datetime]:
        """The time operations fall due by (aware UTC; :func:`agent_core.store.now`).
        A seam for tests, which move it forward (then :meth:`wake`) instead of
        sleeping until an operation is due or a finished one is old enough to purge."""
        return self.queue.clock

    @clock.setter
    def clock(self, value: Callable[[], datetime]) -> None:
        self.queue.clock = value
        self.wake()

    @property
    def retention(self) -> float:
        return self.queue.retention

    @retention.setter
    def retention(self, value: float) -> None:
        self.queue.retention = value

    @property
    def retention_count(self) -> int:
        return self.queue.retention_count

    @retention_count.setter
    def retention_count(self, value: int) -> None:
        self.queue.retention_count = value

    @property
    def pending_max(self) -> int:
        return self.queue.pending_max

    @pending_max.setter
    def pending_max(self, value: int) -> None:
        self.queue.pending_max = value

    # -- registration and lifecycle -----------------------------------

    @property
    def running(self) -> int:
        """How many operations run now in this agent."""
        return len(self._running)

    def _schedule_next(self, task: TaskType) -> str:
        """The next run of a recurring task, ``interval`` seconds from now, requested by the agent."""
        return self.submit(
            task.name, run_at=self.clock() + timedelta(seconds=task.interval or 0), requested_by="agent", capped=False
        )

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
                self._schedule_next(task)
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
        deadline = time.monotonic() + self.stop_timeout
        for _op_id, thread in list(self._threads.items()):
            thread.join(max(0.0, deadline - time.monotonic()))
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
        created = self.clock()
        when = run_at if run_at is not None and run_at > created else created
        op_id = self.queue.insert(
            task,
            params,
            scheduled_at=when,
            created_at=created,
            dbname=dbname,
            schema=schema,
            table=table,
            index=index,
            requested_by=requested_by,
            capped=capped,
        )
        log.info("operation %s %s submitted for %s by %s", op_id, task, when.isoformat(), requested_by)
        self.wake()
        return op_id

    def get(self, op_id: str) -> Operation | None:
        return self.queue.get(op_id)

    def page(self, limit: int, cursor: str | None = None, **filters: Any) -> tuple[list[Operation], str | None]:
        """:meth:`OperationQueue.page`: a keyset page of operations and the next cursor."""
        return self.queue.page(limit, cursor, **filters)

    def listing(self, limit: int, cursor: str | None = None, **filters: Any) -> tuple[list[Listed], str | None]:
        """:meth:`OperationQueue.listing`: :meth:`page`, read for a listing."""
        return self.queue.listing(limit, cursor, **filters)

    def list(self, **filters: Any) -> list[Operation]:
        """:meth:`OperationQueue.list`: operations matching every filter given, by scheduled time."""
        return self.queue.list(**filters)

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
            self.wake()
            return self.get(op_id)  # type: ignore[return-value]
        op = self.get(op_id)
        assert op is not None
        if op.status != "doing":
            raise Conflict(f"Operation {op_id!r} is already {op.status}.")
        task_type = self.tasks.get(op.task)
        if task_type is None or task_type.cancel is None:
            raise Conflict(f"Operation {op_id!r} is running and cannot be canceled.")
        self.queue.request_cancel(op_id)
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

    def wake(self) -> None:
        """Make the dispatcher look at the clock and the store again now (a submit, a cancel, an
        operation ending; a test that moved the clock)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _transition(self, op_id: str, old: str, new: str, **values: Any) -> bool:
        return self.queue.transition(op_id, old, new, **values)

    # TaskContext's Recorder
    def _save(self, op_id: str, **values: Any) -> None:
        self.queue.save(op_id, **values)

    def _update_info(self, op_id: str, values: dict[str, Any]) -> None:
        self.queue.update_info(op_id, values)

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
        limit = self.clock() - timedelta(seconds=self.grace)
        for op in self.list(status="todo"):
            if op.scheduled_at < limit:
                late = int((self.clock() - op.scheduled_at).total_seconds())
                self._transition(
                    op.id,
                    "todo",
                    "aborted",
                    error=f"missed: due {late} s ago while the agent was down (grace {int(self.grace)} s)",
                )
                log.warning("operation %s (%s) missed its time while the agent was down: aborted", op.id, op.task)

    def _purge(self) -> None:
        self.queue.purge()

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
        stamp = self.clock()
        if stamp.timestamp() >= self._next_purge:
            self._purge()
            self._next_purge = stamp.timestamp() + 60
        free = self.workers - len(self._threads)
        if not self.tasks:
            return 60.0
        if free > 0:
            due = self.queue.due(self.tasks, stamp, free)
            for op in due:
                if self._transition(op.id, "todo", "doing"):
                    self._start(op)
            if len(due) == free:
                return 0.0
        else:
            return 60.0  # woken when a worker ends
        nxt = self.queue.next_due(self.tasks, stamp)
        if nxt is None:
            return 60.0
        return max(0.0, min(60.0, (nxt - self.clock()).total_seconds() + 0.001))

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
                lambda: self._schedule_next(task),
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
