"""``GET /openapi.json``: an OpenAPI 3.0 document of every registered route.

Built from the routes the app was made of (:func:`agent_core.web.app.build_app`
keeps them in ``app.config["pgwarden.routes"]``), so a disabled plugin's
routes are absent and a new route is described as soon as it is registered.
Each route's :attr:`Route.openapi` fragment (an Operation Object: summary,
query parameters, request body, its own responses) is merged with what the
core knows itself:

* path parameters from the wildcards (``<dbname>`` -> ``{dbname}``, a string
  of at least one character; ``<id:re:...>`` keeps its pattern);
* security: none for the public routes, ``X-Session`` always, the agent key
  (``?key=``, ``X-Pgwarden-Key``, ``X-TemBoard-Agent-Key``) where
  ``Route.key`` is true;
* the core's error responses, all ``{"error": string}``: 401 and 406 on
  authenticated routes, 403 on ``write`` routes, 400 and 404 where the path
  has parameters, 400 and 413 where there is a request body, 500 everywhere;
* a summary and description from the view's docstring when the fragment has
  none, an ``operationId`` and a tag (``core`` or the plugin's name).
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any

from agent_core import __version__
from agent_core.registrations import Route

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": False,
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}

SECURITY_SCHEMES = {
    "session": {"type": "apiKey", "in": "header", "name": "X-Session", "description": "A session from POST /login."},
    "key": {"type": "apiKey", "in": "query", "name": "key", "description": "The agent key ([agent] key)."},
    "keyHeader": {"type": "apiKey", "in": "header", "name": "X-Pgwarden-Key"},
    "temboardKeyHeader": {"type": "apiKey", "in": "header", "name": "X-TemBoard-Agent-Key"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "The agent key, as Prometheus sends it."},
}

#: What each error status the core adds means.
ERRORS = {
    400: "Body not valid JSON, or path not valid percent-encoded UTF-8.",
    401: "Invalid session or key.",
    403: "The user's role or the agent key lacks the route's permission.",
    404: "Unknown object, or no such route.",
    406: "Parameter malformed (``X-Session`` missing or not 64 lowercase hex characters...).",
    409: "Conflict with the current state.",
    413: "Request body larger than [agent] max_body.",
    429: "Too many failed logins: retry after Retry-After seconds.",
    500: "Unexpected failure; the traceback is in the agent's log.",
    501: "Not supported by this PostgreSQL version.",
    503: "PostgreSQL unavailable.",
    504: "PostgreSQL took longer than [postgresql] statement_timeout.",
}

_WILDCARD = re.compile(r"<([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+)(?::([^>]*))?)?>")


def json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``{"application/json": {"schema": schema}}``: a body or response content."""
    return {"application/json": {"schema": dict(schema)}}


def ok(schema: Mapping[str, Any], description: str = "Success.") -> dict[str, Any]:
    """A 200 response answering ``schema`` as JSON."""
    return {"200": {"description": description, "content": json_content(schema)}}


def path_template(rule: str) -> tuple[str, list[dict[str, Any]]]:
    """The OpenAPI path of a bottle rule and its path parameters."""
    params = []
    for name, kind, conf in _WILDCARD.findall(rule):
        schema: dict[str, Any] = {"type": "string", "minLength": 1}
        if kind == "int":
            schema = {"type": "integer"}
        elif kind == "re" and conf:
            schema["pattern"] = f"^(?:{conf})$"
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return _WILDCARD.sub(lambda m: "{" + m.group(1) + "}", rule), params


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    return {"description": description or ERRORS.get(status, "Error."), "content": json_content(ERROR_REF)}


def operation(route: Route, public: bool, tag: str) -> dict[str, Any]:
    """The Operation Object of ``route``: its fragment completed by the core."""
    op = copy.deepcopy(dict(route.openapi or {}))
    doc = inspect.getdoc(route.view) or ""
    if doc:
        op.setdefault("summary", doc.split("\n\n")[0].replace("\n", " "))
        if doc != op["summary"]:
            op.setdefault("description", doc)
    path, path_params = path_template(route.path)
    op["operationId"] = route.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", path).rstrip("_")
    op["tags"] = [tag]
    own = [p for p in op.get("parameters", []) if p.get("in") != "path"]
    if path_params or own:
        op["parameters"] = path_params + own
    if public:
        op["security"] = []
    else:
        op["security"] = [{"session": []}]
        if route.key:
            op["security"] += [{"key": []}, {"keyHeader": []}, {"temboardKeyHeader": []}, {"bearer": []}]
    responses = op.setdefault("responses", {})
    if not any(status.startswith("2") for status in responses):  # undescribed: any JSON
        responses["200"] = {"description": "Success.", "content": json_content({})}
    statuses = {500}
    if not public:
        statuses |= {401, 406}
        if route.needs == "write":
            statuses.add(403)
    if path_params:
        statuses |= {400, 404}
    if "requestBody" in op:
        statuses |= {400, 413}
    for status in statuses:
        responses.setdefault(str(status), _error(status))
    for status, response in responses.items():  # the plugin's errors: the common shape when left out
        if status[0] in "45" and "content" not in response:
            response["content"] = json_content(ERROR_REF)
    op["responses"] = dict(sorted(responses.items()))
    return op


