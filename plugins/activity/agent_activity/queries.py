"""The plugin's SQL, chosen by server version (PostgreSQL 10 and later).

* 10+: ``pg_stat_activity.backend_type`` tells client backends from
  autovacuum, background workers, WAL senders and auxiliary processes;
  ``pg_blocking_pids()`` (9.6+) gives the immediate blockers of a backend.
* 13+: ``pg_stat_activity.leader_pid`` names the leader of a parallel worker,
  so a refused kill can say which backend to terminate instead.
* 14+: ``pg_terminate_backend(pid, timeout)`` waits for the backend to exit,
  so ``killed: true`` means the backend is gone, not only signalled.

Every statement binds values as parameters; the few identifiers are composed
with :class:`psycopg2.sql.Identifier`. Text columns are fetched as bytes by
the caller and decoded with the encoding of the backend's database (see
:func:`decode`), so a query text with bytes invalid in UTF-8 never fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import psycopg2.extensions
from psycopg2 import sql

MIN_VERSION = 100000


class UnsupportedVersion(Exception):
    """The server is older than PostgreSQL 10."""


def _columns(activity: str = "a", database: str = "d") -> sql.Composed:
    """The columns every row of the three listings shows (bar the metrics).

    A backend the agent's role may not see (neither ``pg_read_all_stats``, as
    ``pg_monitor`` grants, nor the privileges of the backend's role: the rule
    PostgreSQL applies) has ``query`` and ``waiting`` null, as PostgreSQL
    already nulls its state, client and start time, instead of the text
    ``<insufficient privilege>`` and a wait flag it cannot know."""
    a, d = sql.Identifier(activity), sql.Identifier(database)
    return sql.SQL(
        """{a}.pid,
       {a}.datname AS database,
       {a}.usename AS "user",
       host({a}.client_addr) AS client,
       {a}.application_name,
       {a}.state,
       CASE WHEN {seen} THEN {a}.query END AS query,
       CASE WHEN {seen} THEN {a}.wait_event_type IS NOT DISTINCT FROM 'Lock' END AS waiting,
       CASE WHEN {a}.query_start IS NULL THEN NULL
            ELSE round(greatest(extract(epoch FROM statement_timestamp() - {a}.query_start), 0)::numeric, 3)::float8
       END AS duration,
       pg_encoding_to_char({d}.encoding) AS encoding,
       {a}.backend_type"""
    ).format(a=a, d=d, seen=_visible(a))


def _visible(a: sql.Identifier) -> sql.Composed:
    """Whether the role may see the backend's activity (PostgreSQL's own rule)."""
    return sql.SQL(
        "coalesce(pg_has_role('pg_read_all_stats', 'USAGE') OR pg_has_role({a}.usesysid, 'USAGE'), false)"
    ).format(a=a)


_FROM = sql.SQL("pg_catalog.pg_stat_activity AS a LEFT JOIN pg_catalog.pg_database AS d ON d.oid = a.datid")
_NOT_OURS = sql.SQL("a.pid <> pg_backend_pid() AND a.pid <> ALL(%(own)s::int[])")
_LONGEST_FIRST = sql.SQL("a.query_start ASC NULLS LAST, a.pid")
#: The columns that identify what a lock is on, to match a wanted lock with a held one.
LOCK_TARGET = (
    "locktype",
    "database",
    "relation",
    "page",
    "tuple",
    "virtualxid",
    "transactionid",
    "classid",
    "objid",
    "objsubid",
)
_TARGET = sql.SQL(", ").join(
    sql.SQL("{}::text AS {}").format(sql.Identifier("l", c), sql.Identifier("target_" + c)) for c in LOCK_TARGET
)


@dataclass(frozen=True)
class Queries:
    version: int
    #: GET /activity: client backends, longest running first. Params: own, idle, limit.
    backends: sql.Composed
    #: The same columns for given pids (any backend type). Params: own, pids.
    backends_by_pid: sql.Composed
    #: Ungranted locks with the backend wanting them and its blockers. Params: own.
    lock_waits: sql.Composed
    #: Every lock of the given pids. Params: pids.
    locks_of: sql.Composed
    #: Resolve relation OIDs of the current database. Params: oids.
    relations: sql.Composed
    #: What each pid is, before a kill. Params: pids.
    kill_targets: sql.Composed
    #: Terminate one client backend (nothing if it is no longer one). Params: pid, wait_ms.
    terminate: sql.Composed
    #: Every backend pid (background sampler). No params.
    pids: sql.Composed
    #: pg_terminate_backend waits for the exit (14+).
    terminate_waits: bool


def for_version(version: Optional[int]) -> Queries:
    """The statements for a server version number (``server_version_num``)."""
    if not version or version < MIN_VERSION:
        raise UnsupportedVersion(
            f"PostgreSQL {version or 'unknown'} is not supported by the activity plugin (10 or later is required)"
        )
    cols = _columns()
    backends = sql.SQL(
        "SELECT {cols}\nFROM {src}\nWHERE a.backend_type = 'client backend' AND {mine}"
        "\n  AND (%(idle)s OR a.state IS DISTINCT FROM 'idle')\nORDER BY {order}\nLIMIT %(limit)s"
    ).format(cols=cols, src=_FROM, mine=_NOT_OURS, order=_LONGEST_FIRST)
    backends_by_pid = sql.SQL("SELECT {cols}\nFROM {src}\nWHERE a.pid = ANY(%(pids)s::int[]) AND {mine}").format(
        cols=cols, src=_FROM, mine=_NOT_OURS
    )
    lock_waits = sql.SQL(
        "SELECT {cols},\n       l.locktype AS lock_type, l.mode AS lock_mode, l.database AS lock_database,"
        " l.relation AS lock_relation, ld.datname AS lock_dbname,"
        "\n       pg_blocking_pids(a.pid) AS blocked_by, {target}"
        "\nFROM pg_catalog.pg_locks AS l\nJOIN {src} ON a.pid = l.pid"
        "\nLEFT JOIN pg_catalog.pg_database AS ld ON ld.oid = l.database"
        "\nWHERE NOT l.granted AND {mine}\nORDER BY {order}"
    ).format(cols=cols, target=_TARGET, src=_FROM, mine=_NOT_OURS, order=_LONGEST_FIRST)
    locks_of = sql.SQL(
        "SELECT l.pid, l.granted, l.locktype AS lock_type, l.mode AS lock_mode, l.database AS lock_database,"
        " l.relation AS lock_relation, ld.datname AS lock_dbname, {target}"
        "\nFROM pg_catalog.pg_locks AS l LEFT JOIN pg_catalog.pg_database AS ld ON ld.oid = l.database"
        "\nWHERE l.pid = ANY(%(pids)s::int[])"
    ).format(target=_TARGET)
    relations = sql.SQL(
        "SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) AS name"
        "\nFROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        "\nWHERE c.oid = ANY(%(oids)s::oid[])"
    )
    leader = sql.SQL("a.leader_pid") if version >= 130000 else sql.SQL("NULL::int")
    kill_targets = sql.SQL(
        'SELECT a.pid, a.backend_type, {leader} AS leader_pid, a.datname AS database, a.usename AS "user"'
        "\nFROM pg_catalog.pg_stat_activity AS a WHERE a.pid = ANY(%(pids)s::int[])"
    ).format(leader=leader)
    if version >= 140000:
        call = sql.SQL("pg_terminate_backend(a.pid, %(wait_ms)s::bigint)")
    else:
        call = sql.SQL("pg_terminate_backend(a.pid)")
    terminate = sql.SQL(
        "SELECT {call} AS killed FROM pg_catalog.pg_stat_activity AS a"
        "\nWHERE a.pid = %(pid)s AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()"
    ).format(call=call)
    pids = sql.SQL("SELECT pid FROM pg_catalog.pg_stat_activity WHERE pid <> pg_backend_pid()")
    return Queries(
        version=version,
        backends=backends,
        backends_by_pid=backends_by_pid,
        lock_waits=lock_waits,
        locks_of=locks_of,
        relations=relations,
        kill_targets=kill_targets,
        terminate=terminate,
        pids=pids,
        terminate_waits=version >= 140000,
    )


def decode(value: Any, encoding: Optional[str] = None) -> Any:
    """Text fetched as bytes, decoded with a PostgreSQL encoding name
    (``UTF8``, ``LATIN1``...); invalid bytes become U+FFFD instead of failing.
    ``SQL_ASCII`` declares no encoding: UTF-8 is tried, with replacement."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, memoryview):
        value = value.tobytes()
    if not isinstance(value, (bytes, bytearray)):
        return value
    codec = psycopg2.extensions.encodings.get(encoding or "", "utf_8") if encoding != "SQL_ASCII" else "utf_8"
    try:
        return bytes(value).decode(codec, errors="replace")
    except LookupError:  # a codec Python does not know (MULE_INTERNAL...)
        return bytes(value).decode("utf_8", errors="replace")
