"""POST /activity/kill: real backends terminated, everything else refused, all recorded."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import psutil
import psycopg2
import pytest
import sqlalchemy as sa

from agent_activity.store import kills
from agent_core.testing import KEY, wait_for


def kill(client, pids, path="/activity/kill"):
    res = client.post(path, {"pids": pids})
    assert res.status == 200, res
    assert set(res.json()) == {"backends"}
    return res.json()["backends"]


def records(agent, pid):
    with agent.agent.store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(sa.select(kills).where(kills.c.pid == pid).order_by(kills.c.id))]


def test_kill_terminates_a_real_backend_and_records_it(activity_agent, api, backends):
    victim = backends.idle()
    pid = victim.info.backend_pid
    before = datetime.now(timezone.utc)

    assert kill(api, [pid]) == [{"pid": pid, "killed": True}]

    assert backends.gone(pid), "PostgreSQL 14+: terminated and waited for"
    with pytest.raises(psycopg2.OperationalError), victim.cursor() as cur:
        cur.execute("SELECT 1")
    assert pid not in {row["pid"] for row in api.get("/activity").json()["rows"]}

    (record,) = records(activity_agent, pid)
    assert record["requested_by"] == "alice"
    assert record["killed"] is True
    assert record["reason"] is None
    assert (record["database"], record["username"]) == ("postgres", "postgres")
    assert before - timedelta(seconds=1) <= record["requested_at"] <= datetime.now(timezone.utc)

    other = backends.idle().info.backend_pid
    assert kill(api, [other], path="/activity/activity/kill") == [{"pid": other, "killed": True}]
    assert backends.gone(other)


def test_kill_several_and_duplicates(api, backends):
    first, second = backends.idle().info.backend_pid, backends.idle().info.backend_pid
    result = kill(api, [first, second, first])
    assert result == [{"pid": first, "killed": True}, {"pid": second, "killed": True}]
    assert backends.gone(first) and backends.gone(second)


@pytest.fixture
def autovacuum_launcher(pg_cluster):
    """Turn autovacuum on for a moment (the test cluster runs without it),
    with a naptime long enough that no worker starts; restore afterwards."""
    pg_cluster.execute("ALTER SYSTEM SET autovacuum = on")
    pg_cluster.execute("ALTER SYSTEM SET autovacuum_naptime = '1h'")
    pg_cluster.execute("SELECT pg_reload_conf()")

    def launcher():
        rows = pg_cluster.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'autovacuum launcher'")
        return rows[0][0] if rows else None

    try:
        yield wait_for(launcher, timeout=15)
    finally:
        pg_cluster.execute("ALTER SYSTEM RESET autovacuum")
        pg_cluster.execute("ALTER SYSTEM RESET autovacuum_naptime")
        pg_cluster.execute("SELECT pg_reload_conf()")
        wait_for(lambda: launcher() is None, timeout=15)


def test_kill_refuses_what_is_not_a_client_backend(activity_agent, api, backends, pg_cluster, autovacuum_launcher):
    api.get("/activity")  # the agent now holds a pooled connection
    own = sorted(activity_agent.agent.postgres.own_pids)[0]
    by_type = dict(
        pg_cluster.execute(
            "SELECT backend_type, pid FROM pg_stat_activity"
            " WHERE backend_type IN ('checkpointer', 'logical replication launcher')"
        )
    )
    checkpointer, bgworker = by_type["checkpointer"], by_type["logical replication launcher"]
    postmaster = psutil.Process(backends.idle().info.backend_pid).ppid()
    not_postgres = os.getpid()
    no_such_pid = 2**31 - 1
    refused = [own, autovacuum_launcher, bgworker, checkpointer, postmaster, not_postgres, no_such_pid]

    result = kill(api, refused)

    assert [r["pid"] for r in result] == refused
    assert all(r["killed"] is False for r in result), result
    reasons = {r["pid"]: r["reason"] for r in result}
    assert reasons[own] == "one of the agent's own connections"
    assert reasons[autovacuum_launcher] == "not a client backend: autovacuum launcher"
    assert reasons[bgworker] == "not a client backend: logical replication launcher"
    assert reasons[checkpointer] == "not a client backend: checkpointer"
    for pid in (postmaster, not_postgres, no_such_pid):
        assert reasons[pid] == "not a backend of this PostgreSQL instance"

    # Nothing was signalled: the same processes are still there.
    alive = {pid for (pid,) in pg_cluster.execute("SELECT pid FROM pg_stat_activity")}
    assert {own, autovacuum_launcher, bgworker, checkpointer} <= alive
    assert psutil.pid_exists(postmaster)
    assert api.get("/activity").status == 200
    # Refusals are recorded too.
    (record,) = records(activity_agent, checkpointer)
    assert (record["killed"], record["reason"], record["requested_by"]) == (
        False,
        "not a client backend: checkpointer",
        "alice",
    )


def test_kill_needs_a_session(activity_agent, backends):
    pid = backends.idle().info.backend_pid
    anonymous = activity_agent.client()
    for path in ("/activity/kill", "/activity/activity/kill"):
        res = anonymous.post(f"{path}?key={KEY}", {"pids": [pid]})
        assert (res.status, res.json()) == (406, {"error": "Parameter 'X-Session' is malformed."})
        res = anonymous.post(path, {"pids": [pid]}, headers={"X-Pgwarden-Key": KEY})
        assert res.status == 406, res
        res = anonymous.post(path, {"pids": [pid]}, headers={"X-Session": "f" * 64})
        assert (res.status, res.json()) == (401, {"error": "Invalid session."})
    assert not backends.gone(pid), "the backend survived"
    assert records(activity_agent, pid) == []


MALFORMED = [
    {},
    {"pids": None},
    {"pids": "123"},
    {"pids": 123},
    {"pids": [True]},
    {"pids": [1.5]},
    {"pids": ["123"]},
    {"pids": [0]},
    {"pids": [-5]},
    {"pids": [2**31]},
    {"pids": [[1]]},
    [1, 2],
    "pids",
]


def test_kill_malformed_bodies(api):
    for body in MALFORMED:
        res = api.post("/activity/kill", body)
        assert (res.status, res.json()) == (406, {"error": "Parameter 'pids' is malformed."}), body


def test_kill_body_not_json_or_as_the_temboard_ui_sends_it(api, backends):
    res = api.request("POST", "/activity/kill", body="pids=1", headers={"Content-Type": "application/json"})
    assert (res.status, res.json()) == (400, {"error": "Request body is not valid JSON."})
    pid = backends.idle().info.backend_pid
    res = api.request(
        "POST",
        "/activity/kill",
        body=f'{{"pids": [{pid}]}}',
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (res.status, res.json()) == (200, {"backends": [{"pid": pid, "killed": True}]})
    assert kill(api, []) == []


@pytest.fixture
def monitoring_role(pg_cluster, unique):
    """A least-privilege role as docs/activity.md recommends; dropped afterwards."""
    role = f"pgw_monitor_{unique}"
    pg_cluster.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor, pg_signal_backend")
    pg_cluster.execute(f"CREATE ROLE {role}_app LOGIN")
    yield role
    for name in (role, f"{role}_app"):
        pg_cluster.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,))
        pg_cluster.execute(f"DROP ROLE {name}")


def test_least_privilege_role(make_agent, plugin, backends, monitoring_role, unique):
    """pg_monitor sees every session's query; pg_signal_backend terminates
    ordinary backends but not a superuser's, which is refused with PostgreSQL's reason."""
    running = make_agent(plugins={"activity": plugin}, config={"postgresql": {"user": monitoring_role}})
    api = running.login()
    app = backends.idle(f"SELECT 'app {unique}'", user=f"{monitoring_role}_app")
    superuser = backends.idle(f"SELECT 'superuser {unique}'")

    rows = {row["pid"]: row for row in api.get("/activity").json()["rows"]}
    assert rows[superuser.info.backend_pid]["query"] == f"SELECT 'superuser {unique}'", "pg_read_all_stats"

    result = kill(api, [superuser.info.backend_pid, app.info.backend_pid])
    assert result[0]["killed"] is False
    assert "superuser" in result[0]["reason"], result
    assert result[1] == {"pid": app.info.backend_pid, "killed": True}
    assert not backends.gone(superuser.info.backend_pid)
    assert backends.gone(app.info.backend_pid)
