"""The activity plugin's metrics for ``GET /metrics`` (docs/metrics.md).

One aggregate over ``pg_stat_activity`` (no per-backend function call) gives
every live figure; it runs at most once per ``[agent] metrics_max_age``
seconds however often Prometheus scrapes (``agent.metrics.live``). Names
follow postgres_exporter where it has the figure (``pg_stat_activity_count``,
``pg_stat_activity_max_tx_duration``, labels ``datname`` and ``state``).
The agent's own connections are left out, as in the activity listings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import service

#: Client backends by database, state and wait event type, with the age of the oldest transaction.
BACKENDS = """
SELECT coalesce(d.datname, '') AS datname,
       coalesce(a.state, 'unknown') AS state,
       coalesce(a.wait_event_type, '') AS wait_event_type,
       count(*) AS n,
       coalesce(max(EXTRACT(EPOCH FROM now() - a.xact_start)), 0)::float8 AS max_tx
FROM pg_catalog.pg_stat_activity AS a LEFT JOIN pg_catalog.pg_database AS d ON d.oid = a.datid
WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.pid <> ALL(%(own)s::int[])
GROUP BY 1, 2, 3
"""


class ActivityCollector:
    def __init__(self, agent: Any):
        self.agent = agent

    def _read(self) -> list[dict[str, Any]]:
        own = sorted(self.agent.postgres.own_pids)
        return self.agent.postgres.query(BACKENDS, {"own": own})

    def collect(self) -> Iterator[Metric]:
        rows = self.agent.metrics.live("activity.backends", self._read)
        count = GaugeMetricFamily(
            "pg_stat_activity_count", "Client backends by database and state.", labels=["datname", "state"]
        )
        longest = GaugeMetricFamily(
            "pg_stat_activity_max_tx_duration",
            "Age in seconds of the oldest transaction by database and state.",
            labels=["datname", "state"],
        )
        detail = GaugeMetricFamily(
            "pgwarden_activity_backends",
            "Client backends by state and wait event type ('' when not waiting).",
            labels=["state", "wait_event_type"],
        )
        by_state: dict[tuple[str, str], list[float]] = {}
        by_wait: dict[tuple[str, str], float] = {}
        blocked = 0.0
        oldest = 0.0
        for r in rows:
            key = (r["datname"], r["state"])
            entry = by_state.setdefault(key, [0.0, 0.0])
            entry[0] += r["n"]
            entry[1] = max(entry[1], r["max_tx"])
            wait = (r["state"], r["wait_event_type"])
            by_wait[wait] = by_wait.get(wait, 0) + r["n"]
            if r["wait_event_type"] == "Lock":
                blocked += r["n"]
            oldest = max(oldest, r["max_tx"])
        for (datname, state), (n, max_tx) in sorted(by_state.items()):
            count.add_metric([datname, state], n)
            longest.add_metric([datname, state], max_tx)
        for (state, event_type), n in sorted(by_wait.items()):
            detail.add_metric([state, event_type], n)
        yield count
        yield longest
        yield detail
        yield GaugeMetricFamily(
            "pgwarden_activity_blocked_backends", "Client backends waiting for a heavyweight lock.", blocked
        )
        yield GaugeMetricFamily(
            "pgwarden_activity_oldest_xact_age_seconds",
            "Age of the oldest open transaction of a client backend.",
            oldest,
        )
        kills = CounterMetricFamily(
            "pgwarden_activity_kills",
            "Backends asked to be terminated through the API since the agent started, by result.",
            labels=["result"],
        )
        try:
            counts = service.get(self.agent).kills
        except Exception:  # not started yet, or stopped
            counts = {"terminated": 0, "refused": 0}
        for result in ("terminated", "refused"):
            kills.add_metric([result], counts[result])
        yield kills
