"""The read routes against a real cluster: sizes checked against PostgreSQL's own
functions, objects told apart by schema, every index access method, partitioned
tables, bloat estimates that follow real bloat, 404s, names with any character."""

from __future__ import annotations

import time
from datetime import timezone
from typing import Any

import pytest
from maintenance_helpers import WEIRD_INDEX, WEIRD_SCHEMA, WEIRD_TABLE, path, scalar
from psycopg2 import sql

from agent_core.testing import Databases
from agent_maintenance.sizes import pretty

READS_SETUP = sql.SQL(
    """
CREATE SCHEMA s1;
CREATE SCHEMA s2;
CREATE SCHEMA {schema};
CREATE SCHEMA "CaseS";
CREATE TABLE s1.t (id int PRIMARY KEY, v text, n int, doc tsvector, p point, ts timestamptz);
INSERT INTO s1.t
  SELECT i, repeat('x', 40) || i, CASE WHEN i % 3 = 0 THEN NULL ELSE i END,
         to_tsvector('simple', 'word' || i % 50), point(i, i), now()
  FROM generate_series(1, 5000) i;
CREATE INDEX t_v ON s1.t (v);
CREATE INDEX t_hash ON s1.t USING hash (id);
CREATE INDEX t_gin ON s1.t USING gin (doc);
CREATE INDEX t_gist ON s1.t USING gist (p);
CREATE INDEX t_brin ON s1.t USING brin (ts);
CREATE INDEX t_expr ON s1.t (lower(v));
CREATE INDEX t_partial ON s1.t (n) WHERE n > 100;
CREATE TABLE s2.t (id int PRIMARY KEY, big text);
INSERT INTO s2.t SELECT i, (SELECT string_agg(md5(random()::text || j), '') FROM generate_series(1, 200) j)
  FROM generate_series(1, 50) i;
CREATE TABLE public.parted (id int, k int) PARTITION BY RANGE (id);
CREATE TABLE public.parted_1 PARTITION OF public.parted FOR VALUES FROM (0) TO (1000);
CREATE TABLE s2.parted_2 PARTITION OF public.parted FOR VALUES FROM (1000) TO (3000);
CREATE INDEX parted_k ON public.parted (k);
INSERT INTO public.parted SELECT i, i % 7 FROM generate_series(0, 2999) i;
CREATE MATERIALIZED VIEW public.mv AS SELECT id FROM s1.t WHERE id < 100;
CREATE TABLE {table} (id int, "Weird Col" text);
CREATE INDEX {index} ON {table} (id);
INSERT INTO {table} SELECT i, 'v' || i FROM generate_series(1, 300) i;
CREATE TABLE "CaseS"."T" (id int);
ANALYZE;
CREATE TABLE public.fresh (id int PRIMARY KEY);
INSERT INTO public.fresh SELECT generate_series(1, 1000);
"""
).format(
    schema=sql.Identifier(WEIRD_SCHEMA),
    table=sql.Identifier(WEIRD_SCHEMA, WEIRD_TABLE),
    index=sql.Identifier(WEIRD_INDEX),
)

#: Sizes of every table with storage and of its indexes, as PostgreSQL says.
SIZES = """
SELECT n.nspname, c.relname, c.relkind, c.oid::text AS relid, c.reltuples,
       pg_table_size(c.oid) AS table_size, pg_indexes_size(c.oid) AS indexes_size,
       pg_total_relation_size(c.oid) AS total_size,
       coalesce(pg_total_relation_size(nullif(c.reltoastrelid, 0)), 0) AS toast_size,
       (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) AS n_indexes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't'
"""


@pytest.fixture(scope="module")
def reads_db(pg_cluster: Any) -> Any:
    """One database for the read-only tests of this module (dropped at the end)."""
    databases = Databases(pg_cluster)
    try:
        yield databases.create('Wé "db"/%2F', READS_SETUP)
    finally:
        databases.drop_all()


def pg_sizes(cluster: Any, dbname: str) -> dict[tuple[str, str], dict[str, Any]]:
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(SIZES)
            names = [d[0] for d in cur.description]
            return {(r[0], r[1]): dict(zip(names, r)) for r in cur.fetchall()}
    finally:
        conn.close()


def index_sizes(cluster: Any, dbname: str) -> dict[tuple[str, str], int]:
    rows = cluster.execute(
        "SELECT n.nspname, c.relname, pg_total_relation_size(c.oid) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'i'",
        dbname=dbname,
    )
    return {(r[0], r[1]): r[2] for r in rows}


