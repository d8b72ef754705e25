"""Core HTTP benchmark: authenticated requests against the public floor.

Starts a throwaway PostgreSQL cluster and an agent (core only) on 127.0.0.1,
then measures, in the same run:

- floor: GET /status (public, no store, no PostgreSQL)
- GET /profile with a session (one store read + one store write per request)
- GET /discover with the agent key (key check + one PostgreSQL query)
- GET /status with 32 concurrent clients (throughput)

and prints medians, p95 and ratios to the floor. Bounded: a fixed number of
requests; stops by itself and removes everything it made.

    .venv/bin/python bench/core_bench.py [--requests N]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import cluster_and_agent, ok, print_table, timed

from agent_core.testing import KEY


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with cluster_and_agent() as bench:
        anon = bench.running.client()
        session = bench.running.login()
        n = args.requests
        timed(lambda: ok(anon.get("/status")), 20)  # warm-up
        floor = timed(lambda: ok(anon.get("/status")), n)
        profile = timed(lambda: ok(session.get("/profile")), n)
        discover = timed(lambda: ok(anon.get(f"/discover?key={KEY}")), n)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(lambda _: anon.get("/status").status, range(n * 2)))
        elapsed = time.perf_counter() - t0
        assert statuses == [200] * len(statuses)
        print_table(
            "route",
            [
                ("GET /status (floor)", floor),
                ("GET /profile (session)", profile),
                ("GET /discover (key + PostgreSQL)", discover),
            ],
            {"/status": floor},
        )
        print(
            f"GET /status, 32 concurrent clients: {len(statuses) / elapsed:.0f} req/s "
            f"({len(statuses)} requests, {elapsed:.2f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
