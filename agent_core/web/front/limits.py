"""The front's bounds, the connection counts they are checked against, and
the rate-limited log of what they refuse.

- a global limit (``max_connections``) and a per-address limit
  (``max_connections_per_address``) on open connections, counted here
  (:class:`Accounting`, shared with the workers); what is done at a limit is
  :class:`~agent_core.web.front.manager.FrontManager`'s.
- every wait of the front has a deadline (the ``*_timeout`` and
  ``body_min_rate`` fields of :class:`Limits`) and every count a bound; what
  it closes is logged as counts once per interval (:class:`RateLog`), never a
  line per peer.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from agent_core.web.front.peer import Peer

log = logging.getLogger("pgwarden.http")

#: Seconds between two log lines about the same condition (connections
#: refused or closed at a deadline, descriptors exhausted).
LOG_INTERVAL = 60.0


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


class Accounting:
    """The open connections, in all and per address: part of
    :class:`~agent_core.web.front.manager.FrontManager`, which sets these
    attributes."""

    limits: Limits
    _lock: threading.Lock
    _open: int
    _per_address: dict[str, int]

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
