"""The network front under hostile peers: silent sockets, half handshakes,
trickled headers and bodies, many idle and slow connections, per-address and
global limits, descriptors running out.

Every peer here is on loopback; attackers bind 127.0.0.x source addresses so
the per-address limit applies to them and not to the well-behaved client on
127.0.0.1. Every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import resource
import time
from typing import Any

import pytest

from agent_core.testing import KEY, wait_for
from agent_core.testing.peers import (
    client_hello,
    closed_by_server,
    closing_all,
    connect,
    hostile_crowd,
    source,
    timed_get,
    tls_connect,
    trickle_until_closed,
)
from agent_core.web.front import IDLE

trustme = pytest.importorskip("trustme", reason="trustme is not installed (make venv installs it)")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    d = tmp_path_factory.mktemp("front-certs")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    return {"tls_cert": str(d / "cert.pem"), "tls_key": str(d / "key.pem")}


def port_of(running: Any) -> int:
    return int(running.agent.server.port)


def test_silent_half_and_trickling_peers_do_not_block_others(make_agent, certs) -> None:
    """50 peers that send nothing, 50 stopped half-way through their
    ClientHello and 50 trickling their headers: fresh clients keep being
    answered (on cheroot's own manager the first silent peer blocked every
    handshake for 30 s)."""
    from agent_activity import plugin as activity

    running = make_agent(plugins={"activity": activity}, config={"agent": dict(certs)})
    port = port_of(running)
    timings: list[float] = []
    with hostile_crowd(port, silent=50, half=50, trickling=50):
        assert running.agent.server.fronts[0].open_connections >= 150
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            status, seconds = timed_get(port, "/status", tls=True)
            assert status == 200
            timings.append(seconds)
            status, seconds = timed_get(port, "/activity", tls=True, headers={"X-Pgwarden-Key": KEY})
            assert status == 200
            timings.append(seconds)
    timings.sort()
    print(
        f"{len(timings)} requests beside 150 hostile peers: p50 {timings[len(timings) // 2] * 1000:.1f} ms, "
        f"max {timings[-1] * 1000:.1f} ms"
    )
    assert len(timings) >= 4


def test_deadlines_close_silent_trickling_and_slow_body_peers(make_agent, certs) -> None:
    """A handshake, a request head and a body each have a total deadline, not
    a per-read timeout: a peer sending a byte every 0.2 s is closed all the same."""
    running = make_agent(
        config={"agent": {**certs, "handshake_timeout": 2, "header_timeout": 1, "body_min_rate": 1000}}
    )
    port = port_of(running)
    silent = connect(port)
    closed, _ = closed_by_server(silent, within=5)
    assert closed, "a peer that never starts its handshake is closed after handshake_timeout"
    silent.close()

    half = connect(port)
    half.sendall(client_hello()[:40])
    closed, _ = closed_by_server(half, within=5)
    assert closed, "a peer stopped half-way through its handshake is closed"
    half.close()

    with closing_all([tls_connect(port)]) as (trickle,):
        head = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-A: b\r\n" * 20
        closed, got = trickle_until_closed(trickle, head, 0.2, within=6)
    assert closed, "a head trickled a byte at a time is cut at header_timeout"
    assert b"408" in got.split(b"\r\n", 1)[0]
    assert json.loads(got.split(b"\r\n\r\n", 1)[1]) == {"error": "The request was not received in time."}

    slow = tls_connect(port)
    slow.sendall(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n"
    )
    with closing_all([slow]):
        closed, got = trickle_until_closed(slow, b"x" * 2000, 0.2, within=8)
    assert closed, "a body below body_min_rate is cut"
    assert b"408" in got.split(b"\r\n", 1)[0]

    # a client that is slow but within the deadlines is served
    ok = tls_connect(port)
    with closing_all([ok]):
        for piece in (b"GET /status HTT", b"P/1.1\r\nHost: 127.0.0.1\r\n", b"Connection: close\r\n\r\n"):
            ok.sendall(piece)
            time.sleep(0.2)
        _, got = closed_by_server(ok, within=5)
    assert got.startswith(b"HTTP/1.1 200"), got[:100]


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs an open-files hard limit of {needed} (ulimit -Hn is {hard})")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_thousand_idle_and_thousand_slow_connections_leave_room(make_agent) -> None:
    """1,000 idle keep-alive connections and 1,000 that never finish their
    request head, at once: a new client is served, and the idle ones are still
    usable (cheroot kept 10 idle connections and gave every slow peer a worker)."""
    _raise_open_files(6000)
    running = make_agent(config={"agent": {"header_timeout": 60}})
    port = port_of(running)
    request = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with closing_all([]) as idle, closing_all([]) as slow:
        for n in range(1000):
            s = connect(port, source(n))
            s.sendall(request)
            idle.append(s)
        for s in idle:
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        for n in range(1000, 2000):
            s = connect(port, source(n))
            s.sendall(b"GET /status HTTP/1.1\r\nHost: ")
            slow.append(s)
        front = running.agent.server.fronts[0]
        wait_for(lambda: front.open_connections >= 2000, timeout=20)
        for _ in range(20):
            status, _ = timed_get(port, "/status", tls=False)
            assert status == 200
        for s in idle[::100]:  # the idle connections were kept: a second request on them works
            s.sendall(request)
            assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_per_address_limit_closes_the_extra_connection(make_agent) -> None:
    running = make_agent(config={"agent": {"max_connections_per_address": 4}})
    port = port_of(running)
    with closing_all([connect(port, "127.0.0.7") for _ in range(4)]) as held:
        for s in held:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        extra = connect(port, "127.0.0.7")
        closed, got = closed_by_server(extra, within=5)
        extra.close()
        assert closed and got == b"", "the fifth connection from one address is closed at once"
        assert timed_get(port, "/status", tls=False)[0] == 200  # other addresses are served
        held.pop().close()

        def one_more() -> bool:
            s = connect(port, "127.0.0.7")
            with closing_all([s]):
                s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                _, got = closed_by_server(s, within=2)
                return got.startswith(b"HTTP/1.1 200")

        wait_for(one_more, timeout=10)  # a place freed is usable again


def _idle(running: Any) -> int:
    """Connections the agent's front holds idle (kept alive, back from a worker)."""
    return sum(peer.phase == IDLE for front in running.agent.server.fronts for peer in list(front._front.values()))


