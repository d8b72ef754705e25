"""The dashboard plugin's costs (issue 16): what a request, a sample and a full
history cost.

Starts a throwaway cluster (with ``--databases`` extra databases, since each
sample sizes every database) and an agent in this process with the dashboard
plugin loaded from its entry point, then prints:

- ``requests``: latency of ``GET /dashboard``, ``/dashboard/history`` (a full
  history) and ``/dashboard/config`` with the key, one new connection per
  request as the temboard UI makes them (p50/p95/p99/max ms), and how many
  transactions PostgreSQL counted for them (none: a request reads the
  sampler's samples);
- ``sampler``: per sample, the agent's CPU time and wall time (p50/p95/max ms)
  and the CPU share of one core at the default 2 s interval; the sampling
  PostgreSQL backend's own CPU per sample (``/proc``, when local);
- ``history``: the memory a full history holds (the samples' objects, deep
  ``sys.getsizeof``) and the size of ``GET /dashboard/history`` in JSON.

Asserts nothing about timing; ``--smoke`` runs a few requests only (used by
``make test`` so it cannot rot). ``--json FILE`` writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load import summary

from agent_core.agent import Agent
from agent_core.cluster import Cluster, find_bindir
from agent_core.testing import KEY, Client, agent_config

INTERVAL = 2.0


def deep_size(value: Any, seen: set[int] | None = None) -> int:
    """Bytes held by ``value`` and everything it refers to (dicts, lists, scalars), each object once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        size += sum(deep_size(v, seen) for v in value)
    return size


def xacts(cluster: Cluster) -> int:
    """Transactions PostgreSQL counted so far (commits and rollbacks, every database)."""
    return int(cluster.execute("SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database")[0][0])


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def requests(url: str, n: int) -> dict[str, Any]:
    out = {}
    for path in ("/dashboard", "/dashboard/history", "/dashboard/config"):
        samples = []
        for _ in range(n):
            client = Client(url)
            t0 = time.perf_counter()
            res = client.get(f"{path}?key={KEY}")
            samples.append((time.perf_counter() - t0) * 1000)
            if res.status != 200:
                raise SystemExit(f"{path}: {res.status} {res.text}")
        out[path] = {**rounded(summary(samples)), "requests": n}
    return out


def backend_cpu_ms(agent: Agent) -> float | None:
    """CPU time so far of the agent's PostgreSQL backends (the sampler's among them), in ms."""
    total = 0.0
    for pid in agent.postgres.own_pids.copy():
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return None
        total += t.user + t.system
    return total * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests and samples (seconds): make test")
    parser.add_argument("--databases", type=int, help="extra databases on the cluster (default 20; 2 with --smoke)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    n_requests = 20 if args.smoke else 300
    n_databases = args.databases if args.databases is not None else (2 if args.smoke else 20)
    history_length = 150

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found")
    cluster = Cluster(bindir)
    agent = None
    figures: dict[str, Any] = {"mode": "smoke" if args.smoke else "full", "databases": n_databases + 1}
    try:
        cluster.init()
        cluster.start()
        for i in range(n_databases):
            cluster.execute(f"CREATE DATABASE bench_{i}")
        home = Path(tempfile.mkdtemp(prefix="pgw-bench-dash-"))
        raw = agent_config(cluster, home, {"dashboard": None}, {"dashboard": {"interval": 3600}})
        agent = Agent.from_config(raw)  # entry point, as pgwarden serve does
        agent.start()
        from agent_dashboard import service  # after start: the plugin is loaded

        sampler = service.get(agent).sampler
        # a full history, taken here (the thread sleeps for an hour after its first sample)
        while len(sampler.history()) < 1:
            time.sleep(0.01)
        cpu_before = backend_cpu_ms(agent)
        n_samples = history_length
        for _ in range(n_samples):
            sampler.sample()
        cpu_after = backend_cpu_ms(agent)
        costs = list(sampler.costs)[-n_samples:]
        cpu_ms = [c * 1000 for c, _ in costs]
        wall_ms = [w * 1000 for _, w in costs]
        mean_cpu = sum(cpu_ms) / len(cpu_ms)
        figures["sampler"] = {
            "samples": n_samples,
            "agent_cpu_ms": rounded(summary(cpu_ms)),
            "wall_ms": rounded(summary(wall_ms)),
            "agent_cpu_mean_ms": round(mean_cpu, 3),
            "share_of_one_core_at_2s": f"{mean_cpu / (INTERVAL * 1000) * 100:.3f} %",
            "postgres_backend_cpu_ms_per_sample": None
            if cpu_before is None or cpu_after is None
            else round((cpu_after - cpu_before) / n_samples, 3),
        }
        history = sampler.history()
        body = json.dumps(history)
        figures["history"] = {
            "samples": len(history),
            "memory_bytes": deep_size(history),
            "per_sample_bytes": deep_size(history) // len(history),
            "json_bytes": len(body),
        }
        # transactions PostgreSQL counts meanwhile, without requests then with them
        # (the counting statements are transactions too: the baseline holds them)
        before = xacts(cluster)
        time.sleep(1.5)  # let the counters reach pg_stat_database
        baseline = xacts(cluster) - before
        before = xacts(cluster)
        figures["requests"] = requests(agent.server.url, n_requests)
        time.sleep(1.5)
        figures["requests"]["postgres_transactions_for_requests"] = xacts(cluster) - before - baseline
    finally:
        if agent is not None:
            agent.stop()
        cluster.destroy()

    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
