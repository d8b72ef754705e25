"""A schema's listing is streamed from a server-side cursor, byte for byte the
document it always was, and the figures kept for reuse are bounded in bytes.

The reference document is ``reports.schema_report`` over
``queries.relations`` (every row in memory, sorted in Python): what the
route answered before it streamed. The streamed answer must be the same
bytes, to HTTP/1.1 clients (chunked) and HTTP/1.0 ones (up to the
connection's end). A listing larger than ``[maintenance]
estimates_max_bytes`` is answered but not kept. A failure in the middle of a
stream never ends as a complete document.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import types
from typing import Any
from urllib.parse import urlsplit

import pytest
from maintenance_helpers import WEIRD_SCHEMA, path
from test_maintenance_reads import READS_SETUP

from agent_core.hookspecs import Route, hookimpl
from agent_core.testing import Databases
from agent_maintenance import flight, queries, reports, routes

#: Names whose order differs between collations (capitals, accents, digits,
#: underscores): the listing sorts them as Python does (code points).
ORDER_SETUP = """
CREATE SCHEMA o;
CREATE TABLE o."b" (id int PRIMARY KEY, v text);
CREATE TABLE o."B" (id int);
CREATE TABLE o."é" (id int PRIMARY KEY);
CREATE INDEX "Z_idx" ON o."é" (id);
CREATE INDEX "a_idx" ON o."é" (id);
CREATE TABLE o."e_1" (id int);
CREATE TABLE o."e1" (id int);
CREATE TABLE o."ß" (id int);
CREATE TABLE o.p (id int, k int) PARTITION BY RANGE (id);
CREATE TABLE o.p_1 PARTITION OF o.p FOR VALUES FROM (0) TO (10);
CREATE INDEX p_k ON o.p (k);
INSERT INTO o."b" SELECT i, md5(i::text) FROM generate_series(1, 100) i;
CREATE SCHEMA empty;
ANALYZE;
"""


@pytest.fixture(scope="module")
def listing_db(pg_cluster: Any) -> Any:
    databases = Databases(pg_cluster)
    try:
        name = databases.create("stream", READS_SETUP)
        pg_cluster.execute(ORDER_SETUP, dbname=name)
        yield name
    finally:
        databases.drop_all()


def reference(pg_cluster: Any, dbname: str, schema: str) -> bytes:
    """The document as the route built it in memory before it streamed."""
    conn = pg_cluster.connect(dbname)
    try:
        found = queries.lookup(conn, schema)
        assert found is not None
        rows = queries.relations(conn, schema_oid=found["schema_oid"], details=True)
    finally:
        conn.close()
    return json.dumps(reports.schema_report(schema, rows), default=str).encode()


def http10_get(url: str, target: str, session: str) -> tuple[str, dict[str, str], bytes]:
    """An HTTP/1.0 GET read up to the connection's end: (status line, headers, body)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(f"GET {target} HTTP/1.0\r\nHost: x\r\nX-Session: {session}\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize("schema", ["s1", "s2", "public", WEIRD_SCHEMA, "o", "empty"])
def test_the_streamed_listing_is_the_same_document(
    start_agent: Any, listing_db: str, pg_cluster: Any, schema: str
) -> None:
    running = start_agent(maintenance={"estimates_max_age": 0})
    api = running.login()
    expected = reference(pg_cluster, listing_db, schema)
    res = api.get(path(listing_db, "schema", schema))
    assert res.status == 200, res
    assert res.headers["Content-Type"] == "application/json"
    assert res.headers["Transfer-Encoding"] == "chunked"  # streamed, not built in memory
    assert res.body == expected
    # HTTP/1.0 (no chunked coding): the whole body, up to the connection's end
    status, headers, body = http10_get(running.url, path(listing_db, "schema", schema), api.session or "")
    assert status.split()[1] == "200" and "transfer-encoding" not in headers
    assert body == expected


def test_table_names_sort_as_python_sorts_them(start_agent: Any, listing_db: str) -> None:
    doc = start_agent().login().get(path(listing_db, "schema", "o")).json()
    names = [t["name"] for t in doc["tables"]]
    assert names == sorted(names) == ["B", "b", "e1", "e_1", "p", "p_1", "ß", "é"]
    indexes = [(i["tablename"], i["name"]) for i in doc["indexes"]]
    assert indexes == sorted(indexes) and ("é", "Z_idx") in indexes and ("é", "a_idx") in indexes


def test_a_listing_larger_than_the_bound_is_answered_not_kept(
    start_agent: Any, listing_db: str, pg_cluster: Any
) -> None:
    expected = reference(pg_cluster, listing_db, "s1")
    small = start_agent(maintenance={"estimates_max_age": 60, "estimates_max_bytes": len(expected) - 1})
    api = small.login()
    flights = flight.of(small.agent)
    for _ in range(2):
        res = api.get(path(listing_db, "schema", "s1"))
        assert res.status == 200 and res.body == expected
    assert flights.computed == 2 and len(flights) == 0 and flights.bytes == 0  # computed each time, nothing held

    roomy = start_agent(maintenance={"estimates_max_age": 60, "estimates_max_bytes": len(expected)})
    api = roomy.login()
    flights = flight.of(roomy.agent)
    first = api.get(path(listing_db, "schema", "s1"))
    kept = api.get(path(listing_db, "schema", "s1"))
    assert first.body == kept.body == expected
    assert flights.computed == 1 and flights.bytes == len(expected)
    assert kept.headers["Content-Length"] == str(len(expected))  # a kept listing has its length


