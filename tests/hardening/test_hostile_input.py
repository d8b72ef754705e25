"""Hostile bodies, headers and URLs: each gets a clear 4xx ``{"error": ...}``
JSON answer, never a 500, a traceback or an HTML page; the agent keeps serving.

Sent over real sockets (raw bytes where http.client would refuse to send
them) to an agent with both plugins.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from agent_core.testing import KEY, Client, RunningAgent

#: The POST routes that read a JSON body, with a body they accept.
BODY_ROUTES = [
    ("/login", {"username": "mallory", "password": "x"}),
    ("/activity/kill", {"pids": [1]}),
    ("/maintenance/postgres/vacuum", {"mode": "analyze", "datetime": "2999-01-01T00:00:00Z"}),
]


def assert_error(res: Any, status: int | tuple[int, ...], contains: str = "") -> str:
    statuses = status if isinstance(status, tuple) else (status,)
    assert res.status in statuses, res
    assert res.headers["Content-Type"].startswith("application/json"), res.headers
    body = res.json()
    assert set(body) == {"error"} and isinstance(body["error"], str), body
    assert contains in body["error"], body
    assert "Traceback" not in res.text and "<html" not in res.text.lower()
    return body["error"]


class RawResponse:
    def __init__(self, data: bytes):
        head, _, self.body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        self.text = self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.text[:200]!r}>"


def send_raw(running: RunningAgent, data: bytes) -> RawResponse:
    """Send ``data`` as is on a new connection; the whole answer (the request must say Connection: close)."""
    parts = urlsplit(running.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return RawResponse(out)


def raw_get(running: RunningAgent, target: bytes, *headers: bytes) -> RawResponse:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers, b"Connection: close", b"", b""]
    return send_raw(running, b"\r\n".join(lines))


@pytest.fixture(scope="module")
def full_agent(shared_agent: RunningAgent) -> RunningAgent:
    """One agent for the module: nothing here changes its state (no login fails, nothing is scheduled)."""
    return shared_agent


@pytest.fixture(scope="module")
def session(full_agent: RunningAgent) -> str:
    return full_agent.login().session or ""


@pytest.fixture
def alice(full_agent: RunningAgent, session: str) -> Iterator[Client]:
    client = Client(full_agent.url, session=session)
    yield client
    # after whatever the test sent, the agent still answers normally
    assert client.get("/activity").status == 200
    assert full_agent.client().get("/maintenance", headers={"X-Pgwarden-Key": KEY}).status == 200


# -- bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("path,good", BODY_ROUTES)
def test_bodies_that_are_not_json_objects(alice, path, good):
    post = alice.request
    nested = "[" * 100_000 + "]" * 100_000  # 200 kB: above max_body
    cases = [
        (b"", (406, 200)),  # empty: {} -> a missing parameter (vacuum needs none)
        (b"not json", 400),
        (b'{"a": ', 400),
        (b'{"pids": "\xff\xfe"}', 400),  # invalid UTF-8
        (b"\xef\xbb\xbf" + json.dumps(good).encode(), 400),  # a BOM is not JSON
        (("[" * 5000 + "]" * 5000).encode(), 400),  # deeply nested, under max_body
        (('{"a":' * 5000 + "1" + "}" * 5000).encode(), 400),
        (nested.encode(), 413),
        (b'{"x": "' + b"y" * 200_000 + b'"}', 413),
        (json.dumps([good]).encode(), (400, 406)),  # an array, not an object
        (b"123", (400, 406)),
        (b"null", (400, 406)),
        (b'"string"', (400, 406)),
    ]
    for body, status in cases:
        res = post("POST", path, body=body, headers={"Content-Type": "application/json"})
        if res.status != 200:
            assert_error(res, status)
        else:
            assert 200 in (status if isinstance(status, tuple) else (status,)), (body[:40], res)


@pytest.mark.parametrize("path,good", BODY_ROUTES)
def test_duplicate_keys_are_refused(alice, path, good):
    first = next(iter(good))
    body = json.dumps(good)[:-1] + f", {json.dumps(first)}: {json.dumps(good[first])}}}"
    assert_error(alice.request("POST", path, body=body), 400, f"'{first}' twice")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_json_is_read_whatever_the_content_type_and_anything_else_is_400(alice, content_type):
    res = alice.request("POST", "/activity/kill", body='{"pids": [2147483647]}', headers={"Content-Type": content_type})
    assert res.status == 200 and res.json()["backends"][0]["killed"] is False, res
    res = alice.request("POST", "/activity/kill", body="pids=1&pids=2", headers={"Content-Type": content_type})
    assert_error(res, 400, "not valid JSON")


def test_wrong_types_and_missing_keys(alice):
    for body in ({}, {"username": "alice"}, {"username": ["alice"], "password": "x"}, {"username": "a", "password": 1}):
        assert_error(alice.post("/login", body), 406, "is malformed")
    for body in ({}, {"pid": [1]}, {"pids": 1}, {"pids": "1"}, {"pids": {"1": 1}}, {"pids": [[1]]}, {"pids": [None]}):
        assert_error(alice.post("/activity/kill", body), 406, "Parameter 'pids' is malformed.")
    for body in ({"mode": 1}, {"mode": ["full"]}, {"mode": "full;drop"}, {"datetime": 1}, {"datetime": "tomorrow"}):
        assert_error(alice.post("/maintenance/postgres/vacuum", body), 406, "is malformed")


@pytest.mark.parametrize(
    "pid", ["0", "-1", "2147483648", "9223372036854775808", "1e400", "1.0", "true", "NaN", "Infinity", "-Infinity"]
)
def test_pids_out_of_range_or_not_integers(alice, pid):
    assert_error(alice.request("POST", "/activity/kill", body=f'{{"pids": [{pid}]}}'), 406, "'pids'")


def test_a_number_too_long_to_parse_is_400(alice):
    assert_error(alice.request("POST", "/activity/kill", body='{"pids": [' + "9" * 5000 + "]}"), 400)


def test_chunked_bodies_are_bounded_too(full_agent, alice):
    chunk = b"1" * 10_000
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(30)) + b"0\r\n\r\n"
    head = (
        b"POST /activity/kill HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Session: " + alice.session.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    res = send_raw(full_agent, head + body)
    assert_error(res, (400, 413))
    small = b'{"pids": [2147483647]}'
    res = send_raw(full_agent, head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small))
    assert res.status == 200, res


# -- headers -------------------------------------------------------------------------


def test_malformed_sessions_are_406(full_agent, alice):
    good = alice.session
    for value in (good.upper(), good[:-1], good + "0", f" {good}x", good.replace("a", "é", 1), "0x" + good[2:]):
        res = full_agent.client().get("/profile", headers={"X-Session": value})
        assert_error(res, 406, "Parameter 'X-Session' is malformed.")


def test_oversized_headers(full_agent, alice):
    """Request line and headers are limited to 64 KiB (cheroot's default is none): 413 JSON above."""
    assert_error(full_agent.client().get("/profile", headers={"X-Session": "a" * 60_000}), 406)
    assert_error(full_agent.client().get("/activity", headers={"X-Pgwarden-Key": "k" * 60_000}), 401, "Invalid key.")
    res = alice.get("/profile", headers={"X-Padding": "p" * 60_000})  # unrelated and big: ignored
    assert res.status == 200, res
    for name in ("X-Session", "X-Pgwarden-Key", "X-Padding"):
        assert_error(alice.get("/profile", headers={name: "a" * 70_000}), 413, "headers")
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))  # 100 kB in 1,000 headers
    assert_error(send_raw(full_agent, b"GET /status HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"), 413)


