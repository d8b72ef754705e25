"""The error model, without a server: domain errors know no HTTP; the web
layer's one table (agent_core.web.errors) gives each its status and body."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest

from agent_core import errors
from agent_core.auth import signing
from agent_core.errors import (
    Conflict,
    DatabaseNotFound,
    DomainError,
    Forbidden,
    HTTPError,
    InvalidInput,
    MalformedParameter,
    NotFound,
    PostgresUnavailable,
    Timeout,
    TooLarge,
    TooMany,
    Unauthorized,
    Unavailable,
    Unsupported,
)
from agent_core.operations.scheduler import TooManyPending
from agent_core.store import StoreUnavailable
from agent_core.web import errors as web_errors
from agent_core.web.errors import ErrorAnswer, Limits, answer_for, error_body

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (InvalidInput("Request body is not valid JSON."), 400, "Request body is not valid JSON."),
        (MalformedParameter("X-Session"), 406, "Parameter 'X-Session' is malformed."),
        (Unauthorized("Invalid session."), 401, "Invalid session."),
        (Forbidden("Permission denied."), 403, "Permission denied."),
        (NotFound("Operation 'x' not found."), 404, "Operation 'x' not found."),
        (DatabaseNotFound("nope"), 404, "Database 'nope' not found."),
        (Conflict("Operation 'x' is already done."), 409, "Operation 'x' is already done."),
        (TooLarge("Request body too large (limit 10 bytes)."), 413, "Request body too large (limit 10 bytes)."),
        (Unsupported("PostgreSQL 9.6 is not supported."), 501, "PostgreSQL 9.6 is not supported."),
        (PostgresUnavailable("connection refused"), 503, "PostgreSQL is unavailable: connection refused"),
        (StoreUnavailable("disk I/O error"), 503, "The operations store is unavailable: disk I/O error"),
        (Timeout("Reading database 'd' took longer."), 504, "Reading database 'd' took longer."),
        (signing.SignatureMalformed("X-TemBoard-Signature is empty."), 400, "X-TemBoard-Signature is empty."),
        (signing.SignatureInvalid("Invalid signature."), 403, "Invalid signature."),
        (signing.SignatureUnverifiable("no key"), 503, "no key"),
        (HTTPError(418, "I'm a teapot."), 418, "I'm a teapot."),
    ],
)
def test_each_domain_error_has_one_status_and_its_message(error, status, message):
    assert answer_for(error) == ErrorAnswer(status, message, {})
    assert str(error) == error.message == message


def test_retry_after_and_headers_become_response_headers():
    assert answer_for(TooMany("Too many failed logins: retry later.", retry_after=8)) == ErrorAnswer(
        429, "Too many failed logins: retry later.", {"Retry-After": "8"}
    )
    pending = answer_for(TooManyPending(3))
    assert (pending.status, pending.headers) == (429, {"Retry-After": "60"})
    assert "3 ([agent] scheduler_pending_max)" in pending.message
    assert answer_for(Unavailable("busy", retry_after=1, headers={"X-Why": "slots"})).headers == {
        "X-Why": "slots",
        "Retry-After": "1",
    }
    assert answer_for(HTTPError(405, "No.", {"Allow": "GET"})).headers == {"Allow": "GET"}


def test_driver_errors_name_the_limit_that_ran_out():
    limits = Limits(statement_timeout=30, lock_timeout=5)
    canceled = answer_for(psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"), limits)
    assert canceled == ErrorAnswer(504, "PostgreSQL took longer than statement_timeout (30 s) to answer.")
    locked = answer_for(psycopg2.errors.LockNotAvailable("canceling statement due to lock timeout"), limits)
    assert locked == ErrorAnswer(
        504, "PostgreSQL waited longer than lock_timeout (5 s) for a lock held by another session."
    )


def test_a_connection_lost_mid_request_is_503_with_secrets_redacted():
    limits = Limits(redact=lambda text: text.replace("s3cret", "********"))
    lost = answer_for(psycopg2.OperationalError("server closed the connection (password=s3cret)\nmore"), limits)
    assert lost == ErrorAnswer(503, "PostgreSQL is unavailable: server closed the connection (password=********)")
    assert answer_for(psycopg2.InterfaceError("connection already closed")).status == 503


def test_anything_else_is_not_an_expected_error():
    """None: the web layer logs the traceback and answers 500."""
    for error in (ValueError("x"), KeyError("k"), psycopg2.errors.UndefinedTable("t"), DomainError("no class")):
        assert answer_for(error) is None


def test_the_most_specific_class_wins():
    assert web_errors.status_of(MalformedParameter) == 406  # not InvalidInput's 400
    assert web_errors.status_of(DatabaseNotFound) == 404
    assert web_errors.status_of(ValueError) is None


def test_the_one_error_body():
    assert error_body("Invalid key.") == '{"error": "Invalid key."}'
    assert error_body('caf\u00e9 "x"') == '{"error": "caf\\u00e9 \\"x\\""}'
    assert json.loads(error_body("a\nb")) == {"error": "a\nb"}


def test_the_documented_statuses_are_the_table():
    """The table in agent_core.errors' docstring (what plugin authors read) is the web layer's."""
    documented = {
        name: int(status)
        for name, status in re.findall(r"^:class:`(\w+)`.*?(\d{3})\s*$", errors.__doc__ or "", re.MULTILINE)
    }
    actual = {name: web_errors.status_of(getattr(errors, name)) for name in documented}
    assert documented == actual
    assert {cls.__name__ for cls in web_errors.STATUSES} <= set(documented)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _top(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


def test_no_plugin_or_example_imports_bottle():
    """Plugins return data or a Response; the web framework is the core's business."""
    sources = sorted((ROOT / "plugins").rglob("*.py")) + sorted((ROOT / "examples").rglob("*.py"))
    assert len(sources) > 10, "plugins/ and examples/ sources not found"
    offenders = [str(path.relative_to(ROOT)) for path in sources if "bottle" in _top(_imports(path))]
    assert offenders == []


def test_the_domain_errors_import_nothing():
    """errors.py is the bottom of the package: domain errors, no HTTP, no driver (tests/core/test_layout.py
    checks that no module outside agent_core.web imports the web framework)."""
    assert _imports(ROOT / "agent_core" / "errors.py") <= {"__future__", "collections.abc"}
