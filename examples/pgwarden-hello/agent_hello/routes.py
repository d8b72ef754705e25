"""Views of the hello plugin."""

from agent_core.errors import NotFound


def hello(request):
    """GET /hello -> {"greeting": "Hello, <user>"}. 200; 401; 406."""
    greeting = request.agent.config.section("hello")["greeting"]
    return {"greeting": f"{greeting}, {request.requester}"}


def schedule_count(request, dbname):
    """POST /hello/count/<dbname> -> {"id": "<8 hex>"}. 200; 401; 404 unknown database; 406."""
    exists = request.agent.postgres.query("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
    if not exists:
        raise NotFound(f"Database {dbname!r} not found.")
    op_id = request.agent.scheduler.submit("hello.count", {}, dbname=dbname, requested_by=request.requester)
    return {"id": op_id}


def get_count(request, op_id):
    """GET /hello/count/<id> -> the operation. 200; 401; 404; 406."""
    op = request.agent.scheduler.get(op_id)
    if op is None or op.task != "hello.count":
        raise NotFound(f"Operation {op_id!r} not found.")
    return op.to_dict()