def test_repeated_session_or_key_headers_are_refused(full_agent, alice):
    session = alice.session.encode()
    for first, second in ((session, session), (session, b"0" * 64), (b"0" * 64, session)):
        res = raw_get(full_agent, b"/profile", b"X-Session: " + first, b"X-Session: " + second)
        assert_error(res, 406, "X-Session")
    key = KEY.encode()
    res = raw_get(full_agent, b"/activity", b"X-Pgwarden-Key: " + key, b"X-Pgwarden-Key: " + key)
    assert_error(res, 401, "Invalid key.")
    res = raw_get(full_agent, b"/activity", b"X-TemBoard-Agent-Key: wrong", b"X-TemBoard-Agent-Key: " + key)
    assert_error(res, 401, "Invalid key.")
    assert raw_get(full_agent, b"/profile", b"X-Session: " + session).status == 200


def test_headers_and_query_strings_not_utf8(full_agent):
    assert_error(raw_get(full_agent, b"/profile", b"X-Session: \xff\xfe"), 406, "X-Session")
    assert_error(raw_get(full_agent, b"/activity", b"X-Pgwarden-Key: \xff"), 401, "Invalid key.")
    key = b"X-Pgwarden-Key: " + KEY.encode()
    assert_error(raw_get(full_agent, b"/activity?limit=%FF", key), 400, "query string")
    assert_error(raw_get(full_agent, b"/activity?limit=abc", key), 406, "'limit'")


