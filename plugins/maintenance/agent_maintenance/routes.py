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
import ctypes
import ctypes.util
import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import psycopg2.errors

from agent_core.errors import (
    Conflict,
    DatabaseNotFound,
    Forbidden,
    InvalidInput,
    MalformedParameter,
    NotFound,
    PostgresUnavailable,
    Timeout,
)
from agent_core.hookspecs import Route
from agent_core.operations.model import Listed, Operation
from agent_core.postgres import fits_name
from agent_core.redaction import loggable
from agent_core.web import paging
from agent_core.web.request import Request
from agent_core.web.responses import Response

from . import flight, queries, reports, tasks
from .sizes import pretty

log = logging.getLogger("pgwarden.maintenance")

_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# -- names, databases, targets --------------------------------------------------


@contextlib.contextmanager
def database(request: Request, dbname: str) -> Iterator[Any]:
    """A pooled connection to ``dbname``; the core's DatabaseNotFound when it
    does not exist (404), Forbidden when the role may not connect, Conflict
    when it accepts no connection, Timeout naming the database when a
    statement exceeds the core's statement_timeout or waits for a lock longer
    than its lock_timeout (the core's own 504 would not name it)."""
    agent = request.agent
    try:
        with agent.postgres.connect(dbname) as conn:
            yield conn
    except psycopg2.errors.QueryCanceled:
        raise Timeout(f"Reading database '{dbname}' took longer than [postgresql] statement_timeout.") from None
    except psycopg2.errors.LockNotAvailable:
        raise Timeout(
            f"Reading database '{dbname}' waited for a lock held by another session longer than"
            " [postgresql] lock_timeout; try again later.",
        ) from None
    except PostgresUnavailable:
        rows = agent.postgres.query(queries.DATABASE, {"dbname": dbname})
        if not rows:  # dropped meanwhile
            raise DatabaseNotFound(dbname) from None
        if not rows[0]["datallowconn"]:
            raise Conflict(f"Database '{dbname}' does not allow connections.") from None
        if not rows[0]["can_connect"]:
            raise Forbidden(f"The agent's role may not connect to database '{dbname}'.") from None
        raise


def _lookup(conn: Any, dbname: str, schema: str, table: str | None = None, index: str | None = None) -> dict:
    found = queries.lookup(conn, schema, table, index) if fits_name(schema) else None
    if found is None:
        raise NotFound(f"Schema '{schema}' not found in database '{dbname}'.")
    if table is not None and (found["table_oid"] is None or not fits_name(table)):
        raise NotFound(f"Table '{table}' not found in schema '{schema}' of database '{dbname}'.")
    if index is not None and (found["index_oid"] is None or not fits_name(index)):
        raise NotFound(f"Index '{index}' not found in schema '{schema}' of database '{dbname}'.")
    return found


def check_target(
    request: Request, dbname: str, schema: str | None = None, table: str | None = None, index: str | None = None
) -> dict[str, Any] | None:
    """404 unless the database (and the schema, table or index) exists; what
    was found (``index_table``: the table of the index)."""
    with database(request, dbname) as conn:
        if schema is not None:
            return _lookup(conn, dbname, schema, table, index)
    return None


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


def with_age(document: dict[str, Any] | bytes | Iterable[bytes], age: float) -> Response:
    """``document`` (or its JSON text, or the chunks of it) answered 200 with
    ``Age``: whole seconds since its figures were read. Kept chunks (a tuple)
    are sent with their Content-Length; a stream (any other iterable) without:
    chunked to HTTP/1.1 clients, up to the connection's end to HTTP/1.0 ones."""
    headers = {}
    if isinstance(document, dict):
        document = json.dumps(document, default=str).encode()
    if isinstance(document, tuple):
        headers["Content-Length"] = str(sum(len(chunk) for chunk in document))
        document = Sent(document)
    headers["Age"] = str(max(int(age), 0))
    return Response(data=document, headers=headers)


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
        found = _lookup(conn, dbname, schema)

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


class Sent:
    """Chunks to send, forgotten once sent: bottle keeps the last response body
    of each worker thread until its next request, which must not hold a
    result the figures' byte bound no longer counts."""

    def __init__(self, chunks: tuple[bytes, ...]):
        self._chunks: tuple[bytes, ...] = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._chunks)

    def close(self) -> None:
        self._chunks = ()


def _malloc_trim() -> Callable[[], None]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]

    def release() -> None:
        trim(0)

    return release


#: Give the heap's free memory back to the system (glibc's ``malloc_trim``;
#: nothing elsewhere). A listing's batches are freed when it ends, but glibc
#: keeps freed pages of its per-thread arenas: without this the agent's RSS
#: stayed 30 MB above idle after a 10,000-table listing.
trim_heap = _malloc_trim()


