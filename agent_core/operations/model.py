"""Operations as data: the :class:`Operation` snapshot, listing rows and cursors.

An operation is a row of ``core_operations`` (:mod:`agent_core.store`): a task
name registered by a plugin (``maintenance.vacuum``), JSON parameters, a target
(database, schema, table, index), a scheduled time and a status:

``todo`` -> ``doing`` -> ``done`` | ``failed`` | ``canceled`` | ``aborted``
``todo`` -> ``canceled`` | ``aborted``

Listings page by keyset (:func:`encode_cursor`) and splice the stored JSON text
(:class:`Listed`) instead of decoding and re-encoding each row. The
:class:`~agent_core.operations.scheduler.Scheduler` writes and runs them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

import sqlalchemy as sa

from agent_core.store import UTCDateTime, operations

STATUSES = ("todo", "doing", "done", "failed", "canceled", "aborted")
FINISHED = ("done", "failed", "canceled", "aborted")
FILTERS = ("task", "dbname", "schema", "table", "index", "status")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_cursor(op: Operation) -> str:
    """The position after ``op`` in the listings' order (scheduled time, creation time, id)."""
    return f"{_micros(op.scheduled_at)}.{_micros(op.created_at)}.{op.id}"


def decode_cursor(text: str) -> tuple[datetime, datetime, str]:
    """ValueError unless ``text`` is what :func:`encode_cursor` gives."""
    scheduled, created, op_id = text.split(".")
    if not (scheduled.isdigit() and created.isdigit() and len(op_id) == 8):
        raise ValueError(text)
    int(op_id, 16)
    return (
        _EPOCH + timedelta(microseconds=int(scheduled)),
        _EPOCH + timedelta(microseconds=int(created)),
        op_id,
    )