# -- URLs ----------------------------------------------------------------------------


def test_encoded_slashes_and_dots_never_reach_another_route(full_agent, alice):
    anon = full_agent.client()
    for path in ("/status/../profile", "/status/%2E%2E/profile", "/x/..%2F..%2Fprofile", "/status%2F..%2Fprofile"):
        res = anon.get(path)
        assert_error(res, 404)  # never the profile, never without credentials
    for path in ("/activity%2Fwaiting", "/maintenance%2Fpostgres", "/activity/%2E%2E/activity"):
        assert_error(alice.get(path), 404)
    for name in ("..", ".", "%2E%2E", "..%2F..%2Fetc%2Fpasswd"):
        assert_error(alice.get(f"/maintenance/{name}/schema/public"), 404, "not found")


def test_invalid_percent_encoding_and_nul(alice):
    assert_error(alice.get("/maintenance/%ZZ"), 404, "'%ZZ'")  # kept literally: no such database
    assert_error(alice.get("/maintenance/%FF%FE/schema/public"), (400, 404))
    assert_error(alice.get("/maintenance/post%00gres"), 404)


def test_requests_the_http_server_cannot_parse_are_answered_in_json(full_agent, alice):
    post = b"POST /activity/kill HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Session: " + alice.session.encode()
    for data in (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello on the plain port
        b"GET\r\n\r\n",
        b"GET /status HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nbroken header line\r\n\r\n",
        post + b"\r\nContent-Length: abc\r\n\r\n",
        post + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a chunk size that is not hexadecimal
        b"GET /st\xffatus HTTP/1.1\r\nHost: x\r\n\r\n",
    ):
        assert_error(send_raw(full_agent, data), (400, 404, 505))


def test_overlong_paths_and_query_strings(full_agent, alice):
    assert_error(alice.get("/maintenance/" + "d" * 60_000), 404)
    assert_error(alice.get("/maintenance/" + "d" * 100_000), (400, 414))  # above the 64 KiB limit
    assert_error(alice.get("/maintenance/postgres/schema/" + "s/" * 5_000 + "x"), 404)
    assert_error(alice.get("/" + "a" * 60_000), 404)
    res = alice.get("/activity?limit=1&" + "x=1&" * 10_000)
    assert res.status == 200, res
    assert_error(alice.get("/activity?limit=" + "9" * 10_000), 406, "'limit'")


def test_unknown_or_malformed_methods(full_agent, alice):
    session = b"X-Session: " + alice.session.encode()
    for method in (b"TRACE", b"CONNECT", b"PROPFIND", b"PUT", b"PATCH", b"DELETE", b"G\x01T"):
        for path in (b"/status", b"/activity", b"/maintenance/postgres/vacuum"):
            res = send_raw(full_agent, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + session + b"\r\n"
                           b"Connection: close\r\n\r\n")  # fmt: skip
            assert_error(res, 405)
    assert_error(send_raw(full_agent, b"get /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 400)
    assert_error(send_raw(full_agent, b"TRACE * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 400)
