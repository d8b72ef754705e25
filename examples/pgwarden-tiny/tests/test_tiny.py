"""The one-module plugin tested as its author would: the core's fixtures, a
throwaway PostgreSQL cluster, a real agent over real HTTP."""

from datetime import timedelta

import pytest

import agent_tiny
from agent_core.agent import Agent
from agent_core.errors import ConfigError
from agent_core.testing import KEY, Client, agent_config, run_now


def test_the_recurring_count_runs_now_and_is_listed(make_agent, databases):
    db = databases.create("tiny", setup="CREATE TABLE a (id int); CREATE TABLE b (id int)")
    running = make_agent(plugins={"tiny": agent_tiny}, config={"postgresql": {"dbname": db}})
    op = run_now(running, "tiny.count")  # instead of waiting [tiny] interval seconds
    assert op.status == "done" and op.result == {"tables": 2} and op.requested_by == "agent"
    counts = running.login().get("/tiny/counts").json()["counts"]
    assert counts == [{"at": counts[0]["at"], "tables": 2}]
    assert counts[0]["at"] == f"{op.finished_at:%Y-%m-%dT%H:%M:%SZ}"  # same second, both UTC
    assert running.client().get(f"/tiny/counts?key={KEY}").status == 200
    assert running.client().get("/tiny/counts").status == 406


def test_the_first_count_waits_an_interval_and_a_restart_keeps_it(make_agent):
    running = make_agent(plugins={"tiny": agent_tiny}, config={"tiny": {"interval": "600"}})
    [pending] = running.agent.scheduler.list(task="tiny.count", status="todo")
    assert timedelta(seconds=599) < pending.scheduled_at - pending.created_at <= timedelta(seconds=600)
    running.restart()
    assert running.agent.scheduler.list(task="tiny.count", status="todo") == [pending]
    done = run_now(running, "tiny.count")
    assert done.id == pending.id and done.status == "done"
    [following] = running.agent.scheduler.list(task="tiny.count", status="todo")
    assert following.scheduled_at - done.finished_at >= timedelta(seconds=600)


def test_a_zero_interval_is_refused(make_agent):
    with pytest.raises(ConfigError, match=r"tiny\.interval: "):
        make_agent(plugins={"tiny": agent_tiny}, config={"tiny": {"interval": "0"}})


def test_enabled_through_the_config(pg_cluster, tmp_path):
    """Loaded as an operator would: the entry point ``tiny = agent_tiny`` named in [agent] plugins."""
    agent = Agent.from_config(agent_config(pg_cluster, tmp_path, {"tiny": None}), environ={})
    agent.start()
    try:
        assert Client(agent.server.url).get(f"/tiny/counts?key={KEY}").json() == {"counts": []}
    finally:
        agent.stop()
