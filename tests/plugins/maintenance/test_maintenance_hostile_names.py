"""Hostile schema, table and index names through every maintenance read
route and every table and index operation.

Each name is at once a schema, a table in it (with a ``canary`` table beside
it) and, case swapped, an index of that table. Reads must answer the object
of that exact name (checked by OID); VACUUM FULL, ANALYZE and REINDEX must
rewrite or analyse exactly it (checked in ``pg_class``: a new relfilenode, a
reltuples set), while every canary and the ``public.canary`` table keep their
relfilenode and stay never analysed. No response may carry a PostgreSQL
error. (Database-wide operations and a hostile database name are covered by
``test_every_operation_route_takes_awkward_names``.)
"""

from __future__ import annotations

from typing import Any

from maintenance_helpers import path, submit, wait_status
from psycopg2 import sql

from agent_core.testing import Client, Cluster

NAMES = [
    'dq"uote',
    "sq'uote",
    "semi;colon",
    "sp ace",
    "do.t",
    "back\\slash",
    "CapiTal",
    "nön-äscii €",
    'x"; DROP TABLE canary; --',
    "'); DROP SCHEMA public CASCADE; --",
    "é" * 31 + "x",  # 63 bytes: PostgreSQL's maximum
]
assert len(NAMES[-1].encode()) == 63 and all(len(n.encode()) <= 63 for n in NAMES)
#: PostgreSQL messages that must never reach a client
SQL_ERRORS = ("syntax error", "does not exist", "psycopg2", "Traceback", "LINE 1", "relation ")


def setup_sql() -> sql.Composed:
    parts = [sql.SQL("CREATE TABLE public.canary (id int PRIMARY KEY); INSERT INTO public.canary VALUES (1), (2);")]
    for i, name in enumerate(NAMES):
        schema, table, index = sql.Identifier(name), sql.Identifier(name, name), sql.Identifier(name.swapcase())
        canary = sql.Identifier(name, "canary")
        parts.append(
            sql.SQL(
                "CREATE SCHEMA {schema}; CREATE TABLE {table} (id int PRIMARY KEY, v text);"
                " CREATE INDEX {index} ON {table} (v);"
                " INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;"
                " CREATE TABLE {canary} (id int PRIMARY KEY); INSERT INTO {canary} VALUES (1), (2);"
            ).format(schema=schema, table=table, index=index, canary=canary, rows=sql.Literal(10 + i))
        )
    return sql.SQL(" ").join(parts)


def catalog(cluster: Cluster, db: str) -> dict[tuple[str, str], tuple[int, int, float]]:
    """(schema, relation) -> (oid, relfilenode, reltuples) of every user relation."""
    rows = cluster.execute(
        "SELECT n.nspname, c.relname, c.oid::int, c.relfilenode::int, c.reltuples::float8"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
        dbname=db,
    )
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


def ok(api: Client, url: str) -> Any:
    res = api.get(url)
    assert res.status == 200, (url, res)
    assert not any(e in res.text for e in SQL_ERRORS), res
    return res.json()


def test_hostile_names_read_and_maintain_exactly_their_object(api: Client, databases: Any, pg_cluster: Cluster) -> None:
    db = databases.create("hostile", setup_sql())
    before = catalog(pg_cluster, db)

    # reads: the object of that exact name, by OID
    schemas = {s["name"] for s in ok(api, path(db))["schemas"]}
    assert set(NAMES) <= schemas
    for name in NAMES:
        report = ok(api, path(db, "schema", name))
        assert report["name"] == name
        assert sorted(t["name"] for t in report["tables"]) == sorted([name, "canary"])
        assert {i["name"] for i in report["indexes"]} >= {name.swapcase()}
        table = ok(api, path(db, "schema", name, "table", name))
        assert (table["schemaname"], table["relname"]) == (name, name)
        assert int(table["relid"]) == before[(name, name)][0]
        assert [i["name"] for i in table["indexes"] if not i["name"].endswith("_pkey")] == [name.swapcase()]
    assert db in {d["datname"] for d in ok(api, "/maintenance")["databases"]}

    # operations: all submitted, then waited for
    submitted = []
    for name in NAMES:
        table = (db, "schema", name, "table", name)
        submitted += [
            ("vacuum", submit(api, path(*table, "vacuum"), {"mode": "full"})),
            ("analyze", submit(api, path(*table, "analyze"))),
            ("reindex", submit(api, path(db, "schema", name, "index", name.swapcase(), "reindex"))),
        ]
    for verb, op_id in submitted:
        entry = wait_status(api, verb, op_id, timeout=60)
        assert entry["status"] == "done", entry
        assert not any(e in str(entry["error"] or "") for e in SQL_ERRORS), entry
    for name in NAMES:
        table = (db, "schema", name, "table", name)
        listed = {
            (e["schema"], e["table"])
            for verb in ("vacuum", "analyze")
            for e in ok(api, path(*table, verb, "scheduled"))
        }
        assert listed == {(name, name)}
        reindexes = ok(api, path(db, "schema", name, "reindex", "scheduled"))
        assert [(e["schema"], e["index"]) for e in reindexes] == [(name, name.swapcase())]

    after = catalog(pg_cluster, db)
    for i, name in enumerate(NAMES):
        assert after[(name, name)][1] != before[(name, name)][1], f"VACUUM FULL did not rewrite {name!r}"
        assert after[(name, name)][2] == 10 + i, f"{name!r} not analysed"
        idx = name.swapcase()
        assert after[(name, idx)][1] != before[(name, idx)][1], f"REINDEX did not rebuild {idx!r}"
    canaries = [key for key in before if key[1] in ("canary", "canary_pkey")]
    assert len(canaries) == 2 * (len(NAMES) + 1)
    for key in canaries:
        assert after[key][:2] == before[key][:2], f"canary {key} was rewritten"
        assert after[key][2] == before[key][2], f"canary {key} was analysed"
        assert key[1] == "canary_pkey" or after[key][2] == -1, f"canary {key} was analysed"
    assert set(after) == set(before)  # nothing dropped, nothing left behind


def test_a_name_longer_than_63_bytes_is_not_truncated_onto_another_object(
    api: Client, databases: Any, pg_cluster: Cluster
) -> None:
    """PostgreSQL truncates identifiers in SQL to 63 bytes; the agent looks names
    up as values, so a 64-byte name is unknown instead of naming its 63-byte prefix."""
    name = NAMES[-1]
    db = databases.create("hostile", setup_sql())
    longer = name + "y"
    for url in (
        path(db, "schema", longer),
        path(db, "schema", name, "table", longer),
        path(db, "schema", name, "table", longer, "vacuum", "scheduled"),
    ):
        res = api.get(url)
        assert res.status == 404 and set(res.json()) == {"error"}, (url, res)
    res = api.post(path(db, "schema", name, "table", longer, "vacuum"), {"mode": "full"})
    assert res.status == 404, res
    res = api.post(path(db, "schema", name, "index", longer, "reindex"), {})
    assert res.status == 404, res
