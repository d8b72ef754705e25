"""The SQL of the maintenance plugin, and the functions that run it.

Every name coming from a URL reaches SQL as a bound value (``%(name)s``) or
through :class:`psycopg2.sql.Identifier`; objects are then handled by OID.

Reads take a fixed number of statements per request, whatever the number of
tables: :data:`RELATIONS` (one of two forms, by the statistics the role may
read) computes sizes, counts and bloat estimates of every
table of a database, a schema or one table in one statement (with the
indexes of each table as a JSON array when details are asked for).

The statements of the sizes and bloat estimates are in
:mod:`agent_maintenance.estimates`; the SQL of the operations and of their
progress is at the end of this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import psycopg2.extras
from psycopg2 import sql

from .estimates import CAN_READ_STATISTIC, LISTING, RELATIONS

#: Schemas shown (temporary and TOAST schemas are left out) and the database size.
SCHEMAS = """
SELECT n.oid, n.nspname
FROM pg_catalog.pg_namespace n
WHERE n.nspname <> 'pg_toast' AND n.nspname !~ '^pg_(toast_)?temp_'
"""

DATABASE_SIZE = "SELECT pg_catalog.pg_database_size(pg_catalog.current_database()) AS bytes"

#: Databases shown by the instance view: connectable, not templates, allowed to the role
#: (their sizes are read with their figures, which the database view shares).
DATABASES = """
SELECT d.datname
FROM pg_catalog.pg_database d
WHERE d.datallowconn AND NOT d.datistemplate AND pg_catalog.has_database_privilege(d.oid, 'CONNECT')
ORDER BY d.datname
"""

DATABASE = """
SELECT d.datname, d.datallowconn, pg_catalog.has_database_privilege(d.oid, 'CONNECT') AS can_connect
FROM pg_catalog.pg_database d WHERE d.datname = %(dbname)s
"""

#: A schema and, optionally, a table (r, p, m) or an index of it, by name.
LOOKUP = """
SELECT n.oid AS schema_oid,
       (SELECT c.oid FROM pg_catalog.pg_class c
        WHERE c.relnamespace = n.oid AND c.relname = %(table)s AND c.relkind IN ('r', 'p', 'm')
          AND c.relpersistence <> 't') AS table_oid,
       (SELECT c.oid FROM pg_catalog.pg_class c
        WHERE c.relnamespace = n.oid AND c.relname = %(index)s AND c.relkind IN ('i', 'I')
          AND c.relpersistence <> 't') AS index_oid,
       (SELECT t.relname FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
        WHERE c.relnamespace = n.oid AND c.relname = %(index)s AND c.relkind IN ('i', 'I')
          AND c.relpersistence <> 't') AS index_table
FROM pg_catalog.pg_namespace n
WHERE n.nspname = %(schema)s AND n.nspname <> 'pg_toast' AND n.nspname !~ '^pg_(toast_)?temp_'
"""


def fetch(conn: Any, query: Any, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement; rows as dicts."""
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(query, params)
        return [dict(r) for r in cur.fetchall()] if cur.description else []


def relations(conn: Any, schema_oid: int | None = None, table_oid: int | None = None, details: bool = False) -> list:
    """Rows of :data:`RELATIONS`: two statements, the privilege check choosing
    the statistics source, then the figures."""
    fast = fetch(conn, CAN_READ_STATISTIC)[0]["ok"]
    return fetch(conn, RELATIONS[fast], {"schema_oid": schema_oid, "table_oid": table_oid, "details": details})


#: Settings of a streamed read's transaction. JIT off: the listing's cost
#: estimate (a union over a materialized CTE, badly estimated) passes
#: jit_optimize_above_cost, and compiling it took 5.5 s of an 8 s statement on
#: 10,000 tables; these catalog reads gain nothing from it.
#: cursor_tuple_fraction 1: every row is read, so plan the cursor's statement
#: as a plain one (the default 0.1 favours fast-start plans).
STREAM_SETTINGS = (
    "SET LOCAL idle_in_transaction_session_timeout = %s; SET LOCAL jit = off; SET LOCAL cursor_tuple_fraction = 1"
)


@contextmanager
def server_cursor(conn: Any, query: Any, params: Any, idle_timeout: int) -> Iterator[Any]:
    """A cursor on the server (psycopg2 named cursor) running ``query``:
    rows are fetched in batches (:func:`batches`), never all in the agent's
    memory. Named cursors need a transaction: the pooled autocommit
    connection gets one for the block (rolled back, autocommit restored, at
    the end; not ``with conn:``, see FIELD-NOTES). A client that stops
    reading makes the transaction idle: PostgreSQL ends the session after
    ``idle_timeout`` s (``idle_in_transaction_session_timeout``), so a stalled
    stream never holds a snapshot for long."""
    conn.autocommit = False
    try:
        with conn.cursor() as setup:
            setup.execute(STREAM_SETTINGS, (f"{int(idle_timeout)}s",))
        cur = conn.cursor(name="pgwarden_listing")  # tuples: RealDictRow cost a third of the streaming time
        try:
            cur.execute(query, params)
            yield cur
        finally:
            with contextlib.suppress(psycopg2.Error):
                cur.close()
    finally:
        try:
            if not conn.closed:
                conn.rollback()
        finally:
            if not conn.closed:
                conn.autocommit = True


