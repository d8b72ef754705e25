"""The network front: accepting, TLS handshakes and reading whole requests,
with deadlines and limits, before a worker thread is involved.

Why this replaces cheroot's ``ConnectionManager`` (cheroot 11.1):

- cheroot runs the TLS handshake in its one selector thread as a blocking
  call with the 30 s socket timeout: one peer that connects and sends
  nothing stops every other client for 30 s (a few of them, indefinitely).
- It hands a connection to a worker as soon as one byte is readable; the
  worker then reads the request line, headers and body with a per-``recv``
  timeout, so a peer sending a byte every few seconds holds a worker for as
  long as it likes, and ``threads`` such peers hold them all (slowloris).
- When descriptors run out, ``accept()`` fails with EMFILE on every loop and
  cheroot logs a traceback each time (158 MB of log in 35 s), spinning.
- It keeps at most 10 idle keep-alive connections and has no per-address
  limit.

:class:`FrontManager` is one thread with non-blocking sockets and a selector:

- **accept**: a global limit (``max_connections``) and a per-address limit
  (``max_connections_per_address``) on open connections. Over the
  per-address limit a new connection is closed at once; at the global limit
  the oldest idle keep-alive connection (else the oldest one still sending
  its request) is closed to make room, so a newcomer always gets in. When
  descriptors run out, accepting pauses briefly, idle connections are shed
  and the condition is logged once per :data:`LOG_INTERVAL`.
- **TLS handshake** driven non-blocking; closed when not complete within
  ``handshake_timeout`` of the connection.
- **request head** (request line and headers) read into a buffer until its
  empty line; closed with a 408 when not complete within ``header_timeout``
  of its first byte (of the connection for the first request): a total
  deadline, not a per-read timeout.
- **body** of a known length or chunked, read to its end; the deadline is
  ``header_timeout`` plus one second per ``body_min_rate`` bytes.
- only then is the connection given to a worker; the worker's reads are
  served from that buffer (:class:`BufferedInput`), so a worker never waits
  for a client to send. Its writes have a deadline too (:class:`Output`).
- a kept-alive connection comes back to this thread after its response and
  waits idle for at most ``keepalive_timeout``.

Every wait of the front has a deadline and every count a bound; what it
closes is logged as counts once per interval, never a line per peer.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from agent_core.web.errors import error_body

log = logging.getLogger("pgwarden.http")

#: Seconds between two log lines about the same condition (connections
#: refused or closed at a deadline, descriptors exhausted).
LOG_INTERVAL = 60.0
#: Seconds accepting pauses when the process is out of descriptors.
ACCEPT_PAUSE = 0.25
#: Most connections accepted in one wake-up (the rest wait in the backlog).
ACCEPT_BATCH = 64
#: How often deadlines are checked, in seconds.
SWEEP_INTERVAL = 0.2
#: Largest read from a socket at once.
READ_SIZE = 65536

_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_WAKE = object()
_LISTENER = object()

#: Seconds a connection answered with an error before its request was read
#: (408, plain HTTP on the TLS port) is drained before it is closed.
LINGER_TIME = 2.0

HANDSHAKE, HEAD, BODY, IDLE, BUSY, LINGER = "handshake", "head", "body", "idle", "busy", "linger"


@dataclass(frozen=True)
class Limits:
    """The front's bounds; every field is an ``[agent]`` option of the same name."""

    max_connections: int = 4096
    max_connections_per_address: int = 256
    handshake_timeout: float = 5.0
    header_timeout: float = 10.0
    body_min_rate: int = 1024
    keepalive_timeout: float = 30.0
    send_timeout: float = 30.0
    max_head: int = 64 * 1024
    max_body: int = 100 * 1024


