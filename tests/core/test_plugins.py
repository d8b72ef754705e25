"""The plugin contract: every hook called in the documented order, validation
in one place, the documented start-up errors, tracing."""

import logging
import pathlib
import re
import types

import pytest
import sqlalchemy as sa

from agent_core.agent import load
from agent_core.config import RawConfig
from agent_core.errors import ConfigError, StartupError
from agent_core.hookspecs import Option, Route, TaskType, hookimpl
from agent_core.plugins import hook_arguments
from agent_core.testing import KEY

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "plugins"


def plugin(**hooks):
    """A plugin object from hook functions given by name."""
    ns = types.SimpleNamespace()
    for name, fn in hooks.items():
        fn.__name__ = name
        setattr(ns, name, hookimpl(fn))
    return ns


def view(request):
    return {"ok": True}


def every_hook(name, calls):
    """A plugin implementing every hook, recording ``(plugin, hook)`` in ``calls``."""
    metadata = sa.MetaData()
    sa.Table(f"{name}_things", metadata, sa.Column("id", sa.Integer, primary_key=True))

    def record(hook, result=None):
        calls.append((name, hook))
        return result

    return plugin(
        agent_add_config=lambda schema: record("agent_add_config", schema.add(Option("word", str, "unset"))),
        agent_db_metadata=lambda: record("agent_db_metadata", metadata),
        agent_register_tasks=lambda agent: record("agent_register_tasks", [TaskType(f"{name}.tick", lambda ctx: 1)]),
        agent_register_routes=lambda agent: record("agent_register_routes", [Route("GET", f"/{name}", view, key=True)]),
        agent_metrics=lambda agent: record("agent_metrics", []),
        agent_startup=lambda agent: record("agent_startup"),
        agent_shutdown=lambda agent: record("agent_shutdown"),
    )


def documented_order():
    """The hooks in the order of their sections in hooks.md ("in the order the core calls them")."""
    return re.findall(r"^## `(\w+)\(", (DOCS / "hooks.md").read_text(), flags=re.M)


def test_every_hook_is_called_in_the_documented_order(make_agent):
    order = documented_order()
    assert sorted(order) == sorted(hook_arguments()), "this test must exercise every hook of hookspecs.py"
    calls = []
    running = make_agent(
        plugins={"first": every_hook("first", calls), "second": every_hook("second", calls)},
        config={"first": {"word": "set"}},
    )
    # plugin after plugin in the order of [agent] plugins (pluggy's calling order), hook after hook ...
    assert calls == [(p, hook) for hook in order if hook != "agent_shutdown" for p in ("first", "second")]
    # ... and each hook's result is in effect
    agent = running.agent
    assert agent.config.section("first") == {"word": "set"} and agent.config.section("second") == {"word": "unset"}
    assert {"first_things", "second_things"} <= set(sa.inspect(agent.store.engine).get_table_names())
    assert {"first.tick", "second.tick"} <= set(agent.scheduler.tasks)
    assert running.client().get(f"/second?key={KEY}").json() == {"ok": True}
    calls.clear()
    running.stop()
    # shutdown too follows pluggy's order, the same as every other hook (trylast=True to shut down last)
    assert calls == [("first", "agent_shutdown"), ("second", "agent_shutdown")]


def documented_errors():
    """``{title: message}`` of the list in writing.md, "When a plugin cannot load"."""
    text = (DOCS / "writing.md").read_text()
    section = text.split("## When a plugin cannot load")[1].split("\n## ")[0]
    items = re.findall(r"^- \*\*(.+?)\*\*(.*?)(?=^- |^\n|\Z)", section, flags=re.M | re.S)
    return {title: re.findall(r"`([^`]+)`", body)[-1] for title, body in items}


@pytest.fixture
def greet_installed(tmp_path, monkeypatch):
    """An installed distribution pgwarden-greet 1.0.0 whose plugin ``greet`` fails to import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "greet_plugin.py").write_text("raise ModuleNotFoundError(\"No module named 'requests'\")\n")
    info = site / "pgwarden_greet-1.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pgwarden-greet\nVersion: 1.0.0\n")
    (info / "entry_points.txt").write_text("[pgwarden]\ngreet = greet_plugin\n")
    monkeypatch.syspath_prepend(str(site))


def startup_error(make_agent, **hooks):
    with pytest.raises(StartupError) as e:
        make_agent(plugins={"greet": plugin(**hooks)})
    return str(e.value)


def config_error(tmp_path):
    raw = RawConfig.from_dict({"agent": {"home": str(tmp_path), "plugins": "greet"}})
    with pytest.raises(ConfigError) as e:
        load(raw, environ={})
    return "\n".join(e.value.problems)


def refuse_startup(agent):
    raise StartupError("needs PostgreSQL 13 or later")


def raise_name_error(agent):
    return routes.routes()  # noqa: F821 - the mistake the documented message shows


def table_without_prefix():
    md = sa.MetaData()
    sa.Table("visits", md, sa.Column("id", sa.Integer, primary_key=True))
    return md


def misspelled_hook(make_agent):
    return startup_error(make_agent, agent_register_route=lambda agent: [])


def misspelled_argument(make_agent):
    return startup_error(make_agent, agent_startup=lambda agnet: None)


def route_outside_prefix(make_agent):
    return startup_error(make_agent, agent_register_routes=lambda agent: [Route("GET", "/hello", view)])


def duplicate_route(make_agent):
    routes = [Route("GET", "/greet/<name>", view), Route("GET", "/greet/<who>", view)]
    return startup_error(make_agent, agent_register_routes=lambda agent: routes)


#: How each documented start-up error is caused: title in writing.md -> cause(make_agent, tmp_path).
CAUSES = {
    "Enabled but not installed": lambda make_agent, tmp_path: config_error(tmp_path),
    "Import failure": lambda make_agent, tmp_path: config_error(tmp_path),  # with greet_installed
    "Misspelled hook": lambda make_agent, tmp_path: misspelled_hook(make_agent),
    "Misspelled hook argument": lambda make_agent, tmp_path: misspelled_argument(make_agent),
    "Default value on a hook argument": lambda make_agent, tmp_path: startup_error(
        make_agent, agent_startup=lambda agent=None: None
    ),
    "Route outside its prefix": lambda make_agent, tmp_path: route_outside_prefix(make_agent),
    "Duplicate route": lambda make_agent, tmp_path: duplicate_route(make_agent),
    "Table without the prefix": lambda make_agent, tmp_path: startup_error(
        make_agent, agent_db_metadata=table_without_prefix
    ),
    "Task without the prefix": lambda make_agent, tmp_path: startup_error(
        make_agent, agent_register_tasks=lambda agent: [TaskType("count", view)]
    ),
    "A hook raised `StartupError`": lambda make_agent, tmp_path: startup_error(
        make_agent, agent_startup=refuse_startup
    ),
    "A hook raised anything else": lambda make_agent, tmp_path: startup_error(
        make_agent, agent_register_routes=raise_name_error
    ),
}


def test_every_documented_start_up_error_is_caused_here():
    assert sorted(documented_errors()) == sorted(CAUSES)


@pytest.mark.parametrize("title", sorted(CAUSES))
def test_loading_errors_give_the_documented_message(title, make_agent, tmp_path, request):
    if title == "Import failure":
        request.getfixturevalue("greet_installed")
    documented = documented_errors()[title]
    message = CAUSES[title](make_agent, tmp_path)
    pattern = ".*".join(re.escape(piece) for piece in documented.split("..."))
    assert any(re.fullmatch(pattern, line) for line in message.splitlines()), (documented, message)


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
