"""The OpenAPI descriptions of the maintenance routes (``Route.openapi``,
merged by the core into ``GET /openapi.json``): field names as in the
reference API (api/maintenance-api.txt)."""

from __future__ import annotations

from typing import Any

from agent_core.web import paging

from . import reports
from .params import DATETIME

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
_DATETIME_SCHEMA = {"type": "string", "pattern": DATETIME.pattern, "nullable": True}
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


def post_doc(verb: str) -> dict[str, Any]:
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
