"""The SQL floor of each endpoint: the statements it needs, run directly with
psycopg2 on a warm connection (no HTTP, no authentication, no JSON), using
the plugins' own query code so that the floor is the agent's SQL.

:func:`sql_floors` returns ``{endpoint label: callable}``; the harness times
each callable like an endpoint. Endpoints without SQL (``/status``,
``/profile``, ``/login``, the scheduler listing, which reads the agent's
store) have the trivial round trip alone as floor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg2.extensions
import psycopg2.extras

from agent_activity.queries import for_version
from agent_core.cluster import Cluster
from agent_maintenance import queries as mq


class Conns:
    """Warm autocommit connections, one per database, closed by :meth:`close`."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.conns: dict[str, Any] = {}

    def __call__(self, dbname: str) -> Any:
        if dbname not in self.conns:
            self.conns[dbname] = self.cluster.connect(dbname)
        return self.conns[dbname]

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


def _activity_cursor(conn: Any) -> Any:
    cur = conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
    psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
    return cur


def activity_floors(conns: Conns) -> dict[str, Callable[[], object]]:
    conn = conns("postgres")
    q = for_version(conn.server_version)
    cur = _activity_cursor(conn)

    def activity() -> object:
        cur.execute(q.backends, {"own": [], "idle": True, "limit": 500})
        return cur.fetchall()

    def waiting() -> object:
        cur.execute(q.lock_waits, {"own": []})
        waits = cur.fetchall()
        oids = sorted({w["lock_relation"] for w in waits if w["lock_relation"] is not None})
        cur.execute(q.relations, {"oids": oids})
        return cur.fetchall()

    def blocking() -> object:
        cur.execute(q.lock_waits, {"own": []})
        pids = sorted({b for w in cur.fetchall() for b in (w["blocked_by"] or [])})
        cur.execute(q.backends_by_pid, {"own": [], "pids": pids})
        cur.execute(q.locks_of, {"pids": pids})
        return cur.fetchall()

    return {"/activity": activity, "/activity/waiting": waiting, "/activity/blocking": blocking}


def maintenance_floors(conns: Conns, targets: list[tuple[str, str]]) -> dict[str, Callable[[], object]]:
    """Floors of ``/maintenance``, and of ``/maintenance/<db>`` and
    ``/maintenance/<db>/schema/<schema>`` for each (db, schema) of ``targets``."""
    out: dict[str, Callable[[], object]] = {}

    def instance() -> object:
        dbs = mq.fetch(conns("postgres"), mq.DATABASES)
        return [mq.relations(conns(db["datname"])) for db in dbs]

    out["/maintenance"] = instance
    for dbname, schema in targets:

        def database(dbname: str = dbname) -> object:
            conn = conns(dbname)
            mq.fetch(conn, mq.SCHEMAS)
            mq.fetch(conn, mq.DATABASE_SIZE)
            return mq.relations(conn)

        def schema_listing(dbname: str = dbname, schema: str = schema) -> object:
            conn = conns(dbname)
            found = mq.lookup(conn, schema)
            assert found is not None, (dbname, schema)
            return mq.relations(conn, schema_oid=found["schema_oid"], details=True)

        out[f"/maintenance/{dbname}"] = database
        out[f"/maintenance/{dbname}/schema/{schema}"] = schema_listing
    return out


def listing_floors(conns: Conns, dbname: str, schema: str) -> dict[str, Callable[[], object]]:
    """The SQL floor of a streamed schema listing: its one statement
    (``queries.LISTING``, sorted, with the totals) fetched whole by a
    client-side cursor; and, for comparison, the unsorted ``RELATIONS`` rows
    the route read before it streamed."""

    def oid_on(on: Conns) -> int:
        found = mq.lookup(on(dbname), schema)
        assert found is not None, (dbname, schema)
        return int(found["schema_oid"])

    def oid() -> int:
        return oid_on(conns)

    def listing_on(on: Conns) -> object:
        conn = on(dbname)
        fast = mq.fetch(conn, mq.CAN_READ_STATISTIC)[0]["ok"]
        params = {"schema_oid": oid_on(on), "table_oid": None, "details": True}
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute(mq.STREAM_SETTINGS, ("600s",))  # the route's settings (JIT off)
            cur.execute(mq.LISTING[fast], params)
            n = len(cur.fetchall())
            cur.execute("ROLLBACK")
            return n

    def listing() -> object:
        return listing_on(conns)

    def relations() -> object:
        return len(mq.relations(conns(dbname), schema_oid=oid(), details=True))

    def cold() -> object:
        """The listing on a new connection, as the route runs it (connections to
        databases other than the default are not pooled): a new backend builds
        its catalog caches for every relation measured."""
        fresh = Conns(conns.cluster)
        try:
            return listing_on(fresh)
        finally:
            fresh.close()

    return {"listing": listing, "relations": relations, "cold": cold}
