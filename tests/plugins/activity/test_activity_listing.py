"""GET /activity over real HTTP against real sessions."""

from __future__ import annotations

import re
import time

import psycopg2
from activity_helpers import FIELDS, rows_by_pid

from agent_core.testing import KEY, wait_for

RATE = re.compile(r"^[0-9]+\.[0-9]{2}[BKMGTPE]$")


def encoding(name):
    """``CREATE DATABASE`` options for a database in encoding ``name``."""
    return f"ENCODING '{name}' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"


def test_lists_idle_and_active_client_backends(activity_agent, api, backends, pg_cluster, unique):
    sleeper = backends.run(f"SELECT pg_sleep(60) AS sleeper_{unique}")
    backends.wait_state(sleeper.pid)
    time.sleep(0.3)  # the sleep has run for a while: it is the longest running query
    tcp_conn = backends.open(application_name=f"app {unique}")
    with tcp_conn.cursor() as cur:
        cur.execute(f"SELECT 'tcp {unique}'")
    tcp = tcp_conn
    unix = backends.idle(f"SELECT 'unix {unique}'", unix=True)

    res = api.get("/activity")
    assert res.status == 200, res
    rows = res.json()["rows"]
    by_pid = {row["pid"]: row for row in rows}

    for row in rows:
        assert set(row) == FIELDS, row
        assert row["duration"] is None or row["duration"] >= 0
    durations = [row["duration"] for row in rows if row["duration"] is not None]
    assert durations == sorted(durations, reverse=True), "longest running first"

    idle = by_pid[tcp.info.backend_pid]
    assert idle["database"] == "postgres"
    assert idle["user"] == "postgres"
    assert idle["client"] == "127.0.0.1"
    assert idle["application_name"] == f"app {unique}"
    assert idle["state"] == "idle"
    assert idle["query"] == f"SELECT 'tcp {unique}'"
    assert idle["wait"] == "N"
    assert by_pid[unix.info.backend_pid]["client"] is None, "Unix socket: no address"

    sleeping = by_pid[sleeper.pid]
    assert sleeping["state"] == "active"
    assert sleeping["query"] == f"SELECT pg_sleep(60) AS sleeper_{unique}"
    assert sleeping["wait"] == "N"
    assert sleeping["duration"] >= 0.3
    assert sleeping["duration"] > idle["duration"]
    assert rows.index(sleeping) < rows.index(idle)

    own = activity_agent.agent.postgres.own_pids
    assert own, "the agent holds connections"
    assert not own & set(by_pid), "the agent's own connections are left out"


def test_metrics_are_measured_once_sampled(api, backends):
    conn = backends.idle()
    pid = conn.info.backend_pid

    def measured():
        row = rows_by_pid(api).get(pid)
        return row if row and row["cpu"] is not None else None

    row = wait_for(measured, timeout=10)
    assert 0 <= row["cpu"] < 50, "an idle backend uses (almost) no CPU"
    assert 0 < row["memory"] < 100
    assert row["iow"] == "N"
    assert RATE.match(row["read_s"]) and RATE.match(row["write_s"]), row  # tests run as root: /proc/<pid>/io readable


def test_agent_key_is_accepted_for_the_listings(activity_agent, backends):
    pid = backends.idle().info.backend_pid
    anonymous = activity_agent.client()
    for path in ("/activity", "/activity/waiting", "/activity/blocking"):
        res = anonymous.get(f"{path}?key={KEY}")
        assert res.status == 200, (path, res)
        assert "rows" in res.json()
        res = anonymous.get(path, headers={"X-Pgwarden-Key": KEY})
        assert res.status == 200, (path, res)
        res = anonymous.get(path, headers={"X-TemBoard-Agent-Key": KEY})
        assert res.status == 200, (path, res)
        res = anonymous.get(f"{path}?key=wrong")
        assert (res.status, res.json()) == (401, {"error": "Invalid key."})
        res = anonymous.get(path)
        assert (res.status, res.json()) == (406, {"error": "Parameter 'X-Session' is malformed."})
        res = anonymous.get(path, headers={"X-Session": "0" * 64})
        assert (res.status, res.json()) == (401, {"error": "Invalid session."})
    assert pid in {row["pid"] for row in anonymous.get(f"/activity?key={KEY}").json()["rows"]}


