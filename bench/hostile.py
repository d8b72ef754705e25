"""Service beside hostile peers: what a fresh client sees while others hold
connections open (issue 13's front).

Starts a throwaway cluster and a TLS agent (both plugins, production
defaults), then times fresh-connection requests from 127.0.0.1 — ``GET
/status`` and ``GET /activity`` with the key, each on a new TLS connection —
in three situations measured in the same run:

- ``quiet``: nobody else connected (the floor);
- ``crowd150``: 50 peers that never send a byte, 50 stopped half-way through
  their ClientHello, 50 trickling request headers a byte every 0.5 s;
- ``crowd2000``: 1,000 idle keep-alive TLS connections and 1,000 slow ones
  (handshake done, request head never finished), with the agent's RSS.

Prints p50/p95/p99/max per situation and the ratio of each p99 to the quiet
one; ``--json FILE`` writes the figures. Asserts nothing about timing;
``--smoke`` runs a few requests only (used by ``make test`` so it cannot rot).
Hostile peers bind 127.0.x.y source addresses (50 per address), loopback only.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from _common import AgentProcess
from load import summary

from agent_core.cluster import Cluster, find_bindir
from agent_core.testing.peers import closing_all, hostile_crowd, source, timed_get, tls_connect

KEY = "bench-key-0123456789abcdef"


def measure(port: int, seconds: float, requests: int) -> dict[str, Any]:
    """Fresh TLS requests for ``seconds`` (at least ``requests`` of them)."""
    samples: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or len(samples) + errors < requests:
        for path, headers in (("/status", {}), ("/activity", {"X-Pgwarden-Key": KEY})):
            try:
                status, took = timed_get(port, path, tls=True, timeout=10, headers=headers)
            except OSError:
                errors += 1
                continue
            if status == 200:
                samples.append(took * 1000)
            else:
                errors += 1
    return {**summary(samples), "requests": len(samples), "errors": errors}


def crowd2000(port: int, agent: AgentProcess, seconds: float, n: int) -> dict[str, Any]:
    request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with closing_all([]) as idle, closing_all([]) as slow:
        for i in range(n):
            s = tls_connect(port, source(i))
            s.sendall(request)
            s.recv(65536)
            idle.append(s)
        for i in range(n, 2 * n):
            s = tls_connect(port, source(i))
            s.sendall(b"GET /status HTTP/1.1\r\nHost: ")
            slow.append(s)
        result = measure(port, seconds, 10)
        result["agent_rss_mb"] = round(agent.rss_mb(), 1)
        result["peers"] = len(idle) + len(slow)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few requests per situation (seconds, not minutes)")
    parser.add_argument("--json", type=Path, help="write the figures there")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 <= hard or (hard == resource.RLIM_INFINITY and soft < 8192):
        resource.setrlimit(resource.RLIMIT_NOFILE, (8192, hard))
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL server binaries not found (apt-get install postgresql)", file=sys.stderr)
        return 1
    seconds, peers = (1.0, 50) if args.smoke else (8.0, 1000)
    cluster = Cluster(bindir)
    cluster.init()
    cluster.start()
    try:
        agent = AgentProcess(cluster, tls=True, settings={"key": KEY})
        try:
            port = int(agent.url.rsplit(":", 1)[1])
            rss_idle = agent.rss_mb()
            results: dict[str, Any] = {"quiet": measure(port, seconds, 10)}
            with hostile_crowd(port, silent=50, half=50, trickling=50, first=10_000):
                results["crowd150"] = measure(port, min(seconds, 4.0), 10)
            results["crowd2000"] = crowd2000(port, agent, min(seconds, 5.0), peers)
            results["agent_rss_idle_mb"] = round(rss_idle, 1)
        finally:
            agent.stop()
    finally:
        cluster.destroy()
    quiet_p99 = results["quiet"]["p99"] or 0
    columns = ("requests", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms")
    print(f"{'situation':<12} " + " ".join(f"{c:>8}" for c in columns) + " ratio")
    for name in ("quiet", "crowd150", "crowd2000"):
        r = results[name]
        ratio = (r["p99"] / quiet_p99) if quiet_p99 and r["p99"] else float("nan")
        print(
            f"{name:<12} {r['requests']:>8} {r['errors']:>6} {r['p50']:>8.2f} {r['p95']:>8.2f} {r['p99']:>8.2f} "
            f"{r['max']:>8.2f} x{ratio:.2f}"
        )
    print(f"agent RSS idle {results['agent_rss_idle_mb']} MB, with {results['crowd2000']['peers']} peers "
          f"{results['crowd2000']['agent_rss_mb']} MB")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any(results[n]["errors"] for n in ("quiet", "crowd150", "crowd2000")) else 0


if __name__ == "__main__":
    sys.exit(main())
