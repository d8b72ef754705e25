"""How a third-party plugin tests itself with the fixtures pgwarden ships:
a throwaway PostgreSQL cluster, real agents over real HTTP."""

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import agent_hello.plugin
from agent_core.agent import Agent
from agent_core.testing import KEY, PASSWORD, Client, agent_config, wait_for


def test_hello_queries_postgresql_with_session_or_key(make_agent, pg_cluster):
    running = make_agent(plugins={"hello": agent_hello.plugin}, config={"hello": {"greeting": "Hi"}})
    version = pg_cluster.execute("SHOW server_version")[0][0]
    assert running.login().get("/hello").json() == {"greeting": "Hi, alice", "server_version": version}
    assert running.client().get(f"/hello?key={KEY}").json() == {"greeting": "Hi, key", "server_version": version}
    res = running.client().get("/hello")
    assert res.status == 406 and "error" in res.json()


def test_count_runs_as_an_operation(make_agent, databases):
    db = databases.create("hello_example", setup="CREATE TABLE a (id int); CREATE TABLE b (id int)")
    client = make_agent(plugins={"hello": agent_hello.plugin}).login()
    op_id = client.post(f"/hello/count/{db}").json()["id"]
    op = wait_for(lambda: (o := client.get(f"/hello/count/{op_id}").json())["status"] == "done" and o)
    assert op["result"] == {"tables": 2}
    assert op["dbname"] == db and op["requested_by"] == "alice"


def test_count_waits_for_its_time(make_agent, databases):
    db = databases.create("hello_example", setup="CREATE TABLE a (id int)")
    client = make_agent(plugins={"hello": agent_hello.plugin}).login()
    at = (datetime.now(timezone.utc) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    op_id = client.post(f"/hello/count/{db}", {"datetime": at}).json()["id"]
    assert client.get(f"/hello/count/{op_id}").json()["datetime"] == at
    op = wait_for(lambda: (o := client.get(f"/hello/count/{op_id}").json())["status"] == "done" and o)
    assert op["started_at"] >= at and op["result"] == {"tables": 1}


def test_bad_requests_get_json_errors(make_agent):
    running = make_agent(plugins={"hello": agent_hello.plugin}, users={"alice": PASSWORD, "rita": (PASSWORD, "read")})
    client = running.login()
    res = client.post("/hello/count/no_such_db")
    assert res.status == 404 and res.json() == {"error": "Database 'no_such_db' not found."}
    res = client.post("/hello/count/postgres", {"datetime": "tomorrow"})
    assert res.status == 406 and res.json() == {"error": "Parameter 'datetime' is malformed."}
    assert client.get("/hello/count/0000abcd").status == 404
    res = running.login("rita").post("/hello/count/postgres")
    assert res.status == 403 and "'write' permission" in res.json()["error"]


def test_routes_are_described_in_openapi_json(make_agent):
    paths = make_agent(plugins={"hello": agent_hello.plugin}).login().get("/openapi.json").json()["paths"]
    assert {"/hello", "/hello/count/{dbname}", "/hello/count/{op_id}"} <= set(paths)
    count = paths["/hello/count/{dbname}"]["post"]
    assert count["summary"] == "Count the tables of a database, now or at a given time"
    assert "datetime" in count["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert "404" in count["responses"]  # added by the core: the path has a parameter


def test_enabled_through_the_config(pg_cluster, tmp_path):
    """Loaded as an operator would: the installed distribution's entry point,
    named in [agent] plugins (make_agent gives modules explicitly instead)."""
    raw = agent_config(pg_cluster, tmp_path, {"hello": None}, {"hello": {"greeting": "Hey"}})
    agent = Agent.from_config(raw, environ={})
    agent.start()
    try:
        res = Client(agent.server.url).get(f"/hello?key={KEY}")
        assert res.status == 200 and res.json()["greeting"] == "Hey, key"
    finally:
        agent.stop()


def test_pgwarden_plugins_lists_it(tmp_path):
    conf = tmp_path / "pgwarden.conf"
    conf.write_text(f"[agent]\nhome = {tmp_path}\nplugins = hello\n[hello]\ngreeting = Hey\n")
    out = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "-c", str(conf), "plugins"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    line = next(i for i, text in enumerate(out) if text.startswith("hello "))
    assert out[line].split() == ["hello", "pgwarden-hello", "0.1.0", "enabled"]
    hooks = ["agent_add_config,", "agent_register_tasks,", "agent_register_routes,", "agent_metrics"]
    assert out[line + 1].split() == ["hooks:", *hooks]


def test_a_custom_metric_in_get_metrics(make_agent, pg_cluster):
    from prometheus_client.parser import text_string_to_metric_families

    running = make_agent(plugins={"hello": agent_hello.plugin})
    res = Client(running.url).get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert res.status == 200, res
    metrics = {s.name: s.value for f in text_string_to_metric_families(res.text) for s in f.samples}
    tables = "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
    assert metrics["pgwarden_hello_tables"] == pg_cluster.execute(tables)[0][0]
