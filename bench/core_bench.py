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
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent_core.auth import UsersFile
from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing import KEY, PASSWORD, RunningAgent, agent_config


def timed(fn, n):
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn()
        samples.append((time.perf_counter() - t0) * 1000)
        assert res.status == 200, res
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    cluster = Cluster(bindir)
    home = tempfile.mkdtemp(prefix="pgwarden-bench-")
    running = None
    try:
        cluster.init()
        cluster.start()
        UsersFile(f"{home}/users").set("alice", PASSWORD)
        running = RunningAgent(agent_config(cluster, home, {}, {"agent": {"log_level": "WARNING"}}), {}, {})
        anon = running.client()
        session = running.login()
        n = args.requests
        timed(lambda: anon.get("/status"), 20)  # warm-up
        floor = timed(lambda: anon.get("/status"), n)
        profile = timed(lambda: session.get("/profile"), n)
        discover = timed(lambda: anon.get(f"/discover?key={KEY}"), n)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(32) as pool:
            statuses = list(pool.map(lambda _: anon.get("/status").status, range(n * 2)))
        elapsed = time.perf_counter() - t0
        assert statuses == [200] * len(statuses)
        print(f"{'route':<34} {'median ms':>10} {'p95 ms':>8} {'x floor':>8}")
        for name, (median, p95) in (
            ("GET /status (floor)", floor),
            ("GET /profile (session)", profile),
            ("GET /discover (key + PostgreSQL)", discover),
        ):
            print(f"{name:<34} {median:>10.2f} {p95:>8.2f} {median / floor[0]:>8.2f}")
        print(
            f"GET /status, 32 concurrent clients: {len(statuses) / elapsed:.0f} req/s "
            f"({len(statuses)} requests, {elapsed:.2f} s)"
        )
    finally:
        if running is not None:
            running.stop()
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