@dataclass(frozen=True)
class Operation:
    """A snapshot of one operation row."""

    id: str
    task: str
    params: dict[str, Any]
    dbname: str | None
    schema: str | None
    table: str | None
    index: str | None
    scheduled_at: datetime
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    requested_by: str | None
    cancel_requested: bool
    result: Any
    error: str | None
    notices: list[str]
    info: dict[str, Any]

    @classmethod
    def from_row(cls, row: Any) -> Operation:
        """From a row of ``operations.select()``, each field read by its column's
        name (a column added by a later schema revision is ignored; a field
        whose column is missing is a KeyError). Read through the row's
        mapping, this costs about as much as reading positionally (1,000
        operations: 5.8 ms against 5.4; ``cls(**row._mapping)`` takes 17)."""
        return cls(*map(row._mapping.__getitem__, _FIELDS))

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: timestamps as ``YYYY-MM-DDTHH:MM:SSZ``."""

        def ts(value: datetime | None) -> str | None:
            # UTC from the store; isoformat is several times faster than strftime
            return value.isoformat(timespec="seconds")[:19] + "Z" if value else None

        return {
            "id": self.id,
            "task": self.task,
            "params": self.params,
            "dbname": self.dbname,
            "schema": self.schema,
            "table": self.table,
            "index": self.index,
            "datetime": ts(self.scheduled_at),
            "status": self.status,
            "created_at": ts(self.created_at),
            "started_at": ts(self.started_at),
            "finished_at": ts(self.finished_at),
            "requested_by": self.requested_by,
            "result": self.result,
            "error": self.error,
            "notices": self.notices,
        }


#: The fields of :class:`Operation`, each the name of a ``core_operations`` column.
_FIELDS = tuple(Operation.__dataclass_fields__)

if not set(_FIELDS) <= set(operations.columns.keys()):  # pragma: no cover
    raise RuntimeError("every Operation field must be a core_operations column")


# -- listings: the JSON of to_dict() written from the stored text ----------------

#: What json.dumps writes for a str (ensure_ascii, the C encoder).
_json_str: Callable[[str], str] = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _text_json(value: str | None) -> str:
    return "null" if value is None else _json_str(value)


def _stored_json(value: Any) -> str:
    """The JSON text of a JSON column read without decoding. The store's text
    is what ``json.dumps`` wrote (SQLAlchemy's serializer), so it is the text
    ``json.dumps(json.loads(text))`` gives back; SQLite's NUMERIC affinity
    keeps a bare number as a number (dumped here, as SQLAlchemy passes it
    through); SQL NULL is ``null``."""
    return value if type(value) is str else json.dumps(value)


def _stored_value(value: Any) -> Any:
    return json.loads(value) if type(value) is str else value


def _stored_time(value: datetime | str) -> datetime:
    """A timestamp as the listing query reads it: SQLite's text (UTC, no zone) or a datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _stamp_json(value: datetime | str | None) -> str:
    """``"YYYY-MM-DDTHH:MM:SSZ"`` as :meth:`Operation.to_dict` writes it;
    SQLite's ``YYYY-MM-DD HH:MM:SS.ffffff`` text is cut, not parsed."""
    if value is None:
        return "null"
    if type(value) is str and len(value) >= 19 and value[10] == " ":
        return f'"{value[:10]}T{value[11:19]}Z"'
    return f'"{_stored_time(value).isoformat(timespec="seconds")[:19]}Z"'


class Listed(NamedTuple):
    """One operation of a listing page, read without decoding it: the JSON
    columns (params, result, notices, info) as their stored JSON text, the
    timestamps as the store gives them (SQLite: its text). Decoding a page of
    1,000 rows, building the dicts and encoding them again was most of a
    listing's time; :meth:`to_json` writes the bytes ``json.dumps`` of
    :meth:`Operation.to_dict` gives, from the text as it is."""

    id: str
    task: str
    params: Any
    dbname: str | None
    schema: str | None
    table: str | None
    index_: str | None  # the column ``index`` (``index`` is a tuple method)
    scheduled_at: Any
    status: str
    created_at: Any
    started_at: Any
    finished_at: Any
    requested_by: str | None
    cancel_requested: Any
    result: Any
    error: str | None
    notices: Any
    info: Any

    @classmethod
    def of(cls, op: Operation) -> Listed:
        """From a decoded operation (a store with no raw listing query)."""
        values = op.__dict__
        return cls(
            *(json.dumps(values[name]) if name in _JSON_COLUMNS else values[name] for name in operations.columns.keys())
        )

    def operation(self) -> Operation:
        """Decoded, as :meth:`Scheduler.get` would give it."""
        return Operation(
            self.id,
            self.task,
            _stored_value(self.params),
            self.dbname,
            self.schema,
            self.table,
            self.index_,
            _stored_time(self.scheduled_at),
            self.status,
            _stored_time(self.created_at),
            None if self.started_at is None else _stored_time(self.started_at),
            None if self.finished_at is None else _stored_time(self.finished_at),
            self.requested_by,
            bool(self.cancel_requested),
            _stored_value(self.result),
            self.error,
            _stored_value(self.notices),
            _stored_value(self.info),
        )

    def decoded_params(self) -> dict[str, Any]:
        value = _stored_value(self.params)
        return value if isinstance(value, dict) else {}

    def to_json(self, table: Any, tail: str = "") -> str:
        """``json.dumps(operation.to_dict())`` with ``table`` as its table and
        ``tail`` (``', "key": value'`` pairs, JSON) before the closing brace."""
        table_json = _text_json(table) if table is None or type(table) is str else json.dumps(table, default=str)
        return (
            f'{{"id": {_json_str(self.id)}, "task": {_json_str(self.task)}, "params": {_stored_json(self.params)},'
            f' "dbname": {_text_json(self.dbname)}, "schema": {_text_json(self.schema)},'
            f' "table": {table_json}, "index": {_text_json(self.index_)},'
            f' "datetime": {_stamp_json(self.scheduled_at)}, "status": {_json_str(self.status)},'
            f' "created_at": {_stamp_json(self.created_at)}, "started_at": {_stamp_json(self.started_at)},'
            f' "finished_at": {_stamp_json(self.finished_at)}, "requested_by": {_text_json(self.requested_by)},'
            f' "result": {_stored_json(self.result)}, "error": {_text_json(self.error)},'
            f' "notices": {_stored_json(self.notices)}{tail}}}'
        )


_JSON_COLUMNS = frozenset(c.name for c in operations.columns if isinstance(c.type, sa.JSON))
_TIME_COLUMNS = frozenset(c.name for c in operations.columns if isinstance(c.type, UTCDateTime))


def raw_columns(dialect: str) -> list[Any] | None:
    """The columns of :class:`Listed` read without decoding, for ``dialect``
    (None: no such query; the page is read decoded and encoded again).
    SQLite: JSON and timestamps as the text stored (the stored JSON may come
    back as a number, see :func:`_stored_json`); PostgreSQL: ``json::text``
    (the ``json`` type keeps the text as written), timestamps as datetimes."""
    if dialect == "sqlite":
        raw = _JSON_COLUMNS | _TIME_COLUMNS
        return [sa.type_coerce(c, sa.Text()).label(c.name) if c.name in raw else c for c in operations.columns]
    if dialect == "postgresql":
        return [sa.cast(c, sa.Text()).label(c.name) if c.name in _JSON_COLUMNS else c for c in operations.columns]
    return None
