"""The operations store failing under a running agent, on SQLite and on PostgreSQL.

What a user must see: a clear 503 JSON error naming the operations store
(never a 500 and a traceback), no corruption, no operation lost that was
acknowledged with an id, nothing half-written, and everything working again
once the store is back, without restarting the agent.

How each fault is made:

* a failing write (both stores): the driver's own error injected when the
  statement is sent (:class:`conftest.FailingStatements`), the only way to
  hit one chosen statement at one chosen moment;
* a full disk (SQLite): the store's home on a 4 MiB tmpfs filled to the last
  byte; on a PostgreSQL store a full disk is the server's own business (an
  ERROR when a table grows, a PANIC when the WAL cannot be written) and it is
  not simulated here;
* a read-only store: SQLite's filesystem remounted read-only (the agent's
  pooled connections are closed first: Linux refuses to remount a filesystem
  holding files open for writing); a PostgreSQL store database switched to
  ``default_transaction_read_only`` and the agent's connections to it ended;
* a locked store: another process holding SQLite's write lock; another
  session holding ``ACCESS EXCLUSIVE`` on ``core_operations``;
* a stopped store (PostgreSQL): its own throwaway cluster stopped with pg_ctl.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sqlite3
import subprocess
import sys
import time
import types
from typing import Any

import pytest

import agent_core.store
from agent_core.hookspecs import TaskType, hookimpl
from agent_core.testing import KEY, PASSWORD, Client, wait_for

STORE_DOWN = "The operations store is unavailable"
LOGIN = {"username": "alice", "password": PASSWORD}


class Keyed:
    """A client of an agent authenticating with the agent key (header)."""

    def __init__(self, url: str):
        self.client = Client(url, timeout=30)
        self.headers = {"X-Pgwarden-Key": KEY}

    def get(self, path: str) -> Any:
        return self.client.get(path, headers=self.headers)

    def post(self, path: str, body: Any) -> Any:
        return self.client.post(path, body, headers=self.headers)

    def submit(self, seconds: float = 3600, task: str = "quick") -> str:
        res = self.post("/faulty/ops", {"in": seconds, "task": task})
        assert res.status == 200, res
        return str(res.json()["id"])

    def ops(self) -> dict[str, dict[str, Any]]:
        res = self.get("/faulty/ops")
        assert res.status == 200, res
        return {op["id"]: op for op in res.json()}

    def status(self, op_id: str) -> str:
        return str(self.ops()[op_id]["status"])


def assert_store_down(res: Any, *causes: str) -> str:
    assert res.status == 503, res
    assert res.headers["Content-Type"].startswith("application/json")
    body = res.json()
    assert set(body) == {"error"}, body
    assert body["error"].startswith(STORE_DOWN), body
    assert "Traceback" not in res.text
    assert not causes or any(c in body["error"] for c in causes), body
    return str(body["error"])


def start(make_agent: Any, faulty: Any, store: str | None = None, home: Any = None) -> Any:
    agent: dict[str, Any] = {"key_writes": True, "scheduler_grace": 3600, "log_level": "INFO"}
    if store:
        agent["store"] = store
    return make_agent(plugins={"faulty": faulty}, config={"agent": agent}, home=home)


def open_files_under(directory: Any) -> list[str]:
    """The files under ``directory`` this process holds open (what blocks a read-only remount)."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)):
                held.append(target)
    return held


def sqlite_ok(path: Any) -> None:
    """The SQLite file passes ``PRAGMA integrity_check``."""
    conn = sqlite3.connect(str(path))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


@pytest.fixture
def store_url(store_kind: str, request: Any) -> str | None:
    """None (SQLite in the agent's home) or a fresh PostgreSQL store."""
    return request.getfixturevalue("pg_store") if store_kind == "postgresql" else None


def test_failing_writes_answer_503_and_nothing_is_half_written(make_agent, faulty, store_url, failing):
    running = start(make_agent, faulty, store_url)
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}
    broken = failing(running.agent.store.engine)

    broken.fail(r"^INSERT INTO core_operations")
    assert_store_down(api.post("/faulty/ops", {"in": 3600}), "disk I/O error")
    assert set(api.ops()) == acked  # nothing half-written, nothing lost
    broken.fail(r"^INSERT INTO core_sessions")
    assert_store_down(running.client().post("/login", LOGIN), "disk I/O")
    broken.clear()

    assert session.get("/profile").status == 200
    acked.add(api.submit())
    assert set(api.ops()) == acked