def get(api: Any, *parts: str) -> Any:
    res = api.get(path(*parts))
    assert res.status == 200, res
    return res.json()


def assert_sizes_named(entry: dict[str, Any]) -> None:
    """Every ``x_bytes`` has its ``x_size`` as pg_size_pretty prints it."""
    for name, value in entry.items():
        if name.endswith("_bytes"):
            assert entry[name[: -len("_bytes")] + "_size"] == pretty(value), name


def test_table_sizes_match_postgres_functions(api: Any, reads_db: str, pg_cluster: Any) -> None:
    sizes = pg_sizes(pg_cluster, reads_db)
    indexes = index_sizes(pg_cluster, reads_db)
    for schema, table in (("s1", "t"), ("s2", "t"), (WEIRD_SCHEMA, WEIRD_TABLE), ("public", "mv")):
        pg = sizes[(schema, table)]
        got = get(api, reads_db, "schema", schema, "table", table)
        assert got["name"] == got["relname"] == table
        assert got["schemaname"] == schema
        assert got["relid"] == pg["relid"]
        assert got["table_bytes"] + got["toast_bytes"] == pg["table_size"]
        assert got["toast_bytes"] == pg["toast_size"]
        assert got["index_bytes"] == pg["indexes_size"]
        assert got["total_bytes"] == pg["total_size"]
        assert got["row_estimate"] == pg["reltuples"]
        assert got["n_indexes"] == pg["n_indexes"] == len(got["indexes"])
        assert sum(i["total_bytes"] for i in got["indexes"]) == pg["indexes_size"]
        for index in got["indexes"]:
            assert index["total_bytes"] == indexes[(schema, index["name"])]
            assert_sizes_named(index)
        assert_sizes_named(got)
        assert got["fillfactor"] == 100
    # big values of s2.t live in its TOAST table, counted with it
    assert get(api, reads_db, "schema", "s2", "table", "t")["toast_bytes"] > 50 * 4096


def test_schema_database_and_instance_totals(api: Any, reads_db: str, pg_cluster: Any) -> None:
    sizes = pg_sizes(pg_cluster, reads_db)
    stored = {k: v for k, v in sizes.items() if v["relkind"] != "p"}

    schema = get(api, reads_db, "schema", "s1")
    assert schema["total_bytes"] == sum(v["total_size"] for (n, _), v in stored.items() if n == "s1")
    assert schema["size"] == pretty(schema["total_bytes"])
    assert [t["name"] for t in schema["tables"]] == ["t"]
    assert {i["name"] for i in schema["indexes"]} == {
        "t_pkey", "t_v", "t_hash", "t_gin", "t_gist", "t_brin", "t_expr", "t_partial",
    }  # fmt: skip

    database = get(api, reads_db)
    by_name = {s["name"]: s for s in database["schemas"]}
    assert set(by_name) == {"public", "s1", "s2", WEIRD_SCHEMA, "CaseS", "pg_catalog", "information_schema"}
    for name, entry in by_name.items():
        mine = {k: v for k, v in stored.items() if k[0] == name}
        assert entry["total_bytes"] == sum(v["total_size"] for v in mine.values()), name
        assert entry["tables_bytes"] + entry["toast_bytes"] == sum(v["table_size"] for v in mine.values()), name
        assert entry["toast_bytes"] == sum(v["toast_size"] for v in mine.values()), name
        assert entry["indexes_bytes"] == sum(v["indexes_size"] for v in mine.values()), name
        assert entry["n_tables"] == len([k for k in sizes if k[0] == name]), name
        assert entry["n_indexes"] == sum(v["n_indexes"] for k, v in sizes.items() if k[0] == name), name
        assert_sizes_named(entry)
    db_size = scalar(pg_cluster, "SELECT pg_database_size(current_database())", dbname=reads_db)
    assert database["total_bytes"] == db_size
    assert database["total_size"] == pretty(db_size)

    instance = get(api)
    entries = {d["datname"]: d for d in instance["databases"]}
    assert "postgres" in entries and "template0" not in entries and "template1" not in entries
    mine = entries[reads_db]
    assert mine["total_bytes"] == db_size
    assert mine["n_tables"] == len(sizes)
    assert mine["tables_bytes"] == sum(e["tables_bytes"] for e in database["schemas"])
    assert mine["indexes_bloat_bytes"] == sum(e["indexes_bloat_bytes"] or 0 for e in database["schemas"])
    assert instance["instance"]["total_bytes"] == sum(d["total_bytes"] for d in instance["databases"])
    assert instance["instance"]["total_size"] == pretty(instance["instance"]["total_bytes"])


