"""Activity plugin benchmark: GET /activity with many idle sessions, against floors.

Starts a throwaway PostgreSQL cluster and an agent with the activity plugin on
127.0.0.1, opens N idle sessions (default 100), then measures in the same run:

- floor: GET /status (public: HTTP and the agent's request path only)
- floor: the plugin's listing SQL alone, on a direct psycopg2 connection
- the psutil reading of N backends alone (what a request adds to the SQL)
- GET /activity, /activity/waiting and /activity/blocking with the agent key
- one background sample of the N backends (what the sampler thread costs
  every ``sample_interval``)

and prints medians, p95 and ratios to the floors. Bounded: a fixed number of
requests; stops by itself and removes everything it made.

    .venv/bin/python bench/activity_bench.py [--connections N] [--requests N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2.extensions
import psycopg2.extras
from _common import cluster_and_agent, ok, print_table, timed

import agent_activity.plugin
from agent_activity import service
from agent_activity.queries import for_version
from agent_core.testing import KEY


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=100, help="idle sessions to open (default 100)")
    parser.add_argument("--requests", type=int, default=200, help="requests per measurement (default 200)")
    args = parser.parse_args()
    with cluster_and_agent({"activity": agent_activity.plugin}) as bench:
        conns = []
        for i in range(args.connections):
            conn = bench.connect()
            with conn.cursor() as cur:
                cur.execute("SELECT %s AS idle_session", (i,))
            conns.append(conn)
        pids = [c.info.backend_pid for c in conns]
        anon = bench.running.client()
        n = args.requests
        activity = service.get(bench.running.agent)
        time.sleep(activity.sampler.interval * 1.5)  # rates exist: the steady state

        listed = ok(anon.get(f"/activity?key={KEY}")).json()["rows"]
        assert {r["pid"] for r in listed} >= set(pids), "every idle session listed"
        measured = sum(1 for r in listed if r["cpu"] is not None)

        timed(lambda: anon.get("/status"), 20)  # warm-up
        floor = timed(lambda: ok(anon.get("/status")), n)

        direct = bench.cluster.connect()
        q = for_version(direct.server_version)
        params = {"own": [], "idle": True, "limit": 500}
        with direct.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)

            def listing_sql():
                cur.execute(q.backends, params)
                cur.fetchall()

            sql = timed(listing_sql, n)
        direct.close()

        proc = timed(lambda: activity.sampler.measure(pids), n)
        get_activity = timed(lambda: ok(anon.get(f"/activity?key={KEY}")), n)
        waiting = timed(lambda: ok(anon.get(f"/activity/waiting?key={KEY}")), n)
        blocking = timed(lambda: ok(anon.get(f"/activity/blocking?key={KEY}")), n)
        tick = timed(activity.sampler.tick, max(10, n // 10))

        print(f"{args.connections} idle sessions, {n} requests per line; {measured}/{len(listed)} rows with rates")
        print_table(
            "measurement",
            [
                ("GET /status (HTTP floor)", floor),
                ("listing SQL alone (SQL floor)", sql),
                (f"psutil reading of {len(pids)} backends alone", proc),
                ("GET /activity", get_activity),
                ("GET /activity/waiting (no waits)", waiting),
                ("GET /activity/blocking (no waits)", blocking),
                ("background sample (sampler tick)", tick),
            ],
            {"/status": floor, "SQL": sql},
        )
        overhead = get_activity[0] - floor[0] - sql[0]
        per_row = overhead / len(listed) * 1000
        print(f"GET /activity above both floors: {overhead:.2f} ms median ({per_row:.0f} µs per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
