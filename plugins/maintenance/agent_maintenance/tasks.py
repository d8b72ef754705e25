"""VACUUM, ANALYZE and REINDEX as core scheduler operations: run, cancel, abort.

Each operation runs on a dedicated autocommit connection to its database,
with ``application_name`` naming it (``pgwarden maintenance <id>``) and the
configured ``lock_timeout``. Server notices and warnings are kept with the
operation; a VACUUM or ANALYZE that skipped a relation the role may not
process (``WARNING: skipping "t" --- only table or database owner can vacuum
it``) ends failed with that warning as its error, never done. Its backend
pid is stored in the operation's ``info`` so that listings show its progress
and a cancel signals exactly that backend.

Cancel: ``pg_cancel_backend`` of the operation's own backend, after checking
pid and ``application_name``, repeated while the statement runs until the
worker has ended (a signal that lands between two statements is ignored by
PostgreSQL, so one signal is not enough).

REINDEX ... CONCURRENTLY leaves an invalid ``<index>_ccnew`` (or ``_ccold``)
index behind when it fails or is canceled: the operation remembers which
indexes were invalid before it started and drops the new invalid ones, at
the end of a failed run or, after a crash, in ``abort`` at the next start.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg2
from psycopg2 import sql

from agent_core.hookspecs import TaskType
from agent_core.stash import StashKey

from . import flight
from .params import parse_mode
from .queries import CANCEL_BACKEND, INVALID_INDEXES, OPERATION_TARGET, SHARED_RELATIONS, fetch

if TYPE_CHECKING:
    from agent_core.interfaces import Agent
    from agent_core.operations.context import TaskContext
    from agent_core.operations.model import Operation

log = logging.getLogger("pgwarden.maintenance")

VERBS = ("vacuum", "analyze", "reindex")
#: Seconds a cancel keeps signalling the backend while the statement runs.
CANCEL_WAIT = 10.0
#: Seconds ``abort`` waits for a backend left running by a crashed agent.
ABORT_WAIT = 10.0
#: PostgreSQL's FirstNormalObjectId: objects below were made by initdb
#: (system catalogs cannot be reindexed concurrently).
FIRST_NORMAL_OID = 16384

#: The agent's slots bounding concurrent operations (``[maintenance] max_operations``).
_SLOTS: StashKey[threading.BoundedSemaphore] = StashKey("maintenance slots")


class _Relations:
    """Operations on the same table (an index counts as its table) or on a
    whole database do not run at the same time: a VACUUM and a REINDEX
    CONCURRENTLY of one table would otherwise deadlock each other."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held: list[tuple[str, int | None]] = []

    def _conflicts(self, key: tuple[str, int | None]) -> bool:
        db, rel = key
        return any(d == db and (rel is None or r is None or r == rel) for d, r in self._held)

    @contextlib.contextmanager
    def hold(self, key: tuple[str, int | None], ctx: TaskContext) -> Iterator[None]:
        with self._cond:
            while self._conflicts(key):
                if ctx.cancel_requested.is_set():
                    raise OperationError("canceled while waiting for another operation on the same relation")
                self._cond.wait(0.2)
            self._held.append(key)
        try:
            yield
        finally:
            with self._cond:
                self._held.remove(key)
                self._cond.notify_all()


#: The agent's relations being worked on.
_RELATIONS: StashKey[_Relations] = StashKey("maintenance relations")


class OperationError(Exception):
    """The operation cannot run or failed: the message is kept as its error."""


def application_name(op_id: str) -> str:
    return f"pgwarden maintenance {op_id}"


def task_types(agent: Agent) -> list[TaskType]:
    """The three task types; sets up the slots bounding concurrent operations."""
    agent.stash[_SLOTS] = threading.BoundedSemaphore(agent.config.section("maintenance")["max_operations"])
    agent.stash[_RELATIONS] = _Relations()
    descriptions = {
        "vacuum": "VACUUM a database or a table (modes: full, freeze, analyze)",
        "analyze": "ANALYZE a database or a table",
        "reindex": "REINDEX a database, a table or an index",
    }
    return [TaskType(f"maintenance.{verb}", run, cancel, abort, description=descriptions[verb]) for verb in VERBS]


# -- the statement -------------------------------------------------------------

_LEFTOVER_SUFFIX = ("_ccnew", "_ccold")


def _target(conn: Any, op: Operation) -> dict[str, Any] | None:
    """The table or index of the operation as it is now (None: database-wide)."""
    if op.index is not None:
        name, kinds, what = op.index, ["i", "I"], "index"
    elif op.table is not None:
        name, kinds, what = op.table, ["r", "p", "m"], "table"
    else:
        return None
    rows = fetch(conn, OPERATION_TARGET, {"schema": op.schema, "name": name, "kinds": kinds})
    if not rows:
        raise OperationError(f"{what} {op.schema}.{name} does not exist any more in database {op.dbname}")
    return rows[0]


