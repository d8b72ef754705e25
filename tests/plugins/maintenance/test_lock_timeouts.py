"""Monitoring reads never pile up behind locks.

An agent with both plugins, ``[postgresql] lock_timeout = 1`` and
``statement_timeout = 60`` (so only the lock timeout can end a wait early):

* while a session holds ``ACCESS EXCLUSIVE`` on a table (with another session
  queued behind it), the maintenance reads of its database, schema and table
  and the three activity listings all answer 200, the lock still held: the
  table is measured from the catalog and flagged ``locked``;
* when a read does have to wait (the catalog ``pg_inherits`` and the view
  ``pg_locks`` it reads locked by another session), it ends with a 504 JSON
  error naming ``lock_timeout`` (not ``statement_timeout``: it did not queue
  for 60 s) while the lock is still held, and the agent answers normally once
  the lock is gone. (``GET /activity`` reads ``pg_stat_activity``, whose lock
  would also stop new connections to the database: it is shown answering
  above, not waiting here.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from maintenance_helpers import ONE_TABLE, path

import agent_activity.plugin as activity_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import Cluster, Databases, RunningAgent, find_bindir


@pytest.fixture
def lock_db(databases: Databases) -> str:
    return databases.create("lockt", setup=ONE_TABLE)


@pytest.fixture
def start(databases: Databases, make_agent: Callable[..., RunningAgent]) -> Callable[..., Any]:
    """A client of an agent with both plugins and short lock waits (``databases``
    first: agents stop before the databases are dropped)."""

    def make(**postgresql: Any) -> Any:
        config = {
            "postgresql": {"lock_timeout": 1, "statement_timeout": 60, **postgresql},
            "maintenance": {"estimates_max_age": 0},  # every request reads PostgreSQL
            "activity": {"sample_interval": 0.2},
        }
        plugins = {"maintenance": maintenance_plugin, "activity": activity_plugin}
        return make_agent(plugins=plugins, config=config).login()

    return make


def exclusive_locks(pg_cluster: Any, pid: int, dbname: str) -> int:
    """ACCESS EXCLUSIVE locks backend ``pid`` holds on relations of ``dbname``
    (read from the ``postgres`` database, whose ``pg_locks`` view is not locked)."""
    return pg_cluster.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'relation' AND mode = 'AccessExclusiveLock'"
        " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = %s)",
        (pid, dbname),
    )[0][0]


def test_reads_answer_while_a_table_is_locked(start: Any, lock_db: str, backends: Any, pg_cluster: Any) -> None:
    api = start()
    holder = backends.hold("BEGIN; LOCK TABLE s.t IN ACCESS EXCLUSIVE MODE", dbname=lock_db)
    queued = backends.run("SELECT count(*) FROM s.t", dbname=lock_db)
    backends.wait_state(queued.pid, "active", "Lock")

    database = api.get(path(lock_db))
    assert database.status == 200, database
    assert any(s["name"] == "s" and s["n_tables"] == 1 for s in database.json()["schemas"])
    schema = api.get(path(lock_db, "schema", "s"))
    assert schema.status == 200, schema
    assert [(t["name"], t["locked"]) for t in schema.json()["tables"]] == [("t", True)]
    table = api.get(path(lock_db, "schema", "s", "table", "t"))
    assert table.status == 200, table
    assert table.json()["locked"] is True and table.json()["total_bytes"] > 0

    activity = api.get("/activity")
    assert activity.status == 200, activity
    assert {holder.pid, queued.pid} <= {r["pid"] for r in activity.json()["rows"]}
    waiting = api.get("/activity/waiting")
    assert waiting.status == 200, waiting
    (row,) = [r for r in waiting.json()["rows"] if r["pid"] == queued.pid]
    assert (row["relation"], row["mode"], row["blocked_by"]) == ("s.t", "AccessShareLock", [holder.pid])
    blocking = api.get("/activity/blocking")
    assert blocking.status == 200, blocking
    (row,) = [r for r in blocking.json()["rows"] if r["pid"] == holder.pid]
    assert (row["relation"], row["mode"]) == ("s.t", "AccessExclusiveLock")

    assert exclusive_locks(pg_cluster, holder.pid, lock_db) == 1, "every answer came while the lock was held"


def test_a_read_waiting_for_a_lock_fails_fast_with_504(
    start: Any, lock_db: str, backends: Any, pg_cluster: Any
) -> None:
    # the agent's default database is the throwaway one: locking its catalogs there affects nobody else
    api = start(dbname=lock_db)
    assert api.get(path(lock_db, "schema", "s")).status == 200
    assert api.get("/activity").status == 200
    locked = "pg_catalog.pg_inherits, pg_catalog.pg_locks"
    holder = backends.hold(f"BEGIN; LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE", dbname=lock_db)

    for url in (path(lock_db), path(lock_db, "schema", "s"), path(lock_db, "schema", "s", "table", "t")):
        res = api.get(url)
        assert res.status == 504, (url, res)
        assert res.json() == {
            "error": "PostgreSQL waited longer than lock_timeout (1 s) for a lock held by another session"
            f" in database '{lock_db}'."
        }
    for url in ("/activity/waiting", "/activity/blocking"):
        res = api.get(url)
        assert res.status == 504, (url, res)
        assert res.json() == {
            "error": "PostgreSQL waited longer than lock_timeout (1 s) for a lock held by another session"
            f" in database '{lock_db}'."
        }
    assert exclusive_locks(pg_cluster, holder.pid, lock_db) == 2, "every answer came while the lock was held"

    with holder.conn.cursor() as cur:
        cur.execute("ROLLBACK")
    assert api.get(path(lock_db, "schema", "s", "table", "t")).status == 200
    assert api.get("/activity/waiting").status == 200


@pytest.fixture
def prepared_cluster() -> Iterator[Cluster]:
    """A cluster of its own that allows prepared transactions (the session's
    does not), with the test table; requested before ``make_agent`` so that
    the agents stop before it does."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are missing: apt-get install postgresql")
    cluster = Cluster(bindir, extra_conf={"max_prepared_transactions": "2"})
    try:
        cluster.init()
        cluster.start()
        cluster.execute(ONE_TABLE)
        yield cluster
    finally:
        cluster.destroy()


def test_a_prepared_transaction_holding_a_table_does_not_block_reads(
    prepared_cluster: Cluster, make_agent: Callable[..., RunningAgent]
) -> None:
    """A prepared transaction's locks have no pid: the table is still seen as
    locked and measured from the catalog, not waited for."""
    conn = prepared_cluster.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("LOCK TABLE s.t IN ACCESS EXCLUSIVE MODE")
            cur.execute("PREPARE TRANSACTION 'pgwarden_test_lock'")
        config = {
            "postgresql": {**prepared_cluster.settings(), "lock_timeout": 1, "statement_timeout": 60},
            "maintenance": {"estimates_max_age": 0},
        }
        api = make_agent(plugins={"maintenance": maintenance_plugin}, config=config).login()
        table = api.get(path("postgres", "schema", "s", "table", "t"))
        assert table.status == 200, table
        assert table.json()["locked"] is True and table.json()["total_bytes"] > 0
        schema = api.get(path("postgres", "schema", "s"))
        assert schema.status == 200 and schema.json()["tables"][0]["locked"] is True, schema
    finally:
        conn.close()
        prepared_cluster.execute("ROLLBACK PREPARED 'pgwarden_test_lock'")
