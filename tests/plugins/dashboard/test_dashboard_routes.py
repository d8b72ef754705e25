"""The three routes in the temboard 9.x dashboard contract, field by field;
who may call them; listed in /discover only when enabled. Real PostgreSQL,
real HTTP."""

from __future__ import annotations

import os
import time

from dashboard_helpers import SAMPLE, check_sample, get, samples_until

from agent_core.agent import Agent
from agent_core.plugins import installed
from agent_core.testing import KEY, PASSWORD, Client, agent_config, wait_for


def test_config_names_the_interval_and_history_length(make_agent, plugin):
    running = make_agent(plugins={"dashboard": plugin}, config={"dashboard": {"interval": 3, "history_length": 40}})
    assert get(running, "/dashboard/config") == {"scheduler_interval": 3, "history_length": 40}
    defaults = make_agent(plugins={"dashboard": plugin})
    assert get(defaults, "/dashboard/config") == {"scheduler_interval": 2, "history_length": 150}


def test_the_history_has_a_sample_when_the_agent_starts_serving(make_agent, plugin):
    """The temboard UIs render the page from the history's last sample."""
    running = make_agent(plugins={"dashboard": plugin})  # default interval: 2 s
    history = get(running, "/dashboard/history")
    assert len(history) == 1
    check_sample(history[0])


def test_history_and_latest_sample_field_by_field(dashboard_agent):
    history = samples_until(dashboard_agent, lambda h: len(h) >= 3)
    for sample in history:
        check_sample(sample)
    stamps = [s["timestamp"] for s in history]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps), "oldest first, one per interval"
    assert abs(stamps[-1] - time.time()) < 60

    latest = get(dashboard_agent, "/dashboard")
    check_sample(latest)
    assert list(latest) == [*SAMPLE, "notifications", "status"]
    assert latest["timestamp"] >= stamps[-1]
    assert latest["notifications"] == []
    status = latest["status"]
    assert sorted(status) == ["postgres", "system", "temboard"]
    pg = status["postgres"]
    assert sorted(pg) == sorted(
        ["status", "pid", "start_time", "is_standby", "primary_conninfo", "pending_restart", "primary"]
    )
    assert pg["status"] == "running" and pg["is_standby"] is False and pg["pending_restart"] is False
    assert pg["primary"] is None and pg["start_time"].endswith("+00:00")
    assert status["temboard"]["status"] == "running" and status["temboard"]["pid"] == os.getpid()
    assert status["system"]["cpu_count"] == os.cpu_count() and status["system"]["memory"] > 0


def test_latest_sample_counts_active_backends_and_databases(dashboard_agent, backends, databases):
    before = samples_until(dashboard_agent, lambda h: len(h) >= 1)[-1]["databases"]["nb"]
    databases.create("dash")
    held = backends.run("SELECT pg_sleep(60)")
    backends.wait_state(held.pid)
    latest = wait_for(
        lambda: (
            (s := get(dashboard_agent, "/dashboard"))["active_backends"]["nb"] >= 1
            and s["databases"]["nb"] == before + 1
            and s
        )
    )
    assert latest["databases"]["databases"] == before + 1


def test_notifications_are_the_audit_log_newest_first(make_agent, plugin):
    running = make_agent(plugins={"dashboard": plugin}, users={"alice": PASSWORD})
    for _ in range(20):  # each login is an audit entry
        running.login()
    body = get(running, "/dashboard")
    assert len(body["notifications"]) == 15
    assert body["notifications"] == get(running, "/notifications")[:15]
    assert {n["message"] for n in body["notifications"]} == {"Login"}


def test_key_session_and_read_users_may_read_nobody_else(make_agent, plugin):
    running = make_agent(plugins={"dashboard": plugin}, users={"alice": PASSWORD, "rita": (PASSWORD, "read")})
    for path in ("/dashboard", "/dashboard/config", "/dashboard/history"):
        assert running.login().get(path).status == 200, path
        assert running.login("rita").get(path).status == 200, path
        assert running.client().get(path, headers={"X-Pgwarden-Key": KEY}).status == 200, path
        res = running.client().get(path)
        assert res.status in (401, 406) and "error" in res.json(), (path, res)
        res = running.client().get(f"{path}?key=wrong-key")
        assert res.status == 401 and "error" in res.json(), (path, res)
    res = running.login().post("/dashboard", {})
    assert res.status == 405 and "error" in res.json(), res


def test_installed_as_an_entry_point():
    entry = installed()["dashboard"]
    assert entry.distribution == "pgwarden-dashboard"
    assert entry.value == "agent_dashboard.plugin"


def test_discover_lists_it_and_routes_exist_only_when_enabled(pg_cluster, tmp_path):
    for enabled in (True, False):
        home = tmp_path / str(enabled)
        home.mkdir()
        agent = Agent.from_config(agent_config(pg_cluster, home, {"dashboard": None} if enabled else {}))
        agent.start()  # from the entry point, as `pgwarden serve` does
        try:
            client = Client(agent.server.url)
            plugins = client.get(f"/discover?key={KEY}").json()["plugins"]
            res = client.get(f"/dashboard?key={KEY}")
            if enabled:
                assert plugins == ["dashboard"]
                assert res.status == 200 and "status" in res.json()
            else:
                assert plugins == []
                assert (res.status, res.json()) == (404, {"error": "Not found: GET /dashboard"})
                assert client.get(f"/dashboard/config?key={KEY}").status == 404
        finally:
            agent.stop()


def test_one_sampler_whatever_the_number_of_clients(dashboard_agent):
    """Many clients polling add no samples: the history grows one per interval."""
    samples_until(dashboard_agent, lambda h: len(h) >= 2)
    first = get(dashboard_agent, "/dashboard/history")
    for _ in range(30):
        get(dashboard_agent, "/dashboard")
    later = get(dashboard_agent, "/dashboard/history")
    new = [s for s in later if s["timestamp"] > first[-1]["timestamp"]]
    span = later[-1]["timestamp"] - first[-1]["timestamp"]
    assert len(new) <= span / 0.2 + 1, (len(new), span)  # at most one per interval, not one per request
