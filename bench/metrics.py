"""What ``GET /metrics`` costs (issue 17): scrape latency and PostgreSQL statements.

Starts a throwaway cluster with the ``app`` and ``wide`` datasets (10,000
tables and 20,000 indexes in database ``wide``, 300 schemas in ``many``) and
holds the ``busy`` sessions (100 idle, 10 running, a lock chain), then, for
three agents in their own processes (``pgwarden serve``, TLS, both plugins,
production defaults otherwise):

- ``reused``: the defaults, ``[agent] metrics_max_age`` 5 s (live figures
  reused between scrapes: back-to-back scrapes mostly read none),
  ``[maintenance] estimates_max_age`` 10 s (a background refresh of the
  sizes and estimates, seconds of work on ``wide``, every 10 s of scraping);
- ``cold``: ``metrics_max_age = 0``, so every scrape reads PostgreSQL (one
  probe connection, the activity aggregate): what each scrape of a
  Prometheus scraping every 15 s or less often costs;
- ``cold, no refresh``: as ``cold`` with ``estimates_max_age = 3600``: no
  background refresh runs beside the timed scrapes (the first one only, before);

it prints the latency (p50/p95/p99/max ms) of ``GET /metrics`` with the key
as a bearer token and Prometheus's ``Accept`` header, on one TLS keep-alive
connection, beside the floors measured in the same run on the same
connection: ``GET /status`` (public, trivial) and ``GET /profile`` (a
session, trivial); and, run directly with psycopg2, the activity aggregate
on a warm connection and a new connection opened and closed (what the probe
does). Ratio = scrape p50 / ``GET /profile`` p50.

PostgreSQL statements are counted from the server's log
(``log_statement = all``, ``log_connections = on``, the application name in
each line, turned on once the datasets are built): the agent's statements
and connections over a window without requests, then over a window of the
same length with scrapes back to back; the difference is what scrapes
caused, by kind (the activity aggregate, the probe connections, the
maintenance plugin's background refresh of sizes and estimates), and per
``metrics_max_age`` interval.

Asserts nothing about timing. ``--smoke`` (seconds: tiny datasets, a few
scrapes, short windows) runs in ``make test`` so it cannot rot; ``--json
FILE`` writes the figures.

    .venv/bin/python bench/metrics.py            # full: a few minutes (building wide)
    .venv/bin/python bench/metrics.py --smoke
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import AgentProcess, timed
from datasets import FULL, SMOKE, Busy, build_app, build_wide

from agent_activity.metrics import BACKENDS
from agent_core.cluster import Cluster, find_bindir
from agent_core.testing import KEY
from agent_core.testing.peers import client_context

#: What Prometheus 2.x sends.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SCRAPE = {"Authorization": f"Bearer {KEY}", "Accept": ACCEPT}
LOG_SETTINGS = {"log_statement": "all", "log_connections": "on", "log_line_prefix": "%m [%p] app=%a "}
STATEMENT = re.compile(r"\[\d+\] app=(\S*) LOG:  statement: (.*)", re.S)
CONNECTION = re.compile(r"LOG:  connection authorized: .*application_name=(\S+)")
ENTRY = re.compile(r"^\d{4}-\d\d-\d\d ", re.M)  # a log entry starts with its timestamp (log_line_prefix)


class KeepAlive:
    """One TLS keep-alive connection to the agent, reopened if the agent closes it (counted)."""

    def __init__(self, url: str):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reconnects = 0
        self.conn = self._open()

    def _open(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=60, context=client_context())

    def get(self, path: str, headers: dict[str, str]) -> bytes:
        for attempt in (0, 1):
            try:
                self.conn.request("GET", path, headers=headers)
                res = self.conn.getresponse()
                body = res.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if attempt:
                    raise
                self.conn.close()
                self.conn = self._open()
                self.reconnects += 1
                continue
            if res.status != 200:
                raise SystemExit(f"GET {path}: {res.status} {body[:200]!r}")
            if res.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = self._open()
                self.reconnects += 1
            return body
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


class ServerLog:
    """The agent's statements and connections in the cluster's log since :meth:`mark`."""

    def __init__(self, cluster: Cluster):
        self.path = Path(cluster.logfile)
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def count(self) -> dict[str, int]:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
        counts = {"statements": 0, "activity_aggregate": 0, "connections": 0, "probe_connections": 0}
        starts = [m.start() for m in ENTRY.finditer(text)] + [len(text)]
        for entry in (text[a:b] for a, b in zip(starts, starts[1:])):  # a statement may span lines
            if m := STATEMENT.search(entry):
                if m.group(1).startswith("pgwarden"):
                    counts["statements"] += 1
                    counts["activity_aggregate"] += "AS max_tx" in m.group(2)  # the activity plugin's BACKENDS
            elif (m := CONNECTION.search(entry)) and m.group(1).startswith("pgwarden"):
                counts["connections"] += 1
                counts["probe_connections"] += m.group(1) == "pgwarden-metrics"
        return counts


def first_figures(conn: KeepAlive, deadline: float) -> float:
    """Scrape until the maintenance plugin's first background read is served (bounded); its seconds."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        if b"pgwarden_maintenance_estimates_age_seconds" in conn.get("/metrics", SCRAPE):
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit("the maintenance figures did not arrive in GET /metrics in time")