def statement(op: Operation, target: dict[str, Any] | None, concurrently: bool) -> sql.Composable:
    verb = op.task.split(".", 1)[1]
    if verb == "vacuum":
        mode = parse_mode("vacuum", op.params.get("mode"))
        words = [sql.SQL(w.upper()) for w in mode.split(",")] if mode else []
        head: sql.Composable = sql.SQL("VACUUM")
        if words:
            head = sql.SQL("VACUUM ({})").format(sql.SQL(", ").join(words))
        if target is None:
            return head
        return sql.SQL("{} {}").format(head, sql.Identifier(op.schema, op.table))
    if verb == "analyze":
        if target is None:
            return sql.SQL("ANALYZE")
        return sql.SQL("ANALYZE {}").format(sql.Identifier(op.schema, op.table))
    word = sql.SQL(" CONCURRENTLY") if concurrently else sql.SQL("")
    if target is None:
        return sql.SQL("REINDEX DATABASE{} {}").format(word, sql.Identifier(op.dbname))
    if op.index is not None:
        return sql.SQL("REINDEX INDEX{} {}").format(word, sql.Identifier(op.schema, op.index))
    return sql.SQL("REINDEX TABLE{} {}").format(word, sql.Identifier(op.schema, op.table))


def _concurrently(agent: Agent, op: Operation, target: dict[str, Any] | None, server_version: int) -> bool:
    """REINDEX CONCURRENTLY where configured and possible (not on system catalogs
    nor on exclusion-constraint indexes, PostgreSQL 12 or later)."""
    if not op.task.endswith(".reindex") or not agent.config.section("maintenance")["reindex_concurrently"]:
        return False
    if server_version < 120000:
        return False
    if target is not None and (target["oid"] < FIRST_NORMAL_OID or target["exclusion"]):
        return False
    return True


def _set_lock_timeout(conn: Any, agent: Agent) -> None:
    """``lock_timeout`` of the session from ``[maintenance] lock_timeout`` (seconds, 0: none)."""
    milliseconds = int(agent.config.section("maintenance")["lock_timeout"] * 1000)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", (f"{milliseconds}ms",))


# -- run and cancel ------------------------------------------------------------


class _Signals:
    """Shared by ``run`` and ``cancel``: the backend to signal while the
    operation's statement may be running, and whether ``run`` has ended."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.ended = threading.Event()


def _signals(ctx: TaskContext) -> _Signals:
    return ctx.state.setdefault("signals", _Signals())  # type: ignore[no-any-return]


def _drain(conn: Any, ctx: TaskContext) -> list[str]:
    """Keep the connection's notices with the operation; return them."""
    drained = []
    while conn.notices:
        drained.append(conn.notices.popleft())
        ctx.notice(drained[-1])
    return drained


#: The warnings of a VACUUM or ANALYZE that skipped a relation the role may not
#: process (PostgreSQL 15 and before; 16 and later), naming the relation.
_SKIPPED = (
    re.compile(r'^WARNING:\s+(?P<text>skipping "(?P<name>.*)" --- .*?)\s*$', re.S),
    re.compile(r'^WARNING:\s+(?P<text>permission denied to \w+ "(?P<name>.*)", skipping it)\s*$', re.S),
)


def _skipped(conn: Any, notices: list[str], database_wide: bool) -> str | None:
    """The error of an operation whose statement skipped relations, or None.

    A VACUUM or ANALYZE of a relation the role may not process does not fail
    in PostgreSQL: it warns and skips it. Such an operation failed. A
    database-wide one may skip the shared catalogs (only a superuser may
    process them, from any database): those are kept as notices only.
    """
    found = []
    for notice in notices:
        for pattern in _SKIPPED:
            match = pattern.match(notice)
            if match:
                found.append((match["text"], match["name"]))
                break
    if found and database_wide:
        shared = {r["relname"] for r in fetch(conn, SHARED_RELATIONS)}
        found = [(text, name) for text, name in found if name not in shared]
    if not found:
        return None
    if len(found) == 1:
        return found[0][0]
    return f"{found[0][0]} (and {len(found) - 1} more relations skipped; see the notices)"


def _error(e: psycopg2.Error) -> str:
    diag = e.diag
    text = diag.message_primary or str(e).strip() or type(e).__name__
    if diag.message_detail:
        text += f" ({diag.message_detail})"
    return text


def run(ctx: TaskContext) -> dict[str, Any]:
    agent = ctx.agent
    assert agent is not None
    signals = _signals(ctx)
    slot = agent.stash[_SLOTS]
    try:
        while not slot.acquire(timeout=0.2):
            if ctx.cancel_requested.is_set():
                raise OperationError("canceled while waiting for a free maintenance slot")
        try:
            return _run(ctx, agent, signals)
        finally:
            slot.release()
            flight.of(agent).forget(str(ctx.operation.dbname))  # sizes may have changed
    finally:
        signals.ended.set()