class RateLog:
    """Counts events and logs them at most once per :data:`LOG_INTERVAL`."""

    def __init__(self, level: int = logging.WARNING, interval: float = LOG_INTERVAL):
        self.level = level
        self.interval = interval
        self.counts: dict[str, int] = {}
        self.last = 0.0
        self.lock = threading.Lock()

    def add(self, what: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1
            if now - self.last < self.interval and self.last:
                return
            counts, self.counts, self.last = self.counts, {}, now
        log.log(self.level, "front: %s", "; ".join(f"{n} x {w}" for w, n in sorted(counts.items())))

    def flush(self) -> None:
        with self.lock:
            counts, self.counts = self.counts, {}
        if counts:
            log.log(self.level, "front: %s", "; ".join(f"{n} x {w}" for w, n in sorted(counts.items())))


class BufferedInput:
    """The ``rfile`` a worker reads a request from: the bytes the front read,
    then (only for a request handed over before its end, which is answered
    with an error and closed) the socket, each read with ``timeout``."""

    def __init__(self, data: bytes, sock: socket.socket, timeout: float):
        self._buf = data
        self._pos = 0
        self._sock = sock
        self._timeout = timeout
        self.bytes_read = 0

    def has_data(self) -> bool:
        return self._pos < len(self._buf)

    def leftover(self) -> bytes:
        """What was read from the socket but not by the request (pipelined)."""
        return self._buf[self._pos :]

    def _fill(self) -> bool:
        self._sock.settimeout(self._timeout)
        chunk = self._sock.recv(READ_SIZE)
        if not chunk:
            return False
        self._buf = self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def _take(self, end: int) -> bytes:
        data = self._buf[self._pos : end]
        self._pos = end
        self.bytes_read += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buf))
        while len(self._buf) - self._pos < size and self._fill():
            pass
        return self._take(min(len(self._buf), self._pos + size))

    def readline(self, size: int | None = -1) -> bytes:
        while True:
            nl = self._buf.find(b"\n", self._pos)
            if nl >= 0 and (size is None or size < 0 or nl - self._pos < size):
                return self._take(nl + 1)
            if size is not None and size >= 0 and len(self._buf) - self._pos >= size:
                return self._take(self._pos + size)
            if not self._fill():
                return self._take(len(self._buf))

    def __iter__(self) -> BufferedInput:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """The socket belongs to the connection: nothing to close here."""


class Output:
    """The ``wfile`` a worker writes a response to.

    Writes are gathered and sent by :meth:`flush` (at the end of each
    request, see :class:`agent_core.web.server._Connection`, or once 64 KiB are
    waiting): cheroot writes the status and headers, then each piece of the
    body, and one send instead of two or more halves the system calls and,
    under TLS, the records and their encryption for a small JSON answer.

    Each send must be taken by the client within ``send_timeout`` plus one
    second per 64 KiB: a client that stops reading cannot hold a worker
    longer."""

    MIN_RATE = 64 * 1024
    FLUSH_AT = 64 * 1024

    def __init__(self, sock: socket.socket, send_timeout: float):
        self._sock = sock
        self._send_timeout = send_timeout
        self._pending: list[bytes] = []
        self._size = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> int:
        self._pending.append(bytes(data))
        self._size += len(data)
        if self._size >= self.FLUSH_AT:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._size = [], 0
        view = memoryview(data)
        deadline = time.monotonic() + self._send_timeout + len(view) / self.MIN_RATE
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not read the response in time")
            self._sock.settimeout(remaining)
            sent = self._sock.send(view)
            view = view[sent:]
        self.bytes_written += len(data)

    def discard(self) -> None:
        """Forget what was not sent (the connection is closing)."""
        self._pending, self._size = [], 0

    def close(self) -> None:
        """The socket belongs to the connection: nothing to close here."""


class Peer:
    """One client connection as the front sees it."""

    __slots__ = (
        "accepted",
        "address",
        "buf",
        "chunk_pos",
        "closed",
        "conn",
        "deadline",
        "events",
        "head_end",
        "need",
        "phase",
        "port",
        "scan",
        "sock",
        "ssl_env",
    )

    def __init__(self, sock: socket.socket, address: str, port: int, now: float):
        self.sock = sock
        self.address = address
        self.port = port
        self.phase = HEAD
        self.deadline = now
        self.buf = bytearray()
        self.scan = 0
        self.head_end = -1
        self.need: int | None = None  # bytes needed in buf; None: chunked, see chunk_pos
        self.chunk_pos = 0
        self.accepted = now
        self.conn: Any = None
        self.ssl_env: dict[str, Any] = {}
        self.closed = False
        self.events = selectors.EVENT_READ

    def reset(self) -> None:
        self.buf = bytearray()
        self.scan = 0
        self.head_end = -1
        self.need = None
        self.chunk_pos = 0


