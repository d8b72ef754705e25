"""A plugin raising inside a route or a hook: the agent logs it, answers 500
JSON for that route only (the operation ends ``failed``), and keeps serving
everything else.

Already covered in ``tests/core``: a route raising an exception is a generic
500 whose detail goes to the log only (test_http), a plugin failing at start
refuses the start with its name (test_plugins), a task raising ends
``failed`` (test_scheduler). Here: SystemExit (which bottle re-raises and
which made cheroot stop serving), many failing requests at once beside
working ones, task hooks raising or returning what the store cannot hold.
"""

from __future__ import annotations

import logging
import types
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent_core.hookspecs import Route, TaskType, hookimpl
from agent_core.testing import KEY, wait_for

INTERNAL = "Internal server error; see the agent's log."


def plugin(routes: list[Route] = (), tasks: list[TaskType] = ()) -> types.SimpleNamespace:  # type: ignore[assignment]
    @hookimpl
    def agent_register_routes(agent: Any) -> list[Route]:
        return list(routes)

    @hookimpl
    def agent_register_tasks(agent: Any) -> list[TaskType]:
        return list(tasks)

    return types.SimpleNamespace(agent_register_routes=agent_register_routes, agent_register_tasks=agent_register_tasks)


def assert_500(res: Any) -> None:
    assert res.status == 500, res
    assert res.json() == {"error": INTERNAL}


def test_a_route_raising_fails_alone_while_everything_else_is_served(make_agent, faulty, caplog):
    running = make_agent(plugins={"faulty": faulty})
    client = running.client()

    def call(i: int) -> tuple[str, int]:
        path = "/faulty/boom" if i % 2 else ("/faulty/ok" if i % 4 else "/status")
        return path, client.get(f"{path}?key={KEY}").status

    with caplog.at_level(logging.ERROR, logger="pgwarden.http"), ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(200)))
    assert {s for p, s in results if p == "/faulty/boom"} == {500}
    assert {s for p, s in results if p != "/faulty/boom"} == {200}
    logged = [r for r in caplog.records if "/faulty/boom" in r.getMessage()]
    assert len(logged) == 100 and all(r.exc_info and r.exc_info[0] is KeyError for r in logged)
    assert_500(client.get(f"/faulty/boom?key={KEY}"))
    assert client.get("/status").status == 200


def test_a_route_calling_sys_exit_is_a_500_and_the_server_keeps_serving(make_agent, caplog):
    def leave(request: Any) -> Any:
        raise SystemExit(3)  # a library calling sys.exit() inside a plugin

    running = make_agent(plugins={"leaving": plugin([Route("GET", "/leaving", leave, key=True)])})
    client = running.client()
    with caplog.at_level(logging.ERROR, logger="pgwarden.http"):
        for _ in range(3):
            assert_500(client.get(f"/leaving?key={KEY}"))
            assert client.get("/status").status == 200
    assert any(r.exc_info and r.exc_info[0] is SystemExit for r in caplog.records)


def test_task_hooks_raising_or_returning_garbage(make_agent, caplog):
    scheduler_of = lambda running: running.agent.scheduler  # noqa: E731

    def leaves(ctx: Any) -> None:
        raise SystemExit(4)

    def unstorable(ctx: Any) -> Any:
        return {"a set is not JSON": {1, 2}}

    def works(ctx: Any) -> str:
        return "ok"

    tasks = [TaskType("bad.leaves", leaves), TaskType("bad.unstorable", unstorable), TaskType("bad.works", works)]
    running = make_agent(plugins={"bad": plugin(tasks=tasks)}, config={"agent": {"scheduler_workers": 1}})
    s = scheduler_of(running)
    ids = [s.submit(name) for name in ("bad.leaves", "bad.unstorable", "bad.works")]

    def ended(op_id: str) -> Any:
        op = s.get(op_id)
        return op if op.finished else None

    left, garbage, fine = (wait_for(lambda i=i: ended(i), timeout=20) for i in ids)  # one worker: in turn
    assert (left.status, left.error) == ("failed", "SystemExit(4)")
    assert garbage.status == "failed" and "could not store its result" in garbage.error, garbage
    assert "not JSON serializable" in garbage.error
    assert (fine.status, fine.result) == ("done", "ok")
    assert running.client().get("/status").status == 200