def _run(ctx: TaskContext, agent: Agent, signals: _Signals) -> dict[str, Any]:
    op = ctx.operation
    name = application_name(op.id)
    conn = agent.postgres.dedicated(op.dbname, name)
    try:
        conn.notices = collections.deque(maxlen=agent.config.section("maintenance")["max_notices"])
        pid = conn.info.backend_pid
        info: dict[str, Any] = {"backend_pid": pid, "application_name": name}
        try:
            _set_lock_timeout(conn, agent)
            target = _target(conn, op)
            concurrently = _concurrently(agent, op, target, conn.server_version)
            if concurrently:
                scope = None if target is None else (target["indrelid"] or target["oid"])
                before = [r["oid"] for r in fetch(conn, INVALID_INDEXES, {"relid": scope})]
                info.update(concurrently=True, scope_relid=scope, invalid_before=before)
            ctx.update_info(**info)
        except psycopg2.Error as e:
            raise OperationError(_error(e)) from None
        query = statement(op, target, concurrently)
        relation = None if target is None else (target["indrelid"] or target["oid"])
        with agent.stash[_RELATIONS].hold((str(op.dbname), relation), ctx):
            with signals.lock:
                if ctx.cancel_requested.is_set():
                    raise OperationError("canceled before its statement started")
                signals.pid = pid
            failure = None
            try:
                with conn.cursor() as cur:
                    cur.execute(query)
            except psycopg2.Error as e:
                failure = e
            with signals.lock:
                signals.pid = None
        notices = _drain(conn, ctx)
        if failure is not None:
            if concurrently:
                _drop_leftovers(conn, info["scope_relid"], info["invalid_before"], ctx.notice)
                _drain(conn, ctx)
            raise OperationError(_error(failure))
        try:
            skipped = _skipped(conn, notices, database_wide=target is None)
        except psycopg2.Error as e:
            raise OperationError(f"could not check the warnings of the statement: {_error(e)}") from None
        if skipped is not None:
            raise OperationError(skipped)
        return {"statement": query.as_string(conn)}
    finally:
        agent.postgres.release(conn)


def _signal(agent: Agent, pid: int, name: str) -> list[dict[str, Any]]:
    """``pg_cancel_backend(pid)`` if that backend is still the operation's
    (same ``application_name``) and runs a statement; the rows signalled."""
    return agent.postgres.query(CANCEL_BACKEND, {"pid": pid, "name": name})


def cancel(ctx: TaskContext) -> None:
    """Signal the operation's backend until its statement stops (or ``run`` ends)."""
    agent = ctx.agent
    assert agent is not None
    signals = _signals(ctx)
    name = application_name(ctx.operation.id)
    deadline = time.monotonic() + CANCEL_WAIT
    while not signals.ended.is_set() and time.monotonic() < deadline:
        with signals.lock:
            if signals.pid is not None:
                _signal(agent, signals.pid, name)
        signals.ended.wait(0.1)


# -- leftovers of a failed REINDEX CONCURRENTLY -----------------------------------


def _drop_leftovers(conn: Any, scope: int | None, before: list[int], notice: Callable[[str], Any]) -> None:
    """Drop the invalid ``*_ccnew*``/``*_ccold*`` indexes that appeared in the
    scope since the operation started; report each through ``notice``."""
    try:
        rows = fetch(conn, INVALID_INDEXES, {"relid": scope})
    except psycopg2.Error as e:
        notice(f"pgwarden: could not look for invalid indexes left by REINDEX CONCURRENTLY: {_error(e)}")
        return
    for row in rows:
        base = row["relname"].rstrip("0123456789")
        if row["oid"] in before or not base.endswith(_LEFTOVER_SUFFIX):
            continue
        ident = sql.Identifier(row["nspname"], row["relname"])
        shown = ident.as_string(conn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(ident))
        except psycopg2.Error as e:
            notice(f"pgwarden: could not drop invalid index {shown}: {_error(e)}")
        else:
            notice(f"pgwarden: dropped invalid index {shown} left by the interrupted REINDEX CONCURRENTLY")


def abort(op: Operation, agent: Agent) -> list[str]:
    """At start-up, for an operation that was running when the agent stopped
    abruptly: cancel its backend if it still runs, then drop what an
    interrupted REINDEX CONCURRENTLY left. Returns what it did, kept as the
    operation's notices (and logged)."""
    done: list[str] = []

    def say(line: str, level: int = logging.WARNING) -> None:
        log.log(level, "operation %s: %s", op.id, line)
        done.append(line)

    info = op.info or {}
    name = application_name(op.id)
    pid = info.get("backend_pid")
    if pid:
        deadline = time.monotonic() + ABORT_WAIT
        while _signal(agent, pid, name):
            if not done:
                say(f"canceled its backend {pid}, still running after the agent stopped")
            if time.monotonic() > deadline:
                say(f"backend {pid} does not stop; leaving it", logging.ERROR)
                return done
            time.sleep(0.2)
    if info.get("concurrently"):
        conn = agent.postgres.dedicated(op.dbname, name)
        try:
            _set_lock_timeout(conn, agent)
            _drop_leftovers(conn, info.get("scope_relid"), list(info.get("invalid_before") or []), say)
        finally:
            agent.postgres.release(conn)
    return done
