"""Network peers for tests and benchmarks of the network front: well-behaved
clients timed on fresh connections, and hostile ones (silent, stopped half-way
through a TLS handshake, trickling bytes). Loopback only: every helper
connects to 127.0.0.1, and hostile peers bind 127.0.x.y source addresses so
that the per-address connection limit applies to them and not to the client
being measured on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any


@functools.cache
def client_context() -> ssl.SSLContext:
    """A TLS client context that does not verify (test certificates). Made
    once: making one loads the system's CA store (about 20 ms), which would
    otherwise be counted in every timed request."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_hello() -> bytes:
    """The first flight of a real TLS client (its ClientHello)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context().wrap_bio(incoming, outgoing, server_side=False)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def source(n: int, per_address: int = 50) -> str:
    """The source address of the ``n``-th hostile peer: ``per_address`` peers
    per address, from 127.0.1.2 on (never 127.0.0.1)."""
    index = n // per_address
    return f"127.0.{1 + index // 250}.{2 + index % 250}"


def connect(port: int, source_address: str = "127.0.0.1", timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source_address, 0))


def tls_connect(port: int, source_address: str = "127.0.0.1", timeout: float = 10) -> ssl.SSLSocket:
    return client_context().wrap_socket(connect(port, source_address, timeout))


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``within`` seconds, and what it sent."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except OSError:  # reset, TLS alert
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def trickle_until_closed(sock: socket.socket, data: bytes, interval: float, within: float) -> tuple[bool, bytes]:
    """Send ``data`` a byte every ``interval`` seconds while reading what the
    server sends, in this one thread (an ``SSLSocket`` must not be read and
    written from two threads at once): whether the server closed the
    connection within ``within`` seconds, and what it sent."""
    got = b""
    sent = 0
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sent < len(data):
            try:
                sock.send(data[sent : sent + 1])
                sent += 1
            except OSError:  # the server closed: read what it said
                pass
        sock.settimeout(interval)
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except OSError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def timed_get(
    port: int, path: str, tls: bool, timeout: float = 5, headers: dict[str, str] | None = None
) -> tuple[int, float]:
    """One GET on a new connection from 127.0.0.1: (status, seconds)."""
    started = time.monotonic()
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=client_context())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        res = conn.getresponse()
        res.read()
        return res.status, time.monotonic() - started
    finally:
        conn.close()


class Trickler:
    """Sends the next byte of ``data`` on every socket each ``interval``
    seconds, in one thread, until the data ends or :meth:`close`."""

    def __init__(self, socks: Sequence[socket.socket], data: bytes, interval: float):
        self.socks = socks
        self.data = data
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i in range(len(self.data)):
            if self.stop.wait(self.interval):
                return
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.send(self.data[i : i + 1])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@contextlib.contextmanager
def closing_all(socks: list[Any]) -> Iterator[list[Any]]:
    """``socks`` (filled by the caller), all closed on exit."""
    try:
        yield socks
    finally:
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def hostile_crowd(port: int, silent: int, half: int, trickling: int, first: int = 0) -> Iterator[list[socket.socket]]:
    """``silent`` peers that never send a byte, ``half`` that stop half-way
    through their ClientHello and ``trickling`` that complete a TLS handshake
    and send a request head a byte every half second; all closed on exit."""
    hello = client_hello()
    head = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 256 + b"\r\n\r\n"
    n = first
    with closing_all([]) as socks:
        for _ in range(silent):
            socks.append(connect(port, source(n)))
            n += 1
        for _ in range(half):
            s = connect(port, source(n))
            s.sendall(hello[: len(hello) // 2])
            socks.append(s)
            n += 1
        slow: list[socket.socket] = []
        for _ in range(trickling):
            slow.append(tls_connect(port, source(n)))
            n += 1
        socks.extend(slow)
        trickler = Trickler(slow, head, 0.5)
        try:
            yield socks
        finally:
            trickler.close()
