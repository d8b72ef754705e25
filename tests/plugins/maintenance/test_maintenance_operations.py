"""VACUUM, ANALYZE and REINDEX through the API against a real cluster: their
effect is checked in PostgreSQL's own catalogs and statistics; scheduling,
cancel before and during a run, failures with their error, restart, crash."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from maintenance_helpers import (
    SLOW_FUNCTION,
    WEIRD_INDEX,
    WEIRD_SCHEMA,
    WEIRD_TABLE,
    Keyed,
    later,
    operation,
    path,
    run,
    scalar,
    submit,
    wait_running,
    wait_status,
)
from psycopg2 import sql

from agent_core.auth import UsersFile
from agent_core.testing import KEY, PASSWORD, Client, add_user, free_port, serve, wait_for

OPS_SETUP = sql.SQL(
    """
CREATE SCHEMA s1;
CREATE SCHEMA s2;
CREATE SCHEMA {schema};
CREATE TABLE s1.t (id int PRIMARY KEY, v text);
CREATE TABLE s2.t (id int PRIMARY KEY, v text);
CREATE TABLE {table} (id int PRIMARY KEY, v text);
CREATE INDEX t_v ON s1.t (v);
CREATE INDEX t_v ON s2.t (v);
CREATE INDEX {index} ON {table} (v);
INSERT INTO s1.t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
INSERT INTO s2.t SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
INSERT INTO {table} SELECT i, md5(i::text) FROM generate_series(1, 1000) i;
"""
).format(
    schema=sql.Identifier(WEIRD_SCHEMA),
    table=sql.Identifier(WEIRD_SCHEMA, WEIRD_TABLE),
    index=sql.Identifier(WEIRD_INDEX),
)

#: A table whose index expression is slow inside maintenance operations.
SLOW_SETUP = (
    SLOW_FUNCTION
    + """;
