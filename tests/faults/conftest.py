"""Fixtures of the fault suites: a small plugin whose tasks and routes show
what the scheduler and the HTTP layer do, store faults made for real (a tiny
filesystem, a lock held by another process, a stopped cluster) and a failing
write injected at the driver when nothing else can produce it at a chosen
moment.

The fault suites run against real PostgreSQL clusters and the real HTTP
server like every other test. A cluster that a test stops is its own
throwaway :class:`~agent_core.cluster.Cluster`, never the session's
``pg_cluster`` that other tests use.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from agent_core.hookspecs import Route, TaskType, hookimpl
from agent_core.testing import Cluster, throwaway_cluster


def make_plugin() -> types.SimpleNamespace:
    """A fresh plugin ``faulty``: tasks that count their runs and keep notices;
    routes that answer, raise, or read the store."""
    state = types.SimpleNamespace(runs={}, release=threading.Event(), started=threading.Event(), lock=threading.Lock())

    def count(ctx: Any) -> None:
        with state.lock:
            state.runs[ctx.operation.id] = state.runs.get(ctx.operation.id, 0) + 1

    def run_quick(ctx: Any) -> dict[str, Any]:
        count(ctx)
        return {"params": ctx.params}

    def run_chatty(ctx: Any) -> str:
        """Keeps a notice, waits for ``release``, keeps another."""
        count(ctx)
        ctx.notice("first notice")
        state.started.set()
        if not state.release.wait(30):
            raise RuntimeError("never released")
        ctx.notice("second notice")
        return "released"

    def ok(request: Any) -> dict[str, Any]:
        """GET /faulty/ok: 200."""
        return {"ok": True}

    def boom(request: Any) -> Any:
        """GET /faulty/boom: always raises (500)."""
        raise KeyError("a plugin bug with a secret detail")

    def submit(request: Any) -> dict[str, str]:
        """POST /faulty/ops {"task": "quick"|"chatty", "in": seconds}: 200 {"id"}; 503 store down."""
        body = request.json()
        when = datetime.now(timezone.utc) + timedelta(seconds=float(body.get("in", 0)))
        task = f"faulty.{body.get('task', 'quick')}"
        return {"id": request.agent.scheduler.submit(task, {"n": body.get("n")}, run_at=when)}

    def listing(request: Any) -> list[dict[str, Any]]:
        """GET /faulty/ops: every operation; 503 store down."""
        return [op.to_dict() for op in request.agent.scheduler.list()]

    def cancel(request: Any, op_id: str) -> dict[str, Any]:
        """DELETE /faulty/ops/<id>: 200; 404; 409; 503 store down."""
        return request.agent.scheduler.cancel(op_id).to_dict()

    plugin = types.SimpleNamespace(state=state)

    @hookimpl
    def agent_register_routes(agent: Any) -> list[Route]:
        return [
            Route("GET", "/faulty/ok", ok, key=True),
            Route("GET", "/faulty/boom", boom, key=True),
            Route("POST", "/faulty/ops", submit, key=True),
            Route("GET", "/faulty/ops", listing, key=True),
            Route("DELETE", "/faulty/ops/<op_id>", cancel, key=True),
        ]

    @hookimpl
    def agent_register_tasks(agent: Any) -> list[TaskType]:
        return [TaskType("faulty.quick", run_quick), TaskType("faulty.chatty", run_chatty)]

    @hookimpl
    def agent_shutdown(agent: Any) -> None:
        state.release.set()

    plugin.agent_register_routes = agent_register_routes
    plugin.agent_register_tasks = agent_register_tasks
    plugin.agent_shutdown = agent_shutdown
    return plugin


@pytest.fixture
def faulty() -> types.SimpleNamespace:
    return make_plugin()


class FailingStatements:
    """Statements of an operations store that fail as a broken disk or a lost
    server would: the driver's own ``OperationalError`` raised when the
    statement is sent (SQLAlchemy wraps it as it wraps a real one).

    ``fail(pattern, times=None, thread=None)``: statements matching the
    regular expression ``pattern`` (``"^UPDATE core_operations"``) fail,
    ``times`` times or until :meth:`clear`, only in threads whose name starts
    with ``thread`` if given.
    """

    def __init__(self, engine: Any):
        self.engine = engine
        self.rules: list[dict[str, Any]] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._check)

    def fail(self, pattern: str, times: int | None = None, thread: str | None = None) -> None:
        with self._lock:
            self.rules.append({"pattern": re.compile(pattern), "times": times, "thread": thread})

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def remove(self) -> None:
        self.clear()
        event.remove(self.engine, "before_cursor_execute", self._check)

    def _check(self, conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        name = threading.current_thread().name
        with self._lock:
            for rule in self.rules:
                if not rule["pattern"].search(statement.strip()):
                    continue
                if rule["thread"] is not None and not name.startswith(rule["thread"]):
                    continue
                if rule["times"] is not None:
                    if rule["times"] <= 0:
                        continue
                    rule["times"] -= 1
                self.failed.append(statement.split("\n", 1)[0])
                raise conn.dialect.loaded_dbapi.OperationalError("injected: disk I/O error")


@pytest.fixture
def failing() -> Iterator[Callable[[Any], FailingStatements]]:
    made: list[FailingStatements] = []

    def make(engine: Any) -> FailingStatements:
        made.append(FailingStatements(engine))
        return made[-1]

    yield make
    for f in made:
        f.remove()


class TinyFs:
    """A small tmpfs mounted for one test: ``fill()`` it to the last byte,
    ``free()`` it, remount it ``read_only()`` or ``writable()``."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Write until the filesystem refuses (ENOSPC)."""
        chunk = b"\0" * 4096
        with open(self.filler, "ab", buffering=0) as f:
            with contextlib.suppress(OSError):
                while True:
                    f.write(chunk)
        # the last partial page too
        with open(self.path / "filler2", "ab", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0")

    def free(self) -> None:
        for name in ("filler", "filler2"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / name)

    def remount(self, mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], capture_output=True, text=True)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[TinyFs]:
    """A 4 MiB tmpfs (needs root, or CAP_SYS_ADMIN, to mount: skipped otherwise)."""
    path = tmp_path / "tiny"
    path.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield TinyFs(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster of this test alone (it may be stopped)."""
    yield from throwaway_cluster()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_kind(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def pg_store(pg_cluster: Cluster) -> Iterator[str]:
    """A SQLAlchemy URL of a fresh database on ``pg_cluster`` for an operations store."""
    name = f"store_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