def test_global_limit_makes_room_by_closing_the_oldest_idle(make_agent) -> None:
    running = make_agent(config={"agent": {"max_connections": 16}})
    port = port_of(running)
    with closing_all([]) as idle:
        for n in range(16):
            s = connect(port, source(n * 50))
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
            idle.append(s)
            # idle once its worker handed it back: on a loaded machine, connection n could
            # otherwise come back after n + 1 and be the younger idle one
            wait_for(lambda n=n: _idle(running) == n + 1, timeout=10)
        assert timed_get(port, "/status", tls=False)[0] == 200
        closed, _ = closed_by_server(idle[0], within=5)
        assert closed, "the oldest idle connection made room for the new client"


def test_out_of_descriptors_backs_off_logs_once_and_recovers(agent_process) -> None:
    """An agent limited to 128 descriptors, flooded with 300 connections: it
    logs the condition once (no traceback per accept) and serves again once
    the flood's connections are closed at their deadline, by itself."""
    running = agent_process(open_files=128, header_timeout=2)
    port = int(running.url.rsplit(":", 1)[1])
    with closing_all([]) as flood:
        for n in range(300):
            try:
                flood.append(connect(port, source(n), timeout=2))
            except OSError:
                break
        time.sleep(1)
        wait_for(lambda: _answers(port), timeout=20)  # served again with the flood still connected
    log = running.log_text()
    accept_lines = [line for line in log.splitlines() if "accept failed" in line]
    assert 1 <= len(accept_lines) <= 2, accept_lines
    assert "Too many open files" in accept_lines[0]
    assert "Traceback" not in log


def _answers(port: int) -> bool:
    try:
        return timed_get(port, "/status", tls=False, timeout=8)[0] == 200
    except OSError:
        return False


def test_plain_http_on_the_tls_port_gets_a_json_400(make_agent, certs) -> None:
    running = make_agent(config={"agent": dict(certs)})
    s = connect(port_of(running))
    with closing_all([s]):
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        _, got = closed_by_server(s, within=5)
    assert got.startswith(b"HTTP/1.1 400"), got[:80]
    assert "HTTPS" in json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]