CREATE TABLE public.slowt (id int);
INSERT INTO public.slowt SELECT generate_series(1, 400);
CREATE INDEX slow_idx ON public.slowt (public.slow(id));
"""
)

FAR = "2099-01-01T00:00:00Z"


def stats(cluster: Any, db: str, schema: str, table: str) -> dict[str, Any]:
    rows = cluster.execute(
        "SELECT last_vacuum, last_analyze, vacuum_count, analyze_count FROM pg_stat_all_tables"
        " WHERE schemaname = %s AND relname = %s",
        (schema, table),
        dbname=db,
    )
    return dict(zip(("last_vacuum", "last_analyze", "vacuum_count", "analyze_count"), rows[0]))


def filenode(cluster: Any, db: str, schema: str, name: str) -> int:
    return scalar(
        cluster,
        "SELECT c.relfilenode FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
        dbname=db,
    )


def invalid_indexes(cluster: Any, db: str) -> list[str]:
    rows = cluster.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid", dbname=db
    )
    return [r[0] for r in rows]


def active_backend(cluster: Any, op_id: str) -> bool:
    return bool(
        cluster.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
            (f"pgwarden maintenance {op_id}",),
        )
    )


@pytest.fixture
def ops_db(databases: Any) -> str:
    return databases.create("ops", OPS_SETUP)


@pytest.fixture
def slow_db(databases: Any) -> str:
    return databases.create("slow", OPS_SETUP + sql.SQL(SLOW_SETUP))


def test_operations_on_tables_and_indexes_take_effect(api: Client, ops_db: str, pg_cluster: Any) -> None:
    weird = (ops_db, "schema", WEIRD_SCHEMA, "table", WEIRD_TABLE)
    nodes = {(s, i): filenode(pg_cluster, ops_db, s, i) for s, i in (("s1", "t_v"), ("s2", "t_v"), ("s2", "t_pkey"))}
    weird_node = filenode(pg_cluster, ops_db, WEIRD_SCHEMA, WEIRD_INDEX)

    vacuum = run(api, path(*weird, "vacuum"), "vacuum", {"mode": "analyze"})
    analyze = run(api, path(ops_db, "schema", "s1", "table", "t", "analyze"), "analyze")
    reindex_table = run(api, path(ops_db, "schema", "s2", "table", "t", "reindex"), "reindex")
    reindex_index = run(api, path(ops_db, "schema", WEIRD_SCHEMA, "index", WEIRD_INDEX, "reindex"), "reindex")
    for entry in (vacuum, analyze, reindex_table, reindex_index):
        assert entry["status"] == "done" and entry["error"] is None, entry
        assert entry["requested_by"] == "alice" and entry["dbname"] == ops_db
    assert (vacuum["schema"], vacuum["table"], vacuum["index"], vacuum["mode"]) == (
        WEIRD_SCHEMA,
        WEIRD_TABLE,
        None,
        "analyze",
    )
    # an index's REINDEX is listed with its table (the statement still names the index alone)
    assert (reindex_index["table"], reindex_index["index"]) == (WEIRD_TABLE, WEIRD_INDEX)
    assert reindex_index["result"]["statement"] == 'REINDEX INDEX CONCURRENTLY "Sch ""é"" .x/%2F"."Idx ""ß"" .i/%2F"'

    weird_stats = stats(pg_cluster, ops_db, WEIRD_SCHEMA, WEIRD_TABLE)
    assert weird_stats["last_vacuum"] is not None and weird_stats["last_analyze"] is not None
    assert stats(pg_cluster, ops_db, "s1", "t")["last_analyze"] is not None
    assert stats(pg_cluster, ops_db, "s1", "t")["last_vacuum"] is None
    untouched = stats(pg_cluster, ops_db, "s2", "t")
    assert untouched["last_vacuum"] is None and untouched["last_analyze"] is None
    # the user sees it through the API too
    shown = api.get(path(*weird)).json()
    assert shown["vacuum_count"] == 1 and shown["last_vacuum"].endswith("+00")

    assert filenode(pg_cluster, ops_db, "s2", "t_v") != nodes[("s2", "t_v")]
    assert filenode(pg_cluster, ops_db, "s2", "t_pkey") != nodes[("s2", "t_pkey")]
    assert filenode(pg_cluster, ops_db, "s1", "t_v") == nodes[("s1", "t_v")]  # same name, other schema
    assert filenode(pg_cluster, ops_db, WEIRD_SCHEMA, WEIRD_INDEX) != weird_node
    assert invalid_indexes(pg_cluster, ops_db) == []


def test_database_wide_operations(api: Client, databases: Any, pg_cluster: Any) -> None:
    db = databases.create('Wé "db"/%2F', OPS_SETUP)
    node = filenode(pg_cluster, db, "s1", "t_v")
    vacuum = run(api, path(db, "vacuum"), "vacuum", {"mode": "freeze"})
    analyze = run(api, path(db, "analyze"), "analyze")
    reindex = run(api, path(db, "reindex"), "reindex")
    for entry in (vacuum, analyze, reindex):
        assert entry["status"] == "done", entry
        assert (entry["dbname"], entry["schema"], entry["table"], entry["index"]) == (db, None, None, None)
    for schema, table in (("s1", "t"), ("s2", "t"), (WEIRD_SCHEMA, WEIRD_TABLE)):
        seen = stats(pg_cluster, db, schema, table)
        assert seen["last_vacuum"] is not None and seen["last_analyze"] is not None
    assert filenode(pg_cluster, db, "s1", "t_v") != node
    # REINDEX DATABASE CONCURRENTLY skips system catalogs, and says so
    assert any("system catalogs" in n for n in reindex["notices"]), reindex["notices"]
    listed = api.get(path(db, "reindex", "scheduled")).json()
    assert [e["id"] for e in listed] == [reindex["id"]]


def test_every_operation_route_takes_awkward_names(api: Client, databases: Any, pg_cluster: Any) -> None:
    db = databases.create('Wé "db"/%2F', OPS_SETUP)
    schema = (db, "schema", WEIRD_SCHEMA)
    table = (*schema, "table", WEIRD_TABLE)
    index = WEIRD_INDEX
    ran = {
        verb: [run(api, path(db, verb), verb), run(api, path(*table, verb), verb)]
        for verb in ("vacuum", "analyze", "reindex")
    }
    ran["reindex"].append(run(api, path(*schema, "index", index, "reindex"), "reindex"))
    for verb, entries in ran.items():
        assert [e["status"] for e in entries] == ["done"] * len(entries), entries
        ids = [e["id"] for e in entries]
        assert [e["id"] for e in api.get(path(db, verb, "scheduled")).json()] == ids
        assert [e["id"] for e in api.get(path(*table, verb, "scheduled")).json()] == [ids[1]]
    reindexes = [e["id"] for e in ran["reindex"]]
    assert [e["id"] for e in api.get(path(*schema, "reindex", "scheduled")).json()] == reindexes[1:]
    alias = path(*schema, index, "table", WEIRD_TABLE, "reindex", "scheduled")
    assert [e["id"] for e in api.get(alias).json()] == reindexes[1:]
    assert ran["reindex"][2]["index"] == WEIRD_INDEX and ran["vacuum"][1]["table"] == WEIRD_TABLE
    seen = stats(pg_cluster, db, WEIRD_SCHEMA, WEIRD_TABLE)
    assert seen["vacuum_count"] == 2 and seen["analyze_count"] == 2  # database-wide and table
    pending = submit(api, path(*table, "analyze"), {"datetime": FAR})
    assert api.delete(f"/maintenance/analyze/{pending}").json() == {"response": "ok"}


def test_request_bodies_are_validated(api: Client, ops_db: str) -> None:
    table = path(ops_db, "schema", "s1", "table", "t")
    for mode in (None, "", "full", "freeze", "analyze", "full,analyze", " full , freeze,analyze"):
        body = {"datetime": FAR} if mode is None else {"datetime": FAR, "mode": mode}
        op_id = submit(api, f"{table}/vacuum", body)
        expected = None if not mode else ",".join(w.strip() for w in mode.split(","))
        assert operation(api, "vacuum", op_id)["mode"] == expected
    for mode in ("fast", "full,,analyze", "full,full", "FULL", "full;analyze", 3, ["full"], {"full": 1}):
        res = api.post(f"{table}/vacuum", {"mode": mode})
        assert (res.status, res.json()) == (406, {"error": "Parameter 'mode' is malformed."}), mode
    for verb in ("analyze", "reindex"):
        res = api.post(f"{table}/{verb}", {"mode": "analyze"})
        assert (res.status, res.json()) == (406, {"error": "Parameter 'mode' is malformed."}), verb
    for value in (
        "2019-02-30T00:00:00Z",
        "2019-03-22T25:00:00Z",
        "2019-03-22 12:24:39",
        "2019-03-22T12:24:39",
        "2019-03-22T12:24:39+00:00",
        "tomorrow",
        1553257479,
    ):
        res = api.post(f"{table}/analyze", {"datetime": value})
        assert (res.status, res.json()) == (406, {"error": "Parameter 'datetime' is malformed."}), value
    assert api.post(f"{table}/analyze", [FAR]).status == 400
    assert api.post(f"{table}/analyze", body="{").status == 400

    # the temboard UI sends JSON as a form; two identical requests are two operations
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    raw = json.dumps({"datetime": FAR})
    first = api.post(f"{table}/analyze", body=raw, headers=form)
    second = api.post(f"{table}/analyze", body=raw, headers=form)
    assert first.status == second.status == 200
    assert first.json()["id"] != second.json()["id"]
    entry = operation(api, "analyze", first.json()["id"])
    assert (entry["datetime"], entry["status"], entry["mode"]) == (FAR, "todo", None)

    # a past datetime, or none, means now
    past = wait_status(api, "analyze", submit(api, f"{table}/analyze", {"datetime": "2001-01-01T00:00:00Z"}))
    assert past["status"] == "done" and past["datetime"] >= past["created_at"]
    assert wait_status(api, "analyze", submit(api, f"{table}/analyze", body=None))["status"] == "done"


def test_unknown_targets_are_404_naming_them(api: Client, ops_db: str) -> None:
    missing = 'nö "such"/x'
    for url, name in (
        (path(missing, "vacuum"), missing),
        (path(ops_db, "schema", missing, "table", "t", "analyze"), missing),
        (path(ops_db, "schema", "s1", "table", missing, "vacuum"), missing),
        (path(ops_db, "schema", "s1", "table", "t_v", "vacuum"), "t_v"),  # an index is not a table
        (path(ops_db, "schema", "s1", "index", missing, "reindex"), missing),
        (path(ops_db, "schema", "s1", "index", "t", "reindex"), "t"),  # a table is not an index
    ):
        res = api.post(url, {})
        assert res.status == 404, (url, res)
        assert name in res.json()["error"]
    res = api.get(path(ops_db, "schema", "s1", "table", missing, "vacuum", "scheduled"))
    assert res.status == 404 and missing in res.json()["error"]
    assert api.get(path(missing, "reindex", "scheduled")).status == 404
    assert api.get("/maintenance/vacuum/scheduled").json() == []


def test_scheduled_operations_run_at_their_time_unless_canceled(api: Client, ops_db: str, pg_cluster: Any) -> None:
    at = later(2)
    node = filenode(pg_cluster, ops_db, "s1", "t_v")
    reindex = submit(api, path(ops_db, "schema", "s1", "index", "t_v", "reindex"), {"datetime": at})
    runs = submit(api, path(ops_db, "schema", "s1", "table", "t", "vacuum"), {"datetime": at})
    canceled = submit(api, path(ops_db, "schema", "s2", "table", "t", "vacuum"), {"datetime": at})
    analyze = submit(api, path(ops_db, "schema", "s2", "table", "t", "analyze"), {"datetime": at})
    for op_id in (runs, canceled):
        entry = operation(api, "vacuum", op_id)
        assert (entry["status"], entry["datetime"], entry["started_at"]) == ("todo", at, None)

    res = api.delete(f"/maintenance/vacuum/{canceled}")
    assert (res.status, res.json()) == (200, {"response": "ok"})
    assert operation(api, "vacuum", canceled)["status"] == "canceled"
    assert api.delete(f"/maintenance/vacuum/{canceled}").status == 409
    assert api.delete(f"/maintenance/analyze/{runs}").status == 404  # an id of another type
    assert api.delete("/maintenance/vacuum/ffffffff").status == 404
    assert stats(pg_cluster, ops_db, "s1", "t")["last_vacuum"] is None

    done = wait_status(api, "vacuum", runs, timeout=20)
    assert done["status"] == "done" and done["started_at"] >= at
    assert wait_status(api, "analyze", analyze)["status"] == "done"
    assert wait_status(api, "reindex", reindex)["status"] == "done"
    assert stats(pg_cluster, ops_db, "s1", "t")["last_vacuum"] is not None
    assert filenode(pg_cluster, ops_db, "s1", "t_v") != node  # rebuilt at its time
    s2 = stats(pg_cluster, ops_db, "s2", "t")
    assert s2["last_analyze"] is not None and s2["last_vacuum"] is None  # the canceled one never ran
    assert operation(api, "vacuum", canceled)["status"] == "canceled"  # finished operations stay listed


def test_cancel_a_running_vacuum_full(start_agent: Any, slow_db: str, pg_cluster: Any) -> None:
    api = start_agent(maintenance={"max_operations": 1}).login()
    node = filenode(pg_cluster, slow_db, "public", "slowt")
    full = submit(api, path(slow_db, "schema", "public", "table", "slowt", "vacuum"), {"mode": "full"})
    queued = submit(api, path(slow_db, "schema", "s1", "table", "t", "analyze"))

    running = wait_running(api, "vacuum", full)
    assert running["status"] == "doing"
    assert running["progress"]["command"] == "VACUUM FULL"
    assert running["progress"]["relation"] == "public.slowt"
    waiting = operation(api, "analyze", queued)
    assert waiting["status"] == "doing" and "waiting" in waiting["progress"]["phase"]  # max_operations = 1
    shown = api.get(path(slow_db, "schema", "public", "table", "slowt"))  # does not wait for VACUUM FULL's lock
    assert shown.status == 200 and shown.json()["locked"] is True

    res = api.delete(f"/maintenance/vacuum/{full}")
    assert (res.status, res.json()) == (200, {"response": "ok"})
    entry = operation(api, "vacuum", full)
    assert entry["status"] == "canceled"
    assert "canceling statement due to user request" in entry["error"]
    assert not active_backend(pg_cluster, full)
    assert filenode(pg_cluster, slow_db, "public", "slowt") == node  # the rewrite was rolled back
    assert wait_status(api, "analyze", queued)["status"] == "done"
    assert api.delete(f"/maintenance/vacuum/{full}").status == 409


@pytest.mark.parametrize("concurrently", [True, False])
def test_canceled_reindex_leaves_no_invalid_index(
    start_agent: Any, slow_db: str, pg_cluster: Any, concurrently: bool
) -> None:
    api = start_agent(maintenance={"reindex_concurrently": concurrently}).login()
    op_id = submit(api, path(slow_db, "schema", "public", "index", "slow_idx", "reindex"))
    running = wait_running(api, "reindex", op_id)
    expected = "REINDEX CONCURRENTLY" if concurrently else "REINDEX"
    assert running["progress"]["command"] == expected
    if concurrently:  # the new index exists, invalid, while it is built
        wait_for(lambda: invalid_indexes(pg_cluster, slow_db))
    assert api.delete(f"/maintenance/reindex/{op_id}").status == 200
    entry = operation(api, "reindex", op_id)
    assert entry["status"] == "canceled"
    assert invalid_indexes(pg_cluster, slow_db) == []
    assert filenode(pg_cluster, slow_db, "public", "slow_idx") is not None
    if concurrently:
        assert any("dropped invalid index" in n and "slow_idx_ccnew" in n for n in entry["notices"]), entry


def test_failures_keep_their_error(start_agent: Any, ops_db: str, pg_cluster: Any, backends: Any) -> None:
    api = start_agent(maintenance={"lock_timeout": 0.3}).login()
    backends.hold("BEGIN; LOCK TABLE s1.t IN ACCESS EXCLUSIVE MODE", dbname=ops_db)
    failed = run(api, path(ops_db, "schema", "s1", "table", "t", "vacuum"), "vacuum", {"mode": "full"})
    assert failed["status"] == "failed" and "lock timeout" in failed["error"], failed
    # a REINDEX CONCURRENTLY that fails after it built its new index drops it
    backends.hold("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1", dbname=ops_db)
    node = filenode(pg_cluster, ops_db, "s2", "t_v")
    reindex = run(api, path(ops_db, "schema", "s2", "index", "t_v", "reindex"), "reindex")
    assert reindex["status"] == "failed" and "lock timeout" in reindex["error"], reindex
    assert any("dropped invalid index" in n and "t_v_ccnew" in n for n in reindex["notices"]), reindex
    assert invalid_indexes(pg_cluster, ops_db) == []
    assert filenode(pg_cluster, ops_db, "s2", "t_v") == node


def test_without_privileges_the_server_says_why(start_agent: Any, role: str, ops_db: str, pg_cluster: Any) -> None:
    api = start_agent(postgresql={"user": role}).login()
    table = path(ops_db, "schema", "s1", "table", "t")
    denied = run(api, f"{table}/vacuum", "vacuum")
    assert denied["status"] == "failed" and denied["error"] == "permission denied for schema s1", denied
    pg_cluster.execute(sql.SQL("GRANT USAGE ON SCHEMA s1 TO {}").format(sql.Identifier(role)), dbname=ops_db)
    vacuum = run(api, f"{table}/vacuum", "vacuum")  # PostgreSQL warns and skips the table: not done
    assert vacuum["status"] == "failed", vacuum
    assert vacuum["error"] == 'skipping "t" --- only table or database owner can vacuum it', vacuum
    assert any("only table or database owner can vacuum it" in n for n in vacuum["notices"]), vacuum
    analyze = run(api, f"{table}/analyze", "analyze")
    assert analyze["status"] == "failed", analyze
    assert analyze["error"] == 'skipping "t" --- only table or database owner can analyze it', analyze
    reindex = run(api, f"{table}/reindex", "reindex")
    assert reindex["status"] == "failed" and "must be owner of table t" in reindex["error"], reindex
    assert stats(pg_cluster, ops_db, "s1", "t")["last_vacuum"] is None  # nothing was done


def test_scheduled_operation_survives_a_restart(start_agent: Any, ops_db: str, pg_cluster: Any) -> None:
    agent = start_agent()
    at = later(2)
    op_id = submit(agent.login(), path(ops_db, "schema", "s1", "table", "t", "analyze"), {"datetime": at})
    agent.restart()
    api = Keyed(agent.url)
    entry = operation(api, "analyze", op_id)
    assert (entry["status"], entry["datetime"]) == ("todo", at)
    assert wait_status(api, "analyze", op_id, timeout=20)["status"] == "done"
    assert stats(pg_cluster, ops_db, "s1", "t")["last_analyze"] is not None


def test_operation_running_when_the_agent_crashed_is_aborted_and_cleaned(
    start_agent: Any, slow_db: str, pg_cluster: Any, tmp_path: Path
) -> None:
    home = tmp_path / "crashed"
    home.mkdir()
    add_user(UsersFile(str(home / "users")), "alice", PASSWORD)
    port = free_port()
    conf = home / "pgwarden.conf"
    conf.write_text(
        f"[agent]\naddress = 127.0.0.1\nport = {port}\nhome = {home}\nkey = {KEY}\nkey_writes = true\n"
        "plugins = maintenance\n"
        f"[postgresql]\nhost = {pg_cluster.host}\nport = {pg_cluster.port}\nuser = {pg_cluster.superuser}\n"
        "dbname = postgres\n"
    )
    with serve(conf, timeout=20) as served:  # fails unless it answers
        api = Keyed(f"http://127.0.0.1:{port}")
        res = Client(f"http://127.0.0.1:{port}").post(
            path(slow_db, "schema", "public", "index", "slow_idx", "reindex") + f"?key={KEY}", {}
        )
        assert res.status == 200, res
        op_id = res.json()["id"]
        wait_for(lambda: operation(api, "reindex", op_id)["status"] == "doing" and invalid_indexes(pg_cluster, slow_db))
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(10)
        time.sleep(0.2)
        assert active_backend(pg_cluster, op_id)  # killing the client does not stop the server's work

    restarted = start_agent(home=home)
    entry = operation(Keyed(restarted.url), "reindex", op_id)
    assert entry["status"] == "aborted" and "agent stopped" in entry["error"]
    assert any("canceled its backend" in n for n in entry["notices"]), entry  # the clean-up is on record
    assert not active_backend(pg_cluster, op_id)
    assert invalid_indexes(pg_cluster, slow_db) == []
    assert filenode(pg_cluster, slow_db, "public", "slow_idx") is not None


def test_listings_are_filtered_exactly(api: Client, databases: Any) -> None:
    d1 = databases.create("list1", OPS_SETUP)
    d2 = databases.create("list2", OPS_SETUP)
    at = {"datetime": FAR}
    t1, t2 = path(d1, "schema", "s1", "table", "t"), path(d1, "schema", "s2", "table", "t")
    u1 = path(d2, "schema", "s1", "table", "t")
    v1 = submit(api, path(d1, "vacuum"), at)
    v2 = submit(api, f"{t1}/vacuum", at)
    v3 = submit(api, f"{t2}/vacuum", at)
    v4 = submit(api, f"{u1}/vacuum", at)
    a1 = submit(api, f"{t1}/analyze", at)
    r1 = submit(api, path(d1, "reindex"), at)
    r2 = submit(api, f"{t1}/reindex", at)
    r3 = submit(api, path(d1, "schema", "s1", "index", "t_v", "reindex"), at)
    r4 = submit(api, f"{t2}/reindex", at)
    r5 = submit(api, path(d2, "schema", "s1", "index", "t_v", "reindex"), at)

    def ids(url: str) -> set[str]:
        res = api.get(url)
        assert res.status == 200, (url, res)
        assert isinstance(res.json(), list)
        return {e["id"] for e in res.json()}

    assert ids("/maintenance/vacuum/scheduled") == {v1, v2, v3, v4}
    assert ids(path(d1, "vacuum", "scheduled")) == {v1, v2, v3}
    assert ids(f"{t1}/vacuum/scheduled") == {v2}
    assert ids(f"{t2}/vacuum/scheduled") == {v3}
    assert ids(path(d2, "vacuum", "scheduled")) == {v4}
    assert ids("/maintenance/analyze/scheduled") == ids(path(d1, "analyze", "scheduled")) == {a1}
    assert ids(f"{t1}/analyze/scheduled") == {a1} and ids(f"{t2}/analyze/scheduled") == set()
    assert ids(path(d2, "analyze", "scheduled")) == set()
    assert ids("/maintenance/reindex/scheduled") == {r1, r2, r3, r4, r5}
    assert ids(path(d1, "reindex", "scheduled")) == {r1, r2, r3, r4}
    assert ids(path(d1, "schema", "s1", "reindex", "scheduled")) == {r2, r3}
    assert ids(path(d1, "schema", "s1", "t_v", "table", "t", "reindex", "scheduled")) == {r2, r3}  # the alias
    assert ids(f"{t1}/reindex/scheduled") == {r2}
    assert ids(path(d2, "reindex", "scheduled")) == {r5}

    entries = {e["id"]: e for e in api.get("/maintenance/reindex/scheduled").json()}
    reference = {"id", "dbname", "schema", "table", "index", "mode", "datetime", "status"}
    for entry in entries.values():
        assert reference <= set(entry)
        assert (entry["status"], entry["datetime"], entry["mode"]) == ("todo", FAR, None)
    assert (entries[r1]["schema"], entries[r1]["table"], entries[r1]["index"]) == (None, None, None)
    # an index's REINDEX carries its table: the temboard UI 9.x's table page filters the schema listing by it
    assert (entries[r3]["schema"], entries[r3]["table"], entries[r3]["index"]) == ("s1", "t", "t_v")
    schema_listing = api.get(path(d1, "schema", "s1", "reindex", "scheduled")).json()
    assert {e["id"] for e in schema_listing if e["table"] == "t"} == {r2, r3}
    assert (entries[r2]["table"], entries[r2]["index"]) == ("t", None)
    assert api.delete(f"/maintenance/vacuum/{v2}").status == 200
    assert [e["status"] for e in api.get(f"{t1}/vacuum/scheduled").json()] == ["canceled"]


ROUTES = [
    ("GET", "/maintenance"),
    ("GET", "{db}"),
    ("GET", "{db}/schema/s1"),
    ("GET", "{db}/schema/s1/table/t"),
    ("POST", "{db}/vacuum"),
    ("POST", "{db}/analyze"),
    ("POST", "{db}/reindex"),
    ("POST", "{db}/schema/s1/table/t/vacuum"),
    ("POST", "{db}/schema/s1/table/t/analyze"),
    ("POST", "{db}/schema/s1/table/t/reindex"),
    ("POST", "{db}/schema/s1/index/t_v/reindex"),
    ("GET", "/maintenance/vacuum/scheduled"),
    ("GET", "/maintenance/analyze/scheduled"),
    ("GET", "/maintenance/reindex/scheduled"),
    ("GET", "{db}/vacuum/scheduled"),
    ("GET", "{db}/analyze/scheduled"),
    ("GET", "{db}/reindex/scheduled"),
    ("GET", "{db}/schema/s1/table/t/vacuum/scheduled"),
    ("GET", "{db}/schema/s1/table/t/analyze/scheduled"),
    ("GET", "{db}/schema/s1/table/t/reindex/scheduled"),
    ("GET", "{db}/schema/s1/reindex/scheduled"),
    ("GET", "{db}/schema/s1/t_v/table/t/reindex/scheduled"),
    ("DELETE", "/maintenance/vacuum/{op}"),
    ("DELETE", "/maintenance/analyze/{op}"),
    ("DELETE", "/maintenance/reindex/{op}"),
]


@pytest.mark.parametrize("key_writes", [False, True])
def test_key_and_session_rules(start_agent: Any, ops_db: str, key_writes: bool) -> None:
    """Every route takes a session or the agent key (query or header); nothing
    else gets through. The key schedules and cancels only with
    ``[agent] key_writes``; otherwise it gets 403 on those routes."""
    magent = start_agent(agent={"key_writes": key_writes})
    api = magent.login()
    anonymous = magent.client()
    for method, template in ROUTES:
        op = ""
        if method == "DELETE":
            verb = template.split("/")[2]
            op = submit(api, path(ops_db, "schema", "s1", "table", "t", verb), {"datetime": FAR})
        url = template.format(db=path(ops_db), op=op)
        body = {"datetime": FAR} if method == "POST" else None
        kw: dict[str, Any] = {"json": body} if body else {}
        assert anonymous.request(method, url, **kw).status == 406, url
        assert anonymous.request(method, f"{url}?key=wrong", **kw).status == 401, url
        assert anonymous.request(method, url, headers={"X-Session": "0" * 64}, **kw).status == 401, url
        if method != "GET" and not key_writes:
            res = anonymous.request(method, f"{url}?key={KEY}", **kw)
            assert res.status == 403 and "read-only" in res.json()["error"], url
            assert anonymous.request(method, url, headers={"X-Pgwarden-Key": KEY}, **kw).status == 403, url
            assert api.request(method, url, **kw).status == 200, url
            continue
        assert anonymous.request(method, f"{url}?key={KEY}", **kw).status == 200, url
        if method == "DELETE":  # canceled by the key already
            assert api.request(method, url).status == 409, url
            continue
        assert anonymous.request(method, url, headers={"X-Pgwarden-Key": KEY}, **kw).status == 200, url
        assert api.request(method, url, **kw).status == 200, url


def test_operations_on_one_table_wait_for_each_other(start_agent: Any, slow_db: str, pg_cluster: Any) -> None:
    """A VACUUM and a REINDEX of the same table never run together (they could
    deadlock); an operation on another table does not wait."""
    api = start_agent(maintenance={"max_operations": 3}).login()
    reindex = submit(api, path(slow_db, "schema", "public", "index", "slow_idx", "reindex"))
    wait_running(api, "reindex", reindex)
    vacuum = submit(api, path(slow_db, "schema", "public", "table", "slowt", "vacuum"))
    other = submit(api, path(slow_db, "schema", "s1", "table", "t", "analyze"))
    assert wait_status(api, "analyze", other)["status"] == "done"  # another table: not held back
    assert operation(api, "vacuum", vacuum)["status"] == "doing"
    assert not active_backend(pg_cluster, vacuum)  # waiting for the REINDEX, not running beside it
    assert active_backend(pg_cluster, reindex)
    assert api.delete(f"/maintenance/reindex/{reindex}").json() == {"response": "ok"}
    entry = wait_status(api, "vacuum", vacuum)
    assert entry["status"] == "done" and entry["error"] is None, entry
