"""Browsing every database never blocks PostgreSQL's own work.

``CREATE DATABASE`` copies ``template1`` and fails when another session stays
connected to it for 5 s (``source database "template1" is being accessed by
other users``); ``DROP DATABASE`` fails the same way on the database dropped.
The agent used to keep its pooled connection to every database it read idle
for 10 s, so a read user refreshing ``GET /maintenance/template1`` made every
``CREATE DATABASE`` of the instance fail. Here read users (a ``read`` session
and the read-only key) browse every database through the maintenance routes
while ``CREATE DATABASE`` and ``DROP DATABASE`` run in a loop: none fails.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg2
from maintenance_helpers import Keyed, path
from psycopg2 import sql

import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import PASSWORD, wait_for

ROUNDS = 20


def browse(get: Any, stop: threading.Event, seen: list[tuple[str, int]]) -> None:
    """What a read user does in a UI: the instance, then each database (templates
    included) and its public schema, again and again; bounded in requests."""
    while not stop.is_set() and len(seen) < 3000:
        res = get("/maintenance")
        seen.append(("/maintenance", res.status))
        names = [d["datname"] for d in res.json()["databases"]] if res.status == 200 else []
        for dbname in ["template1", "template0", *names]:
            for url in (path(dbname), path(dbname, "schema", "public")):
                if stop.is_set():
                    return
                seen.append((url, get(url).status))
                stop.wait(0.02)


def test_create_and_drop_database_never_fail_while_read_users_browse(make_agent: Any, pg_cluster: Any) -> None:
    running = make_agent(
        plugins={"maintenance": maintenance_plugin},
        config={"maintenance": {"estimates_max_age": 0}},  # every read connects: the worst case
        users={"alice": PASSWORD, "reader": (PASSWORD, "read")},
    )
    reader = running.login("reader")
    keyed = Keyed(running.url)
    stop = threading.Event()
    seen: list[tuple[str, int]] = []
    threads = [threading.Thread(target=browse, args=(c.get, stop, seen)) for c in (reader, keyed)]
    for t in threads:
        t.start()
    failures = []
    try:
        for i in range(ROUNDS):
            name = sql.Identifier(f"copy_{uuid.uuid4().hex[:8]}")
            try:
                pg_cluster.execute(sql.SQL("CREATE DATABASE {}").format(name))
            except psycopg2.Error as e:
                failures.append(f"CREATE #{i}: {str(e).strip()}")
                break
            try:
                pg_cluster.execute(sql.SQL("DROP DATABASE {}").format(name))
            except psycopg2.Error as e:
                failures.append(f"DROP #{i}: {str(e).strip()}")
                pg_cluster.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
            if failures:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert failures == []
    assert any(url == path("template1") and status == 200 for url, status in seen), "template1 was read"
    # template0 accepts no connection: 409; a database dropped between listing and reading: 404
    assert {status for _, status in seen} <= {200, 404, 409}, sorted(set(seen))
    # the last requests' sessions end as their connections close (a backend exits in milliseconds)
    wait_for(lambda: not pg_cluster.execute("SELECT 1 FROM pg_stat_activity WHERE datname = 'template1'"), timeout=3)
