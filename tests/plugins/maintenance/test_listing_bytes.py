"""The ``…/scheduled`` listings write their entries from the stored JSON text
(no decoding and encoding again, for speed): the bytes must be those of
``json.dumps`` of the decoded entries, the reference it was before, for every
kind of value an operation can hold, on both stores (SQLite, PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from agent_core.operations.model import Listed
from agent_core.store import operations
from agent_core.testing import Cluster
from agent_maintenance.routes import entries

FAR = datetime(2099, 1, 1, 12, 30, 45, 123456, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request: Any, pg_cluster: Cluster) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield {}
        return
    name = f"store_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f'CREATE DATABASE "{name}"')
    yield {"store": pg_cluster.url(name)}
    pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_listing_bytes_are_json_dumps_of_the_decoded_entries(start_agent: Any, store_config: dict[str, str]) -> None:
    running = start_agent(agent=store_config)
    scheduler = running.agent.scheduler
    submit = scheduler.submit
    weird = 'Wé "q"\\ \x01\t/%2F ☃ \U0001f600'
    ids = [
        submit("maintenance.vacuum", {"mode": "full,analyze"}, run_at=FAR, dbname=weird, requested_by=weird),
        submit("maintenance.vacuum", {"mode": None}, run_at=FAR, dbname="db", schema=weird, table=weird),
        submit("maintenance.vacuum", {}, run_at=FAR + timedelta(microseconds=1), dbname="db"),
        submit("maintenance.vacuum", {"mode": weird, "table": weird, "n": 1.5e300}, run_at=FAR, index=weird),
        submit("maintenance.vacuum", {"mode": "analyze", "table": 7}, run_at=FAR, dbname="db", index="i"),
    ]
    ids += [submit("maintenance.vacuum", {"mode": "freeze"}, run_at=FAR + timedelta(days=n)) for n in range(4)]
    results: list[Any] = [
        {"a": [1, 2.5, -0.0, 1e-7, 12345678901234567890, True, None], weird: {"x": weird}},
        0.1 + 0.2,
        5,
        weird,
        None,
        sa.null(),  # SQL NULL, as a row written by hand or an earlier release could hold
        [],
        "123",
        1e100,
    ]
    stamp = datetime(2026, 2, 3, 4, 5, 6, 999999, tzinfo=timezone.utc)
    with running.agent.store.begin() as conn:
        for n, (op_id, result) in enumerate(zip(ids, results)):
            values: dict[str, Any] = {"result": result, "notices": [weird, f"NOTICE: {n}"] if n % 2 else []}
            if n % 3 == 0:
                values.update(status="done", started_at=stamp, finished_at=stamp + timedelta(seconds=n))
            elif n % 3 == 1:
                values.update(status="failed", error=f"{weird}\nline 2", started_at=stamp)
            if n == 2:  # running, its backend not known yet: a progress entry
                values.update(status="doing", started_at=stamp, info={"x": 1})
            conn.execute(operations.update().where(operations.c.id == op_id).values(**values))
    request = SimpleNamespace(agent=running.agent)
    client = running.login()
    reference = json.dumps(entries(request, scheduler.list(task="maintenance.vacuum")), default=str).encode()
    whole = client.get("/maintenance/vacuum/scheduled")
    assert whole.status == 200 and whole.body == reference
    assert [e["id"] for e in whole.json()] == [op.id for op in scheduler.list(task="maintenance.vacuum")]
    assert any(e["progress"] for e in whole.json()) and any(e["result"] is None for e in whole.json())
    cursor, pages = None, 0
    while True:  # every page, as json.dumps of the same page decoded
        ops, next_cursor = scheduler.page(4, cursor, task="maintenance.vacuum")
        res = client.get("/maintenance/vacuum/scheduled?limit=4" + (f"&cursor={cursor}" if cursor else ""))
        assert res.status == 200 and res.body == json.dumps(entries(request, ops), default=str).encode()
        assert res.headers.get("X-Next-Cursor") == next_cursor
        cursor, pages = next_cursor, pages + 1
        if cursor is None:
            break
        assert pages < 5
    assert pages == 3
    for op in scheduler.list(task="maintenance.vacuum"):  # a store of another kind: the decoded rows encoded
        assert Listed.of(op).to_json(op.table) == json.dumps(op.to_dict(), default=str)
        assert Listed.of(op).operation() == op