class Stream:
    """A streamed body: ``chunks``, then the resources of ``stack`` (the
    cursor's transaction, the pooled connection) released once, when the
    chunks end, fail or the WSGI server closes the body (client gone). A
    failure is logged and re-raised: cheroot then closes the connection
    without finishing the answer."""

    def __init__(self, chunks: Iterator[bytes], stack: contextlib.ExitStack, what: str):
        self._chunks = chunks
        self._stack: contextlib.ExitStack | None = stack
        self._what = what

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._chunks
        except GeneratorExit:
            raise
        except BaseException as e:
            log.error("%s cut short, the answer is incomplete: %s", loggable(self._what), e)
            self._release(e)
            raise
        finally:
            self._release(None)

    def _release(self, error: BaseException | None) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._chunks = iter(())  # the last batch: not kept by bottle's per-thread response
        try:
            if error is None:
                stack.close()
            else:
                with contextlib.suppress(BaseException):  # the original error is the one raised
                    stack.__exit__(type(error), error, error.__traceback__)
        finally:
            trim_heap()

    def close(self) -> None:
        """Called by the WSGI server once the answer is sent (or the client
        went away): the release, if the chunks did not end, and a second trim
        of the heap, after what the server freed when the stream ended (its
        last chunks and buffers)."""
        self._release(None)
        trim_heap()


def get_table(request: Request, dbname: str, schema: str, table: str) -> dict[str, Any]:
    """GET /maintenance/<dbname>/schema/<schema>/table/<table>: sizes, bloat,
    fillfactor, row estimate, usage counters and timestamps of
    ``pg_stat_all_tables``, and the table's indexes.

    200; 401; 403; 404 unknown database, schema or table; 406; 409; 503; 504.
    """
    with database(request, dbname) as conn:
        found = _lookup(conn, dbname, schema, table)
        rows = queries.relations(conn, table_oid=found["table_oid"], details=True)
    if not rows:  # dropped between the two statements
        raise NotFound(f"Table '{table}' not found in schema '{schema}' of database '{dbname}'.")
    return reports.table_details(rows[0])


# -- operations -------------------------------------------------------------------


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object.")
    return body


