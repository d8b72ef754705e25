"""The maintenance plugin's metrics for ``GET /metrics`` (docs/metrics.md).

Database sizes and bloat estimates come from the same figures as ``GET
/maintenance`` (:mod:`.flight`): a scrape never runs that statement itself.
It serves the figures last read, and when they are older than
``[maintenance] estimates_max_age`` it starts one background refresh (never
two at a time) whose figures the next scrapes serve. So the estimate SQL runs
at most once per ``estimates_max_age`` because of scrapes, shared with the
HTTP reads through the flights, and a scrape answers in milliseconds however
large the catalog. ``pg_database_size_bytes{datname}`` is postgres_exporter's
name. Operations by kind and status are read from the operations store, at
most once per ``[agent] metrics_max_age``.
"""

from __future__ import annotations

import logging
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from agent_core.errors import DomainError, Unavailable, first_line
from agent_core.operations.model import STATUSES
from agent_core.store import operations

from . import queries

log = logging.getLogger("pgwarden.maintenance")


class MaintenanceCollector:
    def __init__(self, agent: Any, clock: Any = time.monotonic):
        self.agent = agent
        self.clock = clock
        self.max_age: float = agent.config.section("maintenance")["estimates_max_age"]
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] = []
        self._read_at: float | None = None  # when the figures served were read (their oldest)
        self._started: float | None = None  # when the last refresh started
        self._thread: threading.Thread | None = None
        #: Background refreshes started (tests read it).
        self.refreshes = 0

    def _refresh(self, started: float) -> None:
        from .routes import database_figures  # the views; not needed before

        shim = types.SimpleNamespace(agent=self.agent)
        entries, oldest = [], 0.0
        try:
            for db in self.agent.postgres.query(queries.DATABASES):
                try:
                    figures, age = database_figures(shim, db["datname"])  # type: ignore[arg-type]
                except DomainError as e:  # dropped meanwhile, not allowed, too slow: left out
                    if isinstance(e, Unavailable):
                        raise
                    continue
                entries.append(figures["entry"])
                oldest = max(oldest, age)
        except Exception as e:
            log.warning("metrics: the database figures could not be read: %s", first_line(e))
            return
        with self._lock:
            self._entries = entries
            self._read_at = started - oldest

    def _maybe_refresh(self) -> None:
        now = self.clock()
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._started is not None and now - self._started < self.max_age:
                return
            self._started = now
            self.refreshes += 1
            self._thread = threading.Thread(
                target=self._refresh, args=(now,), name="pgwarden-maintenance-metrics", daemon=True
            )
            self._thread.start()

    def _operations(self) -> list[tuple[str, str, int]]:
        with self.agent.store.connect() as conn:
            rows = conn.execute(
                sa.select(operations.c.task, operations.c.status, sa.func.count())
                .where(operations.c.task.like("maintenance.%"))
                .group_by(operations.c.task, operations.c.status)
            ).all()
        return [(str(task), str(status), int(n)) for task, status, n in rows]

    def collect(self) -> Iterator[Metric]:
        self._maybe_refresh()
        with self._lock:
            entries, read_at = self._entries, self._read_at
        size = GaugeMetricFamily("pg_database_size_bytes", "Disk space used by the database.", labels=["datname"])
        bloat = GaugeMetricFamily(
            "pgwarden_maintenance_bloat_bytes",
            "Estimated bloat of the database's tables or indexes (statistics-based estimates).",
            labels=["datname", "kind"],
        )
        for entry in entries:
            size.add_metric([entry["datname"]], entry["total_bytes"])
            for kind in ("tables", "indexes"):
                value = entry.get(f"{kind}_bloat_bytes")
                if value is not None:
                    bloat.add_metric([entry["datname"], kind[:-1] if kind == "tables" else "index"], value)
        yield size
        yield bloat
        if read_at is not None:
            yield GaugeMetricFamily(
                "pgwarden_maintenance_estimates_age_seconds",
                "Age of the sizes and bloat estimates served (refreshed after [maintenance] estimates_max_age).",
                max(0.0, self.clock() - read_at),
            )
        ops = GaugeMetricFamily(
            "pgwarden_maintenance_operations",
            "Maintenance operations kept in the store, by kind and status.",
            labels=["kind", "status"],
        )
        counts = {
            (task.split(".", 1)[1], status): n
            for task, status, n in self.agent.metrics.live("maintenance.operations", self._operations)
        }
        kinds = sorted(
            {kind for kind, _ in counts}
            | {t.split(".", 1)[1] for t in self.agent.scheduler.tasks if t.startswith("maintenance.")}
        )
        for kind in kinds:
            for status in STATUSES:
                ops.add_metric([kind, status], counts.get((kind, status), 0))
        yield ops
