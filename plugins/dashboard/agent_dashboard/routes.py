"""HTTP views of the dashboard plugin (contract: the temboard 9.x UI's
dashboard page, ``GET /dashboard/config``, ``/dashboard/history``,
``/dashboard``).

All three read what the background sampler kept: none queries PostgreSQL, so
they answer 200 while PostgreSQL is down (the samples say so). Session or
agent key, ``read`` permission.
"""

from __future__ import annotations

import logging
from typing import Any

from agent_core.hookspecs import Route
from agent_core.store import StoreUnavailable
from agent_core.web.openapi import ok
from agent_core.web.request import Request
from agent_core.web.views import visible_notifications

from . import service
from .sampler import empty_sample

log = logging.getLogger("pgwarden.dashboard")

#: Audit log entries GET /dashboard carries, newest first (as temboard).
NOTIFICATIONS = 15


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def config(request: Request) -> dict[str, Any]:
    """GET /dashboard/config -> {"scheduler_interval", "history_length"}

    ``[dashboard] interval`` (seconds between samples, the UI's polling
    period) and ``[dashboard] history_length``. 200; 401 invalid session or
    key; 406 ``X-Session`` malformed.
    """
    dashboard = service.get(request.agent)
    return {"scheduler_interval": _number(dashboard.interval), "history_length": dashboard.history_length}


def history(request: Request) -> list[dict[str, Any]]:
    """GET /dashboard/history -> [sample, ...]

    The samples kept in memory, oldest first: at most ``[dashboard]
    history_length``, empty after a restart. 200; 401 invalid session or key;
    406 ``X-Session`` malformed.
    """
    return service.get(request.agent).sampler.history()


def dashboard(request: Request) -> dict[str, Any]:
    """GET /dashboard -> {sample..., "notifications": [...], "status": {...}}

    The latest sample (every figure null before the first one), the newest
    15 entries of the audit log as GET /notifications shows them to this
    client, and ``status`` (PostgreSQL, agent, host) as last sampled.
    200; 401 invalid session or key; 406 ``X-Session`` malformed.
    """
    instance = service.get(request.agent)
    sample = instance.sampler.latest() or empty_sample(instance.sampler.clock())
    try:
        notifications = visible_notifications(request, NOTIFICATIONS)[0]
    except StoreUnavailable as e:  # the figures are still worth answering
        log.warning("dashboard without notifications: %s", e)
        notifications = []
    return {**sample, "notifications": notifications, "status": instance.status(sample["pg_local"])}


# -- OpenAPI (GET /openapi.json) ------------------------------------------------

_NUM0 = {"type": "number", "nullable": True}
_INT0 = {"type": "integer", "nullable": True}


def _obj(properties: dict[str, Any], nullable: bool = False) -> dict[str, Any]:
    return {"type": "object", "required": sorted(properties), "properties": properties, "nullable": nullable}


_COUNTER = _obj({"nb": {"type": "integer"}, "time": {"type": "number"}}, nullable=True)
SAMPLE = _obj(
    {
        "timestamp": {"type": "number", "description": "UNIX time of the sample"},
        "postgres": _obj(
            {"available": {"type": "boolean", "nullable": True}, "error": {"type": "string", "nullable": True}}
        ),
        "pg_local": {"type": "boolean", "nullable": True},
        "buffers": _COUNTER,
        "hitratio": {**_NUM0, "description": "percent of blocks found in shared buffers, since the statistics reset"},
        "active_backends": _COUNTER,
        "max_connections": _INT0,
        "databases": _obj(
            {
                "databases": {"type": "integer"},
                "nb": {"type": "integer"},
                "total_size": {"type": "string", "nullable": True},
                "total_size_bytes": _INT0,
                "total_commit": _INT0,
                "total_rollback": _INT0,
                "commits_per_sec": _NUM0,
                "rollbacks_per_sec": _NUM0,
                "time": {"type": "string"},
                "timestamp": {"type": "number"},
            },
            nullable=True,
        ),
        "tps": _NUM0,
        "cpu": _obj({name: _NUM0 for name in ("user", "system", "idle", "iowait", "steal")}),
        "loadaverage": _NUM0,
        "memory": _obj(
            {
                "total": {**_INT0, "description": "kB"},
                "free": _NUM0,
                "active": _NUM0,
                "cached": _NUM0,
                "total_bytes": _INT0,
                "free_bytes": _INT0,
                "active_bytes": _INT0,
                "cached_bytes": _INT0,
            }
        ),
    }
)
CONFIG = {
    "responses": ok(
        _obj({"scheduler_interval": {"type": "number"}, "history_length": {"type": "integer"}}),
        "Sampling period and history length.",
    )
}
HISTORY = {"responses": ok({"type": "array", "items": SAMPLE}, "The samples kept, oldest first.")}
LATEST = {
    "responses": ok(
        {
            **SAMPLE,
            "required": [*SAMPLE["required"], "notifications", "status"],
            "properties": {
                **SAMPLE["properties"],
                "notifications": {"type": "array", "items": {"type": "object"}},
                "status": {"type": "object"},
            },
        },
        "The latest sample, notifications and status.",
    )
}


def routes() -> list[Route]:
    return [
        Route("GET", "/dashboard", dashboard, key=True, openapi=LATEST),
        Route("GET", "/dashboard/config", config, key=True, openapi=CONFIG),
        Route("GET", "/dashboard/history", history, key=True, openapi=HISTORY),
    ]
