"""The harness's datasets, each rebuilt the same way from a seed.

``app`` (database ``app``)
    pgbench's tables at a scale (1M rows in ``pgbench_accounts`` at scale 10);
    schema ``shop`` with ``customers`` (btree, hash and GIN indexes, a TOASTed
    column), ``orders`` partitioned by month; schema ``archive`` with a second
    ``customers`` (same name, other schema); bloat made by updates and
    deletes; small ``public.sched_<n>`` tables for the scheduler runs; then
    ``ANALYZE``.
``wide`` (databases ``wide`` and ``many``)
    ``wide``: ``tables`` tables of one schema with two indexes each (primary
    key and one more), made by generated SQL sent in batches of 500 tables (a
    single transaction of 10,000 CREATEs would exhaust the lock table).
    ``many``: ``schemas`` schemas of three tables each.
``huge`` (database ``huge``; full runs only, never in ``make test``)
    ``huge_tables`` (100,000) tables of one schema shaped as ``wide``'s
    (primary key and one more index each): a multi-tenant catalog. Made in
    transactions of 1,000 tables (more would exhaust the lock table, 64
    locks per connection slot by default); minutes of work.
``busy`` (sessions held by the harness, see :class:`Busy`)
    idle sessions, running queries and a lock chain on ``app``.

Sizes come from a :class:`Scale`; :data:`FULL` is the full run, :data:`SMOKE`
the seconds-long variant run by ``make test``.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Any

from agent_core.cluster import Cluster
from agent_core.testing import Backends


@dataclass(frozen=True)
class Scale:
    pgbench: int = 10  # pgbench scale: 100,000 rows of pgbench_accounts each
    customers: int = 200_000
    orders: int = 300_000
    archived: int = 50_000
    wide_tables: int = 10_000
    huge_tables: int = 100_000  # 0: no huge dataset
    many_schemas: int = 300
    idle: int = 100
    running: int = 10
    sched_tables: int = 8


FULL = Scale()
SMOKE = Scale(pgbench=1, customers=2000, orders=3000, archived=500, wide_tables=200, many_schemas=10, idle=5, running=2,
    huge_tables=0,
)  # fmt: skip

APP = """
SELECT setseed(%(seed)s);
CREATE SCHEMA shop;
CREATE SCHEMA archive;
CREATE TABLE shop.customers (id int PRIMARY KEY, email text NOT NULL, tags text[], note text, payload text);
ALTER TABLE shop.customers ALTER payload SET STORAGE EXTERNAL;
INSERT INTO shop.customers
SELECT i, 'user' || i || '@example.com',
       ARRAY['t' || (i %% 17), 't' || (i %% 5)],
       md5(random()::text),
       CASE WHEN i %% 20 = 0 THEN repeat(md5(i::text || %(seed)s), 100) END
FROM generate_series(1, %(customers)s) i;
CREATE INDEX customers_email_hash ON shop.customers USING hash (email);
CREATE INDEX customers_tags_gin ON shop.customers USING gin (tags);
CREATE TABLE shop.orders (id bigint, customer int, placed date NOT NULL, total numeric(10,2))
    PARTITION BY RANGE (placed);
