"""Hostile names through the activity listings: a database and tables with
quotes, dots, spaces, backslashes, capitals, non-ASCII and 63 bytes, locked
by one session and waited for by others. Each waiter's ``relation`` is the
name PostgreSQL itself quotes (``format('%I.%I')``), its ``database`` and
``query`` are exact, and kill still refuses what it must."""

from __future__ import annotations

from activity_helpers import rows_by_pid
from psycopg2 import sql

NAMES = ['dq"uote', "sq'uote; x", "do.t", "back\\slash", "CapiTal", "nön-äscii €", "é" * 31 + "x"]


def test_hostile_names_in_waiting_and_blocking(api, backends, databases, pg_cluster):
    db = databases.create('Act "ïvity"\'; --')
    tables = [sql.Identifier(name, name) for name in NAMES]
    setup = [
        sql.SQL("CREATE SCHEMA {}; CREATE TABLE {} (id int)").format(sql.Identifier(n), t)
        for n, t in zip(NAMES, tables)
    ]
    pg_cluster.execute(sql.SQL("; ").join(setup), dbname=db)
    locks = [sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(t) for t in tables]
    holder = backends.hold(sql.SQL("BEGIN; ") + sql.SQL("; ").join(locks), dbname=db)
    assert holder.error is None, holder.error
    waiters = {}
    for name, table in zip(NAMES, tables):
        waiter = backends.run(sql.SQL("SELECT count(*) FROM {}").format(table), dbname=db)
        waiters[waiter.pid] = name
    for pid in waiters:
        backends.wait_state(pid, "active", "Lock")
    expected = {
        name: pg_cluster.execute("SELECT format('%%I.%%I', %s::text, %s::text)", (name, name), dbname=db)[0][0]
        for name in NAMES
    }

    waiting = rows_by_pid(api, "/activity/waiting")
    assert set(waiting) == set(waiters)
    for pid, name in waiters.items():
        row = waiting[pid]
        assert row["relation"] == expected[name], (name, row)
        assert (row["type"], row["mode"], row["database"]) == ("relation", "AccessShareLock", db)
        assert row["blocked_by"] == [holder.pid] and row["root_blockers"] == [holder.pid]
        quoted = pg_cluster.execute("SELECT quote_ident(%s)", (name,))[0][0]
        assert row["query"] == f"SELECT count(*) FROM {quoted}.{quoted}", row

    blocking = rows_by_pid(api, "/activity/blocking")
    assert set(blocking) == {holder.pid}
    assert blocking[holder.pid]["database"] == db
    assert blocking[holder.pid]["relation"] in expected.values()
    assert sorted(blocking[holder.pid]["blocks"]) == sorted(waiters)

    listed = rows_by_pid(api, "/activity")
    assert {pid: listed[pid]["database"] for pid in waiters} == {pid: db for pid in waiters}
    # kill: the holder goes, the waiters then run
    res = api.post("/activity/kill", {"pids": [holder.pid]})
    assert res.status == 200 and res.json() == {"backends": [{"pid": holder.pid, "killed": True}]}, res
    for pid in waiters:
        held = next(h for h in backends.held if h.pid == pid)
        held.join()
        assert held.error is None
