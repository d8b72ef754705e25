"""``GET /metrics``: the agent and what its plugins know, for Prometheus.

Each agent has its own :class:`Metrics` and its own
``prometheus_client.CollectorRegistry`` (never the library's global default
registry: tests run many agents in one process, and a plugin imported twice
would clash there). What the agent counts as it goes (requests, logins,
operations ended) is kept in counters and histograms; what it can read at
any time (sessions open, the scheduler's queue, the network front, the
store's errors, whether PostgreSQL answers) is read when Prometheus scrapes,
by :class:`CoreCollector`. Plugins add collectors with the ``agent_metrics``
hook (docs/plugins/hooks.md); a collector that fails is logged and left out
of that scrape, the others still answer.

Live figures read from PostgreSQL are reused for ``[agent] metrics_max_age``
seconds (:meth:`Metrics.live`): however often a scrape comes, PostgreSQL
sees at most one probe connection and one cheap query per plugin per that
interval. Every metric and its labels: docs/metrics.md.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, PlatformCollector, ProcessCollector, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics

from agent_core import __version__
from agent_core.errors import first_line
from agent_core.store import now, operations, sessions

if TYPE_CHECKING:
    from agent_core.interfaces import Agent

log = logging.getLogger("pgwarden.metrics")

#: The route label of a request no route matched (404, 405): never the raw path.
UNMATCHED = "(unmatched)"
#: The route label of a CORS preflight (answered for any path).
PREFLIGHT = "(preflight)"
#: Results a login is counted under.
LOGIN_RESULTS = ("success", "failure", "throttled", "busy")
#: How an operation may end.
ENDINGS = ("done", "failed", "canceled", "aborted")
#: Whether this prometheus-client's OpenMetrics writer takes ``escaping`` (0.22 and later): by default
#: (``underscores``) it rewrites every sample name character by character, about half the
#: rendering's time; ``allow-utf-8`` writes legacy names unchanged, so it is used when every name is one.
_ESCAPING = "escaping" in inspect.signature(openmetrics.generate_latest).parameters
_LEGACY_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LEGACY_LABEL = re.compile(r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*")
#: Request latency buckets, seconds: most answers take milliseconds, a few (logins, big reads) seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Live:
    """Values computed at most once per ``max_age`` seconds per key, shared by
    concurrent scrapes (one computes, the others wait for it). An error is
    kept for ``max_age`` too: a PostgreSQL that is down is not retried by
    every scrape. ``clock`` is injectable (tests)."""

    def __init__(self, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.max_age = max_age
        self.clock = clock
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._kept: dict[str, tuple[float, Any, BaseException | None]] = {}
        #: Computations run, by key (tests and bench read it).
        self.computed: dict[str, int] = {}

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            kept = self._kept.get(key)
            if kept is None or self.clock() - kept[0] >= self.max_age:
                started = self.clock()
                self.computed[key] = self.computed.get(key, 0) + 1
                try:
                    kept = (started, compute(), None)
                except Exception as e:
                    kept = (started, None, e)
                self._kept[key] = kept
        if kept[2] is not None:
            raise kept[2]
        return kept[1]


class _Guarded:
    """A plugin's collector: a failure is logged and counted, never a failed scrape."""

    def __init__(self, plugin: str, collector: Any, metrics: Metrics):
        self.plugin = plugin
        self.collector = collector
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self.collector.collect())
        except Exception as e:
            log.error("metrics of plugin %r left out of this scrape: %s", self.plugin, first_line(e))
            self.metrics.collector_errors.labels(plugin=self.plugin).inc()
            return iter(())
        return iter(families)