def test_same_names_in_two_schemas_are_never_mixed(api: Any, reads_db: str, pg_cluster: Any) -> None:
    before = {s: get(api, reads_db, "schema", s, "table", "t") for s in ("s1", "s2")}
    for _ in range(3):
        pg_cluster.execute("SELECT count(*) FROM s2.t", dbname=reads_db)
    after = {s: get(api, reads_db, "schema", s, "table", "t") for s in ("s1", "s2")}
    assert after["s2"]["seq_scan"] == before["s2"]["seq_scan"] + 3
    assert after["s1"]["seq_scan"] == before["s1"]["seq_scan"]

    s1, s2 = after["s1"], after["s2"]
    for schema, got in after.items():  # the usage counters are pg_stat_all_tables' own
        conn = pg_cluster.connect(reads_db)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM pg_stat_all_tables WHERE schemaname = %s AND relname = 't'", (schema,))
                pg = dict(zip([d[0] for d in cur.description], cur.fetchone()))
        finally:
            conn.close()
        assert got["relid"] == str(pg["relid"])
        for name in ("seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del",
                     "n_tup_hot_upd", "n_live_tup", "n_dead_tup", "n_mod_since_analyze", "vacuum_count",
                     "autovacuum_count", "analyze_count", "autoanalyze_count"):  # fmt: skip
            assert got[name] == pg[name], (schema, name)
        assert got["last_analyze"] == pg["last_analyze"].astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")
        assert got["last_vacuum"] is pg["last_vacuum"] is None
    assert s1["relid"] != s2["relid"]
    assert (s1["row_estimate"], s2["row_estimate"]) == (5000, 50)
    assert (s1["n_indexes"], s2["n_indexes"]) == (8, 1)
    indexes = index_sizes(pg_cluster, reads_db)
    pkey1 = next(i for i in s1["indexes"] if i["name"] == "t_pkey")
    pkey2 = next(i for i in s2["indexes"] if i["name"] == "t_pkey")
    assert "ON s1.t " in pkey1["def"] and "ON s2.t " in pkey2["def"]
    assert pkey1["total_bytes"] == indexes[("s1", "t_pkey")] != pkey2["total_bytes"] == indexes[("s2", "t_pkey")]
    listed = get(api, reads_db, "schema", "s2")
    assert sorted(t["name"] for t in listed["tables"]) == ["parted_2", "t"]
    assert next(t for t in listed["tables"] if t["name"] == "t")["n_indexes"] == 1


def test_every_index_access_method_is_listed(api: Any, reads_db: str) -> None:
    got = {i["name"]: i for i in get(api, reads_db, "schema", "s1", "table", "t")["indexes"]}
    assert {name: i["type"] for name, i in got.items()} == {
        "t_pkey": "btree", "t_v": "btree", "t_expr": "btree", "t_partial": "btree",
        "t_hash": "hash", "t_gin": "gin", "t_gist": "gist", "t_brin": "brin",
    }  # fmt: skip
    for name, index in got.items():
        assert index["total_bytes"] > 0, name
        if index["type"] == "btree":
            assert isinstance(index["bloat_bytes"], int) and index["bloat_bytes"] >= 0, name
        else:  # no honest estimate for other access methods
            assert index["bloat_bytes"] is None and index["bloat_size"] is None, name
    assert got["t_pkey"]["indisunique"] is True and got["t_v"]["indisunique"] is False
    assert "WHERE (n > 100)" in got["t_partial"]["def"]
    assert "lower(v)" in got["t_expr"]["def"]
    assert got["t_pkey"]["number_of_columns"] == 1
    assert got["t_pkey"]["tablename"] == "t" and got["t_pkey"]["tablespace"] is None


def test_partitioned_table_reports_the_sum_of_its_partitions(api: Any, reads_db: str, pg_cluster: Any) -> None:
    sizes = pg_sizes(pg_cluster, reads_db)
    parts = [sizes[("public", "parted_1")], sizes[("s2", "parted_2")]]
    got = get(api, reads_db, "schema", "public", "table", "parted")
    assert got["kind"] == "partitioned table" and got["n_partitions"] == 2
    assert got["total_bytes"] == sum(p["total_size"] for p in parts) > 0
    assert got["table_bytes"] + got["toast_bytes"] == sum(p["table_size"] for p in parts)
    assert got["index_bytes"] == sum(p["indexes_size"] for p in parts)
    assert got["row_estimate"] == 3000
    assert got["bloat_bytes"] is not None and got["index_bloat_bytes"] is not None
    assert got["n_tup_ins"] == 3000
    (index,) = got["indexes"]
    indexes = index_sizes(pg_cluster, reads_db)
    assert index["name"] == "parted_k"
    assert index["total_bytes"] == indexes[("public", "parted_1_k_idx")] + indexes[("s2", "parted_2_k_idx")]
    # the schema counts each partition once, in its own schema
    public = get(api, reads_db, "schema", "public")
    stored = [v for (n, _), v in sizes.items() if n == "public" and v["relkind"] != "p"]
    assert public["total_bytes"] == sum(v["total_size"] for v in stored)
    assert {t["name"] for t in public["tables"]} == {"parted", "parted_1", "mv", "fresh"}


