"""GET /metrics over real HTTP: authentication, core metrics, per-agent registries."""

import socket
import threading
import types

import pytest
from metrics_helpers import BEARER, value
from metrics_helpers import scrape_text as scrape
from prometheus_client.core import GaugeMetricFamily

from agent_core.auth.gate import is_loopback
from agent_core.hookspecs import Route, TaskType, hookimpl
from agent_core.metrics import Live
from agent_core.testing import KEY, PASSWORD, wait_for


def view(request, name):
    return {"name": name}


def probe_plugin(**hooks):
    module = types.SimpleNamespace(
        agent_register_routes=hookimpl(lambda agent: [Route("GET", "/probe/<name>", view, key=True)])
    )
    module.agent_register_routes.__name__ = "agent_register_routes"
    for name, fn in hooks.items():
        fn.__name__ = name
        setattr(module, name, hookimpl(fn))
    return module


def test_metrics_authenticated_like_other_reads_bearer_key_or_session(agent):
    c = agent.client()
    assert c.get("/metrics").status == 406  # no credential: like /discover
    assert c.get("/metrics").json() == {"error": "Parameter 'X-Session' is malformed."}
    res = c.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert res.status == 401 and res.json() == {"error": "Invalid key."}
    res = c.get("/metrics", headers=BEARER)
    assert res.status == 200 and res.headers["Content-Type"].startswith("text/plain")
    assert c.get(f"/metrics?key={KEY}").status == 200
    assert c.get("/metrics", headers={"X-Pgwarden-Key": KEY}).status == 200
    assert agent.login().get("/metrics").status == 200
    # another scheme is not a key: no credential given
    assert c.get("/metrics", headers={"Authorization": f"Basic {KEY}"}).status == 406
    # the bearer key is a key like the others: read-only, on key routes only
    assert c.get("/discover", headers=BEARER).status == 200
    assert c.get("/profile", headers=BEARER).status == 406


def test_loopback_scrape_without_credentials_only_when_opted_in(make_agent):
    closed = make_agent()
    assert closed.client().get("/metrics").status == 406
    opened = make_agent(config={"agent": {"metrics_loopback_open": "true"}})
    c = opened.client()
    res = c.get("/metrics")
    assert res.status == 200 and "pgwarden_http_requests_total" in res.text
    # only /metrics is opened, and a wrong credential is still refused
    assert c.get("/discover").status == 406
    assert c.get("/metrics", headers={"Authorization": "Bearer wrong"}).status == 401


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.1") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("::ffff:10.0.0.1") and not is_loopback("unix")
    assert not is_loopback("")


def test_openmetrics_when_asked(agent):
    res = agent.client().get("/metrics", headers={**BEARER, "Accept": "application/openmetrics-text; version=1.0.0"})
    assert res.status == 200
    assert res.headers["Content-Type"].startswith("application/openmetrics-text")
    assert res.text.rstrip().endswith("# EOF")


def test_requests_counted_by_route_template_never_the_raw_path(make_agent):
    running = make_agent(plugins={"probe": probe_plugin()})
    c = running.client()
    for name in ("alpha", "beta", "gamma"):
        assert c.get(f"/probe/{name}?key={KEY}").status == 200
    assert c.get("/probe/delta?key=wrong").status == 401
    assert c.get("/no/such/secret-name").status == 404
    text = scrape(running)
    assert value(text, "pgwarden_http_requests_total", route="/probe/<name>", method="GET", status="200") == 3
    assert value(text, "pgwarden_http_requests_total", route="/probe/<name>", method="GET", status="401") == 1
    assert value(text, "pgwarden_http_requests_total", route="(unmatched)", method="GET", status="404") == 1
    assert value(text, "pgwarden_http_request_duration_seconds_count", route="/probe/<name>", method="GET") == 4
    for name in ("alpha", "beta", "secret-name"):
        assert name not in text


def test_logins_by_result(agent):
    c = agent.client()
    assert c.post("/login", {"username": "alice", "password": PASSWORD}).status == 200
    for _ in range(3):
        assert c.post("/login", {"username": "alice", "password": "bad"}).status == 401
    assert c.post("/login", {"username": "alice", "password": PASSWORD}).status == 429
    text = scrape(agent)
    assert value(text, "pgwarden_logins_total", result="success") == 1
    assert value(text, "pgwarden_logins_total", result="failure") == 3
    assert value(text, "pgwarden_logins_total", result="throttled") == 1
    assert value(text, "pgwarden_sessions_open") == 1


def test_scheduler_operations_queue_depth_and_lateness(make_agent):
    release = threading.Event()

    def block(ctx):
        release.wait(30)
        return 1

    plugin = types.SimpleNamespace(
        agent_register_tasks=hookimpl(lambda agent: [TaskType("sched.block", block), TaskType("sched.fail", fail)])
    )
    plugin.agent_register_tasks.__name__ = "agent_register_tasks"
    running = make_agent(plugins={"sched": plugin}, config={"agent": {"scheduler_workers": "1"}})
    scheduler = running.agent.scheduler
    try:
        ids = [scheduler.submit("sched.block") for _ in range(3)]
        wait_for(lambda: scheduler.get(ids[0]).status == "doing")
        # "doing" is written to the store a moment before the worker thread is
        # counted as running: wait for the gauge, within wait_for's deadline.
        wait_for(lambda: value(scrape(running), "pgwarden_scheduler_running") == 1)
        text = scrape(running)
        assert value(text, "pgwarden_scheduler_running") == 1
        assert value(text, "pgwarden_scheduler_queue_depth") == 2
        assert value(text, "pgwarden_scheduler_lateness_seconds") > 0
        assert value(text, "pgwarden_scheduler_operations_total", task="sched.block", status="done") == 0
    finally:
        release.set()
    wait_for(lambda: all(scheduler.get(i).status == "done" for i in ids))
    failed = scheduler.submit("sched.fail")
    wait_for(lambda: scheduler.get(failed).finished)
    text = scrape(running)
    assert value(text, "pgwarden_scheduler_operations_total", task="sched.block", status="done") == 3
    assert value(text, "pgwarden_scheduler_operations_total", task="sched.fail", status="failed") == 1
    assert value(text, "pgwarden_scheduler_queue_depth") == 0
    assert value(text, "pgwarden_scheduler_lateness_seconds") == 0


