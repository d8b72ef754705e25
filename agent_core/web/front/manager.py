""":class:`FrontManager` is one thread with non-blocking sockets and a selector:

- **accept**: a global limit (``max_connections``) and a per-address limit
  (``max_connections_per_address``) on open connections. Over the
  per-address limit a new connection is closed at once; at the global limit
  the oldest idle keep-alive connection (else the oldest one still sending
  its request) is closed to make room, so a newcomer always gets in. When
  descriptors run out, accepting pauses briefly, idle connections are shed
  and the condition is logged once per :data:`~agent_core.web.front.limits.LOG_INTERVAL`.
- then each connection goes through its phases, each with a deadline
  (:mod:`agent_core.web.front.connection`), until a worker answers it; a
  worker gives a kept-alive connection back with :meth:`FrontManager.put`.
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
from typing import Any

from agent_core.web.front.connection import Connections
from agent_core.web.front.limits import Limits, RateLog
from agent_core.web.front.peer import HANDSHAKE, IDLE, Peer

#: Seconds accepting pauses when the process is out of descriptors.
ACCEPT_PAUSE = 0.25
#: Most connections accepted in one wake-up (the rest wait in the backlog).
ACCEPT_BATCH = 64
#: How often deadlines are checked, in seconds.
SWEEP_INTERVAL = 0.2

_NO_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_WAKE = object()
_LISTENER = object()


class FrontManager(Connections):
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