def _headers(head: bytes) -> dict[bytes, bytes]:
    """The header fields of a request head (names lower-cased; repeated ones joined)."""
    fields: dict[bytes, bytes] = {}
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        key = name.strip().lower()
        value = value.strip()
        fields[key] = fields[key] + b", " + value if key in fields else value
    return fields


def chunked_end(buf: bytearray | bytes, pos: int, limit: int) -> tuple[int, int | None]:
    """Walk a chunked body from ``pos``: (position reached, end of the body
    or None while incomplete). The end is -1 when the framing is malformed or
    the chunks exceed ``limit`` bytes: the worker then answers the error."""
    total = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return pos, (-1 if len(buf) - pos > 1024 else None)
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return pos, -1
        if size < 0:
            return pos, -1
        if size == 0:
            if buf[eol + 2 : eol + 4] == b"\r\n":
                return pos, eol + 4
            end = buf.find(b"\r\n\r\n", eol)
            if end < 0:
                return pos, (-1 if len(buf) - eol > 8192 else None)
            return pos, end + 4
        total += size
        if total > limit:
            return pos, -1
        nxt = eol + 2 + size + 2
        if len(buf) < nxt:
            return pos, None
        pos = nxt


def _json_response(status: str, message: str, close: bool = True) -> bytes:
    body = error_body(message).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode("latin-1") + body