def test_bloat_is_null_until_statistics_exist(api: Any, reads_db: str, pg_cluster: Any) -> None:
    got = get(api, reads_db, "schema", "public", "table", "fresh")
    assert got["bloat_bytes"] is None and got["bloat_size"] is None
    assert got["index_bloat_bytes"] is None
    assert got["row_estimate"] is None  # reltuples is -1: never analysed
    assert got["indexes"][0]["bloat_bytes"] is None
    pg_cluster.execute("ANALYZE public.fresh", dbname=reads_db)
    got = get(api, reads_db, "schema", "public", "table", "fresh")
    assert got["row_estimate"] == 1000
    assert got["bloat_bytes"] is not None and got["indexes"][0]["bloat_bytes"] is not None


def test_unknown_objects_are_404_naming_them(api: Any, reads_db: str) -> None:
    missing = 'nö "such"/thing'
    for parts, name in (
        ((missing,), missing),
        ((reads_db, "schema", missing), missing),
        ((reads_db, "schema", "s1", "table", missing), missing),
        ((reads_db, "schema", "cases"), "cases"),  # names are case-sensitive
        ((reads_db, "schema", "CaseS", "table", "t"), "t"),
        ((reads_db, "schema", "s1", "table", "T"), "T"),
        ((reads_db, "schema", "pg_toast"), "pg_toast"),
    ):
        res = api.get(path(*parts))
        assert res.status == 404, (parts, res)
        assert name in res.json()["error"], res
    assert get(api, reads_db, "schema", "CaseS", "table", "T")["name"] == "T"


def test_names_with_any_character(api: Any, reads_db: str) -> None:
    assert reads_db in {d["datname"] for d in get(api)["databases"]}
    assert WEIRD_SCHEMA in {s["name"] for s in get(api, reads_db)["schemas"]}
    schema = get(api, reads_db, "schema", WEIRD_SCHEMA)
    assert [t["name"] for t in schema["tables"]] == [WEIRD_TABLE]
    assert [i["name"] for i in schema["indexes"]] == [WEIRD_INDEX]
    table = get(api, reads_db, "schema", WEIRD_SCHEMA, "table", WEIRD_TABLE)
    assert (table["schemaname"], table["relname"]) == (WEIRD_SCHEMA, WEIRD_TABLE)
    assert table["row_estimate"] == 300 and table["bloat_bytes"] is not None
    assert table["indexes"][0]["name"] == WEIRD_INDEX and table["indexes"][0]["tablename"] == WEIRD_TABLE
    # a slash must be encoded: unencoded, it is a separator and the path names nothing
    res = api.get(path(reads_db, "schema") + "/Sch%20%22%C3%A9%22%20.x/%252F")
    assert res.status == 404, res


