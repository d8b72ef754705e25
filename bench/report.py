"""The harness's report: the issue's targets checked against a run's figures,
and the Markdown text (``bench.md``, ``bench/RESULTS.md``).

Floors: an endpoint's floor is its SQL floor (p50 of its statements run
directly, see ``floors.py``; 0 for endpoints without SQL) plus the p50 of
``GET /status`` by one client over the same kind of connection (TLS or
not). The ratio is the endpoint's p50 at one client over that floor.
"""

from __future__ import annotations

from typing import Any

REFERENCE_RPS_8 = 45  # temboard-agent 7.11 saturates near 45 req/s at 8 clients


def find(
    report: dict[str, Any], endpoint: str, clients: int, tls: bool = True, variant: str = ""
) -> dict[str, Any] | None:
    for run in report["runs"]:
        if (run["endpoint"], run["clients"], run["tls"], run.get("variant", "")) == (endpoint, clients, tls, variant):
            return run
    return None


def floor_ms(report: dict[str, Any], endpoint: str, tls: bool) -> float | None:
    """SQL floor p50 + trivial round trip p50 (one client), in ms."""
    status = find(report, "GET /status", 1, tls)
    if status is None or status["p50"] is None:
        return None
    path = endpoint.split(" ", 1)[-1]
    sql = report["floors"].get(path)
    return status["p50"] + (sql["p50"] if sql else 0.0)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6: what it asks, what was measured, met or not
    (None: not measured in this run)."""
    out: list[dict[str, Any]] = []

    def check(target: str, measured: str, met: bool | None) -> None:
        out.append({"target": target, "measured": measured, "met": met})

    a1, a8 = find(report, "GET /activity", 1), find(report, "GET /activity", 8)
    check("GET /activity (busy) p50 <= 15 ms at 1 client", f"{_fmt(a1 and a1['p50'])} ms", a1 and a1["p50"] <= 15)
    check(
        "GET /activity (busy): no request above 100 ms at 8 clients",
        f"max {_fmt(a8 and a8['max'])} ms",
        a8 and a8["max"] <= 100,
    )
    # maintenance reads: with nothing reused (estimates_max_age 0), the hard case
    for label in ("GET /maintenance/app", "GET /maintenance/app/schema/shop"):
        one, eight, many = (find(report, label, c, variant="uncached") for c in (1, 8, 32))
        floor = floor_ms(report, label, True)
        if one and floor is not None:
            limit = 1.3 * floor + 2
            check(f"{label} p50 <= 1.3 x floor + 2 ms", f"{one['p50']:.2f} ms (limit {limit:.2f})", one["p50"] <= limit)
        if eight:
            check(
                f"{label} at 8 clients >= {2 * REFERENCE_RPS_8} req/s",
                f"{eight['rps']:.0f} req/s",
                eight["rps"] >= 2 * REFERENCE_RPS_8,
            )
        if many:
            # a stall: a connection refused, dropped or left waiting in the listen backlog (>= 1 s to
            # open, TLS handshake included); queueing behind the CPU shows in the latencies instead
            stalled = many["errors"] or many["connect_max_ms"] >= 1000
            check(
                f"{label}: no connection stall at 32 clients",
                f"{many['errors']} errors, slowest connection set-up {many['connect_max_ms']:.0f} ms"
                f" (max latency {many['max']:.0f} ms)",
                not stalled,
            )
    for path in ("/maintenance/wide", "/maintenance/wide/schema/public", "/maintenance/many",
                 "/maintenance/many/schema/s_000"):  # fmt: skip
        run = find(report, "GET " + path, 1, variant="uncached")
        floor = floor_ms(report, "GET " + path, True)
        if run and floor is not None:
            check(
                f"GET {path} p50 <= 1.5 x floor",
                f"{run['p50']:.0f} ms, floor {floor:.0f} ms (x{run['p50'] / floor:.2f})",
                run["p50"] <= 1.5 * floor,
            )
    wide_floors = [report["floors"][p]["p50"] for p in ("/maintenance/wide", "/maintenance/wide/schema/public")
                   if p in report["floors"]]  # fmt: skip
    if wide_floors:
        check("wide floors a few seconds at most (<= 3 s)", f"{max(wide_floors):.0f} ms", max(wide_floors) <= 3000)
    login = find(report, "POST /login", 1)
    check("POST /login p50 <= 150 ms", f"{_fmt(login and login['p50'])} ms", login and login["p50"] <= 150)
    throttle = report.get("login", {})
    statuses = throttle.get("wrong_password_statuses", [])
    check("login throttling still works (429 after repeated failures)", str(statuses), 429 in statuses)
    flood = report.get("login_flood")
    if flood:
        check("RSS peak under a 16-client login flood <= 100 MB", f"{flood['peak_mb']:.1f} MB", flood["peak_mb"] <= 100)
    p8 = find(report, "GET /profile", 8)
    check(
        "GET /profile (session) at 8 clients, keep-alive, TLS >= 1,500 req/s",
        f"{_fmt(p8 and p8['rps'], 0)} req/s",
        p8 and p8["rps"] >= 1500,
    )
    mem = report["memory"]
    check("RSS idle <= 60 MB", f"{_fmt(mem.get('idle_mb'), 1)} MB", mem.get("idle_mb", 1e9) <= 60)
    peaks = [r["agent_peak_mb"] for r in report["runs"] if r["clients"] == 32 and r["tls"]]
    if peaks:
        check("RSS peak under 32 clients <= 100 MB", f"{max(peaks):.1f} MB", max(peaks) <= 100)
    if mem.get("before_soak_mb") and mem.get("after_soak_mb"):
        growth = (mem["after_soak_mb"] / mem["before_soak_mb"] - 1) * 100
        check(
            f"RSS growth over the soak ({report['meta']['soak_s']:.0f} s) < 5 %",
            f"{growth:+.1f} %",
            growth < 5,
        )
    ratio = report.get("tls_ratio")
    if ratio and ratio.get("ratio") is not None:
        check(
            f"{ratio['route']} at 32 keep-alive clients: TLS >= 80 % of plain HTTP (issue 13)",
            f"TLS {ratio['tls']['rps']:.0f} / plain {ratio['plain']['rps']:.0f} req/s = {ratio['ratio'] * 100:.0f} %"
            f" (TLS connections reopened: {ratio['tls']['reconnects']})",
            ratio["ratio"] >= 0.8,
        )
    tls_mem = report.get("tls_memory")
    if tls_mem and tls_mem.get("bytes_per_request") is not None:
        # the leak fixed in agent_core/web/tls.py was ~170 bytes a request with keep-alive, ~1,240 per connection;
        # a run of fewer than 100,000 requests (--smoke) measures the warm-up, not a leak: reported, not judged
        check(
            f"TLS memory: RSS growth over {tls_mem['requests']:,} mixed TLS requests after warm-up"
            " <= 10 bytes/request (issue 13)",
            f"{tls_mem['before_mb']} -> {tls_mem['after_mb']} MB ({tls_mem['growth_mb']:+.2f} MB,"
            f" {tls_mem['bytes_per_request']:+.1f} bytes/request)",
            tls_mem["bytes_per_request"] <= 10 if tls_mem["requests"] >= 100_000 else None,
        )
    sched = report.get("scheduler", {})
    if sched:
        p95 = sched["start_delay_p95_s"]
        check(
            f"operation due at T starts by T + 1 s (p95) with {sched['pending']} pending",
            f"{_fmt(p95, 3)} s",
            p95 is not None and p95 <= 1,
        )
    listing = find(report, "GET /maintenance/analyze/scheduled", 1)
    if listing and sched:
        check(
            f"listing {sched['pending']} operations <= 50 ms (p50)",
            f"{listing['p50']:.1f} ms",
            listing["p50"] <= 50,
        )
    kept = report.get("kept", {})
    first = find(report, "GET /maintenance/vacuum/scheduled", 1, variant="kept")
    if kept and first:
        check(
            f"first page of a listing of {kept['operations']} kept operations <= 50 ms (p50)",
            f"{first['p50']:.1f} ms",
            first["p50"] <= 50,
        )
    return [{**t, "met": None if t["met"] is None else bool(t["met"])} for t in out]


def markdown(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        "# pgwarden benchmark",
        "",
        f"Commit `{meta['commit']}`{' (with uncommitted changes in the tree)' if meta['dirty'] else ''},"
        f" {meta['mode']} run started {meta['started']}, {meta.get('seconds', '?')} s;"
        f" {meta['cpus']} CPUs, load average {meta['loadavg_start']} at the start,"
        f" {meta.get('loadavg_end')} at the end;"
        f" PostgreSQL {meta.get('postgresql')}, Python {meta['python']}. Made by `make bench` (bench/run.py).",
        "",
        "## Targets (issue 6)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for t in report.get("targets", []):
        mark = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        lines.append(f"| {t['target']} | {t['measured']} | {mark} |")
    lines += [
        "",
        "## Endpoints",
        "",
        "Latencies in ms over keep-alive connections; CPU is the agent's CPU time per request;"
        " floor = SQL floor + `GET /status` round trip (one client); ratio = p50 / floor."
        " Maintenance reads run twice: with the default `[maintenance] estimates_max_age` (10 s: figures"
        " reused, so mostly answered without SQL) and *nothing reused* (`estimates_max_age = 0`: the SQL"
        " runs for every request, concurrent requests share it); the targets read the latter.",
        "",
        "| endpoint | TLS | clients | requests | errors | p50 | p95 | p99 | max | req/s | CPU ms/req | floor | ratio"
        " | RSS peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        floor = floor_ms(report, r["endpoint"], r["tls"]) if r["clients"] == 1 else None
        ratio = r["p50"] / floor if floor and r["p50"] else None
        name = r["endpoint"] + (" *(nothing reused)*" if r.get("variant") == "uncached" else "")
        lines.append(
            f"| {name} | {'on' if r['tls'] else 'off'} | {r['clients']} | {r['requests']} | {r['errors']} "
            f"| {_fmt(r['p50'])} | {_fmt(r['p95'])} | {_fmt(r['p99'])} | {_fmt(r['max'])} | {_fmt(r['rps'], 0)} "
            f"| {_fmt(r['agent_cpu_ms_per_request'])} | {_fmt(floor)} | {_fmt(ratio)} | {_fmt(r['agent_peak_mb'], 1)} |"
        )
    lines += ["", "## SQL floors (direct psycopg2, warm connection)", ""]
    lines += ["| statements of | n | p50 | p95 |", "|---|---|---|---|"]
    for label, f in report["floors"].items():
        lines.append(f"| {label} | {f['requests']} | {_fmt(f['p50'])} | {_fmt(f['p95'])} |")
    mem = report["memory"]
    lines += [
        "",
        "## Memory (agent RSS, MB)",
        "",
        f"idle {_fmt(mem.get('idle_mb'), 1)}; peak over the whole run {_fmt(mem.get('peak_mb'), 1)}"
        " (per run: column RSS peak above);"
        f" before the soak {_fmt(mem.get('before_soak_mb'), 1)}, after it {_fmt(mem.get('after_soak_mb'), 1)}.",
        "",
        *_tls_lines(report),
        "## Datasets",
        "",
        "```",
        *(f"{name}: {value}" for name, value in report["datasets"].items()),
        "```",
    ]
    catalog = report.get("catalog")
    if catalog:
        lines += [
            "",
            "## Catalog size: one schema listing (streamed), agent RSS and time",
            "",
            "One request read whole, nothing reused; floor = the listing's one statement fetched whole by"
            " psycopg2 on a warm connection, and on a new one (as the route runs it: only the default database's"
            " connections are pooled); unsorted rows: what the route read before it streamed;"
            " RSS in MB, *after* 5 s later.",
            "",
            "| endpoint | tables | body MB | s | floor s | ratio | new-connection floor s | ratio | unsorted rows s"
            " | idle | peak | peak - idle | after | after vs idle |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in catalog:
            lines.append(
                f"| {c['endpoint']} | {c['tables']} | {c['body_mb']} | {c['seconds']} | {c['floor_s']} | {c['ratio']}"
                f" | {c['cold_floor_s']} | {c['ratio_cold']} | {_fmt(c['unsorted_rows_floor_s'])}"
                f" | {c['idle_mb']} | {c['peak_mb']} | {c['peak_over_idle_mb']}"
                f" | {c['after_mb']} | {c['after_over_idle_pct']:+} % |"
            )
    sched = report.get("scheduler")
    if sched:
        lines += [
            "",
            "## Scheduler",
            "",
            f"{sched['pending']} operations pending; {sched['due_at_once']} due at the same second T started"
            f" {sched['start_delay_s']} s after T.",
        ]
    lines += ["", "Why the targets not met are not met (profiles): see bench/README.md, *Targets not met*."]
    return "\n".join(lines) + "\n"


def _tls_lines(report: dict[str, Any]) -> list[str]:
    """The TLS sections: throughput against plain HTTP, memory over many TLS requests."""
    lines: list[str] = []
    ratio = report.get("tls_ratio")
    if ratio:
        lines += ["## TLS against plain HTTP", "",
                  f"{ratio['route']}, {ratio['clients']} keep-alive clients, a fresh agent each, one after the other;"
                  " reconnects: keep-alive connections the agent closed and the client opened again (a new"
                  " handshake each over TLS).", "",
                  "| | req/s | p50 ms | p99 ms | agent CPU ms/req | reconnects |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name in ("plain", "tls"):
            r = ratio[name]
            lines.append(
                f"| {name} | {_fmt(r['rps'], 0)} | {_fmt(r['p50'])} | {_fmt(r['p99'])} "
                f"| {_fmt(r['agent_cpu_ms_per_request'])} | {r['reconnects']} |"
            )
        lines += ["", f"TLS / plain: {_fmt(ratio['ratio'])}", ""]
    mem = report.get("tls_memory")
    if mem:
        curve = ", ".join(f"{n:,}: {mb}" for n, mb in mem["curve"])
        lines += ["## TLS memory", "",
                  f"A fresh TLS agent, {mem['warmup']:,} requests of warm-up, then {mem['requests']:,} mixed TLS"
                  f" requests ({mem['close_share'] * 100:.0f} % one connection per request, the rest keep-alive):"
                  f" RSS {mem['before_mb']} -> {mem['after_mb']} MB, {mem['growth_mb']:+.2f} MB,"
                  f" {_fmt(mem['bytes_per_request'], 1)} bytes/request. RSS (MB) after n requests: {curve}.",
                  ""]  # fmt: skip
    return lines
