"""The plugin contract: validation in one place, lifecycle order, tracing."""

import logging
import types

import pytest
import sqlalchemy as sa

from agent_core.errors import StartupError
from agent_core.hookspecs import Route, TaskType, hookimpl
from agent_core.testing import KEY


def plugin(**hooks):
    """A plugin object from hook functions given by name."""
    ns = types.SimpleNamespace()
    for name, fn in hooks.items():
        fn.__name__ = name
        setattr(ns, name, hookimpl(fn))
    return ns


def view(request):
    return {"ok": True}


def test_lifecycle_order(make_agent, probe):
    running = make_agent(plugins={"probe": probe})
    assert probe.state.calls == [
        "agent_add_config",
        "agent_db_metadata",
        "agent_register_tasks",
        "agent_register_routes",
        "agent_startup",
    ]
    running.stop()
    assert probe.state.calls[-1] == "agent_shutdown"


def test_plugin_config_section_values(make_agent, probe):
    running = make_agent(plugins={"probe": probe}, config={"probe": {"greeting": "hello", "level": "3"}})
    assert running.agent.config.section("probe") == {"greeting": "hello", "level": 3}


def test_plugin_tables_created_in_store(probe_agent):
    assert "probe_things" in sa.inspect(probe_agent.agent.store.engine).get_table_names()


def test_disabled_plugin_routes_are_404(make_agent):
    running = make_agent()
    res = running.client().get(f"/probe/hello?key={KEY}")
    assert res.status == 404 and "error" in res.json()


@pytest.mark.parametrize(
    "routes,message",
    [
        ([Route("GET", "/other/x", view)], "path must start with '/bad'"),
        ([Route("GET", "/badness", view)], "path must start with '/bad'"),
        ([Route("FETCH", "/bad/x", view)], "method 'FETCH'"),
        ([Route("GET", "/bad/x", view), Route("GET", "/bad/x", view)], "already registered"),
        ([Route("GET", "/bad/<a>", view), Route("GET", "/bad/<b>", view)], "already registered"),
        (["/bad/x"], "must return a list of Route"),
    ],
)
def test_invalid_routes_refuse_startup(make_agent, routes, message):
    bad = plugin(agent_register_routes=lambda agent: routes)
    with pytest.raises(StartupError, match=message) as e:
        make_agent(plugins={"bad": bad})
    assert "plugin 'bad'" in str(e.value)


@pytest.mark.parametrize(
    "task,message",
    [
        (TaskType("other.run", view), "must start with 'bad.'"),
        (TaskType("bad", view), "must look like"),
        (TaskType("bad.Run", view), "must look like"),
        (TaskType("bad.run", view, interval=0), "interval"),
    ],
)
def test_invalid_tasks_refuse_startup(make_agent, task, message):
    bad = plugin(agent_register_tasks=lambda agent: [task])
    with pytest.raises(StartupError, match=message):
        make_agent(plugins={"bad": bad})


def test_table_prefix_enforced(make_agent):
    md = sa.MetaData()
    sa.Table("things", md, sa.Column("id", sa.Integer, primary_key=True))
    bad = plugin(agent_db_metadata=lambda: md)
    with pytest.raises(StartupError, match="table 'things' must start with 'bad_'"):
        make_agent(plugins={"bad": bad})


def test_misspelled_hook_refuses_startup(make_agent):
    bad = plugin(agent_register_route=lambda agent: [])
    with pytest.raises(StartupError, match="agent_register_route"):
        make_agent(plugins={"bad": bad})


def test_startup_error_refuses_with_message(make_agent):
    def agent_startup(agent):
        raise StartupError("needs pg_monitor")

    with pytest.raises(StartupError, match="plugin 'bad': needs pg_monitor"):
        make_agent(plugins={"bad": plugin(agent_startup=agent_startup)})


def test_reserved_or_invalid_plugin_names(make_agent):
    for name in ("login", "Bad", "status"):
        with pytest.raises(StartupError, match="not allowed"):
            make_agent(plugins={name: plugin()})


def test_hook_tracing(make_agent, probe, caplog, monkeypatch):
    monkeypatch.setenv("PGWARDEN_TRACE_HOOKS", "1")
    with caplog.at_level(logging.INFO, logger="pgwarden.hooks"):
        make_agent(plugins={"probe": probe})
    traced = [r.getMessage() for r in caplog.records if r.name == "pgwarden.hooks"]
    assert any("probe.agent_register_routes(agent)" in m for m in traced)
    assert any("probe.agent_startup" in m and "returned" in m for m in traced)


def test_recurring_task_is_kept_scheduled(make_agent):
    runs = []
    rec = plugin(
        agent_register_tasks=lambda agent: [
            TaskType("rec.tick", lambda ctx: runs.append(ctx.operation.id), interval=0.3)
        ]
    )
    from agent_core.testing import wait_for

    running = make_agent(plugins={"rec": rec})
    s = running.agent.scheduler
    wait_for(lambda: len(s.list(task="rec.tick", status="done")) >= 2, timeout=10)
    ops = s.list(task="rec.tick")
    assert len(runs) >= 2
    assert all(o.requested_by == "agent" for o in ops)
    assert sum(o.status == "todo" for o in ops) <= 1


def test_refused_startup_shuts_down_plugins_already_started(make_agent, probe):
    def agent_startup(agent):
        raise StartupError("not today")

    with pytest.raises(StartupError, match="not today"):
        make_agent(plugins={"probe": probe, "later": plugin(agent_startup=agent_startup)})
    assert probe.state.calls[-2:] == ["agent_startup", "agent_shutdown"]