def batches(cur: Any, size: int) -> Iterator[list[dict[str, Any]]]:
    """Rows of a (server-side) cursor, ``size`` at a time, as dicts."""
    while True:
        rows = cur.fetchmany(size)
        if not rows:
            return
        names = [column[0] for column in cur.description]
        yield [dict(zip(names, row)) for row in rows]


def listing_cursor(conn: Any, schema_oid: int, idle_timeout: int) -> Any:
    """:func:`server_cursor` on :data:`LISTING` for a schema (a context manager)."""
    fast = fetch(conn, CAN_READ_STATISTIC)[0]["ok"]
    params = {"schema_oid": schema_oid, "table_oid": None, "details": True}
    return server_cursor(conn, LISTING[fast], params, idle_timeout)


def relations_cursor(conn: Any, idle_timeout: int) -> Any:
    """:func:`server_cursor` on :data:`RELATIONS` for a whole database, without details."""
    fast = fetch(conn, CAN_READ_STATISTIC)[0]["ok"]
    params = {"schema_oid": None, "table_oid": None, "details": False}
    return server_cursor(conn, RELATIONS[fast], params, idle_timeout)


def lookup(conn: Any, schema: str, table: str | None = None, index: str | None = None) -> dict[str, Any] | None:
    rows = fetch(conn, LOOKUP, {"schema": schema, "table": table, "index": index})
    return rows[0] if rows else None


def identifier(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


# -- the operations' statements (tasks.py) -----------------------------------------

#: The table or index of an operation as it is now, by schema and name.
OPERATION_TARGET = """
SELECT c.oid, c.relkind, i.indrelid, coalesce(i.indisexclusion, false) AS exclusion
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind = ANY(%(kinds)s)
"""

#: Invalid indexes of a table, its partitions and their TOAST tables (of the
#: whole database when ``relid`` is NULL).
INVALID_INDEXES = """
WITH scope AS (
  SELECT r.oid, r.reltoastrelid FROM pg_catalog.pg_class r
  WHERE r.oid = %(relid)s::oid
     OR r.oid IN (SELECT t.relid FROM pg_catalog.pg_partition_tree(%(relid)s::oid) t)
)
SELECT i.indexrelid AS oid, n.nspname, c.relname
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND (%(relid)s::oid IS NULL
       OR i.indrelid IN (SELECT s.oid FROM scope s UNION ALL SELECT s.reltoastrelid FROM scope s))
"""

#: The shared catalogs (only a superuser may VACUUM or ANALYZE them).
SHARED_RELATIONS = "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relisshared"

#: ``pg_cancel_backend`` of an operation's backend, if it is still the
#: operation's (same ``application_name``) and runs a statement.
CANCEL_BACKEND = (
    "SELECT pid, pg_catalog.pg_cancel_backend(pid) AS signaled FROM pg_catalog.pg_stat_activity"
    " WHERE pid = %(pid)s AND application_name = %(name)s AND state = 'active'"
)


# -- progress of the running operations (progress.py) -----------------------------


def progress_sql(server_version: int) -> str:
    """The progress of the given backends (``pids``), from ``pg_stat_progress_*`` (ANALYZE's from 13 on)."""
    analyze = server_version >= 130000
    parts = [
        "SELECT pid, 'VACUUM' AS command, phase, relid,"
        " CASE WHEN heap_blks_total > 0 THEN 100.0 * CASE WHEN phase = 'vacuuming heap'"
        " THEN heap_blks_vacuumed ELSE heap_blks_scanned END / heap_blks_total END AS percent"
        " FROM pg_catalog.pg_stat_progress_vacuum",
        "SELECT pid, command, phase, relid,"
        " CASE WHEN heap_blks_total > 0 THEN 100.0 * heap_blks_scanned / heap_blks_total END"
        " FROM pg_catalog.pg_stat_progress_cluster",
        "SELECT pid, command, phase, relid,"
        " CASE WHEN blocks_total > 0 THEN 100.0 * blocks_done / blocks_total"
        " WHEN tuples_total > 0 THEN 100.0 * tuples_done / tuples_total END"
        " FROM pg_catalog.pg_stat_progress_create_index",
    ]
    if analyze:
        parts.append(
            "SELECT pid, 'ANALYZE', phase, relid,"
            " CASE WHEN sample_blks_total > 0 THEN 100.0 * sample_blks_scanned / sample_blks_total END"
            " FROM pg_catalog.pg_stat_progress_analyze"
        )
    return f"""
SELECT a.pid, a.application_name, a.wait_event_type, a.wait_event, p.command, p.phase,
       round(p.percent, 1)::float8 AS percent,
       CASE WHEN c.oid IS NOT NULL THEN pg_catalog.format('%%I.%%I', n.nspname, c.relname) END AS relation
FROM pg_catalog.pg_stat_activity a
LEFT JOIN ({" UNION ALL ".join(parts)}) p ON p.pid = a.pid
LEFT JOIN pg_catalog.pg_class c ON c.oid = p.relid
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE a.pid = ANY(%(pids)s) AND a.state = 'active'
"""