def test_an_operation_whose_end_cannot_be_written_ends_when_the_store_is_back(make_agent, faulty, store_url, failing):
    running = start(make_agent, faulty, store_url)
    api = Keyed(running.url)
    broken = failing(running.agent.store.engine)
    op_id = api.submit(0, task="chatty")
    assert faulty.state.started.wait(10)
    time.sleep(1.1)  # so that the next notice is saved while it runs (at most once a second)
    broken.fail(r"^UPDATE core_operations", thread="pgwarden-op-")
    faulty.state.release.set()
    # the notice and then the end fail to be written: the operation is still doing
    wait_for(lambda: len(broken.failed) >= 2, timeout=10)
    assert api.status(op_id) == "doing"
    broken.clear()
    op = wait_for(lambda: (o := api.ops()[op_id])["status"] != "doing" and o, timeout=20)
    assert op["status"] == "done", op
    assert op["notices"] == ["first notice", "second notice"]
    assert faulty.state.runs == {op_id: 1}


def test_an_operation_started_while_the_store_fails_still_runs(make_agent, faulty, store_url, failing):
    running = start(make_agent, faulty, store_url)
    api = Keyed(running.url)
    broken = failing(running.agent.store.engine)
    # the dispatcher marks the operation doing, then cannot read it back
    broken.fail(r"(?s)^SELECT .*WHERE core_operations\.id = ", times=1, thread="pgwarden-scheduler")
    op_id = api.submit(0)
    op = wait_for(lambda: (o := api.ops()[op_id])["status"] == "done" and o, timeout=20)
    assert len(broken.failed) == 1 and broken.failed[0].startswith("SELECT"), broken.failed
    assert op["result"] == {"params": {"n": None}}
    assert faulty.state.runs == {op_id: 1}


def test_full_disk_sqlite(make_agent, faulty, tiny_fs):
    home = tiny_fs.path / "home"
    running = start(make_agent, faulty, home=home)
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}
    due = api.submit(1)  # falls due while the disk is full
    acked.add(due)

    tiny_fs.fill()
    # SQLite may still fit a write in its WAL file's free pages: each answer
    # is an id (kept) or a 503 naming the store, never a 500
    answers = [api.post("/faulty/ops", {"in": 3600}) for _ in range(10)]
    answers += [running.client().post("/login", LOGIN) for _ in range(10)]
    for res in answers:
        if res.status != 200:
            assert_store_down(res, "disk is full")
    assert any(res.status == 503 for res in answers)
    acked |= {res.json()["id"] for res in answers[:10] if res.status == 200}
    assert session.get("/profile").status in (200, 503)  # a read, but it may refresh the session
    assert api.get("/faulty/ok").status == 200  # what does not write keeps working
    time.sleep(2)  # past its time
    assert set(api.ops()) == acked

    tiny_fs.free()
    assert wait_for(lambda: api.status(due) == "done", timeout=20)
    assert faulty.state.runs == {due: 1}
    assert session.get("/profile").status == 200
    acked.add(api.submit())
    assert set(api.ops()) == acked
    running.stop()
    sqlite_ok(home / "pgwarden.db")


def test_read_only_filesystem_sqlite(make_agent, faulty, tiny_fs):
    home = tiny_fs.path / "home"
    running = start(make_agent, faulty, home=home)
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}

    failures: list[str] = []

    def remount_read_only() -> bool:
        gc.collect()  # SQLite connections dropped but not yet collected still hold the file open
        running.agent.store.dispose()  # Linux will not remount while files are open for writing
        res = tiny_fs.remount("ro")
        if res.returncode:
            failures[:] = [res.stderr.strip(), *open_files_under(tiny_fs.path)]
        return res.returncode == 0

    try:
        wait_for(remount_read_only, timeout=20, interval=0.1)
    except AssertionError:
        raise AssertionError(f"could not remount read-only; last failure and files held open: {failures}") from None
    try:
        assert_store_down(api.post("/faulty/ops", {"in": 3600}))
        assert_store_down(running.client().post("/login", LOGIN))
        assert api.get("/faulty/ok").status == 200
    finally:
        assert tiny_fs.remount("rw").returncode == 0
    assert session.get("/profile").status == 200
    acked.add(api.submit())
    assert set(api.ops()) == acked
    running.stop()
    sqlite_ok(home / "pgwarden.db")