def document(routes: Iterable[tuple[Route, bool]], plugins: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes`` ((route, public) pairs; a route
    under ``/<plugin>`` of an enabled plugin is tagged with its name)."""
    plugins = list(plugins)
    paths: dict[str, dict[str, Any]] = {}
    for route, public in routes:
        head = route.path.split("/")[1]
        tag = head if head in plugins else "core"
        path, _ = path_template(route.path)
        paths.setdefault(path, {})[route.method.lower()] = operation(route, public, tag)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pgwarden",
            "version": __version__,
            "description": 'Remote control of one PostgreSQL instance. Every error is {"error": string}.',
        },
        "tags": [{"name": name} for name in ["core", *plugins]],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": {"Error": ERROR}, "securitySchemes": SECURITY_SCHEMES},
    }


# -- the core's own routes ------------------------------------------------------

_STRING = {"type": "string"}

LOGIN = {
    "requestBody": {
        "required": True,
        "content": json_content(
            {
                "type": "object",
                "required": ["username", "password"],
                "properties": {"username": _STRING, "password": _STRING},
            }
        ),
    },
    "responses": {
        **ok({"type": "object", "required": ["session"], "properties": {"session": {"type": "string"}}}),
        "400": {"description": "Body not valid JSON, or 'username' longer than 64 characters (before any hash)."},
        "401": {"description": "Invalid username/password."},
        "406": {"description": "Parameter 'username' or 'password' missing or not a string."},
        "429": {
            "description": ERRORS[429] + " Per user, or the agent's failure budget ([agent] login_failures).",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
        "503": {
            "description": "Too many logins at once ([agent] login_concurrency): retry after Retry-After seconds.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        },
    },
}
LOGOUT = {"responses": ok({"type": "object", "required": ["logout"], "properties": {"logout": {"type": "boolean"}}})}
PROFILE = {
    "responses": ok(
        {
            "type": "object",
            "required": ["username", "role"],
            "properties": {"username": _STRING, "role": {"type": "string", "enum": ["admin", "read"]}},
        }
    )
}
STATUS = {
    "responses": ok(
        {
            "type": "object",
            "required": ["alive", "version", "uptime"],
            "properties": {"alive": {"type": "boolean"}, "version": _STRING, "uptime": {"type": "number"}},
            "description": "With [signing] public_key set, also the temboard UI 9.x objects postgres, temboard"
            " and system, and the X-TemBoard-Discover-ETag header (docs/api-core.md).",
        }
    )
}
_INT = {"type": "integer"}
DISCOVER = {
    "responses": {
        **ok(
            {
                "type": "object",
                "description": "The flat 7.x document, to sessions and the agent key. A signed request (temboard UI"
                " 8.0 and later) gets the nested 9.x document instead (docs/api-core.md).",
                "required": ["hostname", "pg_port", "pg_version", "plugins", "agent_version"],
                "properties": {
                    "hostname": _STRING,
                    "cpu": {"type": "integer", "nullable": True},
                    "memory_size": {"type": "integer", "nullable": True},
                    "pg_local": {"type": "boolean"},
                    "pg_local_reason": _STRING,
                    "pg_port": _INT,
                    "pg_version": _STRING,
                    "pg_version_num": _INT,
                    "pg_version_summary": _STRING,
                    "pg_data": {
                        "type": "string",
                        "nullable": True,
                        "description": "The data directory; null for a read user unless"
                        " [agent] read_role_sees_details, or when PostgreSQL hides it from the agent's role.",
                    },
                    "pg_block_size": _INT,
                    "instance": {"type": "string", "nullable": True},
                    "plugins": {"type": "array", "items": _STRING},
                    "agent_version": _STRING,
                },
            }
        ),
        "503": {"description": ERRORS[503]},
    }
}
OPENAPI = {"responses": ok({"type": "object", "required": ["openapi", "paths"]}, "This document.")}
METRICS = {
    "summary": "Prometheus metrics of the agent and its plugins (docs/metrics.md).",
    "description": "The Prometheus text format; OpenMetrics when Accept asks for application/openmetrics-text."
    " Prometheus authenticates with the agent key as Authorization: Bearer <key>.",
    "responses": {
        "200": {
            "description": "The metrics.",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        }
    },
}


def view(request: Any) -> dict[str, Any]:
    """GET /openapi.json: the OpenAPI 3.0 document of every route of the core
    and the enabled plugins (session or key). 200; 401; 406.

    The same document for every client, read users included: it is made
    from the code and the enabled plugins' names (which GET /discover shows
    too), never from the instance's data, users or configuration values."""
    return document(request.raw.app.config["pgwarden.routes"], request.agent.plugin_names)
