"""The HTTP routes of the maintenance plugin (``/maintenance/...``).

Every route accepts a session (``X-Session``) or the agent key (``?key=`` or
a key header), as the reference API lists the key for each of them.

Names in paths (database, schema, table, index) are case-sensitive and may
hold any character once percent-encoded, an encoded slash (``%2F``)
included: each name is read back from the raw request target
(``REQUEST_URI``) and decoded exactly once as UTF-8, so ``a%2Fb`` names
``a/b`` and ``a%252Fb`` names ``a%2Fb``. Names reach SQL only as bound values
or :class:`psycopg2.sql.Identifier`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Callable, Iterable
from typing import Any

from agent_core.errors import MalformedParameter, NotFound
from agent_core.hookspecs import Route
from agent_core.operations.model import Listed, Operation
from agent_core.web import paging
from agent_core.web.request import Request
from agent_core.web.responses import Response

from . import flight, queries, reports, tasks
from .bodies import Stream, with_age
from .openapi import CANCEL_DOC, DATABASE_DOC, INSTANCE_DOC, LISTING_DOC, SCHEMA_DOC, TABLE_DOC, post_doc
from .params import parse_datetime, parse_mode, request_body
from .progress import progress as operations_progress
from .sizes import pretty
from .targets import check_target, database, lookup

# -- reads ------------------------------------------------------------------------
#
# The figures of a whole database or schema are computed once at a time and
# reused up to [maintenance] estimates_max_age seconds (see flight.py); the
# answer's ``Age`` header gives their age in whole seconds.


#: Rows fetched from the server-side cursor at a time by the streamed reads.
#: Small: the Python objects of a batch (rows, entries) are what fills
#: pymalloc's 1 MiB arenas, and an arena is given back only when every
#: object in it is freed. With 1,000 rows, a 10,000-table listing left 6 to
#: 10 arenas pinned by a few objects allocated meanwhile (RSS +14 % after,
#: peak +28 MB); with 100, one (RSS +4 %, peak +15 MB), in the same time
#: (a FETCH is one round trip on a connection already open).
BATCH_ROWS = 100


def _idle_timeout(request: Request) -> int:
    """Seconds a streamed read's transaction may wait for its client: [postgresql] statement_timeout."""
    return int(request.agent.config.postgresql["statement_timeout"])


def database_figures(request: Request, dbname: str) -> tuple[dict[str, Any], float]:
    """``({"report": GET /maintenance/<db> as JSON bytes, "entry": its entry in GET /maintenance}, age)``.

    The rows of every table are read from a server-side cursor in batches
    and summed as they come (per schema and in all): memory does not grow
    with the number of tables."""

    def compute() -> dict[str, Any]:
        with database(request, dbname) as conn:
            schemas = {r["nspname"]: reports.Totals() for r in queries.fetch(conn, queries.SCHEMAS)}
            size = int(queries.fetch(conn, queries.DATABASE_SIZE)[0]["bytes"])
            whole = reports.Totals()
            with queries.relations_cursor(conn, _idle_timeout(request)) as cur:
                for rows in queries.batches(cur, BATCH_ROWS):
                    for row in rows:
                        whole.add(row)
                        if row["schemaname"] in schemas:
                            schemas[row["schemaname"]].add(row)
        report = json.dumps(reports.database_report(dbname, schemas, size), default=str).encode()
        return {"report": report, "entry": reports.database_entry(dbname, whole, size)}

    def size(figures: dict[str, Any]) -> int:
        return len(figures["report"]) + flight.json_size(figures["entry"])

    return flight.of(request.agent).get((dbname, None), compute, size)  # type: ignore[no-any-return]


def get_instance(request: Request) -> Response:
    """GET /maintenance: the instance's total size and one entry per database
    (connectable, not a template): sizes of tables, indexes and TOAST, counts,
    bloat estimates. ``Age``: the age of the oldest database's figures.

    200; 401 bad session or key; 406 malformed session; 503 PostgreSQL down; 504 too slow
    or waiting for a lock.
    """
    entries = []
    oldest = 0.0
    for db in request.agent.postgres.query(queries.DATABASES):
        try:
            figures, age = database_figures(request, db["datname"])
        except NotFound:  # dropped meanwhile
            continue
        entries.append(figures["entry"])
        oldest = max(oldest, age)
    total = sum(e["total_bytes"] for e in entries)
    return with_age({"databases": entries, "instance": {"total_bytes": total, "total_size": pretty(total)}}, oldest)


