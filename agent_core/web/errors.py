"""Errors as HTTP answers: the one table, the one body.

:data:`STATUSES` maps each domain error class (:mod:`agent_core.errors`) to
its status; :data:`DRIVER` maps the driver's errors that a view may let
through (a statement cancelled by ``statement_timeout``, a lock wait ended
by ``lock_timeout``, a connection lost) to a status and a message.
:func:`answer_for` looks an error up in them, most specific class first;
:func:`error_body` is the only code that writes an error body
(``{"error": message}``), for the app, bottle's own errors and the network
front alike. Nothing here reads a request: the lookups are pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.errors

from agent_core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    HTTPError,
    InvalidInput,
    MalformedParameter,
    NotFound,
    Timeout,
    TooLarge,
    TooMany,
    Unauthorized,
    Unavailable,
    Unsupported,
    first_line,
)
from agent_core.postgres import DBNAME_ATTRIBUTE

#: The status of each domain error class; a subclass not listed takes its nearest listed base's.
STATUSES: dict[type[DomainError], int] = {
    InvalidInput: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    MalformedParameter: 406,
    Conflict: 409,
    TooLarge: 413,
    TooMany: 429,
    Unsupported: 501,
    Unavailable: 503,
    Timeout: 504,
}


@dataclass(frozen=True)
class Limits:
    """What the driver's error messages name: the ``[postgresql]`` wait limits,
    and how to strip secrets (a password in a connection string) from a message."""

    statement_timeout: Any = None
    lock_timeout: Any = None
    redact: Callable[[str], str] = field(default=lambda text: text)


def _in_database(error: BaseException) -> str:
    """`` in database 'd'``: the database whose statement failed, as the connection helper
    recorded it, or as the failed cursor's connection says; empty when unknown."""
    dbname = getattr(error, DBNAME_ATTRIBUTE, None)
    if dbname is None:
        try:
            dbname = error.cursor.connection.info.dbname  # type: ignore[attr-defined]
        except Exception:  # no cursor (None), or a connection already closed
            return ""
    return f" in database '{dbname}'" if isinstance(dbname, str) and dbname else ""


def _canceled(error: BaseException, limits: Limits) -> str:
    return (
        f"PostgreSQL took longer than statement_timeout ({limits.statement_timeout} s) to answer{_in_database(error)}."
    )


def _lock(error: BaseException, limits: Limits) -> str:
    # 504 like statement_timeout: a wait limit of the agent ran out, PostgreSQL is
    # up (503 means unreachable) and the same request may succeed once the lock is gone
    return (
        f"PostgreSQL waited longer than lock_timeout ({limits.lock_timeout} s)"
        f" for a lock held by another session{_in_database(error)}."
    )


def _lost(error: BaseException, limits: Limits) -> str:
    return f"PostgreSQL is unavailable: {limits.redact(first_line(error))}"


#: The driver's errors a view may let through: (status, message builder). Most specific class first wins
#: (QueryCanceled and LockNotAvailable are OperationalErrors).
DRIVER: dict[type[BaseException], tuple[int, Callable[[BaseException, Limits], str]]] = {
    psycopg2.errors.QueryCanceled: (504, _canceled),
    psycopg2.errors.LockNotAvailable: (504, _lock),
    psycopg2.OperationalError: (503, _lost),
    psycopg2.InterfaceError: (503, _lost),
}


@dataclass(frozen=True)
class ErrorAnswer:
    """An error as the client gets it: status, message (in ``{"error": ...}``) and headers."""

    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def status_of(error_class: type[BaseException]) -> int | None:
    """The status of a domain error class (its nearest listed base's); None when not a domain error."""
    for cls in error_class.__mro__:
        if cls in STATUSES:
            return STATUSES[cls]  # type: ignore[index]
    return None


def answer_for(error: BaseException, limits: Limits | None = None) -> ErrorAnswer | None:
    """How ``error`` is answered; None when it is not an expected error (a 500, logged)."""
    if isinstance(error, DomainError):
        status = error.status if isinstance(error, HTTPError) else status_of(type(error))
        if status is None:  # a DomainError subclass under no listed class: the plugin's mistake
            return None
        headers = dict(error.headers)
        if error.retry_after is not None:
            headers.setdefault("Retry-After", str(error.retry_after))
        return ErrorAnswer(status, error.message, headers)
    for cls in type(error).__mro__:
        if cls in DRIVER:
            status, message = DRIVER[cls]
            return ErrorAnswer(status, message(error, limits or Limits()))
    return None


def error_body(message: str) -> str:
    """The body of every error answer: ``{"error": message}``."""
    return json.dumps({"error": message})


def limits_of(postgresql: Mapping[str, Any], redact: Callable[[str], str] | None = None) -> Limits:
    """:class:`Limits` from the ``[postgresql]`` settings."""
    return Limits(postgresql.get("statement_timeout"), postgresql.get("lock_timeout"), redact or (lambda text: text))
