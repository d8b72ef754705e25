"""A probe plugin for the core's own tests: routes and tasks that exercise the core."""

from __future__ import annotations

import threading
import time
import types

import pytest
import sqlalchemy as sa

from agent_core.errors import HTTPError
from agent_core.hookspecs import Option, Route, TaskType, hookimpl


def make_probe() -> types.SimpleNamespace:
    """A fresh plugin object named ``probe`` with its own state."""
    state = types.SimpleNamespace(
        calls=[],
        release=threading.Event(),
        started=threading.Event(),
        ran=[],
        aborted=[],
        metadata=sa.MetaData(),
    )
    sa.Table("probe_things", state.metadata, sa.Column("id", sa.Integer, primary_key=True))

    def hello(request):
        """GET /probe/hello: 200."""
        return {"hello": request.requester, "auth": request.auth}

    def echo(request):
        """POST /probe/echo: 200 body echoed; 400; 413."""
        return {"body": request.json()}

    def boom(request):
        raise RuntimeError("secret internal detail")

    def teapot(request):
        raise HTTPError(418, "I'm a teapot.")

    def items(request):
        return [1, 2, 3]

    def pg(request):
        return {"one": request.agent.postgres.query("SELECT 1 AS one")[0]["one"]}

    def run_quick(ctx):
        state.ran.append((ctx.operation.id, time.time()))
        ctx.notice("NOTICE: quick ran")
        return {"params": ctx.params}

    def run_blocking(ctx):
        ctx.notice("NOTICE: waiting for release\n")
        ctx.update_info(marker="running")
        state.started.set()
        if not state.release.wait(30):
            raise RuntimeError("never released")
        if ctx.cancel_requested.is_set():
            raise RuntimeError("stopped on request")
        return "released"

    def cancel_blocking(ctx):
        state.release.set()

    def run_fail(ctx):
        raise ValueError("it went wrong")

    def abort(op, agent):
        state.aborted.append(op.id)
        return [f"cleaned up after {op.id}"]

    plugin = types.SimpleNamespace(state=state)

    @hookimpl
    def agent_add_config(schema):
        state.calls.append("agent_add_config")
        schema.add(Option("greeting", str, "hi", "A greeting."))
        schema.add(Option("level", int, 1, "A level.", minimum=0))

    @hookimpl
    def agent_db_metadata():
        state.calls.append("agent_db_metadata")
        return state.metadata

    @hookimpl
    def agent_register_routes(agent):
        state.calls.append("agent_register_routes")
        return [
            Route("GET", "/probe/hello", hello, key=True),
            Route("GET", "/probe/private", hello),
            Route("POST", "/probe/echo", echo),
            Route("GET", "/probe/boom", boom, key=True),
            Route("GET", "/probe/teapot", teapot, key=True),
            Route("GET", "/probe/items", items, key=True),
            Route("GET", "/probe/pg", pg, key=True),
        ]

    @hookimpl
    def agent_register_tasks(agent):
        state.calls.append("agent_register_tasks")
        return [
            TaskType("probe.quick", run_quick),
            TaskType("probe.blocking", run_blocking, cancel=cancel_blocking, abort=abort),
            TaskType("probe.uncancelable", run_blocking, abort=abort),
            TaskType("probe.fail", run_fail),
        ]

    @hookimpl
    def agent_startup(agent):
        state.calls.append("agent_startup")
        state.agent = agent

    @hookimpl
    def agent_shutdown(agent):
        state.calls.append("agent_shutdown")
        state.release.set()

    for fn in (
        agent_add_config,
        agent_db_metadata,
        agent_register_routes,
        agent_register_tasks,
        agent_startup,
        agent_shutdown,
    ):
        setattr(plugin, fn.__name__, fn)
    return plugin


@pytest.fixture
def probe():
    return make_probe()


@pytest.fixture
def probe_agent(make_agent, probe):
    return make_agent(plugins={"probe": probe})