def get_database(request: Request, dbname: str) -> Response:
    """GET /maintenance/<dbname>: one entry per schema (temporary and TOAST
    schemas left out) and the database's size; ``Age`` header.

    200; 401; 403 the role may not connect; 404 unknown database; 406;
    409 database not accepting connections; 503; 504 too slow or waiting for a lock.
    """
    figures, age = database_figures(request, dbname)
    return with_age(figures["report"], age)


def get_schema(request: Request, dbname: str, schema: str) -> Response:
    """GET /maintenance/<dbname>/schema/<schema>: its tables and indexes with
    sizes, bloat estimates and usage, and its size; ``Age`` header.

    The listing is streamed: rows come from a server-side cursor in batches
    and are written to the client as JSON as they come, so memory does not
    grow with the schema. The statement (and its sort) runs completely
    before the first batch returns, which is read before the answer starts:
    its errors are the JSON errors below. A failure after that (the
    connection to PostgreSQL lost) cuts the answer short: no terminating
    chunk, connection closed, never a complete JSON document.

    200; 401; 403; 404 unknown database or schema; 406; 409; 503; 504 too slow or waiting for a lock.
    """
    with database(request, dbname) as conn:
        found = lookup(conn, dbname, schema)

    def start() -> Iterable[bytes]:
        with contextlib.ExitStack() as stack:
            conn = stack.enter_context(database(request, dbname))
            cur = stack.enter_context(queries.listing_cursor(conn, found["schema_oid"], _idle_timeout(request)))
            rows = queries.batches(cur, BATCH_ROWS)
            first = next(rows, [])  # the whole statement runs here: its errors are answered as JSON
            chunks = reports.schema_chunks(schema, itertools.chain([first], rows))
            return Stream(chunks, stack.pop_all(), f"GET /maintenance/{dbname}/schema/{schema}")
        raise AssertionError("unreachable")  # pragma: no cover

    body, age = flight.of(request.agent).stream((dbname, found["schema_oid"], schema), start)
    return with_age(body, age)


def get_table(request: Request, dbname: str, schema: str, table: str) -> dict[str, Any]:
    """GET /maintenance/<dbname>/schema/<schema>/table/<table>: sizes, bloat,
    fillfactor, row estimate, usage counters and timestamps of
    ``pg_stat_all_tables``, and the table's indexes.

    200; 401; 403; 404 unknown database, schema or table; 406; 409; 503; 504.
    """
    with database(request, dbname) as conn:
        found = lookup(conn, dbname, schema, table)
        rows = queries.relations(conn, table_oid=found["table_oid"], details=True)
    if not rows:  # dropped between the two statements
        raise NotFound(f"Table '{table}' not found in schema '{schema}' of database '{dbname}'.")
    return reports.table_details(rows[0])


# -- operations -------------------------------------------------------------------


def describe(
    verb: str, mode: str | None, dbname: str | None, schema: str | None, table: str | None, index: str | None
) -> str:
    """``VACUUM (full,analyze) of table s.t in database d``: an operation in the audit log."""
    what = verb.upper() + (f" ({mode})" if mode else "")
    if index is not None:
        return f"{what} of index {schema}.{index} in database {dbname}"
    if table is not None:
        return f"{what} of table {schema}.{table} in database {dbname}"
    return f"{what} of database {dbname}"


