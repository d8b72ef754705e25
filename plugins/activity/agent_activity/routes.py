"""HTTP views of the activity plugin (contract: ``api/activity-api.txt``).

The three listings accept the agent key; kill needs a session. Every error is
answered ``{"error": ...}`` by the core. The listings show the query text of
sessions to ``admin`` clients only, and to ``read`` clients (read users, the
read-only agent key) with ``[activity] read_role_sees_queries``: otherwise
``query`` is null (the field stays).
"""

from __future__ import annotations

import re
from typing import Any

from agent_core.errors import InvalidInput, MalformedParameter
from agent_core.hookspecs import Route
from agent_core.web import paging
from agent_core.web.request import Request

from . import service

_INT4_MAX = 2**31 - 1
_DIGITS = re.compile(r"^[0-9]{1,10}$")
#: A cursor of GET /activity is an offset; no instance has this many backends.
_OFFSET_MAX = 1_000_000


def _limit(request: Request) -> int | None:
    text = request.query.get("limit")
    if text is None:
        return None
    if not _DIGITS.match(text) or not 0 < int(text) <= request.agent.config.agent["listing_limit_max"]:
        raise MalformedParameter("limit")
    return int(text)


def _listing(request: Request) -> tuple[service.Activity, bool]:
    """The plugin's service and whether this client sees query texts."""
    instance = service.get(request.agent)
    return instance, instance.sees_queries(request.role)


def activity(request: Request) -> Any:
    """GET /activity[?limit=N&cursor=C] -> {"rows": [...]}

    One row per client backend of the instance except the agent's own
    connections, longest running first, at most ``limit`` rows (default
    ``[activity] limit``, at most ``[agent] listing_limit_max``); idle
    sessions unless ``[activity] show_idle = no``. ``query`` is null for a
    ``read`` client unless ``[activity] read_role_sees_queries``. When more
    backends follow, ``X-Next-Cursor`` and ``Link: <...>; rel="next"`` give
    the next page: the cursor is an offset into a live listing (backends come
    and go and their order changes between two requests), not a stable position.

    200 rows; 400 ``cursor`` malformed; 401 invalid session or key; 406
    ``X-Session`` or ``limit`` malformed (the reference's wording; also above
    the maximum); 501 PostgreSQL older than 10; 503 PostgreSQL unavailable.
    """
    limit = _limit(request)
    activity, queries = _listing(request)
    cursor = request.query.get("cursor")
    offset = 0
    if cursor is not None:
        if not _DIGITS.match(cursor) or int(cursor) > _OFFSET_MAX:
            raise paging.bad_cursor()
        offset = int(cursor)
    size = limit or activity.limit
    rows = activity.activity(size, offset, more=True, queries=queries)
    next_cursor = str(offset + size) if len(rows) > size and offset + size <= _OFFSET_MAX else None
    return paging.answer(request, {"rows": rows[:size]}, size, next_cursor)


def waiting(request: Request) -> dict[str, Any]:
    """GET /activity/waiting -> {"rows": [...]}

    Backends waiting for a lock, with ``relation``, ``type``, ``mode`` of the
    lock they want, ``blocked_by`` and ``root_blockers``; ``query`` as in
    GET /activity.

    200 rows; 401 invalid session or key; 406 ``X-Session`` malformed;
    501 PostgreSQL older than 10; 503 PostgreSQL unavailable.
    """
    instance, queries = _listing(request)
    return {"rows": instance.waiting(queries)}


def blocking(request: Request) -> dict[str, Any]:
    """GET /activity/blocking -> {"rows": [...]}

    Backends holding a lock that others wait for, root blockers first, with
    ``relation``, ``type``, ``mode`` of the lock held, ``blocks``,
    ``blocked_by`` and ``root``; ``query`` as in GET /activity.

    200 rows; 401 invalid session or key; 406 ``X-Session`` malformed;
    501 PostgreSQL older than 10; 503 PostgreSQL unavailable.
    """
    instance, queries = _listing(request)
    return {"rows": instance.blocking(queries)}