def count_statements(log: ServerLog, conn: KeepAlive, window: float, max_age: float) -> dict[str, Any]:
    """Agent statements over ``window`` s idle, then over ``window`` s of back-to-back scrapes."""
    log.mark()
    time.sleep(window)
    time.sleep(0.5)  # the log written
    idle = log.count()
    log.mark()
    scrapes = 0
    end = time.monotonic() + window
    while time.monotonic() < end:
        conn.get("/metrics", SCRAPE)
        scrapes += 1
    time.sleep(0.5)
    busy = log.count()
    caused = {k: busy[k] - idle[k] for k in busy}
    intervals = window / max_age if max_age else scrapes
    return {
        "window_s": window,
        "scrapes": scrapes,
        "idle": idle,
        "scraping": busy,
        "caused_by_scrapes": caused,
        "intervals": round(intervals, 2),
        "per_interval": {k: round(v / intervals, 2) for k, v in busy.items()},
    }


def run_agent(
    cluster: Cluster, label: str, settings: dict[str, Any], n: int, window: float, maintenance: dict[str, Any]
) -> dict[str, Any]:
    agent = AgentProcess(cluster, tls=True, settings={"key": KEY, **settings}, sections={"maintenance": maintenance})
    try:
        conn = KeepAlive(agent.url)
        session = agent.session()
        figures: dict[str, Any] = {"label": label, "settings": settings, "maintenance": maintenance}
        figures["first_figures_s"] = round(first_figures(conn, time.monotonic() + 300), 2)
        body = conn.get("/metrics", SCRAPE)
        figures["scrape_bytes"] = len(body)
        figures["samples"] = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        figures["GET /status"] = timed(lambda: conn.get("/status", {}), n)
        figures["GET /profile"] = timed(lambda: conn.get("/profile", {"X-Session": session}), n)
        figures["GET /metrics"] = timed(lambda: conn.get("/metrics", SCRAPE), n)
        max_age = float(settings.get("metrics_max_age", 5))
        figures["postgresql"] = count_statements(ServerLog(cluster), conn, window, max_age)
        figures["reconnects"] = conn.reconnects
        figures["agent_rss_mb"] = round(agent.rss_mb(), 1)
        conn.close()
        return figures
    finally:
        agent.stop()


