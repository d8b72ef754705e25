"""The pgwarden benchmark harness (``make bench``; see bench/README.md).

Makes a throwaway PostgreSQL cluster, loads the ``app``, ``wide`` and ``busy``
datasets, starts the agent as its own process (``pgwarden serve``, both
plugins, TLS on; then once more with TLS off) and drives it from a separate
load process (``bench/load.py``) over keep-alive connections at 1, 8 and 32
clients. In the same run it measures each endpoint's floor: the SQL it needs
run directly with psycopg2 on a warm connection, plus a trivial request round
trip (``GET /status``). Writes ``<out>/bench.json`` and ``<out>/bench.md``
and prints the Markdown; ``--results`` also writes ``bench/RESULTS.md``.

    .venv/bin/python bench/run.py                 # full run, 10-minute soak
    .venv/bin/python bench/run.py --soak 60       # shorter soak
    .venv/bin/python bench/run.py --smoke         # seconds: what `make test` runs
    .venv/bin/python bench/run.py --kept-only     # a minute: listings of 100,000 kept operations

Every run is bounded in requests and time. Nothing here asserts timings: the
exit status is 1 only when a request failed (an error is a bug, a slow
answer is a figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from _common import ROOT, AgentProcess, PeakRss, load, timed
from catalog import measure as measure_listing
from datasets import FULL, SMOKE, Busy, build_app, build_huge, build_wide
from floors import Conns, activity_floors, maintenance_floors
from report import markdown, targets

from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing import PASSWORD


@dataclass(frozen=True)
class Plan:
    """How much each kind of run may do (requests, seconds)."""

    clients: tuple[int, ...] = (1, 8, 32)
    light: tuple[int, float] = (5000, 5.0)  # /status, /profile
    heavy: tuple[int, float] = (2000, 5.0)  # activity and app maintenance reads
    wide: tuple[int, float] = (5, 30.0)  # listings of the wide databases, /maintenance
    floor_n: int = 50
    wide_floor_n: int = 3
    logins: int = 20
    pending: int = 1000
    due: int = 8
    kept: int = 100_000  # operations kept in the store, listed page by page
    soak: float = 600.0
    ratio: tuple[int, float] = (20000, 10.0)  # TLS vs plain, GET /profile at 32 keep-alive clients
    tls_soak: int = 1_000_000  # TLS memory soak: mixed TLS requests after the warm-up
    tls_soak_warmup: int = 20000


FULL_PLAN = Plan()
SMOKE_PLAN = Plan(
    clients=(1, 8), light=(40, 2.0), heavy=(16, 2.0), wide=(2, 10.0), floor_n=5, wide_floor_n=2,
    logins=3, pending=20, due=2, kept=2000, soak=3.0, ratio=(200, 2.0), tls_soak=400, tls_soak_warmup=100,
)  # fmt: skip
RATIO_ROUTE = "GET /profile"
#: the TLS memory soak's share of requests sent one connection per request (a TLS handshake each)
TLS_SOAK_CLOSE_SHARE = 0.25

APP_SCHEMA = "shop"
TARGETS = [("app", APP_SCHEMA), ("wide", "public"), ("many", "s_000")]
APP_READS = ("/maintenance/app", f"/maintenance/app/schema/{APP_SCHEMA}")
UNCACHED = "uncached"
SOAK_PATHS = ["/profile", "/activity", f"/maintenance/app/schema/{APP_SCHEMA}", "/status"]


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


class Harness:
    def __init__(self, cluster: Cluster, plan: Plan, report: dict[str, Any]):
        self.cluster = cluster
        self.plan = plan
        self.report = report
        self.conns = Conns(cluster)

    def floor(self, label: str, fn: Any, n: int) -> None:
        self.report["floors"][label] = timed(fn, n)
        print(f"  floor {label}: p50 {self.report['floors'][label]['p50']:.2f} ms", flush=True)

    def run(
        self,
        agent: AgentProcess,
        tls: bool,
        label: str,
        clients: int,
        bound: tuple[int, float],
        session: str | None,
        **kw: Any,
    ) -> dict[str, Any]:
        paths = kw.pop("paths", [label.split(" ", 1)[-1]])
        variant = kw.pop("variant", "")
        result = load(agent, paths, clients, bound[0], bound[1], session=session, **kw)
        entry = {"endpoint": label, "variant": variant, "tls": tls, "clients": clients, **result}
        self.report["runs"].append(entry)
        print(
            f"  {'TLS' if tls else 'plain'} {label}{' ' + variant if variant else ''} x{clients}:"
            f" p50 {result['p50'] or 0:.2f} ms,"
            f" p99 {result['p99'] or 0:.2f} ms, {result['rps'] or 0:.0f} req/s, {result['errors']} errors",
            flush=True,
        )
        return entry

    # -- the TLS agent: everything ----------------------------------------------

    def tls_suite(self, scale: Any) -> None:
        plan, report = self.plan, self.report
        # the scheduler step keeps ``pending`` operations waiting and adds ``due`` ones
        pending_max = max(plan.pending + plan.due, 1000)
        agent = AgentProcess(self.cluster, tls=True, settings={"scheduler_pending_max": pending_max})
        try:
            time.sleep(3)  # the sampler's first samples, the scheduler's first pass
            memory = report["memory"]
            memory["idle_mb"] = round(agent.rss_mb(), 1)
            peak = PeakRss(agent)
            session = agent.session()
            for c in plan.clients:
                self.run(agent, True, "GET /status", c, plan.light, None)
                self.run(agent, True, "GET /profile", c, plan.light, session)
            self.login(agent)

            busy = Busy(self.cluster)
            try:
                report["datasets"]["busy"] = busy.open(scale)
                time.sleep(3)  # two background samples: rates exist (sample_interval 2 s)
                for label, fn in activity_floors(self.conns).items():
                    self.floor(label, fn, plan.floor_n)
                for c in plan.clients:
                    self.run(agent, True, "GET /activity", c, plan.heavy, session)
                for c in plan.clients[:2]:
                    self.run(agent, True, "GET /activity/waiting", c, plan.heavy, session)
                    self.run(agent, True, "GET /activity/blocking", c, plan.heavy, session)
            finally:
                busy.close()

            floors = maintenance_floors(self.conns, TARGETS)
            for label in APP_READS:
                self.floor(label, floors[label], plan.floor_n)
                for c in plan.clients:
                    self.run(agent, True, "GET " + label, c, plan.heavy, session)
            for label, fn in floors.items():
                if label not in report["floors"]:
                    self.floor(label, fn, plan.wide_floor_n)
                    self.run(agent, True, "GET " + label, 1, plan.wide, session)
            self.scheduler(agent, session)

            memory["peak_mb"] = round(peak.stop(), 1)
        finally:
            agent.stop()

    def soak_suite(self) -> None:
        """The soak on a fresh TLS agent (the listings of ``wide`` leave the
        first one's heap large enough to hide a slow growth): a warm-up of the
        same mix (a tenth of the soak, at least 2 s), then RSS before and after."""
        plan, memory = self.plan, self.report["memory"]
        agent = AgentProcess(self.cluster, tls=True)
        try:
            session = agent.session()
            warm = (10**9, max(2.0, plan.soak / 10))
            self.run(agent, True, "soak warm-up (mixed)", 8, warm, session, paths=SOAK_PATHS, warmup=0)
            memory["before_soak_mb"] = round(agent.rss_mb(), 1)
            soak = self.run(agent, True, "soak (mixed)", 8, (10**9, plan.soak), session, paths=SOAK_PATHS, warmup=0)
            soak["paths"] = SOAK_PATHS
            memory["after_soak_mb"] = round(agent.rss_mb(), 1)
        finally:
            agent.stop()

    def login(self, agent: AgentProcess) -> None:
        body = {"username": "alice", "password": PASSWORD}
        self.run(agent, True, "POST /login", 1, (self.plan.logins, 60.0), None, method="POST", body=body, warmup=1)
        client = agent.client()
        statuses = [client.post("/login", {"username": "alice", "password": "wrong"}).status for _ in range(4)]
        right = client.post("/login", body).status
        self.report["login"] = {"wrong_password_statuses": statuses, "right_password_then": right}
        print(f"  throttling: 4 wrong passwords -> {statuses}, then the right one -> {right}", flush=True)
        self.login_flood(agent)

    def login_flood(self, agent: AgentProcess) -> None:
        """16 clients, 6 logins each with random user names, all at once: the
        agent's peak RSS and GET /status latency meanwhile (one client)."""
        peak = PeakRss(agent)
        statuses: list[int] = []

        def hammer() -> None:
            client = agent.client()
            for _ in range(6):
                statuses.append(client.post("/login", {"username": secrets.token_hex(6), "password": "x"}).status)

        threads = [threading.Thread(target=hammer) for _ in range(16)]
        for t in threads:
            t.start()
        client, status_ms = agent.client(), []
        while any(t.is_alive() for t in threads):
            started = time.perf_counter()
            client.get("/status")
            status_ms.append((time.perf_counter() - started) * 1000)
        for t in threads:
            t.join()
        status_ms.sort()
        flood = {
            "peak_mb": round(peak.stop(), 1),
            "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
            "status_p50_ms": round(status_ms[len(status_ms) // 2], 2) if status_ms else None,
            "status_p95_ms": round(status_ms[int(len(status_ms) * 0.95)], 2) if status_ms else None,
        }
        self.report["login_flood"] = flood
        print(f"  login flood (16 clients x 6, random names): {flood}", flush=True)

    def scheduler(self, agent: AgentProcess, session: str) -> None:
        """``pending`` operations far in the future, listed; then ``due``
        operations due at one time T: how late each starts (read in the
        agent's store, at microsecond precision)."""
        plan = self.plan
        future = {"datetime": "2099-01-01T00:00:00Z"}
        path = "/maintenance/app/schema/public/table/pgbench_tellers/analyze"
        self.run(agent, True, "POST .../analyze (future)", 1, (plan.pending, 120.0), session,
                 paths=[path], method="POST", body=future, warmup=0)  # fmt: skip
        self.run(agent, True, "GET /maintenance/analyze/scheduled", 1, (20, 30.0), session)
        client = agent.client()
        client.session = session
        due = (datetime.now(timezone.utc) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
        ids = []
        for i in range(plan.due):
            res = client.post(f"/maintenance/app/schema/public/table/sched_{i}/analyze", {"datetime": due})
            assert res.status == 200, res
            ids.append(res.json()["id"])
        store = sqlite3.connect(agent.home / "pgwarden.db")
        marks = ",".join("?" * len(ids))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = store.execute(
                f"SELECT scheduled_at, started_at FROM core_operations WHERE id IN ({marks})", ids
            ).fetchall()
            if all(started for _, started in rows):
                break
            time.sleep(0.2)
        store.close()
        delays = sorted(
            (datetime.fromisoformat(started) - datetime.fromisoformat(at)).total_seconds()
            for at, started in rows
            if started
        )
        self.report["scheduler"] = {
            "pending": plan.pending,
            "due_at_once": plan.due,
            "started": len(delays),
            "start_delay_s": delays,
            "start_delay_p95_s": delays[max(0, -(-len(delays) * 95 // 100) - 1)] if delays else None,
        }
        print(f"  scheduler: {len(delays)}/{plan.due} started, delays {delays}", flush=True)

    # -- a store holding many operations: the listings page through an index --------

    def kept_suite(self) -> None:
        """``kept`` finished VACUUMs written straight into the store of a fresh
        TLS agent whose retention keeps them all (its defaults would delete all
        but 1,000 as the next operation ends): the first page of the listing
        (default limit), a page from a cursor in the middle, a page of 100, at
        1 and 16 clients, with the agent's RSS."""
        plan = self.plan
        keep = {"scheduler_retention_count": plan.kept * 2, "scheduler_pending_max": plan.kept * 2}
        agent = AgentProcess(self.cluster, tls=True, settings=keep)
        try:
            middle = fill_store(agent.home / "pgwarden.db", plan.kept)
            self.report["kept"] = {"operations": plan.kept}
            session = agent.session()
            listing = "/maintenance/vacuum/scheduled"
            for c in (1, 16):
                self.run(agent, True, "GET " + listing, c, (max(20, 4 * c), 60.0), session, variant="kept")
            self.run(agent, True, "GET " + listing, 1, (20, 60.0), session, variant="kept, page in the middle",
                     paths=[f"{listing}?cursor={middle}"])  # fmt: skip
            self.run(agent, True, "GET " + listing, 1, (50, 60.0), session, variant="kept, limit 100",
                     paths=[f"{listing}?limit=100"])  # fmt: skip
        finally:
            agent.stop()

    # -- a TLS agent reusing no maintenance figures: their real cost ----------------

    def uncached_suite(self) -> None:
        """The maintenance reads again with ``[maintenance] estimates_max_age =
        0`` (figures computed for every request; only concurrent requests
        share one computation): what a request costs when nothing is reused."""
        plan = self.plan
        agent = AgentProcess(self.cluster, tls=True, sections={"maintenance": {"estimates_max_age": 0}})
        try:
            session = agent.session()
            for label in APP_READS:
                for c in plan.clients:
                    self.run(agent, True, "GET " + label, c, plan.heavy, session, variant=UNCACHED)
            for label in self.report["floors"]:
                if label.startswith("/maintenance") and label not in APP_READS:
                    self.run(agent, True, "GET " + label, 1, plan.wide, session, variant=UNCACHED)
        finally:
            agent.stop()

    # -- TLS against plain, side by side; TLS memory --------------------------------

    def ratio_suite(self) -> None:
        """The same route (``GET /profile``, a session) at 32 keep-alive clients
        on a fresh plain agent and a fresh TLS agent, one after the other: TLS
        requests/s over plain. ``reconnects``: keep-alive connections the agent
        closed (cheroot keeps at most 10 idle ones), each a new handshake."""
        out: dict[str, Any] = {"route": RATIO_ROUTE, "clients": 32}
        for tls in (False, True):
            agent = AgentProcess(self.cluster, tls=tls)
            try:
                run = self.run(agent, tls, RATIO_ROUTE, 32, self.plan.ratio, agent.session(), variant="side by side")
                out["tls" if tls else "plain"] = {k: run[k] for k in ("rps", "p50", "p99", "reconnects", "errors")}
                out["tls" if tls else "plain"]["agent_cpu_ms_per_request"] = run["agent_cpu_ms_per_request"]
            finally:
                agent.stop()
        plain, tls_rps = out["plain"]["rps"], out["tls"]["rps"]
        out["ratio"] = tls_rps / plain if plain and tls_rps else None
        self.report["tls_ratio"] = out
        print(
            f"  {RATIO_ROUTE} x32 keep-alive: plain {plain or 0:.0f} req/s, TLS {tls_rps or 0:.0f} req/s,"
            f" TLS/plain {out['ratio'] or 0:.2f}; reconnects plain {out['plain']['reconnects']},"
            f" TLS {out['tls']['reconnects']}",
            flush=True,
        )

    def tls_memory_suite(self) -> None:
        """RSS of a fresh TLS agent after a warm-up, then after ``tls_soak``
        mixed TLS requests (``GET /profile`` and ``GET /status``): three
        quarters on 8 keep-alive connections, a quarter one connection (one
        handshake) per request, in alternating chunks; growth in MB and bytes
        per request. Bounded by the request count only (a million takes about
        40 minutes here: 200,000 took 8)."""
        plan = self.plan
        agent = AgentProcess(self.cluster, tls=True)
        paths = ["/profile", "/status"]
        try:
            session = agent.session()

            def mixed(n: int) -> None:
                close_n = int(n * TLS_SOAK_CLOSE_SHARE)
                for count, clients, close in ((n - close_n, 8, False), (close_n, 4, True)):
                    if count:
                        result = load(agent, paths, clients, count, 10**6, session=session, warmup=0, close=close)
                        if result["errors"]:
                            self.report["runs"].append({"endpoint": "TLS memory soak", "variant": "", "tls": True,
                                                        "clients": clients, **result})  # fmt: skip

            mixed(plan.tls_soak_warmup)
            before = agent.rss_mb()
            curve = [(0, round(before, 1))]
            chunk = max(100, min(50_000, plan.tls_soak // 10))
            done = 0
            while done < plan.tls_soak:
                n = min(chunk, plan.tls_soak - done)
                mixed(n)
                done += n
                curve.append((done, round(agent.rss_mb(), 1)))
            after = agent.rss_mb()
        finally:
            agent.stop()
        growth = after - before
        self.report["tls_memory"] = {
            "requests": done,
            "warmup": plan.tls_soak_warmup,
            "close_share": TLS_SOAK_CLOSE_SHARE,
            "before_mb": round(before, 1),
            "after_mb": round(after, 1),
            "growth_mb": round(growth, 2),
            "bytes_per_request": round(growth * 2**20 / done, 1) if done else None,
            "curve": curve,
        }
        print(
            f"  TLS memory: {done} mixed TLS requests after {plan.tls_soak_warmup} of warm-up:"
            f" {before:.1f} -> {after:.1f} MB ({growth:+.2f} MB, {growth * 2**20 / max(done, 1):+.0f} bytes/request)",
            flush=True,
        )

    # -- the plain-HTTP agent: the cost of TLS ------------------------------------

    def plain_suite(self) -> None:
        agent = AgentProcess(self.cluster, tls=False)
        try:
            session = agent.session()
            for c in self.plan.clients:
                self.run(agent, False, "GET /status", c, self.plan.light, None)
                self.run(agent, False, "GET /profile", c, self.plan.light, session)
                self.run(agent, False, f"GET /maintenance/app/schema/{APP_SCHEMA}", c, self.plan.heavy, session)
        finally:
            agent.stop()


def fill_store(path: Path, count: int) -> str:
    """``count`` finished VACUUM operations of the last six days, inserted in
    the agent's SQLite store as the agent writes them; the cursor of the
    middle one (what ``X-Next-Cursor`` would say there)."""
    start = datetime.now(timezone.utc) - timedelta(days=6)
    step = timedelta(days=5) / count
    fmt = "%Y-%m-%d %H:%M:%S.%f"
    rows = []
    for i in range(count):
        at = start + step * i
        rows.append((f"{i:08x}", "maintenance.vacuum", '{"mode": null}', "app", at.strftime(fmt), "done",
                     at.strftime(fmt), at.strftime(fmt), (at + timedelta(seconds=1)).strftime(fmt),
                     "alice", 0, "null", "[]", "{}"))  # fmt: skip
    store = sqlite3.connect(path)
    with store:
        store.executemany(
            "INSERT INTO core_operations (id, task, params, dbname, scheduled_at, status, created_at, started_at,"
            " finished_at, requested_by, cancel_requested, result, notices, info)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as in a store that has been running: the rows in the file
    store.close()
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    mid = start + step * (count // 2)
    micros = (mid - epoch) // timedelta(microseconds=1)
    return f"{micros}.{micros}.{count // 2:08x}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny datasets and runs (seconds): CI")
    parser.add_argument("--soak", type=float, help="soak seconds (default 600; 3 with --smoke)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out"), help="directory for bench.json and bench.md")
    parser.add_argument("--results", action="store_true", help="also write bench/RESULTS.md")
    parser.add_argument(
        "--tls-soak",
        type=int,
        default=int(os.environ.get("PGWARDEN_TLS_SOAK", "0")) or None,
        help="mixed TLS requests of the TLS memory soak (default 1,000,000; 400 with --smoke;"
        " also PGWARDEN_TLS_SOAK); 0 skips it",
    )
    parser.add_argument("--seed", type=float, default=0.42, help="seed of the datasets' random values")
    parser.add_argument(
        "--kept-only", action="store_true", help="only the listings of operations kept in the store (a minute)"
    )
    args = parser.parse_args()
    plan = SMOKE_PLAN if args.smoke else FULL_PLAN
    if args.soak is not None:
        plan = Plan(**{**plan.__dict__, "soak": args.soak})
    if args.tls_soak is not None:
        plan = Plan(**{**plan.__dict__, "tls_soak": args.tls_soak})
    scale = SMOKE if args.smoke else FULL
    bindir = find_bindir()
    if bindir is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2

    started = time.time()
    report: dict[str, Any] = {
        "meta": {
            **git_commit(),
            "mode": "smoke" if args.smoke else "full",
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "soak_s": plan.soak,
            "tls_soak_requests": plan.tls_soak,
            "seed": args.seed,
        },
        "datasets": {},
        "floors": {},
        "runs": [],
        "memory": {},
    }
    cluster = Cluster(bindir)
    harness = None
    try:
        cluster.init()
        cluster.start()
        report["meta"]["postgresql"] = cluster.execute("SHOW server_version")[0][0]
        harness = Harness(cluster, plan, report)
        if args.kept_only:
            print(f"agent with TLS, {plan.kept} operations kept in its store...", flush=True)
            harness.kept_suite()
        else:
            print("building datasets...", flush=True)
            report["datasets"]["app"] = build_app(cluster, scale, args.seed)
            report["datasets"]["wide"] = build_wide(cluster, scale)
            print(f"  {json.dumps(report['datasets'])}", flush=True)
            print("agent with TLS...", flush=True)
            harness.tls_suite(scale)
            print("agent with TLS, maintenance figures never reused...", flush=True)
            harness.uncached_suite()
            print(f"agent with TLS, {plan.kept} operations kept in its store...", flush=True)
            harness.kept_suite()
            print(f"fresh agent with TLS: soak ({plan.soak:.0f} s)...", flush=True)
            harness.soak_suite()
            print("agent without TLS...", flush=True)
            harness.plain_suite()
            print("TLS against plain, side by side...", flush=True)
            harness.ratio_suite()
            if plan.tls_soak:
                print(f"fresh agent with TLS: memory over {plan.tls_soak} mixed TLS requests...", flush=True)
                harness.tls_memory_suite()
            print("catalog size: one schema listing, RSS and time against its floor...", flush=True)
            report["catalog"] = [measure_listing(cluster, harness.conns, "wide", "public")]
            if scale.huge_tables:
                print(f"building huge ({scale.huge_tables} tables, minutes)...", flush=True)
                report["datasets"]["huge"] = build_huge(cluster, scale.huge_tables)
                print(f"  {json.dumps(report['datasets']['huge'])}", flush=True)
                report["catalog"].append(measure_listing(cluster, harness.conns, "huge", "public", unsorted=False))
    finally:
        if harness is not None:
            harness.conns.close()
        cluster.destroy()
    report["meta"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["meta"]["seconds"] = round(time.time() - started)
    report["targets"] = targets(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(report)
    (out / "bench.md").write_text(text)
    if args.results:
        (ROOT / "bench" / "RESULTS.md").write_text(text)
    print(text)
    errors = sum(r["errors"] for r in report["runs"]) + sum(not c["status_ok"] for c in report.get("catalog", []))
    if errors:
        print(f"{errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
