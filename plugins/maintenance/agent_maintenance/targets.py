"""The names in the maintenance routes' paths, checked against PostgreSQL:
the database connected to (with its errors named), the schema, table or
index looked up (404 when absent).

(How names are decoded from the path: see :mod:`agent_maintenance.routes`.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from agent_core.errors import Conflict, DatabaseNotFound, Forbidden, NotFound, PostgresUnavailable
from agent_core.postgres import fits_name
from agent_core.web.request import Request

from . import queries


@contextlib.contextmanager
def database(request: Request, dbname: str) -> Iterator[Any]:
    """A pooled connection to ``dbname``; the core's DatabaseNotFound when it
    does not exist (404), Forbidden when the role may not connect, Conflict
    when it accepts no connection. A statement that exceeds statement_timeout
    or waits for a lock longer than lock_timeout is the core's 504, which names
    the database."""
    agent = request.agent
    try:
        with agent.postgres.connect(dbname) as conn:
            yield conn
    except PostgresUnavailable:
        rows = agent.postgres.query(queries.DATABASE, {"dbname": dbname})
        if not rows:  # dropped meanwhile
            raise DatabaseNotFound(dbname) from None
        if not rows[0]["datallowconn"]:
            raise Conflict(f"Database '{dbname}' does not allow connections.") from None
        if not rows[0]["can_connect"]:
            raise Forbidden(f"The agent's role may not connect to database '{dbname}'.") from None
        raise


def lookup(conn: Any, dbname: str, schema: str, table: str | None = None, index: str | None = None) -> dict:
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
            return lookup(conn, dbname, schema, table, index)
    return None
