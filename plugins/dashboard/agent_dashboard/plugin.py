"""The dashboard plugin's hooks: config, routes, background sampler."""

from __future__ import annotations

from typing import Any

from agent_core.hookspecs import Route, hookimpl

from . import routes, service, settings


@hookimpl
def agent_add_config(schema: Any) -> None:
    for option in settings.OPTIONS:
        schema.add(option)


@hookimpl
def agent_register_routes(agent: Any) -> list[Route]:
    return routes.routes()


@hookimpl
def agent_startup(agent: Any) -> None:
    service.attach(agent).start()


@hookimpl
def agent_shutdown(agent: Any) -> None:
    service.detach(agent)
