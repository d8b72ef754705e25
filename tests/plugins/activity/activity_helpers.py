"""Helpers of the activity plugin tests: the fields of a listed backend and
the rows of a listing by pid."""

from __future__ import annotations

from typing import Any

from agent_core.testing import Client

#: The fields of every row of GET /activity (and of the lock listings, which add their own).
FIELDS = {
    "pid",
    "database",
    "user",
    "client",
    "application_name",
    "cpu",
    "memory",
    "read_s",
    "write_s",
    "iow",
    "wait",
    "duration",
    "state",
    "query",
}


def rows_by_pid(client: Client, path: str = "/activity") -> dict[int, dict[str, Any]]:
    """The rows of a listing (a 200 whose body is exactly ``{"rows": [...]}``) by pid."""
    res = client.get(path)
    assert res.status == 200, res
    assert set(res.json()) == {"rows"}
    return {row["pid"]: row for row in res.json()["rows"]}
