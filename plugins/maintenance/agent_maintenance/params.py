"""The parameters in the maintenance routes' bodies: the body itself (a JSON
object, else 400), its ``datetime`` and its ``mode``, each parsed or refused
with ValueError (the views answer 406 naming the parameter)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from agent_core.errors import InvalidInput
from agent_core.web.request import Request

#: The ``datetime`` of an operation: UTC, to the second.
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
#: The words of a VACUUM ``mode``.
VACUUM_MODES = ("full", "freeze", "analyze")


def request_body(request: Request) -> dict[str, Any]:
    """The request's JSON body; InvalidInput (400) unless it is an object."""
    body = request.json()
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object.")
    return body


def parse_datetime(value: Any) -> datetime | None:
    """``YYYY-MM-DDTHH:MM:SSZ`` (UTC) or None/empty for now; ValueError otherwise."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not DATETIME.match(value):
        raise ValueError(value)
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def parse_mode(verb: str, value: Any) -> str | None:
    """The canonical mode (``full,analyze``) or None; ValueError when malformed.

    VACUUM takes a comma-separated combination of full, freeze and analyze;
    ANALYZE and REINDEX take none.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or verb != "vacuum":
        raise ValueError(value)
    words = [w.strip() for w in value.split(",")]
    if any(w not in VACUUM_MODES for w in words) or len(set(words)) != len(words):
        raise ValueError(value)
    return ",".join(words)
