"""The JSON documents of the read routes, built from :data:`estimates.RELATIONS` rows.

Sums are made here, over the tables with storage: a partitioned table's row
already holds the sums of its partitions, which have rows of their own, so
it is counted in ``n_tables`` but not in byte totals. A bloat total is the
sum of the estimates that exist, or null when none does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
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


_SIZE_KEYS: dict[str, tuple[str, str]] = {}


def _with_sizes(entry: dict[str, Any], *names: str) -> dict[str, Any]:
    """Add ``<name>_size`` beside each ``<name>_bytes``."""
    for name in names:
        keys = _SIZE_KEYS.get(name)
        if keys is None:  # a few constant names: the key strings made once
            keys = _SIZE_KEYS[name] = (f"{name}_bytes", f"{name}_size")
        entry[keys[1]] = pretty(entry[keys[0]])
    return entry


def index_entry(item: dict[str, Any]) -> dict[str, Any]:
    """An index as :data:`estimates.RELATIONS` gives it (JSON), with its sizes."""
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


class Totals:
    """Counts, sizes and bloat of a set of tables, added one row at a time
    (constant memory, whatever the number of tables)."""

    def __init__(self) -> None:
        self.n_tables = 0
        self.n_indexes = 0
        self.tables = 0
        self.toast = 0
        self.indexes = 0
        self.bloat: int | None = None
        self.index_bloat: int | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.n_tables += 1
        self.n_indexes += int(row["n_indexes"])
        if row["relkind"] == "p":  # its sums are its partitions', which have rows of their own
            return
        self.tables += int(row["table_bytes"])
        self.toast += int(row["toast_bytes"])
        self.indexes += int(row["index_bytes"])
        if row["bloat_bytes"] is not None:
            self.bloat = (self.bloat or 0) + int(row["bloat_bytes"])
        if row["index_bloat_bytes"] is not None:
            self.index_bloat = (self.index_bloat or 0) + int(row["index_bloat_bytes"])

    def entry(self) -> dict[str, Any]:
        return totals_entry(
            self.n_tables, self.n_indexes, self.tables, self.toast, self.indexes, self.bloat, self.index_bloat
        )


def totals_entry(
    n_tables: int, n_indexes: int, tables: int, toast: int, indexes: int, bloat: int | None, index_bloat: int | None
) -> dict[str, Any]:
    entry = {
        "n_tables": n_tables,
        "n_indexes": n_indexes,
        "tables_bytes": tables,
        "toast_bytes": toast,
        "indexes_bytes": indexes,
        "total_bytes": tables + toast + indexes,
        "tables_bloat_bytes": bloat,
        "indexes_bloat_bytes": index_bloat,
    }
    return _with_sizes(entry, "tables", "toast", "indexes", "total", "tables_bloat", "indexes_bloat")


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Counts, sizes and bloat of a set of tables (a schema, a database)."""
    acc = Totals()
    for row in rows:
        acc.add(row)
    return acc.entry()


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


def schema_chunks(name: str, batches: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    """``GET /maintenance/<db>/schema/<schema>`` written as it is read: the
    exact bytes of ``json.dumps(schema_report(name, rows), default=str)``
    from the batches of rows of :data:`estimates.LISTING` (tables by name,
    each with the schema's totals, then their index arrays), one chunk per
    batch. Memory: one batch, whatever the size of the schema."""
    dumps = json.dumps
    head: dict[str, Any] | None = None
    part = 0  # 1: writing the tables, 2: the indexes
    written = False  # an entry of the current list is written: the next one needs ", "
    for rows in batches:
        out: list[str] = []
        entries: list[dict[str, Any]] = []
        for row in rows:
            if row["part"] == 1:
                if head is None:
                    head = _totals_of(row)
                    out.append(_opening(head, name))
                    part = 1
                entries.append(table_entry(row))
            else:
                if part < 2:
                    written = _flush(out, entries, written)
                    if head is None:  # not produced by LISTING (index arrays come with tables); keep the shape
                        head = totals_entry(0, 0, 0, 0, 0, None, None)
                        out.append(_opening(head, name))
                    out.append('], "indexes": [')
                    part, written = 2, False
                entries.extend(index_entry(item) for item in row["indexes"] or [])
        written = _flush(out, entries, written)
        if out:
            yield "".join(out).encode()
    tail = []
    if head is None:
        head = totals_entry(0, 0, 0, 0, 0, None, None)
        tail.append(_opening(head, name))
    if part < 2:
        tail.append('], "indexes": [')
    tail.append('], "size": ' + dumps(head["total_size"]) + "}")
    yield "".join(tail).encode()


def _flush(out: list[str], entries: list[dict[str, Any]], written: bool) -> bool:
    """Write ``entries`` to ``out`` with one json.dumps (``[a, b]`` -> ``a, b``,
    as the whole document writes them) and empty it; whether any is written."""
    if not entries:
        return written
    out.append((", " if written else "") + json.dumps(entries, default=str)[1:-1])
    entries.clear()
    return True


def _totals_of(row: dict[str, Any]) -> dict[str, Any]:
    return totals_entry(
        int(row["t_tables"]),
        int(row["t_indexes"]),
        int(row["t_table_bytes"]),
        int(row["t_toast_bytes"]),
        int(row["t_index_bytes"]),
        _int(row["t_bloat_bytes"]),
        _int(row["t_index_bloat_bytes"]),
    )


def _opening(head: dict[str, Any], name: str) -> str:
    """``{<totals>, "name": ..., "tables": [`` as json.dumps writes the report."""
    return json.dumps(head)[:-1] + ', "name": ' + json.dumps(name) + ', "tables": ['


def database_report(dbname: str, schemas: dict[str, Totals], size: int) -> dict[str, Any]:
    """``GET /maintenance/<db>``: one entry per schema, and the database's size."""
    entries = [dict(schemas[name].entry(), name=name) for name in sorted(schemas)]
    return {"name": dbname, "schemas": entries, "total_bytes": size, "total_size": pretty(size)}


def database_entry(dbname: str, whole: Totals, size: int) -> dict[str, Any]:
    """One database in ``GET /maintenance``; its total is ``pg_database_size``."""
    entry = whole.entry()
    entry.update(datname=dbname, total_bytes=size, total_size=pretty(size))
    return entry
