"""Pagination of the listings that can grow (operations, notifications, backends).

Every paginated listing takes two optional query parameters:

``limit``
    At most this many entries (``1`` to ``[agent] listing_limit_max``;
    default ``[agent] listing_limit_default``, or the listing's own default).
``cursor``
    The ``X-Next-Cursor`` value of the previous page: where to go on. Opaque;
    a value that is not one the agent gave is answered 400.

The body stays what it was (a bare JSON array for the operation listings and
``GET /notifications``). When there is more, the answer carries:

``X-Next-Cursor: <cursor>``
    to pass as ``cursor`` for the next page;
``Link: <path?limit=N&cursor=...>; rel="next"``
    the next page's address (RFC 8288).

No ``X-Next-Cursor`` means this was the last page. Both headers are exposed
to browser clients (``Access-Control-Expose-Headers``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from agent_core.errors import InvalidInput
from agent_core.web.responses import JSONText, Response

if TYPE_CHECKING:
    from agent_core.web.request import Request

NEXT_CURSOR = "X-Next-Cursor"
#: The headers a paginated answer may carry, for Access-Control-Expose-Headers.
HEADERS = ("Link", NEXT_CURSOR)

_DIGITS = re.compile(r"^[0-9]{1,10}$")
#: Cursors the agent gives are short ASCII tokens; anything longer is not one.
_CURSOR = re.compile(r"^[A-Za-z0-9._:+-]{1,200}$")


@dataclass(frozen=True)
class Page:
    """The page asked for: ``limit`` entries after ``cursor`` (None: the first page)."""

    limit: int
    cursor: str | None


def page(request: Request, default: int | None = None) -> Page:
    """``limit`` and ``cursor`` of ``request``; 400 JSON when malformed or out of range."""
    settings = request.agent.config.agent
    maximum = settings["listing_limit_max"]
    text = request.query.get("limit")
    if text is None:
        limit = min(default or settings["listing_limit_default"], maximum)
    else:
        if not _DIGITS.match(text) or not 1 <= int(text) <= maximum:
            raise InvalidInput(f"Parameter 'limit' must be an integer from 1 to {maximum} ([agent] listing_limit_max).")
        limit = int(text)
    cursor = request.query.get("cursor")
    if cursor is not None and not _CURSOR.match(cursor):
        raise bad_cursor()
    return Page(limit, cursor)


def bad_cursor() -> InvalidInput:
    return InvalidInput("Parameter 'cursor' is malformed: pass the X-Next-Cursor value of the previous page.")


__all__ = ["HEADERS", "NEXT_CURSOR", "JSONText", "Page", "answer", "bad_cursor", "next_headers", "page"]


def next_headers(request: Request, limit: int, next_cursor: str | None) -> dict[str, str]:
    """``X-Next-Cursor`` and ``Link`` of the next page; none on the last page."""
    if next_cursor is None:
        return {}
    query = {k: v for k, v in request.query.items() if k not in ("limit", "cursor", "key")}
    query.update(limit=str(limit), cursor=next_cursor)
    path = quote(request.raw.environ.get("PATH_INFO", request.path) or "/", safe="/%")
    target = request.raw.environ.get("REQUEST_URI", "").split("?", 1)[0]
    if target.startswith("/"):  # as sent, so encoded names (%2F) stay exact
        path = target
    return {NEXT_CURSOR: next_cursor, "Link": f'<{path}?{urlencode(query)}>; rel="next"'}


def answer(request: Request, body: Any, limit: int, next_cursor: str | None) -> Response:
    """``body`` as JSON (a :class:`~agent_core.web.responses.JSONText` as it is),
    with ``X-Next-Cursor`` and ``Link`` when there is a next page."""
    return Response(body, headers=next_headers(request, limit, next_cursor))


# -- OpenAPI ------------------------------------------------------------------

_NEXT_HEADERS = {
    NEXT_CURSOR: {
        "description": "Present when there are more entries: pass it as ?cursor= for the next page.",
        "schema": {"type": "string"},
    },
    "Link": {
        "description": 'The next page\'s address, rel="next" (RFC 8288); present when there are more entries.',
        "schema": {"type": "string"},
    },
}


def parameters(limit_description: str | None = None) -> list[dict[str, Any]]:
    """The ``limit`` and ``cursor`` query parameters of a paginated listing."""
    return [
        {
            "name": "limit",
            "in": "query",
            "description": limit_description
            or "At most this many entries (default [agent] listing_limit_default, at most [agent] listing_limit_max).",
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "The X-Next-Cursor of the previous page (opaque).",
            "schema": {"type": "string"},
        },
    ]


def openapi(doc: dict[str, Any], limit_description: str | None = None, bad: int = 400) -> dict[str, Any]:
    """``doc`` (an Operation Object fragment) with the pagination parameters,
    the next-page headers on its 200 and the 400 for a bad limit or cursor."""
    out = dict(doc)
    out["parameters"] = [*doc.get("parameters", []), *parameters(limit_description)]
    responses = dict(out.get("responses", {}))
    if "200" in responses:
        responses["200"] = {**responses["200"], "headers": {**responses["200"].get("headers", {}), **_NEXT_HEADERS}}
    responses.setdefault(str(bad), {"description": "Parameter 'limit' or 'cursor' malformed or out of range."})
    out["responses"] = responses
    return out
