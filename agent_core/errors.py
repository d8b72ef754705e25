"""Errors the core and plugins raise, and the one JSON-error helper.

* :class:`HTTPError` is what a view raises to answer ``{"error": message}``
  with a status code; :func:`json_error` builds the response for it. No other
  code in the project formats an error body.
* :class:`StartupError` refuses to start the agent with a clear message (no
  traceback); :class:`ConfigError` carries every configuration problem found
  in one pass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import bottle


class PgwardenError(Exception):
    """Base of every error the core raises on purpose."""


class HTTPError(PgwardenError):
    """Answer the current request with ``status`` and ``{"error": message}``.

    ``headers`` are added to the response (``Retry-After``, ``Allow``...).
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class NotFound(HTTPError):
    def __init__(self, message: str):
        super().__init__(404, message)


class Conflict(HTTPError):
    def __init__(self, message: str):
        super().__init__(409, message)


class MalformedParameter(HTTPError):
    """406 ``Parameter '<name>' is malformed.``, the reference agent's wording."""

    def __init__(self, name: str):
        super().__init__(406, f"Parameter '{name}' is malformed.")
        self.parameter = name


class PostgresUnavailable(HTTPError):
    """PostgreSQL cannot be reached: 503 naming the cause."""

    def __init__(self, cause: str):
        super().__init__(503, f"PostgreSQL is unavailable: {cause}")


class StartupError(PgwardenError):
    """Raised (by the core or a plugin's ``agent_startup``) to refuse to start."""


class ConfigError(StartupError):
    """Every configuration problem, each as ``section.key: reason``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def first_line(error: BaseException) -> str:
    """The first line of an error's message, for a client or a log line: the
    driver's error under a SQLAlchemy wrapper, without libpq's ``ERROR:``."""
    error = getattr(error, "orig", None) or error
    text = (getattr(error, "pgerror", None) or str(error)).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line.removeprefix("ERROR:").strip()


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    """The JSON error response: ``{"error": message}`` with ``status``.

    This is the only place an error body is built; the HTTP layer turns every
    :class:`HTTPError`, bottle error and unexpected exception into one.
    """
    body = json.dumps({"error": message})
    response = bottle.HTTPResponse(body=body, status=status)
    response.content_type = "application/json"
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    return response


class DatabaseNotFound(NotFound):
    """No database of that name in the instance."""

    def __init__(self, dbname: str, message: str | None = None):
        super().__init__(message or f"Database '{dbname}' not found.")
        self.dbname = dbname
