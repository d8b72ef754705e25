"""The JSON documents of the read routes, built from :data:`queries.RELATIONS` rows.

Sums are made here, over the tables with storage: a partitioned table's row
already holds the sums of its partitions, which have rows of their own, so
it is counted in ``n_tables`` but not in byte totals. A bloat total is the
sum of the estimates that exist, or null when none does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .sizes import pretty

KINDS = {"r": "table", "p": "partitioned table", "m": "materialized view"}
_COUNTERS = (
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_fetch",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_del",
    "n_tup_hot_upd",
    "n_live_tup",
    "n_dead_tup",
    "n_mod_since_analyze",
    "vacuum_count",
    "autovacuum_count",
    "analyze_count",
    "autoanalyze_count",
)
_TIMESTAMPS = ("last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze")


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def timestamp(value: datetime | None) -> str | None:
    """As PostgreSQL prints a timestamptz in UTC: ``2019-03-22 10:37:19.577101+00``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _sum(values: Iterable[Any]) -> int | None:
    known = [int(v) for v in values if v is not None]
    return sum(known) if known else None


def _with_sizes(entry: dict[str, Any], *names: str) -> dict[str, Any]:
    """Add ``<name>_size`` beside each ``<name>_bytes``."""
    for name in names:
        entry[f"{name}_size"] = pretty(entry[f"{name}_bytes"])
    return entry


def index_entry(item: dict[str, Any]) -> dict[str, Any]:
    """An index as :data:`queries.RELATIONS` gives it (JSON), with its sizes."""
    entry = dict(item)
    entry["total_size"] = pretty(entry["total_bytes"])
    entry["bloat_size"] = pretty(entry["bloat_bytes"])
    return entry


def table_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A table as listed in a schema."""
    entry = {
        "name": row["relname"],
        "schemaname": row["schemaname"],
        "kind": KINDS[row["relkind"]],
        "n_indexes": int(row["n_indexes"]),
        "n_partitions": int(row["n_partitions"]),
        "locked": row["locked"],
        "row_estimate": None if row["row_estimate"] is None else float(row["row_estimate"]),
        "table_bytes": int(row["table_bytes"]),
        "toast_bytes": int(row["toast_bytes"]),
        "index_bytes": int(row["index_bytes"]),
        "total_bytes": int(row["table_bytes"]) + int(row["toast_bytes"]) + int(row["index_bytes"]),
        "bloat_bytes": _int(row["bloat_bytes"]),
        "index_bloat_bytes": _int(row["index_bloat_bytes"]),
    }
    return _with_sizes(entry, "table", "toast", "index", "total", "bloat", "index_bloat")


def table_details(row: dict[str, Any]) -> dict[str, Any]:
    """One table with its usage counters and its indexes."""
    entry = table_entry(row)
    entry.update(
        relid=str(row["relid"]),
        relname=row["relname"],
        fillfactor=row["fillfactor"],
        indexes=[index_entry(i) for i in row["indexes"] or []],
    )
    for name in _COUNTERS:
        entry[name] = _int(row[name])
    for name in _TIMESTAMPS:
        entry[name] = timestamp(row[name])
    return entry


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts, sizes and bloat of a set of tables (a schema, a database)."""
    rows = list(rows)
    stored = [r for r in rows if r["relkind"] != "p"]
    tables = sum(int(r["table_bytes"]) for r in stored)
    toast = sum(int(r["toast_bytes"]) for r in stored)
    indexes = sum(int(r["index_bytes"]) for r in stored)
    entry = {
        "n_tables": len(rows),
        "n_indexes": sum(int(r["n_indexes"]) for r in rows),
        "tables_bytes": tables,
        "toast_bytes": toast,
        "indexes_bytes": indexes,
        "total_bytes": tables + toast + indexes,
        "tables_bloat_bytes": _sum(r["bloat_bytes"] for r in stored),
        "indexes_bloat_bytes": _sum(r["index_bloat_bytes"] for r in stored),
    }
    return _with_sizes(entry, "tables", "toast", "indexes", "total", "tables_bloat", "indexes_bloat")


def schema_report(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /maintenance/<db>/schema/<schema>``."""
    rows = sorted(rows, key=lambda r: r["relname"])
    tables = [table_entry(r) for r in rows]
    indexes = sorted(
        (index_entry(i) for r in rows for i in r["indexes"] or []), key=lambda i: (i["tablename"], i["name"])
    )
    report = totals(rows)
    report.update(name=name, tables=tables, indexes=indexes, size=report["total_size"])
    return report


def database_report(dbname: str, schemas: list[str], rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """``GET /maintenance/<db>``: one entry per schema, and the database's size."""
    by_schema: dict[str, list[dict[str, Any]]] = {name: [] for name in schemas}
    for row in rows:
        if row["schemaname"] in by_schema:
            by_schema[row["schemaname"]].append(row)
    entries = [dict(totals(by_schema[name]), name=name) for name in sorted(by_schema)]
    return {"name": dbname, "schemas": entries, "total_bytes": size, "total_size": pretty(size)}


def database_entry(dbname: str, rows: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """One database in ``GET /maintenance``; its total is ``pg_database_size``."""
    entry = totals(rows)
    entry.update(datname=dbname, total_bytes=size, total_size=pretty(size))
    return entry
