"""Maintenance plugin benchmark: the read routes on a database of many tables.

Starts a throwaway PostgreSQL cluster and an agent with the maintenance
plugin on 127.0.0.1, creates a database of ``--tables`` tables (each with a
primary key, a second btree index and some rows, analysed), then measures,
in the same run:

- floor: GET /status (public, no PostgreSQL)
- floor: the plugin's figures query alone for the schema, on one psycopg2
  connection (no HTTP, no JSON building)
- GET /maintenance/<db>/schema/public (every table and index of the schema)
- GET /maintenance/<db> (per-schema totals)
- GET /maintenance/<db>/schema/public/table/t_1 (one table)
- GET /maintenance (every database)

and prints medians, p95 and ratios to both floors. Bounded: a fixed number of
requests; stops by itself and removes everything it made.

    .venv/bin/python bench/maintenance_bench.py [--tables N] [--requests N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "maintenance"))

from _common import cluster_and_agent, ok, print_table, timed

import agent_maintenance.plugin as maintenance_plugin
from agent_core.cluster import Cluster
from agent_core.testing import KEY
from agent_maintenance import queries

DBNAME = "bench"
SETUP = """
DO $$
BEGIN
  FOR i IN 1..%(tables)s LOOP
    EXECUTE format('CREATE TABLE public.t_%%s (id int PRIMARY KEY, label text, n int, at timestamptz)', i);
    EXECUTE format('CREATE INDEX t_%%s_n ON public.t_%%s (n)', i, i);
    EXECUTE format('INSERT INTO public.t_%%s SELECT g, md5(g::text), g %%%% 10, now()
                    FROM generate_series(1, 50) g', i);
  END LOOP;
END $$
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()

    def setup(cluster: Cluster) -> None:
        cluster.execute(f"CREATE DATABASE {DBNAME}")
        t0 = time.perf_counter()
        cluster.execute(SETUP, {"tables": args.tables}, dbname=DBNAME)
        cluster.execute("ANALYZE", dbname=DBNAME)
        print(f"{args.tables} tables with 2 indexes each created in {time.perf_counter() - t0:.1f} s")

    with cluster_and_agent({"maintenance": maintenance_plugin}, setup) as bench:
        client = bench.running.client()

        def get(url: str) -> Callable[[], object]:
            return lambda: ok(client.get(f"{url}?key={KEY}"))

        conn = bench.connect(DBNAME)
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_namespace WHERE nspname = 'public'")
            public = cur.fetchone()[0]

        def raw() -> object:
            return queries.relations(conn, schema_oid=public, details=True)

        n, light = args.requests, args.requests * 5
        get("/maintenance/bench/schema/public")()  # warm-up: catalog caches, pool
        timed(lambda: client.get("/status"), 20)
        status_floor = timed(lambda: client.get("/status"), light)
        query_floor = timed(raw, n)
        print_table(
            "route",
            [
                ("GET /status (floor)", status_floor),
                ("schema query alone (floor)", query_floor),
                ("GET /maintenance/bench/schema/public", timed(get("/maintenance/bench/schema/public"), n)),
                ("GET /maintenance/bench", timed(get("/maintenance/bench"), n)),
                ("GET .../schema/public/table/t_1", timed(get("/maintenance/bench/schema/public/table/t_1"), light)),
                ("GET /maintenance", timed(get("/maintenance"), n)),
            ],
            {"/status": status_floor, "query": query_floor},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
