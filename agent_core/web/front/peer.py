"""One client connection as the front sees it: its phase, its buffer and
its deadline.

A connection goes through these phases: ``HANDSHAKE`` (TLS only), ``HEAD``
(request line and headers), ``BODY``, then ``BUSY`` while a worker answers it;
kept alive, it comes back ``IDLE``; answered with an error before its request
was read, it is ``LINGER`` (drained, then closed). Each phase but
``BUSY`` has a deadline (:mod:`agent_core.web.front.connection`).
"""

from __future__ import annotations

import selectors
import socket
from typing import Any

HANDSHAKE, HEAD, BODY, IDLE, BUSY, LINGER = "handshake", "head", "body", "idle", "busy", "linger"


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