def parse_datetime(value: Any) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC) or None/empty for now; ValueError otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _DATETIME.match(value):
        raise ValueError(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


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
    body = _body(request)
    try:
        mode = tasks.parse_mode(verb, body.get("mode"))
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
    running = tasks.progress(request.agent, ops)
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
    running = tasks.progress(request.agent, [op.operation() for op in listed if op.status == "doing"])
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


# -- OpenAPI (GET /openapi.json): field names as in api/maintenance-api.txt ---------

_S = {"type": "string"}
_S0 = {"type": "string", "nullable": True}
_I = {"type": "integer"}
_I0 = {"type": "integer", "nullable": True}
_B = {"type": "boolean"}


def _object(**fields: Any) -> dict[str, Any]:
    """A JSON object holding exactly ``fields`` (all always present; more may be added later)."""
    return {"type": "object", "required": sorted(fields), "properties": fields}


def _sized(**names: bool) -> dict[str, Any]:
    """``<name>_bytes`` and ``<name>_size`` for each name (nullable when true)."""
    out: dict[str, Any] = {}
    for name, nullable in names.items():
        out[f"{name}_bytes"], out[f"{name}_size"] = (_I0, _S0) if nullable else (_I, _S)
    return out


TOTALS = dict(
    n_tables=_I,
    n_indexes=_I,
    **_sized(tables=False, toast=False, indexes=False, total=False, tables_bloat=True, indexes_bloat=True),
)
INDEX_SCHEMA = _object(
    name=_S, indexrelname=_S, tablename=_S, schemaname=_S, locked=_B, type=_S, tablespace=_S0,
    indisunique=_B, indisprimary=_B, indisvalid=_B, number_of_columns=_I, scans=_I0, idx_tup_read=_I0,
    idx_tup_fetch=_I0, **{"def": _S0}, **_sized(total=False, bloat=True),
)  # fmt: skip
_KIND = {"type": "string", "enum": list(reports.KINDS.values())}
_TABLE = dict(
    name=_S, schemaname=_S, kind=_KIND, n_indexes=_I, n_partitions=_I, locked=_B,
    row_estimate={"type": "number", "nullable": True},
    **_sized(table=False, toast=False, index=False, total=False, bloat=True, index_bloat=True),
)  # fmt: skip
TABLE_SCHEMA = _object(**_TABLE)
TABLE_DETAILS = _object(
    **_TABLE, relid=_S, relname=_S, fillfactor=_I0, indexes={"type": "array", "items": INDEX_SCHEMA},
    **{name: _I0 for name in reports._COUNTERS}, **{name: _S0 for name in reports._TIMESTAMPS},
)  # fmt: skip
OPERATION = _object(
    id=_S, task=_S, params={"type": "object"}, dbname=_S0, schema=_S0, table=_S0, index=_S0,
    datetime=_S0, status={"type": "string", "enum": ["todo", "doing", "done", "failed", "canceled", "aborted"]},
    created_at=_S0, started_at=_S0, finished_at=_S0, requested_by=_S0, result={"nullable": True}, error=_S0,
    notices={"type": "array", "items": _S, "nullable": True}, mode=_S0, progress={"type": "object", "nullable": True},
)  # fmt: skip
_DATETIME_SCHEMA = {"type": "string", "pattern": _DATETIME.pattern, "nullable": True}
_VACUUM_MODE = {"type": "string", "pattern": "^(full|freeze|analyze)(,(full|freeze|analyze))*$", "nullable": True}
_READ_ERRORS = {
    "403": {"description": "The agent's role may not connect to the database."},
    "409": {"description": "The database does not accept connections."},
    "503": {"description": "PostgreSQL unavailable."},
    "504": {
        "description": "A read took longer than [postgresql] statement_timeout, or waited for a lock"
        " held by another session longer than [postgresql] lock_timeout."
    },
}


def _answer(schema: dict[str, Any], description: str = "Success.") -> dict[str, Any]:
    return {
        "responses": {
            "200": {"description": description, "content": {"application/json": {"schema": schema}}},
            **_READ_ERRORS,
        }
    }


INSTANCE_DOC = _answer(
    _object(
        databases={"type": "array", "items": _object(datname=_S, **TOTALS)},
        instance=_object(total_bytes=_I, total_size=_S),
    )
)
DATABASE_DOC = _answer(
    _object(name=_S, schemas={"type": "array", "items": _object(name=_S, **TOTALS)}, total_bytes=_I, total_size=_S)
)
SCHEMA_DOC = _answer(
    _object(
        name=_S,
        size=_S,
        tables={"type": "array", "items": TABLE_SCHEMA},
        indexes={"type": "array", "items": INDEX_SCHEMA},
        **TOTALS,
    )
)
for _doc in (INSTANCE_DOC, DATABASE_DOC, SCHEMA_DOC):  # figures computed once at a time and reused briefly
    _doc["responses"]["200"]["headers"] = {
        "Age": {
            "description": "Whole seconds since the figures were read (reused up to [maintenance] estimates_max_age).",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
    }
TABLE_DOC = _answer(TABLE_DETAILS)
LISTING_DOC = paging.openapi(_answer({"type": "array", "items": OPERATION}, "The operations (a JSON array)."))


def _post_doc(verb: str) -> dict[str, Any]:
    body: dict[str, Any] = {"datetime": _DATETIME_SCHEMA}
    if verb == "vacuum":
        body["mode"] = _VACUUM_MODE
    doc = _answer(_object(id=_S), "The operation's id.")
    doc["responses"]["406"] = {"description": "Parameter 'mode' or 'datetime' malformed (or X-Session)."}
    doc["responses"]["429"] = {
        "description": "[agent] scheduler_pending_max operations already wait to run; nothing was scheduled."
    }
    doc["requestBody"] = {
        "required": False,
        "content": {"application/json": {"schema": {"type": "object", "properties": body}}},
    }
    return doc


CANCEL_DOC = {
    "responses": {
        "200": {"description": "Canceled.", "content": {"application/json": {"schema": _object(response=_S)}}},
        "409": {"description": "The operation already finished, or cannot be canceled while it runs."},
        "503": {"description": "PostgreSQL unavailable."},
    }
}


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
            route("POST", f"{DB}/{verb}", _poster(verb, DB), _post_doc(verb)),
            route("POST", f"{TABLE}/{verb}", _poster(verb, TABLE), _post_doc(verb)),
            route("GET", f"/maintenance/{verb}/scheduled", _lister(verb, "/maintenance", ()), LISTING_DOC),
            route("GET", f"{DB}/{verb}/scheduled", _lister(verb, DB, ("dbname",)), LISTING_DOC),
            route("GET", f"{TABLE}/{verb}/scheduled", _lister(verb, TABLE, ("dbname", "schema", "table")), LISTING_DOC),
            route("DELETE", f"/maintenance/{verb}/<op_id>", _deleter(verb), CANCEL_DOC),
        ]
    schema_reindex = _lister("reindex", SCHEMA, ("dbname", "schema"))
    out += [
        route("POST", f"{INDEX}/reindex", _poster("reindex", INDEX), _post_doc("reindex")),
        route("GET", f"{SCHEMA}/reindex/scheduled", schema_reindex, LISTING_DOC),
        # the reference's alias of the schema listing: it does not filter on table (nor index)
        route("GET", f"{SCHEMA}/<index>/table/<table>/reindex/scheduled", schema_reindex, LISTING_DOC),
    ]
    return out
