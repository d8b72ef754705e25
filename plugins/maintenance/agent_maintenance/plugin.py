"""The maintenance plugin's hooks: its config section, task types and routes."""

from __future__ import annotations

from typing import Any

from agent_core.hookspecs import Option, Route, TaskType, hookimpl

from . import metrics, routes, tasks


@hookimpl
def agent_add_config(schema: Any) -> None:
    schema.add(
        Option(
            "lock_timeout",
            float,
            60.0,
            "Seconds a maintenance statement waits for a lock before it fails (0: no limit).",
            minimum=0,
        )
    )
    schema.add(
        Option(
            "max_operations",
            int,
            2,
            "Maintenance operations running at the same time (others wait for a slot); "
            "the core's [agent] scheduler_workers bounds all operations.",
            minimum=1,
        )
    )
    schema.add(
        Option(
            "reindex_concurrently",
            bool,
            True,
            "REINDEX ... CONCURRENTLY (writes go on during the rebuild) where PostgreSQL allows it.",
        )
    )
    schema.add(
        Option(
            "estimates_max_age",
            float,
            10.0,
            "Seconds the sizes and bloat estimates of a database or a schema may be reused by later requests "
            "(0: only requests made while they are computed share them); the Age header tells their age.",
            minimum=0,
        )
    )
    schema.add(
        Option(
            "estimates_max_bytes",
            int,
            32 * 2**20,
            "Bytes the reused figures may hold in memory, all databases and schemas together; "
            "a schema listing larger than this is streamed to its client and not kept.",
            minimum=0,
        )
    )
    schema.add(
        Option(
            "max_notices",
            int,
            1000,
            "Server notices and warnings kept per operation (the last ones).",
            minimum=1,
        )
    )


@hookimpl
def agent_register_tasks(agent: Any) -> list[TaskType]:
    return tasks.task_types(agent)


@hookimpl
def agent_register_routes(agent: Any) -> list[Route]:
    return routes.routes()


@hookimpl
def agent_metrics(agent: Any) -> list[Any]:
    return [metrics.MaintenanceCollector(agent)]