class FrontManager:
    """Stands in for ``cheroot.connections.ConnectionManager`` (same methods
    used by ``cheroot.server.HTTPServer``: ``run``, ``stop``, ``close``,
    ``put``, ``can_add_keepalive_connection``)."""

    def __init__(self, server: Any, limits: Limits, tls_context: ssl.SSLContext | None, make_conn: Any):
        self.server = server
        self.limits = limits
        self.tls_context = tls_context
        self.make_conn = make_conn
        self._stop_requested = False
        self._serving = False
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._listener: socket.socket = server.socket
        self._listener.setblocking(False)
        self._listening = False
        self._listen()
        self._resume_at = 0.0
        self._pause = ACCEPT_PAUSE
        self._front: dict[int, Peer] = {}  # peers in the selector (this thread only)
        self._returned: deque[Any] = deque()  # connections given back by workers
        self._lock = threading.Lock()
        self._open = 0
        self._per_address: dict[str, int] = {}
        self.refused = RateLog(logging.WARNING)
        self.expired = RateLog(logging.INFO)
        self.starved = RateLog(logging.ERROR)
        self.stats = {
            "accepted": 0,
            "refused_full": 0,
            "refused_address": 0,
            "evicted": 0,
            "expired": 0,
            "descriptors": 0,
        }

    # -- counts, shared with the workers ------------------------------------

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def can_add_keepalive_connection(self) -> bool:
        return self._open <= self.limits.max_connections

    def _count_in(self, address: str) -> bool:
        with self._lock:
            if self._per_address.get(address, 0) >= self.limits.max_connections_per_address:
                return False
            self._per_address[address] = self._per_address.get(address, 0) + 1
            self._open += 1
            return True

    def forget(self, peer: Peer) -> None:
        """A connection is closed (from any thread): its counts go."""
        with self._lock:
            if peer.closed:
                return
            peer.closed = True
            self._open -= 1
            left = self._per_address.get(peer.address, 1) - 1
            if left > 0:
                self._per_address[peer.address] = left
            else:
                self._per_address.pop(peer.address, None)

    # -- the loop -------------------------------------------------------------

    def run(self, expiration_interval: float = 0.5) -> None:
        self._serving = True
        try:
            self._run()
        finally:
            self._serving = False

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_INTERVAL
        while not self._stop_requested:
            try:
                events = self._selector.select(SWEEP_INTERVAL)
            except OSError:  # a descriptor closed under the selector: drop it
                self._drop_invalid()
                continue
            for key, _ in events:
                data = key.data
                if data is _WAKE:
                    self._drain_wake()
                elif data is _LISTENER:
                    self._accept()
                else:
                    self._step(data)
            while self._returned:
                self._revive(self._returned.popleft())
            now = time.monotonic()
            if not self._listening and now >= self._resume_at:
                self._listen()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_INTERVAL

    def stop(self) -> None:
        self._stop_requested = True
        self._wake()
        deadline = time.monotonic() + 5
        while self._serving and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for peer in list(self._front.values()):
            self._close(peer)
        while self._returned:
            conn = self._returned.popleft()
            conn.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self.refused.flush()
        self.expired.flush()

    def put(self, conn: Any) -> None:
        """A worker is done with a kept-alive connection (any thread)."""
        self._returned.append(conn)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # a wake-up is pending already, or we are closing

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- accepting ------------------------------------------------------------

    def _listen(self) -> None:
        try:
            self._selector.register(self._listener, selectors.EVENT_READ, _LISTENER)
            self._listening = True
        except (KeyError, ValueError, OSError):
            self._listening = self._listener.fileno() >= 0

    def _pause_accepting(self, error: OSError) -> None:
        """Out of descriptors: stop accepting for a moment, shed idle
        connections, and say so once per interval."""
        self.stats["descriptors"] += 1
        if self._listening:
            try:
                self._selector.unregister(self._listener)
            except (KeyError, ValueError):
                pass
            self._listening = False
        self._resume_at = time.monotonic() + self._pause
        idle = sorted((p for p in self._front.values() if p.phase == IDLE), key=lambda p: p.deadline)
        for peer in idle[:16]:
            self._close(peer)
        self.starved.add(
            f"accept failed: {os.strerror(error.errno or 0)} ({self._open} connections open; "
            "raise LimitNOFILE or lower [agent] max_connections); accepting paused "
            f"{self._pause:g} s each time"
        )

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _NO_DESCRIPTORS:
                    self._pause_accepting(e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                self.starved.add(f"accept failed: {e}")
                return
            self._admit(sock, addr)

    def _admit(self, sock: socket.socket, addr: Any) -> None:
        address = str(addr[0]) if isinstance(addr, tuple) else "unix"
        port = int(addr[1]) if isinstance(addr, tuple) else 0
        now = time.monotonic()
        if self._open >= self.limits.max_connections and not self._evict():
            sock.close()
            self.stats["refused_full"] += 1
            self.refused.add(f"connection refused: {self.limits.max_connections} open (max_connections)")
            return
        if not self._count_in(address):
            sock.close()
            self.stats["refused_address"] += 1
            self.refused.add(
                f"connection from {address} refused: {self.limits.max_connections_per_address} open "
                "(max_connections_per_address)"
            )
            return
        self.stats["accepted"] += 1
        sock.setblocking(False)
        if self.tls_context is not None:
            try:
                sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                peer = Peer(sock, address, port, now)
                self._close(peer)
                return
            peer = Peer(sock, address, port, now)
            peer.phase = HANDSHAKE
            peer.deadline = now + self.limits.handshake_timeout
        else:
            peer = Peer(sock, address, port, now)
            peer.deadline = now + self.limits.header_timeout
        try:
            self._selector.register(sock, selectors.EVENT_READ, peer)
        except (ValueError, OSError):
            self._close(peer)
            return
        self._front[sock.fileno()] = peer

    def _evict(self) -> bool:
        """At the global limit: close the oldest idle connection, else the
        oldest one still handshaking or sending its request."""
        if not self._front:
            return False
        idle = [p for p in self._front.values() if p.phase == IDLE]
        victim = min(idle or self._front.values(), key=lambda p: p.deadline if p.phase == IDLE else p.accepted)
        self._close(victim)
        self.stats["evicted"] += 1
        self.refused.add(
            f"{'idle' if victim.phase == IDLE else 'incomplete'} connection closed to make room "
            f"(max_connections {self.limits.max_connections})"
        )
        return True

    # -- one connection -------------------------------------------------------

    def _set_events(self, peer: Peer, events: int) -> None:
        if peer.events != events:
            self._selector.modify(peer.sock, events, peer)
            peer.events = events

    def _step(self, peer: Peer) -> None:
        if peer.phase == HANDSHAKE:
            self._handshake(peer)
        elif peer.phase in (HEAD, BODY, IDLE):
            self._read(peer)
        elif peer.phase == LINGER:
            self._drain(peer)

    def _handshake(self, peer: Peer) -> None:
        sock: Any = peer.sock
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._set_events(peer, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._set_events(peer, selectors.EVENT_WRITE)
            return
        except ssl.SSLError as e:
            if getattr(e, "reason", None) == "HTTP_REQUEST":
                # plain HTTP on the TLS port: say so in plain HTTP (one write, never waited on)
                self.expired.add("plain HTTP on the TLS port")
                self._answer_and_linger(peer, "400 Bad Request", "This port speaks HTTPS only: use https://.")
                return
            self.expired.add(f"TLS handshake failed ({getattr(e, 'reason', None) or e.__class__.__name__})")
            self._close(peer)
            return
        except OSError:
            self._close(peer)
            return
        now = time.monotonic()
        peer.phase = HEAD
        peer.deadline = now + self.limits.header_timeout
        peer.ssl_env = self.server.ssl_adapter.get_environ(sock)
        self._set_events(peer, selectors.EVENT_READ)
        self._read(peer)  # the request may be decrypted already

    def _answer_and_linger(self, peer: Peer, status: str, message: str, tls: bool = False) -> None:
        """Send an error answer (one non-blocking write, never waited on; over
        TLS when ``tls``, else in plain text on the raw socket), then close
        gracefully: a close with unread bytes from the client would send a
        reset, and the client's kernel could drop the answer before it is
        read. So the sending side is shut and what the client still sends is
        read and discarded until it closes, or for :data:`LINGER_TIME`."""
        data = _json_response(status, message)
        try:
            if tls:
                peer.sock.send(data)
            else:
                os.write(peer.sock.fileno(), data)
            socket.socket.shutdown(peer.sock, socket.SHUT_WR)  # the raw socket's, not TLS's unwrap
        except (OSError, ssl.SSLError):
            self._close(peer)
            return
        peer.phase = LINGER
        peer.deadline = time.monotonic() + LINGER_TIME
        peer.buf = bytearray()
        self._set_events(peer, selectors.EVENT_READ)

    def _drain(self, peer: Peer) -> None:
        """A lingering connection: discard what arrives, close at its end."""
        for _ in range(16):
            try:
                chunk = socket.socket.recv(peer.sock, READ_SIZE)  # raw bytes: never decrypted
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                break
            if not chunk:
                break
        self._close(peer)

    def _read(self, peer: Peer) -> None:
        cap = self.limits.max_head + self.limits.max_body + 8192
        sock = peer.sock
        while len(peer.buf) <= cap:
            try:
                chunk = sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
                break
            except ssl.SSLWantWriteError:
                self._set_events(peer, selectors.EVENT_READ | selectors.EVENT_WRITE)
                return
            except OSError:
                self._close(peer)
                return
            if not chunk:
                self._close(peer)
                return
            if peer.phase == IDLE:
                peer.phase = HEAD
                peer.deadline = time.monotonic() + self.limits.header_timeout
            peer.buf += chunk
        self._set_events(peer, selectors.EVENT_READ)
        self._progress(peer)

    def _progress(self, peer: Peer) -> None:
        """Hand the connection over once its request is complete (or cannot
        be: too large, malformed — the worker then answers the error)."""
        buf = peer.buf
        limits = self.limits
        if peer.head_end < 0:
            if peer.scan == 0:
                # an empty line where a request line is expected is ignored (RFC 9112 2.2)
                while buf[:2] == b"\r\n":
                    del buf[:2]
            end = buf.find(b"\r\n\r\n", max(0, peer.scan - 3))
            if end < 0:
                peer.scan = len(buf)
                if len(buf) > limits.max_head:
                    self._hand_over(peer)
                return
            peer.head_end = end + 4
            fields = _headers(bytes(buf[:end]))
            coding = fields.get(b"transfer-encoding", b"").lower()
            if coding:
                if not coding.endswith(b"chunked"):
                    self._hand_over(peer)  # cheroot answers 501/400
                    return
                peer.need = None
                peer.chunk_pos = peer.head_end
            else:
                try:
                    length = int(fields.get(b"content-length", b"0"))
                except ValueError:
                    self._hand_over(peer)  # cheroot answers 400
                    return
                if length < 0 or length > limits.max_body:
                    self._hand_over(peer)  # 413 without reading the body
                    return
                peer.need = peer.head_end + length
                if len(buf) < peer.need:
                    peer.deadline = time.monotonic() + limits.header_timeout + length / limits.body_min_rate
            if b"100-continue" in fields.get(b"expect", b"").lower() and (peer.need is None or len(buf) < peer.need):
                self._continue(peer)
                if peer.closed:
                    return
            if peer.need is None:
                peer.deadline = time.monotonic() + limits.header_timeout + limits.max_body / limits.body_min_rate
            peer.phase = BODY
        if peer.need is not None:
            if len(buf) >= peer.need:
                self._hand_over(peer)
            return
        peer.chunk_pos, chunk_end = chunked_end(buf, peer.chunk_pos, limits.max_body)
        if chunk_end is not None:
            self._hand_over(peer)

    def _continue(self, peer: Peer) -> None:
        """``Expect: 100-continue``: answer it here (the client waits for it
        before sending its body) and remove it so cheroot does not answer it again."""
        head = bytes(peer.buf[: peer.head_end])
        lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:")]
        new_head = b"\r\n".join(lines)
        shift = len(head) - len(new_head)
        peer.buf[: peer.head_end] = new_head
        peer.head_end -= shift
        if peer.need is not None:
            peer.need -= shift
        else:
            peer.chunk_pos = peer.head_end
        try:
            peer.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        except (ssl.SSLWantWriteError, BlockingIOError, OSError):
            self._close(peer)

    def _hand_over(self, peer: Peer) -> None:
        """The request is read: a worker answers it."""
        self._unregister(peer)
        peer.phase = BUSY
        sock = peer.sock
        sock.settimeout(self.limits.send_timeout)
        if peer.conn is None:
            peer.conn = self.make_conn(self, peer)
        conn = peer.conn
        conn.rfile = BufferedInput(bytes(peer.buf), sock, self.limits.header_timeout)
        peer.reset()
        self.server.process_conn(conn)

    def _revive(self, conn: Any) -> None:
        """A worker answered and keeps the connection: wait for the next request."""
        peer: Peer = conn.peer
        if peer.closed:
            return
        leftover = conn.rfile.leftover() if isinstance(conn.rfile, BufferedInput) else b""
        now = time.monotonic()
        peer.reset()
        peer.buf += leftover
        if leftover:
            peer.phase = HEAD
            peer.deadline = now + self.limits.header_timeout
        else:
            peer.phase = IDLE
            peer.deadline = now + self.limits.keepalive_timeout
        try:
            peer.sock.setblocking(False)
            peer.events = selectors.EVENT_READ
            self._selector.register(peer.sock, selectors.EVENT_READ, peer)
        except (ValueError, OSError):
            conn.close()
            return
        self._front[peer.sock.fileno()] = peer
        self._read(peer)  # bytes already decrypted or buffered

    def _unregister(self, peer: Peer) -> None:
        try:
            fd = peer.sock.fileno()
            self._selector.unregister(peer.sock)
        except (KeyError, ValueError, OSError):
            fd = -1
        if fd >= 0:
            self._front.pop(fd, None)
        else:
            for key, value in list(self._front.items()):
                if value is peer:
                    del self._front[key]

    def _close(self, peer: Peer) -> None:
        self._unregister(peer)
        try:
            peer.sock.close()
        except OSError:
            pass
        self.forget(peer)

    def _sweep(self, now: float) -> None:
        for peer in [p for p in self._front.values() if p.deadline <= now]:
            if peer.phase == LINGER:
                self._close(peer)  # drained long enough
                continue
            self.stats["expired"] += 1
            if peer.phase == HANDSHAKE:
                self.expired.add(f"TLS handshake not complete within {self.limits.handshake_timeout:g} s")
            elif peer.phase in (HEAD, BODY):
                what = "request head" if peer.phase == HEAD else "request body"
                self.expired.add(f"{what} not received in time (header_timeout / body_min_rate)")
                if peer.buf:
                    tls = self.tls_context is not None
                    self._answer_and_linger(peer, "408 Request Timeout", "The request was not received in time.", tls)
                    continue
            # an idle keep-alive connection ending is ordinary: closed without a word
            self._close(peer)

    def _drop_invalid(self) -> None:
        for fd, peer in list(self._front.items()):
            try:
                os.fstat(fd)
            except OSError:
                self._close(peer)
