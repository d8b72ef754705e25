"""The activity plugin's hooks: config, store table, routes, background sampler."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from agent_core.hookspecs import Route, hookimpl

from . import metrics, routes, service, settings, store


@hookimpl
def agent_add_config(schema: Any) -> None:
    for option in settings.OPTIONS:
        schema.add(option)


@hookimpl
def agent_db_metadata() -> sa.MetaData:
    return store.metadata


@hookimpl
def agent_register_routes(agent: Any) -> list[Route]:
    return routes.routes()


@hookimpl
def agent_metrics(agent: Any) -> list[Any]:
    return [metrics.ActivityCollector(agent)]


@hookimpl
def agent_startup(agent: Any) -> None:
    service.attach(agent).start()


@hookimpl
def agent_shutdown(agent: Any) -> None:
    service.detach(agent)