def _submit(
    request: Request, verb: str, dbname: str, schema: str | None, table: str | None, index: str | None
) -> dict[str, str]:
    body = request_body(request)
    try:
        mode = parse_mode(verb, body.get("mode"))
    except ValueError:
        raise MalformedParameter("mode") from None
    try:
        when = parse_datetime(body.get("datetime"))
    except ValueError:
        raise MalformedParameter("datetime") from None
    found = check_target(request, dbname, schema, table, index)
    params: dict[str, Any] = {"mode": mode}
    if index is not None and found is not None:
        # the index's table, for listings (the UI's table page filters the schema's REINDEX listing by table)
        params["table"] = found["index_table"]
    op_id = request.agent.scheduler.submit(
        f"maintenance.{verb}",
        params,
        run_at=when,
        dbname=dbname,
        schema=schema,
        table=table,
        index=index,
        requested_by=request.requester,
    )
    at = f"for {when:%Y-%m-%dT%H:%M:%SZ}" if when else "to run now"
    request.agent.notify(
        request.requester, f"{describe(verb, mode, dbname, schema, table, index)} scheduled {at} (operation {op_id})"
    )
    return {"id": op_id}


def _poster(verb: str, level: str) -> Callable[..., dict[str, str]]:
    what = {"vacuum": "VACUUM", "analyze": "ANALYZE", "reindex": "REINDEX"}[verb]
    body = '{"datetime": "YYYY-MM-DDTHH:MM:SSZ"' + (', "mode": "full,freeze,analyze"}' if verb == "vacuum" else "}")
    doc = (
        f'POST {level}/{verb} {body}: schedule a {what} (now when datetime is absent or past) -> {{"id": ...}}.\n\n'
        f"    200; 400 body not a JSON object; 401; 403; 404 unknown database, schema, table or index;\n"
        f"    406 parameter 'mode' or 'datetime' malformed; 409; 413 body too large;\n"
        f"    429 [agent] scheduler_pending_max operations already wait to run (nothing written); 503; 504.\n"
    )

    def view(
        request: Request, dbname: str, schema: str | None = None, table: str | None = None, index: str | None = None
    ) -> dict[str, str]:
        return _submit(request, verb, dbname, schema, table, index)

    view.__name__ = f"post_{verb}"
    view.__doc__ = doc
    return view


def entries(request: Request, ops: list[Operation]) -> list[dict[str, Any]]:
    """Listing entries: the reference's fields, then created/started/finished
    times, requester, error, notices, result and, while running, progress.
    (What :func:`entries_json` writes, decoded: the reference of its tests.)"""
    running = operations_progress(request.agent, ops)
    out = []
    for op in ops:
        entry = op.to_dict()
        if entry["table"] is None and op.index is not None:
            entry["table"] = op.params.get("table")  # an index's REINDEX: its table
        entry["mode"] = op.params.get("mode")
        entry["progress"] = running.get(op.id)
        out.append(entry)
    return out


def entries_json(request: Request, listed: list[Listed]) -> paging.JSONText:
    """``json.dumps(entries(...), default=str)``, written from the stored text
    of each operation (nothing decoded but its parameters, and the running
    ones for their progress): the same bytes in a fraction of the time."""
    running = operations_progress(request.agent, [op.operation() for op in listed if op.status == "doing"])
    # the parameters' text repeats (VACUUMs of a database...): each text decoded once
    decoded: dict[Any, tuple[dict[str, Any], str]] = {}
    out = []
    for op in listed:
        known = decoded.get(op.params)
        if known is None:
            params = op.decoded_params()
            known = decoded[op.params] = (params, f', "mode": {json.dumps(params.get("mode"))}, "progress": ')
        params, tail = known
        table = op.table
        if table is None and op.index_ is not None:
            table = params.get("table")  # an index's REINDEX: its table
        progress = running.get(op.id)
        out.append(op.to_json(table, tail + ("null" if progress is None else json.dumps(progress, default=str))))
    return paging.JSONText("[" + ", ".join(out) + "]")


