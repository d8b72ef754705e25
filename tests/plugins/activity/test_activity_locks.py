"""GET /activity/waiting and /activity/blocking with real lock conflicts."""

from __future__ import annotations

import pytest
from activity_helpers import FIELDS, rows_by_pid

LOCK_FIELDS = {"relation", "type", "mode"}


@pytest.fixture
def table(pg_cluster, unique):
    """A table of two rows, dropped afterwards."""
    name = f"pgw_locks_{unique}"
    pg_cluster.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v int)")
    pg_cluster.execute(f"INSERT INTO {name} VALUES (1, 0), (2, 0)")
    yield name
    pg_cluster.execute(f"DROP TABLE IF EXISTS {name}")


def test_row_lock_holder_and_blocked_update(api, backends, table):
    holder = backends.open(autocommit=False)
    with holder.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
    update = backends.run(f"UPDATE {table} SET v = 2 WHERE id = 1")
    backends.wait_state(update.pid, "active", "Lock")
    holder_pid = holder.info.backend_pid

    waiting = rows_by_pid(api, "/activity/waiting")
    assert set(waiting) == {update.pid}
    row = waiting[update.pid]
    assert set(row) == FIELDS | LOCK_FIELDS | {"blocked_by", "root_blockers"}
    assert row["type"] == "transactionid"
    assert row["mode"] == "ShareLock"
    assert row["relation"] == "", "a transaction id lock is on no relation"
    assert row["state"] == "active"
    assert row["wait"] == "Y"
    assert row["query"] == f"UPDATE {table} SET v = 2 WHERE id = 1"
    assert row["blocked_by"] == [holder_pid]
    assert row["root_blockers"] == [holder_pid]

    blocking = rows_by_pid(api, "/activity/blocking")
    assert set(blocking) == {holder_pid}
    row = blocking[holder_pid]
    assert set(row) == FIELDS | LOCK_FIELDS | {"blocks", "blocked_by", "root"}
    assert row["state"] == "idle in transaction"
    assert row["type"] == "transactionid"
    assert row["mode"] == "ExclusiveLock"
    assert row["relation"] == ""
    assert row["wait"] == "N"
    assert row["query"] == f"UPDATE {table} SET v = 1 WHERE id = 1"
    assert row["blocks"] == [update.pid]
    assert row["blocked_by"] == []
    assert row["root"] is True

    listed = rows_by_pid(api, "/activity")
    assert listed[update.pid]["wait"] == "Y"
    assert listed[holder_pid]["wait"] == "N"

    holder.rollback()
    update.join()
    assert update.error is None
    assert rows_by_pid(api, "/activity/waiting") == {}
    assert rows_by_pid(api, "/activity/blocking") == {}


def test_chain_of_three_shows_the_root_blocker(api, backends, table):
    a = backends.open(autocommit=False)
    b = backends.open(autocommit=False)
    with a.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
    with b.cursor() as cur:
        cur.execute(f"UPDATE {table} SET v = 1 WHERE id = 2")
    b_waits = backends.run(f"UPDATE {table} SET v = 2 WHERE id = 1", conn=b)  # B waits for A
    backends.wait_state(b_waits.pid, "active", "Lock")
    c_waits = backends.run(f"UPDATE {table} SET v = 3 WHERE id = 2")  # C waits for B
    backends.wait_state(c_waits.pid, "active", "Lock")
    pa, pb, pc = a.info.backend_pid, b.info.backend_pid, c_waits.pid

    blocking = api.get("/activity/blocking").json()["rows"]
    assert [row["pid"] for row in blocking] == [pa, pb], "root blocker first"
    root, middle = blocking
    assert root["root"] is True and root["blocks"] == [pb] and root["blocked_by"] == []
    assert middle["root"] is False and middle["blocks"] == [pc] and middle["blocked_by"] == [pa]
    assert root["state"] == "idle in transaction"
    assert middle["state"] == "active" and middle["wait"] == "Y"

    waiting = rows_by_pid(api, "/activity/waiting")
    assert set(waiting) == {pb, pc}
    assert waiting[pb]["blocked_by"] == [pa] and waiting[pb]["root_blockers"] == [pa]
    assert waiting[pc]["blocked_by"] == [pb] and waiting[pc]["root_blockers"] == [pa]

    a.rollback()
    b_waits.join()
    b.rollback()
    c_waits.join()
    assert b_waits.error is None and c_waits.error is None


def test_lock_table_in_another_database(activity_agent, api, backends, databases, pg_cluster):
    db = databases.create("pgw_lockdb", setup='CREATE SCHEMA "Sales Dept"; CREATE TABLE "Sales Dept"."Orders" (id int)')
    locker = backends.open(db, autocommit=False)
    with locker.cursor() as cur:
        cur.execute('SELECT \'"Sales Dept"."Orders"\'::regclass::oid')
        oid = cur.fetchone()[0]
        cur.execute('LOCK TABLE "Sales Dept"."Orders" IN ACCESS EXCLUSIVE MODE')
    reader = backends.run('SELECT count(*) FROM "Sales Dept"."Orders"', dbname=db)
    backends.wait_state(reader.pid, "active", "Lock")
    locker_pid = locker.info.backend_pid

    waiting = rows_by_pid(api, "/activity/waiting")[reader.pid]
    assert waiting["database"] == db
    assert waiting["relation"] == '"Sales Dept"."Orders"', "schema-qualified, quoted, from another database"
    assert waiting["type"] == "relation"
    assert waiting["mode"] == "AccessShareLock"
    assert waiting["blocked_by"] == [locker_pid]

    blocking = rows_by_pid(api, "/activity/blocking")[locker_pid]
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
        assert rows_by_pid(api, "/activity/waiting")[reader.pid]["relation"] == str(oid)
        assert rows_by_pid(api, "/activity/blocking")[locker_pid]["relation"] == str(oid)
    finally:
        pg_cluster.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")

    locker.rollback()
    reader.join()
    assert reader.error is None