#: Holds SQLite's write lock on the file given until its stdin closes.
LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def test_locked_store(make_agent, faulty, store_url, monkeypatch, backends):
    monkeypatch.setattr(agent_core.store, "BUSY_TIMEOUT", 0.5)  # the wait before 503, to keep the test short
    running = start(make_agent, faulty, store_url)
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}
    if store_url is None:
        path = running.agent.store.engine.url.database
        locker = subprocess.Popen([sys.executable, "-c", LOCKER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert locker.stdout.readline() == b"locked\n"
        release = locker.communicate
        cause = "database is locked"
    else:
        held = backends.hold(
            "BEGIN; LOCK TABLE core_operations, core_sessions IN ACCESS EXCLUSIVE MODE",
            dbname=store_url.rsplit("/", 1)[1],
        )
        assert held.error is None, held.error

        def release() -> None:
            with held.conn.cursor() as cur:
                cur.execute("ROLLBACK")

        cause = "lock timeout"
    try:
        assert_store_down(api.post("/faulty/ops", {"in": 3600}), cause)
        assert_store_down(running.client().post("/login", LOGIN), cause)
        if store_url is not None:  # reads wait for ACCESS EXCLUSIVE too
            assert_store_down(session.get("/profile"), cause)
            assert_store_down(api.get("/faulty/ops"), cause)
        assert api.get("/faulty/ok").status == 200
    finally:
        release()
    assert session.get("/profile").status == 200
    acked.add(api.submit())
    assert set(api.ops()) == acked


def test_read_only_postgresql_store(make_agent, faulty, pg_store, pg_cluster):
    running = start(make_agent, faulty, pg_store)
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}
    name = pg_store.rsplit("/", 1)[1]

    def end_store_sessions() -> None:
        pg_cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

    pg_cluster.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    end_store_sessions()
    try:
        assert_store_down(api.post("/faulty/ops", {"in": 3600}), "read-only transaction")
        assert_store_down(running.client().post("/login", LOGIN), "read-only transaction")
        assert set(api.ops()) == acked  # reads still work
        assert session.get("/profile").status == 200
    finally:
        pg_cluster.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        end_store_sessions()
    assert session.get("/profile").status == 200
    acked.add(api.submit())
    assert set(api.ops()) == acked


def test_stopped_postgresql_store(make_agent, faulty, own_cluster):
    own_cluster.execute("CREATE DATABASE store")
    running = start(make_agent, faulty, own_cluster.url("store"))
    api = Keyed(running.url)
    session = running.login()
    acked = {api.submit() for _ in range(3)}
    due = api.submit(2)  # falls due while the store is down
    acked.add(due)

    own_cluster.stop()
    assert_store_down(api.post("/faulty/ops", {"in": 3600}), "connect", "refused", "terminat", "closed")
    assert_store_down(session.get("/profile"))
    assert_store_down(api.get("/faulty/ops"))
    assert api.get("/faulty/ok").status == 200
    time.sleep(3)  # past its time
    assert faulty.state.runs == {}

    own_cluster.start()  # the agent reconnects by itself
    assert session.get("/profile").status == 200
    assert wait_for(lambda: api.status(due) == "done", timeout=20)
    assert faulty.state.runs == {due: 1}
    acked.add(api.submit())
    assert set(api.ops()) == acked


def test_a_recurring_task_stays_scheduled_when_the_store_fails_between_runs(make_agent, store_url, failing):
    runs = []

    @hookimpl
    def agent_register_tasks(agent: Any) -> list[TaskType]:
        return [TaskType("ticker.tick", lambda ctx: runs.append(ctx.operation.id), interval=0.5)]

    ticker = types.SimpleNamespace(agent_register_tasks=agent_register_tasks)
    running = make_agent(plugins={"ticker": ticker}, config={"agent": {"store": store_url} if store_url else {}})
    broken = failing(running.agent.store.engine)
    # the next run cannot be written right after a run ends
    broken.fail(r"^INSERT INTO core_operations", times=2, thread="pgwarden-op-")
    wait_for(lambda: len(runs) >= 3, timeout=20)
    assert len(broken.failed) == 2
    assert len(set(runs)) == len(runs)  # each operation ran once