def _lister(verb: str, level: str, filters: tuple[str, ...]) -> Callable[..., Response]:
    doc = (
        f"GET {level}/{verb}/scheduled[?limit=N&cursor=C]: the {verb} operations"
        + (f" filtered by exactly {', '.join(filters)}" if filters else "")
        + " (a JSON array; finished ones stay listed for the retention period).\n\n"
        "    By scheduled time, at most ``limit`` (default [agent] listing_limit_default); when there\n"
        '    are more, ``X-Next-Cursor`` and ``Link: <...>; rel="next"`` give the next page.\n\n'
        "    200; 400 limit or cursor malformed; 401; 403; 404 unknown database, schema or table; 406; 409;\n"
        "    503; 504.\n"
    )

    def view(
        request: Request,
        dbname: str | None = None,
        schema: str | None = None,
        table: str | None = None,
        index: str | None = None,
    ) -> Response:
        page = paging.page(request)
        if dbname is not None:
            check_target(request, dbname, schema, table if "table" in filters else None)
        wanted = {"dbname": dbname, "schema": schema, "table": table}
        try:
            listed, next_cursor = request.agent.scheduler.listing(
                page.limit, page.cursor, task=f"maintenance.{verb}", **{f: wanted[f] for f in filters}
            )
        except ValueError:
            raise paging.bad_cursor() from None
        return paging.answer(request, entries_json(request, listed), page.limit, next_cursor)

    view.__name__ = f"list_{verb}"
    view.__doc__ = doc
    return view


def _deleter(verb: str) -> Callable[..., dict[str, str]]:
    def view(request: Request, op_id: str) -> dict[str, str]:
        op = request.agent.scheduler.cancel(op_id, task=f"maintenance.{verb}")
        what = describe(verb, op.params.get("mode"), op.dbname, op.schema, op.table, op.index)
        request.agent.notify(request.requester, f"{what} canceled (operation {op_id})")
        return {"response": "ok"}

    view.__name__ = f"cancel_{verb}"
    view.__doc__ = (
        f"DELETE /maintenance/{verb}/<id>: cancel a {verb} operation; a running one through\n"
        '    pg_cancel_backend of its own backend. -> {"response": "ok"}. Recorded in the\n'
        "    audit log (GET /notifications), as is every operation scheduled.\n\n"
        f"    200; 401; 404 unknown id or not a {verb}; 406; 409 already finished; 503.\n"
    )
    return view


# -- the route table ----------------------------------------------------------------


def route(method: str, pattern: str, view: Callable[..., Any], openapi: dict[str, Any]) -> Route:
    """Every maintenance route accepts the agent key (as the reference lists).
    The core decodes names exactly: ``%2F`` is a slash inside a name."""
    return Route(method, pattern, view, key=True, openapi=openapi)


DB = "/maintenance/<dbname>"
SCHEMA = DB + "/schema/<schema>"
TABLE = SCHEMA + "/table/<table>"
INDEX = SCHEMA + "/index/<index>"


def routes() -> list[Route]:
    out = [
        route("GET", "/maintenance", get_instance, INSTANCE_DOC),
        route("GET", DB, get_database, DATABASE_DOC),
        route("GET", SCHEMA, get_schema, SCHEMA_DOC),
        route("GET", TABLE, get_table, TABLE_DOC),
    ]
    for verb in tasks.VERBS:
        out += [
            route("POST", f"{DB}/{verb}", _poster(verb, DB), post_doc(verb)),
            route("POST", f"{TABLE}/{verb}", _poster(verb, TABLE), post_doc(verb)),
            route("GET", f"/maintenance/{verb}/scheduled", _lister(verb, "/maintenance", ()), LISTING_DOC),
            route("GET", f"{DB}/{verb}/scheduled", _lister(verb, DB, ("dbname",)), LISTING_DOC),
            route("GET", f"{TABLE}/{verb}/scheduled", _lister(verb, TABLE, ("dbname", "schema", "table")), LISTING_DOC),
            route("DELETE", f"/maintenance/{verb}/<op_id>", _deleter(verb), CANCEL_DOC),
        ]
    schema_reindex = _lister("reindex", SCHEMA, ("dbname", "schema"))
    out += [
        route("POST", f"{INDEX}/reindex", _poster("reindex", INDEX), post_doc("reindex")),
        route("GET", f"{SCHEMA}/reindex/scheduled", schema_reindex, LISTING_DOC),
        # the reference's alias of the schema listing: it does not filter on table (nor index)
        route("GET", f"{SCHEMA}/<index>/table/<table>/reindex/scheduled", schema_reindex, LISTING_DOC),
    ]
    return out
