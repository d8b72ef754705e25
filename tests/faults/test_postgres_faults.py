"""PostgreSQL stopped or hung while the agent runs, with both plugins.

Every route that needs PostgreSQL answers a 503 JSON error naming it; the
others keep working; the scheduler marks an operation that could not run
``failed`` with the reason (never ``done``) and loses none; once PostgreSQL
is back every route works again without restarting the agent.

Each test stops its own throwaway cluster (``own_cluster``), never the
session's ``pg_cluster``. The older single-route checks are in
``tests/core/test_http.py`` (``/discover`` down then up, a refused port).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

import agent_activity.plugin as activity_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import PASSWORD, Client, wait_for

PG_DOWN = "PostgreSQL is unavailable"
SETUP = "CREATE TABLE t (id int PRIMARY KEY, v text); CREATE INDEX t_v ON t (v); INSERT INTO t VALUES (1, 'a')"
FAR = "2099-01-01T00:00:00Z"

#: Routes that do not need PostgreSQL: they keep answering while it is down
#: (the global operation listings show progress only as best effort).
WITHOUT_POSTGRES = [
    r"POST /login",
    r"GET /status",
    r"GET /profile",
    r"GET /notifications",
    r"GET /openapi\.json",
    r"GET /metrics",  # a monitoring endpoint answers, saying PostgreSQL is down (pg_up 0, checked below)
    r"GET /maintenance/(vacuum|analyze|reindex)/scheduled",
    r"DELETE /maintenance/(vacuum|analyze|reindex)/<op_id>",
]


def plugins() -> dict[str, Any]:
    return {"activity": activity_plugin, "maintenance": maintenance_plugin}


def requests_for(running: Any, values: dict[str, str], ops: dict[str, str]) -> Iterator[tuple[str, str, str, Any]]:
    """(route, method, url, body) for every route of the agent but /logout."""
    for route in running.agent.app.app.routes:
        rule = route.rule
        if rule == "/logout":
            continue
        url = rule
        for name in re.findall(r"<([a-z_]+)>", rule):
            value = ops[rule.split("/")[2]] if name == "op_id" else values[name]
            url = url.replace(f"<{name}>", quote(value, safe=""))
        body: Any = None
        if route.method == "POST":
            body = {"pids": [int(values["pid"])]} if "kill" in rule else {"datetime": FAR}
            if rule == "/login":
                body = {"username": "alice", "password": values["password"]}
        yield f"{route.method} {rule}", route.method, url, body


def call(client: Client, method: str, url: str, body: Any) -> Any:
    res = client.request(method, url, json=body)
    expected = "text/plain" if url == "/metrics" else "application/json"  # Prometheus's format
    assert res.headers["Content-Type"].startswith(expected), (url, res)
    return res


def finished(api: Client, verb: str, op_id: str) -> Any:
    """The listing entry of an operation once it ended, else None."""
    entry = next(e for e in api.get(f"/maintenance/{verb}/scheduled").json() if e["id"] == op_id)
    return entry if entry["status"] not in ("todo", "doing") else None


@pytest.fixture
def target(own_cluster: Any) -> str:
    own_cluster.execute("CREATE DATABASE target")
    own_cluster.execute(SETUP, dbname="target")
    return "target"


def test_every_route_while_postgresql_is_stopped_then_back(make_agent, own_cluster, target):
    running = make_agent(
        plugins=plugins(),
        config={
            "postgresql": own_cluster.settings(connect_timeout=2),
            "activity": {"sample_interval": 0.5},
            "agent": {"scheduler_grace": 3600},
        },
    )
    api = running.login()
    idle = own_cluster.connect()  # a backend to kill
    values = {
        "dbname": target,
        "schema": "public",
        "table": "t",
        "index": "t_v",
        "pid": str(idle.info.backend_pid),
        "password": PASSWORD,
    }
    ops = {}
    for verb in ("vacuum", "analyze", "reindex"):  # far in the future: canceled by the DELETE routes
        res = api.post(f"/maintenance/{target}/{verb}", {"datetime": FAR})
        assert res.status == 200, res
        ops[verb] = res.json()["id"]
    due = api.post(f"/maintenance/{target}/schema/public/table/t/analyze", {}).json()["id"]
    assert wait_for(lambda: finished(api, "analyze", due))["status"] == "done"
    soon_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))
    soon = api.post(f"/maintenance/{target}/schema/public/table/t/vacuum", {"datetime": soon_at}).json()["id"]

    own_cluster.stop()
    idle.close()
    answers = {}
    for name, method, url, body in requests_for(running, values, ops):
        res = call(api, method, url, body)
        answers[name] = res
        if any(re.fullmatch(p, name) for p in WITHOUT_POSTGRES):
            assert res.status < 500, (name, res)
        else:
            assert res.status == 503, (name, res)
            assert res.json()["error"].startswith(PG_DOWN), (name, res)
    assert len(answers) >= 30  # every route of the core and both plugins was tried
    assert "\npg_up 0.0\n" in answers["GET /metrics"].text, answers["GET /metrics"].text[-2000:]

    # the vacuum that fell due while PostgreSQL was down failed, saying why; it is not done
    entry = wait_for(lambda: finished(api, "vacuum", soon), timeout=30)
    assert entry["status"] == "failed" and entry["error"].startswith(PG_DOWN), entry

    own_cluster.start()  # the agent was not restarted
    for name, method, url, body in requests_for(running, values, ops):
        res = call(api, method, url, body)
        assert res.status < 500, (name, res)
    res = api.post(f"/maintenance/{target}/schema/public/table/t/vacuum", {})
    again = res.json()["id"]
    assert wait_for(lambda: finished(api, "vacuum", again), timeout=30)["status"] == "done"
    statuses = {e["id"]: e["status"] for e in api.get("/maintenance/analyze/scheduled").json()}
    assert statuses[due] == "done"  # what ran before the outage is still on record


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_hung_postgresql_answers_503_after_the_connect_timeout(make_agent, silent_server):
    running = make_agent(
        plugins=plugins(),
        config={
            "postgresql": {"host": "127.0.0.1", "port": silent_server, "connect_timeout": 2},
            "activity": {"sample_interval": 5},
        },
    )
    api = running.login()
    api.timeout = 20  # far above connect_timeout: a hang fails the test, a slow machine does not
    for url in ("/discover", "/activity", "/maintenance"):
        res = api.get(url)
        assert res.status == 503, (url, res)
        assert res.json()["error"].startswith(PG_DOWN) and "timeout" in res.json()["error"], (url, res)
    assert api.get("/status").status == 200