def kill(request: Request) -> dict[str, Any]:
    """POST /activity/kill {"pids": [int, ...]} -> {"backends": [{"pid", "killed"}, ...]}

    Also served as POST /activity/activity/kill (the reference's title).
    Terminates client backends with ``pg_terminate_backend``; any other pid
    (the agent's own connections, autovacuum, background workers, WAL
    senders, processes that are not backends of this instance) is refused
    with ``"killed": false`` and a ``reason``. Session only. Every pid is
    recorded in ``activity_kills``; each one terminated also in the audit
    log (``GET /notifications``: ``Backend <pid> terminated``).

    The pids are recorded before any is signalled and the results before the
    answer: a store failure answers 503 (before: nothing signalled; after:
    naming the backends terminated).

    200 results (one per distinct pid, in request order); 400 body not JSON,
    or more than ``[activity] kill_max_pids`` distinct pids; 401 invalid
    session; 406 ``X-Session`` malformed, or ``Parameter 'pids' is
    malformed.`` (not a list of positive integers); 413 body too large;
    501 PostgreSQL older than 10; 503 PostgreSQL or the store unavailable.
    """
    body = request.json()
    pids = body.get("pids") if isinstance(body, dict) else None
    if not isinstance(pids, list) or not all(type(p) is int and 0 < p <= _INT4_MAX for p in pids):
        raise MalformedParameter("pids")
    unique = list(dict.fromkeys(pids))
    activity = service.get(request.agent)
    if len(unique) > activity.kill_max_pids:
        raise InvalidInput(
            f"Too many pids: {len(unique)}; one request may name at most {activity.kill_max_pids}"
            " ([activity] kill_max_pids).",
        )
    results = activity.kill(unique, request.requester)
    killed = [f"Backend {result['pid']} terminated" for result in results if result["killed"]]
    request.agent.notify_many(request.requester, killed)
    return {"backends": results}


# -- OpenAPI (GET /openapi.json): field names as in api/activity-api.txt ------------

_STR0 = {"type": "string", "nullable": True}
_NUM0 = {"type": "number", "nullable": True}
_YN0 = {"type": "string", "enum": ["Y", "N"], "nullable": True}
_PIDS = {"type": "array", "items": {"type": "integer"}}
ROW = {
    "pid": {"type": "integer"},
    "database": _STR0,
    "user": _STR0,
    "client": _STR0,
    "application_name": _STR0,
    "cpu": _NUM0,
    "memory": _NUM0,
    "read_s": _STR0,
    "write_s": _STR0,
    "iow": _YN0,
    "wait": {"type": "string", "enum": ["Y", "N"]},
    "duration": _NUM0,
    "state": _STR0,
    "query": {
        "type": "string",
        "nullable": True,
        "description": "Null when PostgreSQL hides it from the agent's role, or for a read client"
        " (read user, read-only agent key) unless [activity] read_role_sees_queries.",
    },
}
LOCK = {"relation": {"type": "string"}, "type": _STR0, "mode": _STR0}


_PG = {"501": {"description": "PostgreSQL older than 10."}, "503": {"description": "PostgreSQL unavailable."}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}, **_PG}


def _rows(fields: dict[str, Any]) -> dict[str, Any]:
    row = {"type": "object", "required": sorted(fields), "properties": fields}
    return _json(
        {"type": "object", "required": ["rows"], "properties": {"rows": {"type": "array", "items": row}}}, "The rows."
    )


LISTING = paging.openapi(
    {"responses": {**_rows(ROW), "406": {"description": "X-Session or limit malformed (or above the maximum)."}}},
    "At most this many rows (default [activity] limit, at most [agent] listing_limit_max);"
    " 406 if not an integer in range.",
)
WAITING = {"responses": _rows({**ROW, **LOCK, "blocked_by": _PIDS, "root_blockers": _PIDS})}
BLOCKING = {"responses": _rows({**ROW, **LOCK, "blocks": _PIDS, "blocked_by": _PIDS, "root": {"type": "boolean"}})}
RESULT = {
    "type": "object",
    "required": ["pid", "killed"],
    "properties": {"pid": {"type": "integer"}, "killed": {"type": "boolean"}, "reason": {"type": "string"}},
}
KILL = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["pids"],
                    "properties": {
                        "pids": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": _INT4_MAX}}
                    },
                }
            }
        },
    },
    "responses": {
        **_json(
            {
                "type": "object",
                "required": ["backends"],
                "properties": {"backends": {"type": "array", "items": RESULT}},
            },
            "One result per distinct pid, in request order; refused ones carry a reason.",
        ),
        "400": {"description": "Body not JSON, or more than [activity] kill_max_pids distinct pids."},
        "406": {"description": "X-Session malformed, or Parameter 'pids' is malformed."},
        "503": {"description": "PostgreSQL unavailable, or the store failed (the message says what was done)."},
    },
}


def routes() -> list[Route]:
    return [
        Route("GET", "/activity", activity, key=True, openapi=LISTING),
        Route("GET", "/activity/waiting", waiting, key=True, openapi=WAITING),
        Route("GET", "/activity/blocking", blocking, key=True, openapi=BLOCKING),
        Route("POST", "/activity/kill", kill, key=False, openapi=KILL),
        Route("POST", "/activity/activity/kill", kill, key=False, openapi=KILL),
    ]