def fail(ctx):
    raise RuntimeError("no")


def test_postgresql_up_connect_latency_and_process_metrics(agent):
    text = scrape(agent)
    assert value(text, "pg_up") == 1
    assert value(text, "pgwarden_postgresql_connect_seconds") > 0
    assert value(text, "process_resident_memory_bytes") > 0
    assert value(text, "pgwarden_store_up") == 1
    assert value(text, "pgwarden_store_errors_total") == 0


def test_postgresql_down_is_pg_up_0_and_the_scrape_answers(make_agent, pg_cluster):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = make_agent(config={"postgresql": {"port": str(port), "host": "127.0.0.1"}})
    text = scrape(running)
    assert value(text, "pg_up") == 0
    assert value(text, "pgwarden_postgresql_connect_seconds") is None


def test_probe_runs_at_most_once_per_max_age(make_agent):
    running = make_agent(config={"agent": {"metrics_max_age": "3600"}})
    for _ in range(3):
        scrape(running)
    assert running.agent.metrics.live_values.computed["core.postgresql"] == 1


def test_live_values_reused_until_max_age_errors_too():
    clock = [0.0]
    live = Live(10, clock=lambda: clock[0])
    calls = []

    def compute():
        calls.append(clock[0])
        if len(calls) == 2:
            raise RuntimeError("down")
        return len(calls)

    assert live.get("k", compute) == 1
    clock[0] = 9.9
    assert live.get("k", compute) == 1
    clock[0] = 10
    with pytest.raises(RuntimeError):
        live.get("k", compute)
    clock[0] = 15
    with pytest.raises(RuntimeError):  # the error is kept too: a down server is not hammered
        live.get("k", compute)
    clock[0] = 20
    assert live.get("k", compute) == 3
    assert calls == [0.0, 10, 20]


def test_front_open_connections_counted(agent):
    held = [socket.create_connection(("127.0.0.1", agent.agent.server.port)) for _ in range(3)]
    try:
        text = wait_for(lambda: (t := scrape(agent)) and value(t, "pgwarden_front_open_connections") >= 4 and t)
        assert value(text, "pgwarden_front_connections_total", event="accepted") >= 4
    finally:
        for s in held:
            s.close()


class Greetings:
    def collect(self):
        yield GaugeMetricFamily("pgwarden_probe_greetings", "Greetings.", 42)


class Broken:
    def collect(self):
        raise RuntimeError("broken collector")


def test_plugin_collectors_and_a_failing_one_left_out(make_agent, caplog):
    plugin = probe_plugin(agent_metrics=lambda agent: [Greetings(), Broken()])
    running = make_agent(plugins={"probe": plugin})
    scrape(running)
    text = scrape(running)  # the first scrape's failure is counted by then
    assert value(text, "pgwarden_probe_greetings") == 42
    assert value(text, "pgwarden_metrics_collector_errors_total", plugin="probe") == 1
    assert value(text, "pg_up") == 1  # the others still answer
    assert "broken collector" in caplog.text


def test_a_collector_without_collect_refuses_start_up(make_agent):
    from agent_core.errors import StartupError

    plugin = probe_plugin(agent_metrics=lambda agent: [object()])
    with pytest.raises(StartupError, match="has no collect"):
        make_agent(plugins={"probe": plugin})


def test_each_agent_has_its_own_registry(make_agent):
    first, second = make_agent(), make_agent()
    for _ in range(3):
        first.client().get("/status")
    assert value(scrape(first), "pgwarden_http_requests_total", route="/status", method="GET", status="200") == 3
    assert value(scrape(second), "pgwarden_http_requests_total", route="/status", method="GET", status="200") is None


def test_probe_runs_once_per_scrape_when_nothing_is_reused(make_agent):
    running = make_agent(config={"agent": {"metrics_max_age": "0"}})
    computed = running.agent.metrics.live_values.computed
    for n in range(1, 4):
        assert value(scrape(running), "pg_up") == 1
        assert computed["core.postgresql"] == n  # started beside the collection, never run twice


def test_openmetrics_names_outside_the_legacy_set_are_written_with_underscores(make_agent):
    """Prometheus 2 reads legacy names only: a plugin's dotted name is written
    as prometheus-client's default escaping writes it."""

    class Dotted:
        def collect(self):
            family = GaugeMetricFamily("probe.dotted", "A dotted name.", labels=["a.b"])
            family.add_metric(["v"], 1)
            yield family

    running = make_agent(plugins={"probe": probe_plugin(agent_metrics=lambda agent: [Dotted()])})
    res = running.client().get("/metrics", headers={**BEARER, "Accept": "application/openmetrics-text"})
    assert res.status == 200
    assert 'probe_dotted{a_b="v"} 1.0' in res.text.splitlines()
    assert '"probe.dotted"' not in res.text
