"""Bounded by design (issue 14): the pending operations are capped (429, nothing
written) and every ``…/scheduled`` listing is paginated (``limit``, ``cursor``,
``X-Next-Cursor`` and ``Link: <...>; rel="next"``), the body staying a bare array."""

from __future__ import annotations

import re
from typing import Any

from maintenance_helpers import WEIRD_SCHEMA, WEIRD_TABLE, path, submit
from psycopg2 import sql

from agent_core.testing import Client

FAR = "2099-01-01T00:00:00Z"
SETUP = sql.SQL(
    """
CREATE SCHEMA {schema};
CREATE TABLE {table} (id int PRIMARY KEY, v text);
CREATE INDEX ON {table} (v);
"""
).format(schema=sql.Identifier(WEIRD_SCHEMA), table=sql.Identifier(WEIRD_SCHEMA, WEIRD_TABLE))


def walk(client: Client, url: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Every entry of a listing, page by page through the Link headers; and the number of pages."""
    entries: list[dict[str, Any]] = []
    target = f"{url}?limit={limit}"
    for pages in range(1, 20):  # bounded
        res = client.get(target)
        assert res.status == 200, (target, res)
        assert isinstance(res.json(), list) and len(res.json()) <= limit
        entries += res.json()
        if "X-Next-Cursor" not in res.headers:
            assert "Link" not in res.headers
            return entries, pages
        link = re.fullmatch(r'<([^>]*)>; rel="next"', res.headers["Link"])
        assert link and f"cursor={res.headers['X-Next-Cursor']}" in link.group(1)
        assert "X-Next-Cursor" in res.headers["Access-Control-Expose-Headers"]
        target = link.group(1)
    raise AssertionError("more than 19 pages")


def test_listings_are_paginated_at_every_level(api: Client, databases: Any) -> None:
    db = databases.create('Wé "db"/%2F', SETUP)
    table = path(db, "schema", WEIRD_SCHEMA, "table", WEIRD_TABLE)
    schema = path(db, "schema", WEIRD_SCHEMA)
    # the same time for all: ties are ordered by creation, then id
    vacuums = [submit(api, f"{table}/vacuum", {"datetime": FAR}) for _ in range(5)]
    reindexes = [submit(api, f"{table}/reindex", {"datetime": FAR}) for _ in range(3)]
    listings = {
        "/maintenance/vacuum/scheduled": vacuums,
        path(db, "vacuum", "scheduled"): vacuums,
        f"{table}/vacuum/scheduled": vacuums,
        f"{schema}/reindex/scheduled": reindexes,
        "/maintenance/reindex/scheduled": reindexes,
    }
    for url, ids in listings.items():
        whole = api.get(url)  # no parameter (the temboard UI): everything, a bare array, no next page
        assert whole.status == 200 and [e["id"] for e in whole.json()] == ids, url
        assert "X-Next-Cursor" not in whole.headers
        entries, pages = walk(api, url, 2)
        assert entries == whole.json(), url
        assert pages == (len(ids) + 1) // 2, url
        for bad in ("limit=0", "limit=x", "limit=10001", "cursor=1.2.3", "cursor=..", "cursor=1.2.zzzzzzzz"):
            res = api.get(f"{url}?{bad}")
            assert res.status == 400 and set(res.json()) == {"error"}, (url, bad, res)


def test_the_default_page_is_bounded(start_agent: Any, databases: Any) -> None:
    db = databases.create("bnd", SETUP)
    client = start_agent(agent={"listing_limit_default": 2}).login()
    ids = [submit(client, path(db, "analyze"), {"datetime": FAR}) for _ in range(3)]
    res = client.get("/maintenance/analyze/scheduled")
    assert [e["id"] for e in res.json()] == ids[:2] and "X-Next-Cursor" in res.headers
    rest = client.get(f"/maintenance/analyze/scheduled?cursor={res.headers['X-Next-Cursor']}")
    assert [e["id"] for e in rest.json()] == ids[2:] and "X-Next-Cursor" not in rest.headers


def test_scheduling_over_the_pending_cap_is_429_and_writes_nothing(start_agent: Any, databases: Any) -> None:
    db = databases.create("bnd", SETUP)
    client = start_agent(agent={"scheduler_pending_max": 2}).login()
    kept = [submit(client, path(db, "vacuum"), {"datetime": FAR}) for _ in range(2)]
    notes = len(client.get("/notifications").json())
    for verb in ("vacuum", "analyze", "reindex"):  # bounded: a few refused attempts
        res = client.post(path(db, verb), {"datetime": FAR})
        assert res.status == 429, res
        assert "scheduler_pending_max" in res.json()["error"] and set(res.json()) == {"error"}
        assert res.headers["Retry-After"].isdigit()
    listed = [
        e["id"]
        for verb in ("vacuum", "analyze", "reindex")
        for e in client.get(f"/maintenance/{verb}/scheduled").json()
    ]
    assert listed == kept
    assert len(client.get("/notifications").json()) == notes  # no "scheduled" entry for a refused one
    assert client.delete(f"/maintenance/vacuum/{kept[0]}").status == 200
    assert client.post(path(db, "analyze"), {"datetime": FAR}).status == 200
