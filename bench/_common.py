"""What the benchmarks share: timing, a throwaway cluster with an agent, a table.

Not a benchmark itself (``bench/run.py`` runs ``*_bench.py`` files only). The
benchmarks are run as scripts (``.venv/bin/python bench/<name>_bench.py``):
Python then puts ``bench/`` on ``sys.path``, so they ``import _common``; this
module puts the repository root there too, for ``agent_core``.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent_core.auth import UsersFile
from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing import PASSWORD, Response, RunningAgent, agent_config

#: Median and p95 of a measurement, in milliseconds.
Figures = tuple[float, float]


def timed(fn: Callable[[], object], n: int) -> Figures:
    """Median and p95 of ``n`` calls of ``fn``, in milliseconds."""
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(0, int(len(samples) * 0.95) - 1)]


def ok(res: Response) -> Response:
    """``res``, which must be a 200."""
    assert res.status == 200, res
    return res


class Bench:
    """A throwaway cluster and an agent on it, made by :func:`cluster_and_agent`."""

    def __init__(self, cluster: Cluster, running: RunningAgent):
        self.cluster = cluster
        self.running = running
        self._conns: list[Any] = []

    def connect(self, dbname: str = "postgres") -> Any:
        """A psycopg2 connection (autocommit), closed on exit before the agent stops."""
        conn = self.cluster.connect(dbname)
        self._conns.append(conn)
        return conn

    def _close(self) -> None:
        for conn in self._conns:
            conn.close()


@contextlib.contextmanager
def cluster_and_agent(
    plugins: Mapping[str, Any] | None = None, setup: Callable[[Cluster], None] | None = None
) -> Iterator[Bench]:
    """Start a throwaway PostgreSQL cluster, run ``setup(cluster)``, then start an
    agent with ``plugins`` on 127.0.0.1 (log level WARNING, user ``alice``).

    On exit: connections of :meth:`Bench.connect` closed, agent stopped, cluster
    and agent home removed. Without PostgreSQL's server binaries, says what to
    install and exits with status 2.
    """
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    plugins = dict(plugins or {})
    cluster = Cluster(bindir)
    home = tempfile.mkdtemp(prefix="pgwarden-bench-")
    running = None
    bench = None
    try:
        cluster.init()
        cluster.start()
        if setup is not None:
            setup(cluster)
        UsersFile(f"{home}/users").set("alice", PASSWORD)
        running = RunningAgent(agent_config(cluster, home, plugins, {"agent": {"log_level": "WARNING"}}), plugins, {})
        bench = Bench(cluster, running)
        yield bench
    finally:
        if bench is not None:
            bench._close()
        if running is not None:
            running.stop()
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)


def print_table(
    first: str, rows: Sequence[tuple[str, Figures]], floors: Mapping[str, Figures], width: int = 40
) -> None:
    """Print one line per measurement: median, p95, and the ratio of its median
    to each floor's median (column ``x <floor name>``)."""
    ratios = [(f"x {name}", figures[0]) for name, figures in floors.items()]
    print(f"{first:<{width}} {'median ms':>10} {'p95 ms':>8}" + "".join(f" {h:>10}" for h, _ in ratios))
    for name, (median, p95) in rows:
        print(f"{name:<{width}} {median:>10.2f} {p95:>8.2f}" + "".join(f" {median / f:>10.2f}" for _, f in ratios))
