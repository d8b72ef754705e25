"""Database-wide and schema-wide figures are computed once at a time and reused briefly.

Two requests at the same time make one computation: the second waits for the
first one's result (seen in PostgreSQL: one agent backend runs the query).
A later request within ``[maintenance] estimates_max_age`` reuses it; the
answers carry an ``Age`` header. A maintenance operation forgets its
database's figures. The kept results are bounded in number.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from maintenance_helpers import ONE_TABLE, path, run

from agent_core.testing import wait_for
from agent_maintenance import flight


@pytest.fixture
def sf_db(databases: Any) -> str:
    return databases.create("sf", setup=ONE_TABLE)


def age(res: Any) -> int:
    """The ``Age`` header: whole seconds, never negative."""
    value = res.headers["Age"]
    assert value is not None and value.isdigit(), res.headers
    return int(value)


def since(started: float) -> float:
    """Seconds since ``started`` (``time.monotonic()``): what the age of
    figures read after that moment cannot exceed (the header is whole seconds,
    floored)."""
    return time.monotonic() - started


def agent_waiting_on_locks(pg_cluster: Any, db: str) -> int:
    """The agent's pooled backends in ``db`` waiting for a heavyweight lock."""
    return pg_cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgwarden'"
        " AND wait_event_type = 'Lock'",
        (db,),
    )[0][0]


@pytest.mark.parametrize("route", [(), ("schema", "s")], ids=["database", "schema"])
def test_concurrent_requests_share_one_computation(
    start_agent: Any, sf_db: str, backends: Any, pg_cluster: Any, route: tuple[str, ...]
) -> None:
    running = start_agent(
        postgresql={"statement_timeout": 60, "lock_timeout": 60}, maintenance={"estimates_max_age": 60}
    )
    api = running.login()
    flights = flight.of(running.agent)
    url = path(sf_db, *route)
    # the figures' query reads pg_inherits: while a session holds it, the query waits
    held = backends.hold("BEGIN; LOCK TABLE pg_catalog.pg_inherits IN ACCESS EXCLUSIVE MODE", dbname=sf_db)
    answers: dict[str, Any] = {}

    def ask(name: str) -> None:
        answers[name] = api.get(url)

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    wait_for(lambda: agent_waiting_on_locks(pg_cluster, sf_db) == 1)
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    wait_for(lambda: flights.waiting() == 1)  # the second request waits for the first one's result
    assert agent_waiting_on_locks(pg_cluster, sf_db) == 1, "the second request ran no query of its own"
    assert flights.computed == 1

    with held.conn.cursor() as cur:
        released = time.monotonic()  # the figures are read after this
        cur.execute("ROLLBACK")
    first.join(30)
    second.join(30)
    assert answers["first"].status == answers["second"].status == 200, answers
    assert answers["first"].json() == answers["second"].json()
    assert age(answers["first"]) <= since(released) and age(answers["second"]) <= since(released)
    assert flights.computed == 1

    again = api.get(url)  # within estimates_max_age: the kept result
    assert again.status == 200 and again.json() == answers["first"].json()
    assert age(again) >= age(answers["first"])
    assert flights.computed == 1

    # an operation on the database forgets its figures: the next request computes them again
    assert run(api, path(sf_db, "schema", "s", "table", "t", "vacuum"), "vacuum", {"mode": "full"})["status"] == "done"
    before = time.monotonic()
    fresh = api.get(url)
    assert fresh.status == 200 and age(fresh) <= since(before), fresh.headers
    assert flights.computed == 2


def test_without_reuse_each_request_computes(start_agent: Any, sf_db: str) -> None:
    running = start_agent(maintenance={"estimates_max_age": 0})
    api = running.login()
    for _ in range(2):
        before = time.monotonic()
        res = api.get(path(sf_db))
        assert res.status == 200 and age(res) <= since(before), res
    assert flight.of(running.agent).computed == 2


def test_instance_database_and_schema_share_database_figures(start_agent: Any, sf_db: str) -> None:
    running = start_agent(maintenance={"estimates_max_age": 60})
    api = running.login()
    flights = flight.of(running.agent)
    instance = api.get("/maintenance")
    assert instance.status == 200 and "Age" in instance.headers, instance
    assert instance.headers["Access-Control-Expose-Headers"] == "Age"  # browser dashboards may read it
    computed = flights.computed  # one per database of the instance
    database = api.get(path(sf_db))
    assert database.status == 200 and "Age" in database.headers
    assert flights.computed == computed, "GET /maintenance/<db> reused the instance's figures of the database"
    entry = next(d for d in instance.json()["databases"] if d["datname"] == sf_db)
    assert entry["total_bytes"] == database.json()["total_bytes"]
    schema = api.get(path(sf_db, "schema", "s"))
    assert schema.status == 200 and "Age" in schema.headers
    assert flights.computed == computed + 1  # a schema's figures are computed on their own
    table = api.get(path(sf_db, "schema", "s", "table", "t"))  # one table: always fresh, no Age
    assert table.status == 200 and "Age" not in table.headers
    assert api.get(path(sf_db, "schema", "nope")).status == 404


def test_errors_are_shared_and_not_kept() -> None:
    flights = flight.Flights(max_age=60)
    calls = []

    def failing() -> Any:
        calls.append(1)
        raise ValueError("boom")

    for _ in range(2):
        with pytest.raises(ValueError, match="boom"):
            flights.get(("db", None), failing)
    assert len(calls) == 2 and len(flights) == 0


def test_kept_results_are_bounded_and_expire() -> None:
    flights = flight.Flights(max_age=60, max_entries=3)
    for n in range(10):
        assert flights.get(("db", n), lambda n=n: n)[0] == n
    assert len(flights) == 3 and flights.computed == 10
    assert flights.get(("db", 9), lambda: "recomputed")[0] == 9  # kept
    assert flights.get(("db", 0), lambda: "recomputed")[0] == "recomputed"  # dropped, least recently used
    short = flight.Flights(max_age=0.05)
    short.get("k", lambda: 1)
    time.sleep(0.1)
    value, _ = short.get("k", lambda: 2)
    assert value == 2 and short.computed == 2  # older than max_age: never served, computed again