def test_hundred_idle_connections(make_agent, plugin, activity_agent, api, backends, unique):
    conns = [backends.idle(f"SELECT {i} AS idle_{unique}") for i in range(100)]
    pids = {conn.info.backend_pid for conn in conns}

    started = time.monotonic()
    res = api.get("/activity")
    elapsed = time.monotonic() - started
    assert res.status == 200, res
    rows = {row["pid"]: row for row in res.json()["rows"]}
    assert pids <= set(rows)
    assert all(rows[pid]["state"] == "idle" and rows[pid]["memory"] is not None for pid in pids)
    assert elapsed < 3, f"GET /activity took {elapsed:.2f} s with 100 connections"

    res = api.get("/activity?limit=10")
    limited = res.json()["rows"]
    assert len(limited) == 10
    everything = res = api.get("/activity").json()["rows"]
    assert [r["pid"] for r in limited] == [r["pid"] for r in everything[:10]], "the 10 longest running"
    for bad in ("0", "-1", "ten", "1.5", "99999999999"):
        res = api.get(f"/activity?limit={bad}")
        assert (res.status, res.json()) == (406, {"error": "Parameter 'limit' is malformed."})

    small = make_agent(plugins={"activity": plugin}, config={"activity": {"limit": 5}}).login()
    assert len(small.get("/activity").json()["rows"]) == 5

    sleeper = backends.run(f"SELECT pg_sleep(60) AS busy_{unique}")
    backends.wait_state(sleeper.pid)
    no_idle = make_agent(plugins={"activity": plugin}, config={"activity": {"show_idle": False}}).login()
    listed = rows_by_pid(no_idle)
    assert sleeper.pid in listed
    assert not pids & set(listed)
    assert all(row["state"] != "idle" for row in listed.values())


def test_query_text_in_another_encoding(activity_agent, api, backends, databases, unique):
    latin1 = databases.create("pgw_latin1", options=encoding("LATIN1"))
    ascii_db = databases.create("pgw_ascii", options=encoding("SQL_ASCII"))
    # The client sends UTF-8; PostgreSQL stores the query text in LATIN1.
    cafe = backends.idle(f"SELECT 'café {unique}'", dbname=latin1)
    # SQL_ASCII stores the bytes as sent: not valid UTF-8.
    raw = backends.open(ascii_db)
    raw.set_client_encoding("SQL_ASCII")
    with raw.cursor() as cur:
        cur.execute(b"SELECT 1 WHERE '\xff\xfe' <> '' -- " + unique.encode())

    rows = rows_by_pid(api)
    assert rows[cafe.info.backend_pid]["query"] == f"SELECT 'café {unique}'"
    assert rows[cafe.info.backend_pid]["database"] == latin1
    assert rows[raw.info.backend_pid]["query"] == f"SELECT 1 WHERE '\ufffd\ufffd' <> '' -- {unique}"


def test_plain_psycopg2_would_fail_on_those_bytes(backends, databases):
    """Why the plugin fetches text as bytes: a UTF-8 reader of pg_stat_activity
    fails on the query text of a SQL_ASCII database with non-UTF-8 bytes."""
    db = databases.create("pgw_ascii", options=encoding("SQL_ASCII"))
    raw = backends.open(db)
    raw.set_client_encoding("SQL_ASCII")
    with raw.cursor() as cur:
        cur.execute(b"SELECT 1 WHERE '\xff' <> ''")
    reader = backends.open("postgres")
    with reader.cursor() as cur:
        cur.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (raw.info.backend_pid,))
        try:
            cur.fetchall()
        except (UnicodeDecodeError, psycopg2.DataError):
            pass
        else:  # pragma: no cover - would mean the workaround is useless
            raise AssertionError("psycopg2 decoded invalid UTF-8")