def test_kept_results_are_bounded_in_bytes() -> None:
    flights = flight.Flights(max_age=60, max_bytes=100)
    for n in range(5):
        value, _ = flights.get(("db", n), lambda: "x" * 38)  # 40 bytes as JSON
        assert value == "x" * 38
    assert len(flights) == 2 and flights.bytes == 80  # the least recently used dropped for room
    assert flights.get(("db", 4), lambda: "recomputed")[0] == "x" * 38
    assert flights.get(("db", 0), lambda: "recomputed")[0] == "recomputed"
    big, _ = flights.get("big", lambda: "y" * 200)
    assert big == "y" * 200 and flights.get("big", lambda: "again")[0] == "again"  # answered, never kept
    assert flights.bytes <= 100


def test_a_stream_is_recorded_then_served_and_too_large_is_not() -> None:
    flights = flight.Flights(max_age=60, max_bytes=10)
    body, _ = flights.stream("k", lambda: iter([b"abc", b"def"]))
    assert b"".join(body) == b"abcdef"
    kept, _ = flights.stream("k", lambda: iter([b"never"]))
    assert kept == (b"abc", b"def") and flights.bytes == 6 and flights.computed == 1

    body, _ = flights.stream("big", lambda: iter([b"1234", b"56789abcdef"]))
    assert b"".join(body) == b"123456789abcdef"  # answered whole
    assert flights.stream("k", lambda: iter([b"never"]))[0] == kept  # a listing too large evicted nothing
    again, _ = flights.stream("big", lambda: iter([b"x"]))
    assert b"".join(again) == b"x" and flights.computed == 3  # not kept: computed again

    released = []

    class Held:
        def __iter__(self) -> Any:
            yield b"never read"

        def close(self) -> None:
            released.append(1)

    body, _ = flights.stream("gone", Held)
    body.close()  # a client gone before the end: released, nothing kept, the next request computes
    assert released == [1]
    assert b"".join(flights.stream("gone", lambda: iter([b"z"]))[0]) == b"z"
    assert flights.bytes == 6 + 1 + 1  # "k", "big" (now "x") and "gone" (now "z")


def test_a_request_waiting_for_a_stream_too_large_computes_its_own() -> None:
    flights = flight.Flights(max_age=60, max_bytes=4)
    release = threading.Event()

    def slow() -> Any:
        yield b"12"
        release.wait(10)
        yield b"345"

    body, _ = flights.stream("k", slow)
    chunks = iter(body)
    assert next(chunks) == b"12"
    answers: list[bytes] = []
    waiter = threading.Thread(target=lambda: answers.append(b"".join(flights.stream("k", lambda: iter([b"w"]))[0])))
    waiter.start()
    while flights.waiting() != 1:
        threading.Event().wait(0.01)
    release.set()
    assert b"".join(chunks) == b"345"
    waiter.join(10)
    assert answers == [b"w"] and flights.computed == 2


# -- a failure in the middle of a stream: never a complete document ------------------------------------


def failing_plugin(released: list[str]) -> Any:
    def chunks() -> Any:
        yield b'{"tables": [' + b", ".join(b'{"n": %d}' % i for i in range(2000))
        raise RuntimeError("connection to PostgreSQL lost")

    def view(request: Any) -> Any:
        stack = contextlib.ExitStack()
        stack.callback(released.append, "released")
        return routes.with_age(routes.Stream(chunks(), stack, "GET /broken"), 0)

    @hookimpl
    def agent_register_routes(agent: Any) -> list[Route]:
        return [Route("GET", "/broken", view, key=True)]

    return types.SimpleNamespace(agent_register_routes=agent_register_routes)


def test_a_stream_failing_midway_is_cut_short_never_a_complete_document(make_agent: Any) -> None:
    released: list[str] = []
    running = make_agent(plugins={"broken": failing_plugin(released)})
    session = running.login().session or ""
    parts = urlsplit(running.url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    try:
        conn.request("GET", "/broken", headers={"X-Session": session})
        res = conn.getresponse()
        assert res.status == 200 and res.getheader("Transfer-Encoding") == "chunked"
        with pytest.raises(http.client.IncompleteRead):  # no terminating chunk: the client knows
            res.read()
    finally:
        conn.close()
    status, _, body = http10_get(running.url, "/broken", session)
    assert status.split()[1] == "200" and body.startswith(b'{"tables": [')
    with pytest.raises(ValueError):
        json.loads(body)
    assert released == ["released", "released"]
    assert running.login().get("/status").status == 200  # the agent serves on


def test_streamed_reads_release_their_connection(start_agent: Any, listing_db: str, pg_cluster: Any) -> None:
    running = start_agent(maintenance={"estimates_max_age": 0})
    api = running.login()
    for schema in ("s1", "o"):
        assert api.get(path(listing_db, "schema", schema)).status == 200
    # no session left in the database (not the default one), none idle in a transaction
    assert not pg_cluster.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgwarden' AND (datname = %s"
        " OR state LIKE 'idle in transaction%%')",
        (listing_db,),
    )
