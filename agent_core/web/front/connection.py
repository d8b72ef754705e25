"""What the front does with one connection, phase by phase, each with a
deadline, until a worker is given a complete request:

- **TLS handshake** driven non-blocking; closed when not complete within
  ``handshake_timeout`` of the connection.
- **request head** (request line and headers) read into a buffer until its
  empty line; closed with a 408 when not complete within ``header_timeout``
  of its first byte (of the connection for the first request): a total
  deadline, not a per-read timeout.
- **body** of a known length or chunked, read to its end; the deadline is
  ``header_timeout`` plus one second per ``body_min_rate`` bytes.
- only then is the connection given to a worker; the worker's reads are
  served from that buffer (:class:`~agent_core.web.front.buffers.BufferedInput`),
  so a worker never waits for a client to send. Its writes have a deadline
  too (:class:`~agent_core.web.front.buffers.Output`).
- a kept-alive connection comes back to this thread after its response and
  waits idle for at most ``keepalive_timeout``.
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import time
from typing import Any

from agent_core.web.front.buffers import READ_SIZE, BufferedInput
from agent_core.web.front.framing import _headers, _json_response, chunked_end
from agent_core.web.front.limits import Accounting, RateLog
from agent_core.web.front.peer import BODY, BUSY, HANDSHAKE, HEAD, IDLE, LINGER, Peer

#: Seconds a connection answered with an error before its request was read
#: (408, plain HTTP on the TLS port) is drained before it is closed.
LINGER_TIME = 2.0


class Connections(Accounting):
    """The steps of one connection in the selector thread: part of
    :class:`~agent_core.web.front.manager.FrontManager`, which sets these
    attributes."""

    server: Any
    tls_context: ssl.SSLContext | None
    make_conn: Any
    _selector: selectors.BaseSelector
    _front: dict[int, Peer]
    expired: RateLog
    stats: dict[str, int]

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
