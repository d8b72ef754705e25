"""The activity plugin run by the least-privilege roles of docs/least-privilege.md.

The roles are made with the SQL blocks of that page, as written (role names
made unique). ``test_activity_kill.test_least_privilege_role`` checks
pg_signal_backend against a superuser's backend; here every listing answers
for every level, a role without pg_monitor gets nulls for what PostgreSQL
hides, and kill needs the kill level.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from activity_helpers import rows_by_pid
from psycopg2 import sql

DOC = Path(__file__).resolve().parents[3] / "docs" / "least-privilege.md"


def documented(level: str) -> str:
    """The SQL block of docs/least-privilege.md whose first line is ``-- level: <level>``."""
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = block.partition("\n")
        if first == f"-- level: {level}":
            return rest
    raise AssertionError(f"docs/least-privilege.md has no level {level!r}")


@pytest.fixture
def make_role(pg_cluster: Any, unique: str) -> Any:
    """``make_role(level)``: a login role made with the documented SQL (``None``: a
    bare login role); the roles end with the test, their sessions terminated."""
    made: list[str] = []

    def make(level: str | None) -> str:
        name = f"lp_{level or 'none'}_{unique}"
        if level is None:
            pg_cluster.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        else:
            pg_cluster.execute(re.sub(r"\bpgwarden\b", name, documented(level)))
        made.append(name)
        return name

    yield make
    for name in made:
        pg_cluster.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,))
        pg_cluster.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def conflict(backends: Any, pg_cluster: Any, unique: str) -> Any:
    """A superuser's transaction holding a row lock and another superuser
    session waiting for it: (holder pid, waiter pid)."""
    table = f"lp_locks_{unique}"
    pg_cluster.execute(f"CREATE TABLE {table} (id int PRIMARY KEY); INSERT INTO {table} VALUES (1)")
    holder = backends.open(autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"UPDATE {table} SET id = 1 WHERE id = 1")
    waiter = backends.run(f"UPDATE {table} SET id = 1 WHERE id = 1")
    backends.wait_state(waiter.pid, "active", "Lock")
    yield holder.info.backend_pid, waiter.pid
    holder.rollback()
    waiter.join()
    pg_cluster.execute(f"DROP TABLE {table}")


def listings(api: Any) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
    """The three listings (each a 200 ``{"rows": [...]}``), rows by pid."""
    return rows_by_pid(api, "/activity"), rows_by_pid(api, "/activity/waiting"), rows_by_pid(api, "/activity/blocking")


@pytest.mark.parametrize("level", ["monitor", "kill"])
def test_monitoring_roles_see_every_session(make_agent, plugin, make_role, conflict, level) -> None:
    holder, waiter = conflict
    api = make_agent(plugins={"activity": plugin}, config={"postgresql": {"user": make_role(level)}}).login()
    activity, waiting, blocking = listings(api)
    assert activity[waiter]["query"].startswith("UPDATE") and activity[waiter]["wait"] == "Y"
    assert activity[holder]["state"] == "idle in transaction" and activity[holder]["wait"] == "N"
    assert waiting[waiter]["blocked_by"] == [holder] and waiting[waiter]["relation"] == ""
    assert blocking[holder]["blocks"] == [waiter]


def test_monitor_level_cannot_kill(make_agent, plugin, make_role, backends, unique, pg_cluster) -> None:
    other = make_role(None)
    api = make_agent(plugins={"activity": plugin}, config={"postgresql": {"user": make_role("monitor")}}).login()
    session = backends.idle(f"SELECT 'other {unique}'", user=other)
    res = api.post("/activity/kill", {"pids": [session.info.backend_pid]})
    assert res.status == 200, res
    (result,) = res.json()["backends"]
    assert result["killed"] is False, result
    if int(pg_cluster.execute("SHOW server_version_num")[0][0]) >= 160000:
        assert result["reason"].startswith("permission denied to terminate process"), result
    else:
        assert result["reason"] == (
            "must be a member of the role whose process is being terminated or member of pg_signal_backend"
        ), result
    assert not backends.gone(session.info.backend_pid)


def test_kill_level_terminates_other_roles_sessions(make_agent, plugin, make_role, backends, unique) -> None:
    other = make_role(None)
    api = make_agent(plugins={"activity": plugin}, config={"postgresql": {"user": make_role("kill")}}).login()
    session = backends.idle(f"SELECT 'other {unique}'", user=other)
    res = api.post("/activity/kill", {"pids": [session.info.backend_pid]})
    assert res.json() == {"backends": [{"pid": session.info.backend_pid, "killed": True}]}, res


def test_without_pg_monitor_hidden_sessions_are_null(make_agent, plugin, make_role, conflict, backends) -> None:
    """PostgreSQL hides other roles' sessions: every listing still answers,
    with null for what the role may not see, never ``<insufficient privilege>``.
    It hides their backend type too, so GET /activity (client backends only)
    lists the role's own sessions; the lock listings show every backend."""
    holder, waiter = conflict
    bare = make_role(None)
    own = backends.idle("SELECT 'mine'", user=bare)
    api = make_agent(plugins={"activity": plugin}, config={"postgresql": {"user": bare}}).login()
    activity, waiting, blocking = listings(api)
    for row in (waiting[waiter], blocking[holder]):
        assert (row["query"], row["state"], row["wait"], row["duration"]) == (None, None, None, None), row
        assert row["user"] == "postgres" and row["database"] == "postgres"
    assert waiting[waiter]["blocked_by"] == [holder], "pg_locks and pg_blocking_pids need no privilege"
    assert blocking[holder]["blocks"] == [waiter]
    assert waiter not in activity and holder not in activity
    mine = activity[own.info.backend_pid]
    assert (mine["query"], mine["state"], mine["wait"]) == ("SELECT 'mine'", "idle", "N"), "its own sessions"