def test_temporary_schemas_of_other_sessions_are_left_out(api: Any, reads_db: str, backends: Any) -> None:
    held = backends.hold("CREATE TEMP TABLE scratch (id int); INSERT INTO scratch VALUES (1)", dbname=reads_db)
    with held.conn.cursor() as cur:
        cur.execute("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
        temp_schema = cur.fetchone()[0]
    assert temp_schema.startswith("pg_temp_")
    names = {s["name"] for s in get(api, reads_db)["schemas"]}
    assert not {n for n in names if n.startswith(("pg_temp", "pg_toast"))}
    assert api.get(path(reads_db, "schema", temp_schema)).status == 404


def test_bloat_estimates_follow_real_bloat(api: Any, db: str, pg_cluster: Any) -> None:
    """Estimates, not measures: they must still tell a packed table from a
    table that lost 90 % of its rows, and agree with pgstattuple's scan."""
    try:
        pg_cluster.execute("CREATE EXTENSION pgstattuple", dbname=db)
    except Exception:  # contrib not installed: compare with the expected shape only
        exact = False
    else:
        exact = True
    pg_cluster.execute(
        "CREATE TABLE b (id int PRIMARY KEY, pad text);"
        " INSERT INTO b SELECT i, repeat('z', 100) FROM generate_series(1, 20000) i; ANALYZE b",
        dbname=db,
    )
    packed = get(api, db, "schema", "public", "table", "b")
    assert packed["bloat_bytes"] <= 0.05 * packed["table_bytes"] + 8192
    assert packed["index_bloat_bytes"] <= 0.1 * packed["index_bytes"] + 8192

    pg_cluster.execute("DELETE FROM b WHERE id % 10 <> 0", dbname=db)
    pg_cluster.execute("VACUUM ANALYZE b", dbname=db)
    bloated = get(api, db, "schema", "public", "table", "b")
    assert bloated["table_bytes"] >= packed["table_bytes"] * 0.95  # space stays allocated
    assert bloated["bloat_bytes"] >= 0.8 * bloated["table_bytes"]
    assert bloated["index_bloat_bytes"] >= 0.7 * bloated["index_bytes"]
    if exact:
        free = scalar(pg_cluster, "SELECT free_space + dead_tuple_len FROM pgstattuple('b')", dbname=db)
        assert abs(bloated["bloat_bytes"] - free) <= 0.1 * bloated["table_bytes"]

    pg_cluster.execute("VACUUM FULL b", dbname=db)
    pg_cluster.execute("ANALYZE b", dbname=db)
    repacked = get(api, db, "schema", "public", "table", "b")
    assert repacked["table_bytes"] < bloated["table_bytes"] / 5
    assert repacked["bloat_bytes"] <= 0.05 * repacked["table_bytes"] + 8192
    assert repacked["index_bloat_bytes"] <= 0.1 * repacked["index_bytes"] + 8192


def test_without_select_privilege_bloat_is_null(start_agent: Any, role: str, db: str, pg_cluster: Any) -> None:
    pg_cluster.execute(
        "CREATE TABLE p (id int PRIMARY KEY, v text); INSERT INTO p SELECT i, 'x' FROM generate_series(1, 500) i;"
        " ANALYZE p",
        dbname=db,
    )
    api = start_agent(postgresql={"user": role}).login()
    got = get(api, db, "schema", "public", "table", "p")
    assert got["total_bytes"] > 0 and got["row_estimate"] == 500
    assert got["bloat_bytes"] is None and got["indexes"][0]["bloat_bytes"] is None  # pg_stats hides the columns
    pg_cluster.execute(sql.SQL("GRANT SELECT ON p TO {}").format(sql.Identifier(role)), dbname=db)
    got = get(api, db, "schema", "public", "table", "p")
    assert got["bloat_bytes"] is not None and got["indexes"][0]["bloat_bytes"] is not None


def test_tables_locked_by_another_session_do_not_block_reads(api: Any, reads_db: str, backends: Any) -> None:
    """A VACUUM FULL (or LOCK TABLE) holds ACCESS EXCLUSIVE: measuring the table
    would wait for it. Its sizes then come from the catalog, flagged ``locked``."""
    backends.hold("BEGIN; LOCK TABLE s2.t, s2.parted_2 IN ACCESS EXCLUSIVE MODE", dbname=reads_db)
    started = time.monotonic()
    table = get(api, reads_db, "schema", "s2", "table", "t")
    schema = get(api, reads_db, "schema", "s2")
    parted = get(api, reads_db, "schema", "public", "table", "parted")
    get(api, reads_db)
    get(api)
    assert time.monotonic() - started < 5  # [postgresql] statement_timeout is 30 s
    assert table["locked"] is True and table["total_bytes"] > 0
    assert table["indexes"][0]["locked"] is True and table["indexes"][0]["def"] is None
    assert {t["name"]: t["locked"] for t in schema["tables"]} == {"t": True, "parted_2": True}
    assert parted["locked"] is True and parted["total_bytes"] > 0
    free = get(api, reads_db, "schema", "s1", "table", "t")
    assert free["locked"] is False and all(i["def"] for i in free["indexes"])


def test_a_read_waiting_past_statement_timeout_is_504(start_agent: Any, db: str, backends: Any) -> None:
    api = start_agent(postgresql={"statement_timeout": 1}, maintenance={"estimates_max_age": 0}).login()
    assert get(api, db)["name"] == db  # not reused: [maintenance] estimates_max_age = 0
    backends.hold("BEGIN; LOCK TABLE pg_catalog.pg_inherits IN ACCESS EXCLUSIVE MODE", dbname=db)
    res = api.get(path(db))
    assert res.status == 504, res
    assert db in res.json()["error"] and "statement_timeout" in res.json()["error"]