CREATE TABLE shop.orders_2024q1 PARTITION OF shop.orders FOR VALUES FROM ('2024-01-01') TO ('2024-04-01');
CREATE TABLE shop.orders_2024q2 PARTITION OF shop.orders FOR VALUES FROM ('2024-04-01') TO ('2024-07-01');
CREATE TABLE shop.orders_2024q3 PARTITION OF shop.orders FOR VALUES FROM ('2024-07-01') TO ('2024-10-01');
CREATE TABLE shop.orders_2024q4 PARTITION OF shop.orders FOR VALUES FROM ('2024-10-01') TO ('2025-01-01');
INSERT INTO shop.orders
SELECT i, 1 + (random() * (%(customers)s - 1))::int, date '2024-01-01' + (i %% 366), (random() * 500)::numeric(10,2)
FROM generate_series(1, %(orders)s) i;
CREATE INDEX orders_customer ON shop.orders (customer);
CREATE TABLE archive.customers (id int PRIMARY KEY, email text NOT NULL, note text);
INSERT INTO archive.customers SELECT i, 'old' || i || '@example.com', md5(random()::text)
FROM generate_series(1, %(archived)s) i;
-- bloat: dead tuples left behind (autovacuum is off in the harness's cluster)
UPDATE shop.customers SET note = md5(note) WHERE id %% 3 = 0;
DELETE FROM archive.customers WHERE id %% 5 < 2;
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid %% 4 = 0;
"""


def build_app(cluster: Cluster, scale: Scale, seed: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    cluster.execute("CREATE DATABASE app")
    subprocess.run(
        [f"{cluster.bindir}/pgbench", "-i", "-q", "-s", str(scale.pgbench), "-h", cluster.host,
         "-p", str(cluster.port), "-U", cluster.superuser, "app"],
        check=True, capture_output=True,
    )  # fmt: skip
    params = {"seed": seed, "customers": scale.customers, "orders": scale.orders, "archived": scale.archived}
    cluster.execute(APP, params, dbname="app")
    sched = "".join(f"CREATE TABLE public.sched_{i} (id int PRIMARY KEY);" for i in range(scale.sched_tables))
    cluster.execute(sched + "CREATE TABLE public.locked (id int)", dbname="app")
    cluster.execute("ANALYZE", dbname="app")
    return {"seconds": round(time.perf_counter() - t0, 1), **_size(cluster, "app")}


def build_wide(cluster: Cluster, scale: Scale) -> dict[str, Any]:
    t0 = time.perf_counter()
    cluster.execute("CREATE DATABASE wide")
    batch = 500
    for start in range(0, scale.wide_tables, batch):
        cluster.execute(
            "".join(
                f"CREATE TABLE public.w_{i:05d} (id int PRIMARY KEY, v int, label text);"
                f"CREATE INDEX w_{i:05d}_v ON public.w_{i:05d} (v);"
                for i in range(start, min(start + batch, scale.wide_tables))
            ),
            dbname="wide",
        )
    cluster.execute("ANALYZE", dbname="wide")
    cluster.execute("CREATE DATABASE many")
    cluster.execute(
        "".join(
            f"CREATE SCHEMA s_{s:03d};"
            + "".join(f"CREATE TABLE s_{s:03d}.t_{t} (id int PRIMARY KEY, v text);" for t in range(3))
            for s in range(scale.many_schemas)
        ),
        dbname="many",
    )
    cluster.execute("ANALYZE", dbname="many")
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "wide": _size(cluster, "wide"),
        "many": _size(cluster, "many"),
    }


def build_huge(cluster: Cluster, tables: int, dbname: str = "huge", batch: int = 1000) -> dict[str, Any]:
    """``tables`` tables in schema public of ``dbname``, as in ``wide``."""
    t0 = time.perf_counter()
    cluster.execute(f"CREATE DATABASE {dbname}")
    for start in range(0, tables, batch):
        cluster.execute(
            "BEGIN;"
            + "".join(
                f"CREATE TABLE public.h_{i:06d} (id int PRIMARY KEY, v int, label text);"
                f"CREATE INDEX h_{i:06d}_v ON public.h_{i:06d} (v);"
                for i in range(start, min(start + batch, tables))
            )
            + "COMMIT;",
            dbname=dbname,
        )
    cluster.execute("ANALYZE", dbname=dbname)
    return {"seconds": round(time.perf_counter() - t0, 1), **_size(cluster, dbname)}


def _size(cluster: Cluster, dbname: str) -> dict[str, Any]:
    rows = cluster.execute(
        "SELECT pg_database_size(current_database()),"
        " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')),"
        " (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "  WHERE c.relkind = 'i' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')),"
        " (SELECT count(*) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema')",
        dbname=dbname,
    )
    size, tables, indexes, schemas = rows[0]
    return {"bytes": size, "tables": tables, "indexes": indexes, "schemas": schemas}


class Busy:
    """The ``busy`` load, held while open: ``idle`` idle sessions, ``running``
    queries sleeping in ``pg_sleep``, and a lock chain on ``app``: A holds
    ``public.locked``; B holds ``public.sched_0`` and waits for A; C waits
    for B."""

    def __init__(self, cluster: Cluster):
        self.backends = Backends(cluster)

    def open(self, scale: Scale) -> dict[str, Any]:
        b = self.backends
        for i in range(scale.idle):
            b.idle(f"SELECT {i} AS idle_session", dbname="app")
        running = [b.run("SELECT pg_sleep(3600)", dbname="app") for _ in range(scale.running)]
        holder = b.hold("BEGIN; LOCK TABLE public.locked IN ACCESS EXCLUSIVE MODE", dbname="app")
        middle = b.run("BEGIN; LOCK TABLE public.sched_0; LOCK TABLE public.locked", dbname="app")
        b.wait_state(middle.pid, "active", "Lock")
        last = b.run("SELECT count(*) FROM public.sched_0", dbname="app")
        b.wait_state(last.pid, "active", "Lock")
        for held in running:
            b.wait_state(held.pid, "active")
        return {"idle": scale.idle, "running": scale.running, "lock_chain": [holder.pid, middle.pid, last.pid]}

    def close(self) -> None:
        self.backends.close()
