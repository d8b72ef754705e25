"""Helpers of the maintenance plugin tests: names with every awkward
character, percent-encoded paths, waiting for operations."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from agent_core.testing import KEY, Client, Cluster, wait_for

#: Names with quotes, spaces, capitals, dots, non-ASCII, a slash and an
#: encoded slash: every route and operation must handle them.
WEIRD_SCHEMA = 'Sch "é" .x/%2F'
WEIRD_TABLE = 'Tab le "Ü" ü/x'
WEIRD_INDEX = 'Idx "ß" .i/%2F'
FINISHED = ("done", "failed", "canceled", "aborted")

#: An index expression that is slow only inside the agent's maintenance
#: operations (their application_name): VACUUM FULL and REINDEX of an index
#: on ``slow(id)`` then take 50 ms per row, long enough to be seen and canceled.
SLOW_FUNCTION = """
CREATE FUNCTION public.slow(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF pg_catalog.current_setting('application_name') LIKE 'pgwarden maintenance%' THEN
    PERFORM pg_catalog.pg_sleep(0.05);
  END IF;
  RETURN i;
END $$
"""


def path(*parts: str) -> str:
    """``/maintenance/<part>/<part>...`` with every part percent-encoded."""
    return "/".join(["/maintenance", *(quote(p, safe="") for p in parts)])


def operation(client: Client, verb: str, op_id: str) -> dict[str, Any]:
    """The listing entry of an operation (from the global listing)."""
    res = client.get(f"/maintenance/{verb}/scheduled")
    assert res.status == 200, res
    found = [e for e in res.json() if e["id"] == op_id]
    assert found, f"operation {op_id} not listed"
    return found[0]


def wait_status(client: Client, verb: str, op_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 30):
    """Wait until the operation has one of ``statuses``; return its entry."""

    def reached() -> dict[str, Any] | None:
        entry = operation(client, verb, op_id)
        return entry if entry["status"] in statuses else None

    return wait_for(reached, timeout=timeout)


def submit(client: Client, url: str, body: Any = None) -> str:
    res = client.post(url, body if body is not None else {})
    assert res.status == 200, res
    op_id = res.json()["id"]
    assert re.fullmatch("[0-9a-f]{8}", op_id), res
    return op_id


def run(client: Client, url: str, verb: str, body: Any = None) -> dict[str, Any]:
    """Submit an operation for now and wait for its end."""
    return wait_status(client, verb, submit(client, url, body))


def scalar(cluster: Cluster, query: Any, params: Any = None, dbname: str = "postgres") -> Any:
    rows = cluster.execute(query, params, dbname=dbname)
    return rows[0][0] if rows else None


def later(seconds: float) -> str:
    """A ``datetime`` parameter ``seconds`` from now (rounded up to the second)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + 1 + seconds))


def wait_running(client: Client, verb: str, op_id: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the operation runs and PostgreSQL reports its progress."""

    def running() -> dict[str, Any] | None:
        entry = operation(client, verb, op_id)
        progress = entry["progress"] or {}
        return entry if entry["status"] == "doing" and progress.get("command") and progress.get("phase") else None

    return wait_for(running, timeout=timeout)


class Keyed:
    """A read-only client authenticating with the agent key header."""

    def __init__(self, base_url: str):
        self.client = Client(base_url)

    def get(self, url: str) -> Any:
        return self.client.get(url, headers={"X-Pgwarden-Key": KEY})


#: A schema ``s`` with one analyzed table ``s.t`` of 200 rows.
ONE_TABLE = """
CREATE SCHEMA s;
CREATE TABLE s.t (id int PRIMARY KEY, v text);
INSERT INTO s.t SELECT i, md5(i::text) FROM generate_series(1, 200) i;
ANALYZE;
"""
