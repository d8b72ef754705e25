"""The errors the core and plugins raise, by meaning. No HTTP here.

A :class:`DomainError` says why something was refused or could not be done,
in a message meant for the client (``str(error)`` and ``error.message``),
with optional ``retry_after`` seconds and extra ``headers`` data. It knows
nothing of HTTP: the web layer (:mod:`agent_core.web.errors`) holds the one
table that turns each class, and the driver's errors, into a status and a
``{"error": message}`` body. Raise the class that says what happened:

=========================  ===========================================  ======
class                      meaning                                      status
=========================  ===========================================  ======
:class:`InvalidInput`      the request's data is wrong                  400
:class:`MalformedParameter` one parameter is malformed (its name)       406
:class:`Unauthorized`      no valid credential (session, key)           401
:class:`Forbidden`         a credential, but not allowed to do this     403
:class:`NotFound`          no such thing                                404
:class:`DatabaseNotFound`  no such database                             404
:class:`Conflict`          not possible in the current state            409
:class:`TooLarge`          more data than accepted                      413
:class:`TooMany`           too many requests or waiting work            429
:class:`Unsupported`       not implemented for this server              501
:class:`Unavailable`       a resource is down or busy: retry later      503
:class:`PostgresUnavailable` PostgreSQL cannot be reached               503
:class:`Timeout`           a wait limit ran out                         504
=========================  ===========================================  ======

:class:`HTTPError` (``HTTPError(status, message, headers)``) is kept for
plugins written before these classes: an explicit status, for a view that
needs one no class above gives. New code raises the classes above.

:class:`StartupError` refuses to start the agent with a clear message (no
traceback); :class:`ConfigError` carries every configuration problem found
in one pass.
"""

from __future__ import annotations

from collections.abc import Mapping


class PgwardenError(Exception):
    """Base of every error the core raises on purpose."""


class DomainError(PgwardenError):
    """Something refused or impossible, said to the client as ``message``.

    ``retry_after``: seconds after which the same request may succeed (the
    web layer sends it as ``Retry-After``); ``headers``: any other data to
    send along (``Allow``...), as header names and values.
    """

    def __init__(self, message: str, *, retry_after: int | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.headers = dict(headers or {})


class InvalidInput(DomainError):
    """The request's data is wrong (a body that is not JSON, a value out of range)."""


class MalformedParameter(InvalidInput):
    """``Parameter '<name>' is malformed.``, the reference agent's wording (406)."""

    def __init__(self, name: str):
        super().__init__(f"Parameter '{name}' is malformed.")
        self.parameter = name


class Unauthorized(DomainError):
    """No valid credential: unknown or expired session, wrong key or password."""


class Forbidden(DomainError):
    """Authenticated, but not allowed to do this."""


class NotFound(DomainError):
    """No such thing (operation, schema, table...)."""


class DatabaseNotFound(NotFound):
    """No database of that name in the instance."""

    def __init__(self, dbname: str, message: str | None = None):
        super().__init__(message or f"Database '{dbname}' not found.")
        self.dbname = dbname


class Conflict(DomainError):
    """Not possible in the current state (an operation already finished...)."""


class TooLarge(DomainError):
    """More data than the agent accepts (a request body over its limit)."""


class TooMany(DomainError):
    """Too many requests or waiting work (failed logins, pending operations)."""


class Unsupported(DomainError):
    """Not implemented for this server (a PostgreSQL version not supported)."""


class Unavailable(DomainError):
    """A resource is down or busy (PostgreSQL, the store, the login slots): retry later."""


class PostgresUnavailable(Unavailable):
    """PostgreSQL cannot be reached: ``PostgreSQL is unavailable: <cause>``."""

    def __init__(self, cause: str):
        super().__init__(f"PostgreSQL is unavailable: {cause}")


class Timeout(DomainError):
    """A wait limit ran out (statement_timeout, lock_timeout): the same request may succeed later."""


class HTTPError(DomainError):
    """An explicit status, for plugins written before the classes above.

    ``HTTPError(status, message, headers)``: answered with ``status`` and
    ``{"error": message}``. Prefer the class that says what happened.
    """

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message, headers=headers)
        self.status = status


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
