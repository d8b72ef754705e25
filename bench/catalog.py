"""Catalog size: a schema listing's memory and time against its SQL floor.

For each (database, schema), on an agent of its own (``pgwarden serve``,
``[maintenance] estimates_max_age = 0``): the agent's RSS when idle (after
a login and one listing of the small ``information_schema``), one
``GET /maintenance/<db>/schema/<schema>`` read whole (its peak RSS sampled
every 50 ms, its time, its size, checked to be one valid JSON document),
the RSS a few seconds after, and the SQL floor measured in the same run
(``floors.listing_floors``: the listing's statement fetched whole by
psycopg2 on a warm connection, and on a new one as the route runs it; the
unsorted rows the route read before it streamed, for comparison).
``ratio_cold`` is the request's time over the new connection's floor: the
one that applies, since the route opens a new connection to any database
other than the default (not pooled, so that none blocks ``CREATE DATABASE``)
and its backend builds its catalog caches for every relation listed;
``ratio`` is over the warm floor (the statement alone), printed beside it.

``bench/run.py`` runs it on ``wide`` (and ``huge`` in full runs). Alone, on a
throwaway cluster with one schema of ``--tables`` tables::

    .venv/bin/python bench/catalog.py --tables 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from _common import AgentProcess, PeakRss, timed
from datasets import build_huge
from floors import Conns, listing_floors

from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing import Client

#: statement_timeout of the measuring agent: a 100,000-table listing takes tens of seconds.
STATEMENT_TIMEOUT = 600


def measure(
    cluster: Cluster, conns: Conns, dbname: str, schema: str, floor_n: int = 1, unsorted: bool = True
) -> dict[str, Any]:
    floors = listing_floors(conns, dbname, schema)
    floor = timed(floors["listing"], floor_n, warmup=1)
    cold = timed(floors["cold"], floor_n, warmup=0)
    # the unsorted rows (JIT on, as the route ran them before): skipped when huge (minutes)
    before = timed(floors["relations"], floor_n, warmup=0) if unsorted else None
    agent = AgentProcess(
        cluster,
        tls=True,
        sections={"maintenance": {"estimates_max_age": 0}, "postgresql": {"statement_timeout": STATEMENT_TIMEOUT}},
    )
    try:
        client = Client(agent.url, session=agent.session(), timeout=STATEMENT_TIMEOUT)
        # warm: the same route once on a small schema (modules, TLS, the pool), then idle
        assert client.get(f"/maintenance/{dbname}/schema/information_schema").status == 200
        time.sleep(6)  # the sampler's and scheduler's first passes, the pool's pool_idle
        idle = agent.rss_mb()
        peak = PeakRss(agent)
        t0 = time.perf_counter()
        res = client.get(f"/maintenance/{dbname}/schema/{schema}")
        seconds = time.perf_counter() - t0
        peak_mb = peak.stop()
        ok = res.status == 200
        tables = len(json.loads(res.body)["tables"]) if ok else None
        size = len(res.body)
        del res
        time.sleep(5)  # the pooled connection's pool_idle, the allocator's trimming
        after = agent.rss_mb()
    finally:
        agent.stop()
    out = {
        "endpoint": f"GET /maintenance/{dbname}/schema/{schema}",
        "status_ok": ok,
        "tables": tables,
        "body_mb": round(size / 2**20, 1),
        "seconds": round(seconds, 2),
        "floor_s": round(floor["p50"] / 1000, 2),
        "cold_floor_s": round(cold["p50"] / 1000, 2),
        "unsorted_rows_floor_s": round(before["p50"] / 1000, 2) if before else None,
        "ratio": round(seconds * 1000 / floor["p50"], 2),
        "ratio_cold": round(seconds * 1000 / cold["p50"], 2),
        "idle_mb": round(idle, 1),
        "peak_mb": round(peak_mb, 1),
        "peak_over_idle_mb": round(peak_mb - idle, 1),
        "after_mb": round(after, 1),
        "after_over_idle_pct": round((after - idle) * 100 / idle, 1),
    }
    print(
        f"  {out['endpoint']}: {tables} tables, {out['body_mb']} MB in {out['seconds']} s;"
        f" RSS idle {out['idle_mb']} MB, peak {out['peak_mb']} MB (+{out['peak_over_idle_mb']}),"
        f" 5 s after {out['after_mb']} MB ({out['after_over_idle_pct']:+} %)\n"
        f"    ratio to the new-connection floor {out['ratio_cold']} ({out['cold_floor_s']} s: what the route"
        f" pays, the target reads this one)\n"
        f"    ratio to the warm-connection floor {out['ratio']} ({out['floor_s']} s: the statement alone,"
        f" on a backend whose catalog caches are built)\n"
        f"    unsorted rows the route read before streaming: {out['unsorted_rows_floor_s']} s",
        flush=True,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=100_000)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    cluster = Cluster(bindir)
    conns = Conns(cluster)
    try:
        cluster.init()
        cluster.start()
        print(f"building {args.tables} tables...", flush=True)
        print(f"  {json.dumps(build_huge(cluster, args.tables))}", flush=True)
        result = measure(cluster, conns, "huge", "public", unsorted=args.tables <= 20_000)
    finally:
        conns.close()
        cluster.destroy()
    print(json.dumps(result, indent=1))
    return 0 if result["status_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