class Metrics:
    """The metrics of one agent (``agent.metrics``)."""

    def __init__(self, agent: Agent, clock: Callable[[], float] = time.monotonic):
        self.agent = agent
        self.registry = CollectorRegistry(auto_describe=False)
        self.live_values = Live(agent.config.agent["metrics_max_age"], clock)
        #: The network fronts serving now (set by the agent once its server exists).
        self.fronts: Callable[[], list[Any]] = list
        r = self.registry
        self.requests = Counter(
            "pgwarden_http_requests",
            "HTTP requests answered, by route template (never the raw path), method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "pgwarden_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=BUCKETS,
            registry=r,
        )
        self.logins = Counter("pgwarden_logins", "POST /login attempts by result.", ["result"], registry=r)
        for result in LOGIN_RESULTS:
            self.logins.labels(result=result)
        self.operations = Counter(
            "pgwarden_scheduler_operations",
            "Operations ended since the agent started, by task and how they ended.",
            ["task", "status"],
            registry=r,
        )
        self.collector_errors = Counter(
            "pgwarden_metrics_collector_errors",
            "Scrapes in which a plugin's collector failed (its metrics were left out).",
            ["plugin"],
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(CoreCollector(agent, self))

    # -- what the agent counts as it goes -----------------------------------

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=status).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def login(self, result: str) -> None:
        self.logins.labels(result=result).inc()

    def operation_ended(self, task: str, status: str) -> None:
        self.operations.labels(task=task, status=status).inc()

    def tasks_registered(self, names: Iterable[str]) -> None:
        """Every task's endings shown from the start (0), so rates work from the first scrape."""
        for name in names:
            for status in ENDINGS:
                self.operations.labels(task=name, status=status)

    def add_plugin_collectors(self, plugin: str, collectors: Iterable[Any]) -> None:
        self.collector_errors.labels(plugin=plugin)
        for collector in collectors:
            self.registry.register(_Guarded(plugin, collector, self))  # type: ignore[arg-type]

    # -- what is read at scrape time ----------------------------------------

    def live(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``'s value, computed at most once per ``[agent]
        metrics_max_age`` seconds for ``key`` (use ``<plugin>.<what>``); its
        error raised again meanwhile. For plugins' collectors reading PostgreSQL."""
        return self.live_values.get(key, compute)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition (OpenMetrics when ``accept`` asks for it) and its content type."""
        families = _Collected(list(self.registry.collect()))
        if not (accept and "application/openmetrics-text" in accept):
            return exposition.generate_latest(families), exposition.CONTENT_TYPE_LATEST  # type: ignore[arg-type]
        if _ESCAPING and families.legacy_names():
            body = openmetrics.generate_latest(families, escaping=openmetrics.ALLOWUTF8)  # type: ignore[arg-type]
        else:
            body = openmetrics.generate_latest(families)  # type: ignore[arg-type]
        return body, openmetrics.CONTENT_TYPE_LATEST


class _Collected:
    """Families already collected, handed to prometheus-client's writers as a registry."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)

    def legacy_names(self) -> bool:
        """Whether every sample and label name is in the legacy character set (written the same by every escaping)."""
        for family in self.families:
            if not _LEGACY_NAME.fullmatch(family.name):
                return False
            for sample in family.samples:
                if not _LEGACY_NAME.fullmatch(sample.name):
                    return False
                for label in sample.labels:
                    if not _LEGACY_LABEL.fullmatch(label):
                        return False
        return True


def _since(value: Any, stamp: Any) -> float:
    if value is None:
        return 0.0
    if getattr(value, "tzinfo", None) is None:  # aggregate results bypass the column type on SQLite
        value = datetime.fromisoformat(str(value)).replace(tzinfo=stamp.tzinfo)
    return max(0.0, (stamp - value).total_seconds())


class CoreCollector:
    """The figures read at scrape time: store, scheduler, sessions, front, PostgreSQL."""

    def __init__(self, agent: Agent, metrics: Metrics):
        self.agent = agent
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        agent = self.agent
        info = GaugeMetricFamily("pgwarden_info", "The agent's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield GaugeMetricFamily("pgwarden_start_time_seconds", "When the agent started (Unix time).", agent.started_at)
        yield from self._store()
        yield from self._front()
        yield from self._postgresql()

    def _store(self) -> Iterator[Metric]:
        agent = self.agent
        settings = agent.config.agent
        stamp = now()
        up = 1
        try:
            with agent.store.connect() as conn:
                open_sessions = conn.execute(
                    sa.select(sa.func.count()).where(
                        sessions.c.last_seen > stamp - timedelta(seconds=settings["session_idle"]),
                        sessions.c.created_at > stamp - timedelta(seconds=settings["session_lifetime"]),
                    )
                ).scalar()
                tasks = list(agent.scheduler.tasks)
                due = conn.execute(
                    sa.select(sa.func.count(), sa.func.min(operations.c.scheduled_at)).where(
                        operations.c.status == "todo",
                        operations.c.task.in_(tasks),
                        operations.c.scheduled_at <= stamp,
                    )
                ).first()
        except Exception as e:  # counted by the store itself (pgwarden_store_errors_total)
            log.warning("metrics: the operations store could not be read: %s", first_line(e))
            up = 0
        yield GaugeMetricFamily("pgwarden_store_up", "Whether the operations store answered this scrape.", up)
        yield CounterMetricFamily(
            "pgwarden_store_errors",
            "Failures of the operations store (each answered 503 or retried).",
            agent.store.errors,
        )
        if up:
            yield GaugeMetricFamily(
                "pgwarden_sessions_open", "Sessions neither idle too long nor too old.", int(open_sessions or 0)
            )
            yield GaugeMetricFamily(
                "pgwarden_scheduler_queue_depth", "Operations due (scheduled time passed) and not started.", due[0]
            )
            yield GaugeMetricFamily(
                "pgwarden_scheduler_lateness_seconds",
                "How long the oldest due operation has waited past its scheduled time (0: none waits).",
                _since(due[1], stamp),
            )
        yield GaugeMetricFamily("pgwarden_scheduler_running", "Operations running now.", agent.scheduler.running)

    def _front(self) -> Iterator[Metric]:
        fronts = self.metrics.fronts()
        yield GaugeMetricFamily(
            "pgwarden_front_open_connections",
            "Connections open now on the network front.",
            sum(f.open_connections for f in fronts),
        )
        totals = CounterMetricFamily(
            "pgwarden_front_connections",
            "Connections of the network front by what happened to them: accepted, refused_full"
            " (max_connections open, none idle to evict), refused_address (max_connections_per_address),"
            " evicted (an idle one closed for a new one), expired (timed out).",
            labels=["event"],
        )
        for event in ("accepted", "refused_full", "refused_address", "evicted", "expired"):
            totals.add_metric([event], sum(f.stats.get(event, 0) for f in fronts))
        yield totals

    def _postgresql(self) -> Iterator[Metric]:
        try:
            seconds = self.metrics.live("core.postgresql", self._probe)
            up = 1
        except Exception:
            seconds, up = None, 0
        yield GaugeMetricFamily(
            "pg_up", "Whether PostgreSQL accepted a new connection (probed once per [agent] metrics_max_age).", up
        )
        if seconds is not None:
            yield GaugeMetricFamily(
                "pgwarden_postgresql_connect_seconds", "Time the last probe took to open a new connection.", seconds
            )

    def _probe(self) -> float:
        """Open and close a new connection (no query): PostgreSQL's reachability and connect latency."""
        postgres = self.agent.postgres
        started = time.monotonic()
        conn = postgres._open(None, "pgwarden-metrics", timeouts=True)
        seconds = time.monotonic() - started
        postgres._discard(conn)
        return seconds
