"""Login rate limiting: the failed-login :class:`Throttle` and the hashing :class:`LoginSlots`.

Logins are the one public route that costs real resources (an scrypt hash,
:mod:`agent_core.auth.passwords`). :meth:`agent_core.auth.sessions.Auth.login`
checks, cheapest first (nothing sleeps in a server thread), a user name's
length (400), then these two:

1. The throttle (:class:`Throttle`) may answer 429 with ``Retry-After``
   before any hash:

   * per user, whatever the address: from the third failure in a row the
     user name must wait 2^(n-3) seconds (capped at 5 minutes). Rotating
     client addresses does not help an attacker.
   * except from a *known-good* address: once a user logged in from an
     address, failures for that user from that address are counted apart
     (the same back-off, on their own counter), so an attacker guessing
     ``admin`` from elsewhere cannot lock the real admin out of their usual
     address. Known-good addresses are kept in memory (lost on restart), at
     most :data:`THROTTLE_ENTRIES`, least recently used forgotten first.
   * globally: at most ``[agent] login_failures`` failed logins per minute
     for the whole agent (a token bucket: a burst of that many, then one
     every 60/n seconds). When it is spent, logins from addresses not
     known-good for their user get 429 with ``Retry-After: 1`` (or the
     seconds to the next token) until a token is back. Spraying many names
     then costs at most that many hashes a minute. It slows rather than
     locks: it never blocks anyone for longer than one token's time after an
     attack stops, and a user at a known-good address is never held by it.
     The trade-off, chosen deliberately: during a spray, a legitimate user
     logging in from an address never used before competes with the
     attacker for those tokens and may get 429 until the attack stops.
   * failure counters live in one table of at most :data:`THROTTLE_ENTRIES`
     keys; the least recently used key is forgotten when it is full, never
     the whole table (a spray of names cannot reset everyone's back-off; at
     the global budget's pace, pushing out a counter the attacker keeps
     touching takes hours).
   * a successful login clears the counter it was counted on (the user's,
     or the user's at that known-good address) and makes its address
     known-good for the user.

2. At most ``[agent] login_concurrency`` hashes run at a time
   (:class:`LoginSlots`; default 1: on a 2-core box shared with PostgreSQL,
   at most one core and 16 MiB go to logins, still about 15 logins a
   second); up to :data:`LOGIN_QUEUE` more logins wait for a slot, at most
   :data:`LOGIN_WAIT` seconds; the others (and those whose wait ran out) get
   503 with ``Retry-After: 1``. Memory spent on hashing is so at most
   ``login_concurrency`` x 16 MiB, and the other server threads stay free
   for other requests. 503, not 429: the agent is busy, the client did
   nothing wrong (429 is the throttle's).

An unknown name is throttled like a known one, so 429s do not tell which
users exist.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agent_core.errors import Unavailable

#: Failures of one throttle key answered 401 before the back-off starts.
FREE_FAILURES = 2
#: Longest back-off of one throttle key, in seconds.
MAX_BACKOFF = 300
#: Throttle keys (user, or user at a known-good address) and known-good
#: (user, address) pairs kept, each; least recently used forgotten first.
THROTTLE_ENTRIES = 10000
#: Seconds a login waits for a hashing slot before 503.
LOGIN_WAIT = 2.0
#: Logins waiting for a hashing slot at most (each holds a server thread); more: 503 at once.
LOGIN_QUEUE = 4


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class Throttle:
    """Failed-login back-off per user (per user and address at a known-good
    address), a global failure budget, bounded tables; see the module's
    docstring. ``clock`` is injectable (tests)."""

    def __init__(
        self, failures_per_minute: int = 60, entries: int = THROTTLE_ENTRIES, clock: Any = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries = entries
        # key: (username, address) at a known-good address, else (username, "")
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = float(failures_per_minute)
        self._rate = failures_per_minute / 60.0  # tokens per second
        self._tokens = self._capacity
        self._refilled = clock()

    def _key(self, username: str, address: str) -> tuple[tuple[str, str], bool]:
        """(the counter's key, whether the address is known-good for the user). Under the lock."""
        if (username, address) in self._known:
            self._known.move_to_end((username, address))
            return (username, address), True
        return (username, ""), False

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def retry_after(self, username: str, address: str) -> int:
        """Seconds to wait before this login may be tried (0: now)."""
        with self._lock:
            now = self._clock()
            key, known = self._key(username, address)
            f = self._failures.get(key)
            wait = f.blocked_until - now if f is not None else 0.0
            if not known:
                self._refill(now)
                if self._tokens < 1:
                    wait = max(wait, (1 - self._tokens) / self._rate)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            key, known = self._key(username, address)
            if not known:
                self._refill(now)
                self._tokens -= 1  # may go below 0 by the logins hashed at once: they wait longer
            f = self._failures.get(key)
            if f is None:
                f = self._failures[key] = _Failures()
                while len(self._failures) > self._entries:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(key)
            f.count += 1
            if f.count > FREE_FAILURES:
                delay = min(MAX_BACKOFF, 2 ** min(f.count - FREE_FAILURES - 1, 20))
                f.blocked_until = now + delay

    def succeeded(self, username: str, address: str) -> None:
        """Clear the counter this login was counted on; the address becomes known-good for the user."""
        with self._lock:
            key, _known = self._key(username, address)
            self._failures.pop(key, None)
            self._known[(username, address)] = None
            self._known.move_to_end((username, address))
            while len(self._known) > self._entries:
                self._known.popitem(last=False)

    def size(self) -> tuple[int, int]:
        """(failure counters, known-good pairs) kept."""
        with self._lock:
            return len(self._failures), len(self._known)


class LoginSlots:
    """At most ``concurrency`` password hashes at a time; at most ``queue``
    more logins waiting (up to ``wait`` seconds) for a slot; 503 otherwise."""

    def __init__(self, concurrency: int, wait: float = LOGIN_WAIT, queue: int = LOGIN_QUEUE):
        self._slots = threading.BoundedSemaphore(concurrency)
        self._waiting = threading.BoundedSemaphore(concurrency + queue)  # hashing + waiting
        self._wait = wait

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        busy = Unavailable("Too many logins at once: retry later.", retry_after=1)
        if not self._waiting.acquire(blocking=False):
            raise busy
        try:
            if not self._slots.acquire(timeout=self._wait):
                raise busy
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._waiting.release()
