"""Views of the hello plugin: each gets a ``Request`` and the path's wildcards,
returns a JSON-serialisable value (answered 200) or raises an error of :mod:`agent_core.errors`."""

from datetime import datetime, timezone

from agent_core.errors import InvalidInput, MalformedParameter, NotFound
from agent_core.web import openapi


def hello(request):
    """GET /hello -> {"greeting": "Hello, <user>", "server_version": "17.2"}.

    200; 401 bad session or key; 406 no session; 503 PostgreSQL unreachable.
    """
    greeting = request.agent.config.section("hello")["greeting"]
    row = request.agent.postgres.query("SELECT current_setting('server_version') AS version")[0]
    return {"greeting": f"{greeting}, {request.requester}", "server_version": row["version"]}


#: What GET /openapi.json says of POST /hello/count/<dbname> besides what the core
#: knows itself (the path parameter, authentication, its own error responses).
SCHEDULE_COUNT_API = {
    "summary": "Count the tables of a database, now or at a given time",
    "requestBody": {
        "required": False,
        "content": openapi.json_content(
            {"type": "object", "properties": {"datetime": {"type": "string", "example": "2026-01-31T22:00:00Z"}}}
        ),
    },
    "responses": openapi.ok(
        {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}, "The operation's id."
    ),
}


def schedule_count(request, dbname):
    """POST /hello/count/<dbname> {"datetime": "YYYY-MM-DDTHH:MM:SSZ"} -> {"id": "<8 hex>"}.

    Counts the tables of ``dbname`` at ``datetime`` (now when absent or past).
    200; 400 body not JSON; 401; 403 read-only user or key; 404 unknown
    database; 406 no session or ``datetime`` malformed; 503.
    """
    body = request.json()
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object.")
    run_at = None
    if body.get("datetime") is not None:
        try:
            run_at = datetime.strptime(body["datetime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        except (TypeError, ValueError):
            raise MalformedParameter("datetime") from None
    request.agent.postgres.query("SELECT 1", dbname=dbname)  # 404 from the core when it does not exist
    op_id = request.agent.scheduler.submit(
        "hello.count", {}, run_at=run_at, dbname=dbname, requested_by=request.requester
    )
    return {"id": op_id}


def get_count(request, op_id):
    """GET /hello/count/<op_id> -> the operation (``status``, ``result``...).

    200; 401; 404 no such count; 406 no session.
    """
    op = request.agent.scheduler.get(op_id)
    if op is None or op.task != "hello.count":
        raise NotFound(f"Operation {op_id!r} not found.")
    return op.to_dict()