def sql_floors(cluster: Cluster, n: int) -> dict[str, Any]:
    """The activity aggregate on a warm connection, and a new connection opened and closed."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:

            def aggregate() -> None:
                cur.execute(BACKENDS, {"own": []})
                cur.fetchall()

            out = {"activity aggregate (warm connection)": timed(aggregate, n)}
    finally:
        conn.close()
    out["new connection, no query"] = timed(lambda: cluster.connect().close(), max(5, n // 10))
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"GET /metrics ({figures['mode']} run): datasets {json.dumps(figures['datasets'])}",
        "",
        "| agent | request | n | p50 | p95 | p99 | max | ratio p50 / GET /profile p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in figures["agents"]:
        floor = run["GET /profile"]["p50"]
        for name in ("GET /status", "GET /profile", "GET /metrics"):
            t = run[name]
            ratio = f"x{t['p50'] / floor:.2f}" if floor else "-"
            lines.append(
                f"| {run['label']} | {name} | {t['requests']} | {ms(t['p50'])} | {ms(t['p95'])} | {ms(t['p99'])}"
                f" | {ms(t['max'])} | {ratio} |"
            )
    for name, t in figures["sql_floors"].items():
        lines.append(
            f"| (psycopg2) | {name} | {t['requests']} | {ms(t['p50'])} | {ms(t['p95'])} | {ms(t['p99'])}"
            f" | {ms(t['max'])} | - |"
        )
    lines += ["", "| agent | scrapes | window s | caused by scrapes | per metrics_max_age interval (scraping) |"]
    lines.append("|---|---|---|---|---|")
    for run in figures["agents"]:
        pg = run["postgresql"]
        lines.append(
            f"| {run['label']} | {pg['scrapes']} | {pg['window_s']} | {json.dumps(pg['caused_by_scrapes'])}"
            f" | {json.dumps(pg['per_interval'])} |"
        )
    lines.append("")
    for run in figures["agents"]:
        lines.append(
            f"{run['label']}: exposition {run['scrape_bytes']} bytes, {run['samples']} samples; first maintenance"
            f" figures after {run['first_figures_s']} s; reconnects {run['reconnects']}; RSS {run['agent_rss_mb']} MB"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny datasets, a few scrapes (seconds): make test")
    parser.add_argument("--scrapes", type=int, help="timed requests of each kind (default 2000; 20 with --smoke)")
    parser.add_argument("--window", type=float, help="seconds of each statement-counting window (default 20)")
    parser.add_argument("--seed", type=float, default=0.42, help="seed of the datasets' random values")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    scale = SMOKE if args.smoke else FULL
    n = args.scrapes or (20 if args.smoke else 2000)
    window = args.window or (1.0 if args.smoke else 20.0)

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found")
    cluster = Cluster(bindir)
    busy = None
    figures: dict[str, Any] = {"mode": "smoke" if args.smoke else "full", "datasets": {}}
    try:
        cluster.init()
        cluster.start()
        t0 = time.perf_counter()
        figures["datasets"]["app_s"] = build_app(cluster, scale, args.seed)["seconds"]
        wide = build_wide(cluster, scale)
        figures["datasets"]["wide"] = {k: wide["wide"][k] for k in ("tables", "indexes")}
        busy = Busy(cluster)
        opened = busy.open(scale)
        figures["datasets"]["busy"] = {k: opened[k] for k in ("idle", "running")}
        figures["datasets"]["built_s"] = round(time.perf_counter() - t0, 1)
        for name, value in LOG_SETTINGS.items():
            cluster.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
        cluster.execute("SELECT pg_reload_conf()")
        figures["sql_floors"] = sql_floors(cluster, n)
        figures["agents"] = [
            run_agent(cluster, "reused", {}, n, window, {}),
            run_agent(cluster, "cold", {"metrics_max_age": 0}, n, window, {}),
            run_agent(cluster, "cold, no refresh", {"metrics_max_age": 0}, n, window, {"estimates_max_age": 3600}),
        ]
    finally:
        if busy is not None:
            busy.close()
        cluster.destroy()

    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
