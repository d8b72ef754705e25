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
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "maintenance"))

import agent_maintenance.plugin as maintenance_plugin
from agent_core.auth import UsersFile
from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing import KEY, PASSWORD, RunningAgent, agent_config
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


def timed(fn: Callable[[], object], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=500)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    cluster = Cluster(bindir)
    home = tempfile.mkdtemp(prefix="pgwarden-bench-")
    running = None
    conn = None
    try:
        cluster.init()
        cluster.start()
        cluster.execute(f"CREATE DATABASE {DBNAME}")
        t0 = time.perf_counter()
        cluster.execute(SETUP, {"tables": args.tables}, dbname=DBNAME)
        cluster.execute("ANALYZE", dbname=DBNAME)
        print(f"{args.tables} tables with 2 indexes each created in {time.perf_counter() - t0:.1f} s")

        UsersFile(f"{home}/users").set("alice", PASSWORD)
        plugins = {"maintenance": maintenance_plugin}
        running = RunningAgent(agent_config(cluster, home, plugins, {"agent": {"log_level": "WARNING"}}), plugins, {})
        client = running.client()

        def get(url: str) -> Callable[[], object]:
            def call() -> object:
                res = client.get(f"{url}?key={KEY}")
                assert res.status == 200, res
                return res

            return call

        conn = cluster.connect(DBNAME)
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_namespace WHERE nspname = 'public'")
            public = cur.fetchone()[0]

        def raw() -> object:
            return queries.relations(conn, schema_oid=public, details=True)

        n, light = args.requests, args.requests * 5
        get("/maintenance/bench/schema/public")()  # warm-up: catalog caches, pool
        timed(lambda: client.get("/status"), 20)
        results = [
            ("GET /status (floor)", timed(lambda: client.get("/status"), light)),
            ("schema query alone (floor)", timed(raw, n)),
            ("GET /maintenance/bench/schema/public", timed(get("/maintenance/bench/schema/public"), n)),
            ("GET /maintenance/bench", timed(get("/maintenance/bench"), n)),
            ("GET .../schema/public/table/t_1", timed(get("/maintenance/bench/schema/public/table/t_1"), light)),
            ("GET /maintenance", timed(get("/maintenance"), n)),
        ]
        status_floor, query_floor = results[0][1][0], results[1][1][0]
        print(f"{'route':<40} {'median ms':>10} {'p95 ms':>8} {'x /status':>10} {'x query':>8}")
        for name, (median, p95) in results:
            print(f"{name:<40} {median:>10.2f} {p95:>8.2f} {median / status_floor:>10.1f} {median / query_floor:>8.2f}")
    finally:
        if conn is not None:
            conn.close()
        if running is not None:
            running.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
