"""GET /activity/waiting and /activity/blocking with real lock conflicts."""

from __future__ import annotations

import pytest

LISTING_FIELDS = {
    "pid",
    "database",
    "user",
    "client",
    "cpu",
    "memory",
    "read_s",
    "write_s",
    "iow",
    "wait",
    "duration",
    "state",
    "query",
}
LOCK_FIELDS = {"relation", "type", "mode"}


def rows(client, path):
    res = client.get(path)
    assert res.status == 200, res
    assert set(res.json()) == {"rows"}
    return {row["pid"]: row for row in res.json()["rows"]}


@pytest.fixture
def table(pg_cluster, unique):
    """A table of two rows, dropped afterwards."""
    name = f"pgw_locks_{unique}"
    pg_cluster.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int)")
    pg_cluster.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    pg_cluster.execute(f"DROP TABLE IF EXISTS {name}")


def test_row_lock_holder_and_blocked_update(api, sessions, table):
    holder = sessions.open(autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
    update = sessions.run(f"UPDATE {table} SET v = 2 WHERE id = 1")
    sessions.wait_state(update.pid, "active", "Lock")
    holder_pid = holder.info.backend_pid

    waiting = rows(api, "/activity/waiting")
    assert set(waiting) == {update.pid}
    row = waiting[update.pid]
    assert set(row) == LISTING_FIELDS | LOCK_FIELDS | {"blocked_by", "root_blockers"}
    assert row["type"] == "transactionid"
    assert row["mode"] == "ShareLock"
    assert row["relation"] == "", "a transaction id lock is on no relation"
    assert row["state"] == "active"
    assert row["wait"] == "Y"
    assert row["query"] == f"UPDATE {table} SET v = 2 WHERE id = 1"
    assert row["blocked_by"] == [holder_pid]
    assert row["root_blockers"] == [holder_pid]

    blocking = rows(api, "/activity/blocking")
    assert set(blocking) == {holder_pid}
    row = blocking[holder_pid]
    assert set(row) == LISTING_FIELDS | LOCK_FIELDS | {"blocks", "blocked_by", "root"}
    assert row["state"] == "idle in transaction"
    assert row["type"] == "transactionid"
    assert row["mode"] == "ExclusiveLock"
    assert row["relation"] == ""
    assert row["wait"] == "N"
    assert row["query"] == f"UPDATE {table} SET v = 1 WHERE id = 1"
    assert row["blocks"] == [update.pid]
    assert row["blocked_by"] == []
    assert row["root"] is True

    listed = rows(api, "/activity")
    assert listed[update.pid]["wait"] == "Y"
    assert listed[holder_pid]["wait"] == "N"

    holder.rollback()
    update.join()
    assert update.error is None
    assert rows(api, "/activity/waiting") == {}
    assert rows(api, "/activity/blocking") == {}


def test_chain_of_three_shows_the_root_blocker(api, sessions, table):
    a = sessions.open(autocommit=False)
    b = sessions.open(autocommit=False)
    with a.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
    with b.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 2")
    b_waits = sessions.run(f"UPDATE {table} SET v = 2 WHERE id = 1", conn=b)  # B waits for A
    sessions.wait_state(b_waits.pid, "active", "Lock")
    c_waits = sessions.run(f"UPDATE {table} SET v = 3 WHERE id = 2")  # C waits for B
    sessions.wait_state(c_waits.pid, "active", "Lock")
    pa, pb, pc = a.info.backend_pid, b.info.backend_pid, c_waits.pid

    blocking = api.get("/activity/blocking").json()["rows"]
    assert [row["pid"] for row in blocking] == [pa, pb], "root blocker first"
    root, middle = blocking
    assert root["root"] is True and root["blocks"] == [pb] and root["blocked_by"] == []
    assert middle["root"] is False and middle["blocks"] == [pc] and middle["blocked_by"] == [pa]
    assert root["state"] == "idle in transaction"
    assert middle["state"] == "active" and middle["wait"] == "Y"

    waiting = rows(api, "/activity/waiting")
    assert set(waiting) == {pb, pc}
    assert waiting[pb]["blocked_by"] == [pa] and waiting[pb]["root_blockers"] == [pa]
    assert waiting[pc]["blocked_by"] == [pb] and waiting[pc]["root_blockers"] == [pa]

    a.rollback()
    b_waits.join()
    b.rollback()
    c_waits.join()
    assert b_waits.error is None and c_waits.error is None


def test_lock_table_in_another_database(activity_agent, api, sessions, pg_cluster, unique):
    db = f"pgw_lockdb_{unique}"
    pg_cluster.execute(f"CREATE DATABASE {db}")
    try:
        pg_cluster.execute('CREATE SCHEMA "Sales Dept"; CREATE TABLE "Sales Dept"."Orders" (id int)', dbname=db)
        locker = sessions.open(db, autocommit=False)
        with locker.cursor() as cur:
            cur.execute('SELECT \'"Sales Dept"."Orders"\'::regclass::oid')
            oid = cur.fetchone()[0]
            cur.execute('LOCK TABLE "Sales Dept"."Orders" IN ACCESS EXCLUSIVE MODE')
        reader = sessions.run('SELECT count(*) FROM "Sales Dept"."Orders"', dbname=db)
        sessions.wait_state(reader.pid, "active", "Lock")
        locker_pid = locker.info.backend_pid

        waiting = rows(api, "/activity/waiting")[reader.pid]
        assert waiting["database"] == db
        assert waiting["relation"] == '"Sales Dept"."Orders"', "schema-qualified, quoted, from another database"
        assert waiting["type"] == "relation"
        assert waiting["mode"] == "AccessShareLock"
        assert waiting["blocked_by"] == [locker_pid]

        blocking = rows(api, "/activity/blocking")[locker_pid]
        assert blocking["relation"] == '"Sales Dept"."Orders"'
        assert blocking["type"] == "relation"
        assert blocking["mode"] == "AccessExclusiveLock"
        assert blocking["blocks"] == [reader.pid]

        # The agent resolved the name without keeping a connection to that database.
        assert not pg_cluster.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> ALL(%s)", (db, [locker_pid, reader.pid])
        )

        # When the agent cannot connect to that database, the OID is shown instead.
        pg_cluster.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false")
        try:
            assert rows(api, "/activity/waiting")[reader.pid]["relation"] == str(oid)
            assert rows(api, "/activity/blocking")[locker_pid]["relation"] == str(oid)
        finally:
            pg_cluster.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")

        locker.rollback()
        reader.join()
        assert reader.error is None
    finally:
        sessions.close()
        pg_cluster.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
