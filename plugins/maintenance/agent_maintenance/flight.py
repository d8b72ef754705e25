"""Heavy reads run once at a time per database (or schema), shared and reused briefly.

The figures of a whole database (``GET /maintenance``, ``GET
/maintenance/<db>``) or of a schema (``GET /maintenance/<db>/schema/<s>``)
come from one statement over every table of it: on a large catalog, seconds
of work. :class:`Flights` makes sure that statement never runs more than once
at a time for the same key:

* a request arriving while it runs waits for its result (or its error);
* a request arriving less than ``[maintenance] estimates_max_age`` seconds
  after it *started* gets the same result, without a query;
* anything older is computed again, never served.

The age given with a result is the time since its statement started, so it
is never smaller than the figures' real age; the views send it as the HTTP
``Age`` header.

Memory is bounded by bytes, whatever the catalog: the kept results (and the
copies being recorded for them) hold at most ``[maintenance]
estimates_max_bytes`` bytes together (least recently used results dropped
first, expired ones dropped at the next request; a recording only uses the
room left), and at most :data:`MAX_ENTRIES` results. A schema's listing is *streamed* to its client
(:meth:`Flights.stream`) while its bytes are recorded; once the listing grows
past the bound the recording stops, the listing is not kept, and the
requests waiting for it compute their own, one at a time. A maintenance
operation forgets the results of its database when it ends.

``computed`` counts the computations actually run (tests read it: two
concurrent requests, one computation).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any

from agent_core.stash import Stash, StashKey

#: Results kept at most, all keys together.
MAX_ENTRIES = 64
#: Default of ``[maintenance] estimates_max_bytes``.
MAX_BYTES = 32 * 2**20


def json_size(value: Any) -> int:
    """Bytes of ``value`` as JSON: what a kept result is charged."""
    return len(json.dumps(value, default=str))


class _Flight:
    """One computation: its start, then its value or error."""

    def __init__(self, started: float):
        self.started = started
        self.done = threading.Event()
        self.value: Any = None
        self.size = 0
        self.error: BaseException | None = None
        self.keep = True  # false once forgotten while running
        self.kept = False  # a result waiting requests may use


class Flights:
    def __init__(self, max_age: float, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES):
        self.max_age = max_age
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, _Flight] = OrderedDict()
        self._running: dict[Hashable, _Flight] = {}
        self._waiting: dict[Hashable, int] = {}
        self._bytes = 0  # kept results + recordings in progress
        self.computed = 0

    # -- the common part: a kept result, a computation to wait for, or ours to run

    def _join(self, key: Hashable) -> tuple[str, Any, float]:
        """``("kept", value, age)``, ``("lead", flight, 0)`` or, after waiting for
        another request's computation, ``("done", flight, 0)``."""
        with self._lock:
            now = time.monotonic()
            self._trim(now)  # expired results are not kept a moment longer than needed
            kept = self._kept.get(key)
            if kept is not None and now - kept.started <= self.max_age:
                self._kept.move_to_end(key)
                return "kept", kept.value, now - kept.started
            flight = self._running.get(key)
            if flight is None:
                flight = self._running[key] = _Flight(now)
                self.computed += 1
                return "lead", flight, 0.0
            self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            flight.done.wait()
        finally:
            with self._lock:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]
        return "done", flight, 0.0

    def _lead(self, key: Hashable) -> tuple[_Flight | None, Any, float]:
        """``(None, value, age)`` when a result is kept or another request's
        computation gave one (its error is raised here); ``(flight, None, 0)``
        when this request computes: nothing kept, or the computation it waited
        for left nothing (returned nothing, too large to record, failed or
        abandoned while streamed)."""
        while True:
            how, found, age = self._join(key)
            if how == "kept":
                return None, found, age
            flight: _Flight = found
            if how == "lead":
                return flight, None, 0.0
            if flight.error is not None:
                raise flight.error
            if flight.value is not None:
                return None, flight.value, time.monotonic() - flight.started

    def _finish(self, key: Hashable, flight: _Flight, value: Any = None, size: int = 0, reserved: int = 0) -> None:
        """End ``flight``: keep ``value`` (``size`` bytes, of which ``reserved``
        are already charged) when it may be kept, release the rest, wake the
        waiting requests. Called once per flight."""
        with self._lock:
            if self._running.get(key) is flight:
                del self._running[key]
            self._bytes -= reserved
            flight.value = value  # for the requests waiting for it, kept or not
            if value is not None and flight.error is None and flight.keep and self.max_age > 0:
                if self._make_room(size):
                    flight.size, flight.kept = size, True
                    self._bytes += size
                    old = self._kept.pop(key, None)
                    if old is not None:
                        self._bytes -= old.size
                    self._kept[key] = flight
                    self._trim(time.monotonic())
        flight.done.set()

    def get(
        self, key: Hashable, compute: Callable[[], Any], size: Callable[[Any], int] = json_size
    ) -> tuple[Any, float]:
        """``(value, age in seconds)`` for ``key``: a kept result younger than
        ``max_age``, the result of the computation running now, or
        ``compute()`` run here. An error of the computation is raised to every
        request that waited for it, and nothing is kept. A value larger than
        ``max_bytes`` (``size(value)``) is answered but not kept."""
        flight, value, age = self._lead(key)
        if flight is None:
            return value, age
        try:
            value = compute()
        except BaseException as e:
            flight.error = e
            self._finish(key, flight)
            raise
        # larger than max_bytes: answered (to the waiting requests too), not kept
        self._finish(key, flight, value, size(value) if self.max_age > 0 else 0)
        return value, time.monotonic() - flight.started

    def stream(
        self, key: Hashable, start: Callable[[], Iterable[bytes]]
    ) -> tuple[tuple[bytes, ...] | _Recording, float]:
        """``(body, age)`` for ``key``: the chunks of a kept result (a tuple of
        bytes), or, computed here, the iterable ``start()`` returned (its
        ``close()`` releases what it holds), wrapped so that its chunks are
        recorded and kept once it ends complete, unless they exceed
        ``max_bytes``. ``start()`` should do the heavy work before returning
        (its error is raised to the requests waiting for it); a failure while
        iterating, a client gone or a listing too large end the computation
        without a kept result, and the waiting requests then compute their own,
        one at a time."""
        flight, kept, age = self._lead(key)
        if flight is None:
            return kept, age
        try:
            body = start()
        except BaseException as e:
            flight.error = e
            self._finish(key, flight)
            raise
        return _Recording(self, key, flight, body), time.monotonic() - flight.started

    def _make_room(self, n: int) -> bool:
        """Drop least recently used kept results until ``n`` more bytes fit (lock held)."""
        if n > self.max_bytes:
            return False
        while self._bytes + n > self.max_bytes and self._kept:
            _, old = self._kept.popitem(last=False)
            self._bytes -= old.size
        return self._bytes + n <= self.max_bytes

    def _reserve(self, n: int) -> bool:
        """Charge ``n`` bytes of a recording in progress, in the room left by
        fresh kept results (expired ones dropped first): a listing that turns
        out too large never evicts the others."""
        with self._lock:
            self._trim(time.monotonic())
            if self._bytes + n <= self.max_bytes:
                self._bytes += n
                return True
            return False

    def _trim(self, now: float) -> None:
        for key in [k for k, f in self._kept.items() if now - f.started > self.max_age]:
            self._bytes -= self._kept.pop(key).size
        while len(self._kept) > self.max_entries:
            self._bytes -= self._kept.popitem(last=False)[1].size

    def waiting(self) -> int:
        """Requests waiting now for a computation another one runs."""
        with self._lock:
            return sum(self._waiting.values())

    def __len__(self) -> int:
        """Results kept now."""
        with self._lock:
            return len(self._kept)

    @property
    def bytes(self) -> int:
        """Bytes held now by kept results and recordings in progress."""
        with self._lock:
            return self._bytes

    def forget(self, dbname: str) -> None:
        """Drop the results of database ``dbname`` (keys whose first item it
        is); one running now will not be kept."""
        with self._lock:
            for key in [k for k in self._kept if isinstance(k, tuple) and k[0] == dbname]:
                self._bytes -= self._kept.pop(key).size
            for key, flight in self._running.items():
                if isinstance(key, tuple) and key[0] == dbname:
                    flight.keep = False


class _Recording:
    """A streamed body whose chunks are recorded for :class:`Flights` while they
    are sent. Iterate it once; ``close()`` (the WSGI server calls it) ends it."""

    def __init__(self, flights: Flights, key: Hashable, flight: _Flight, body: Iterable[bytes]):
        self._flights = flights
        self._key = key
        self._flight: _Flight | None = flight
        self._body = body
        self._parts: list[bytes] | None = []
        self._reserved = 0
        self._ended = False

    def __iter__(self) -> Iterator[bytes]:
        complete = False
        try:
            for chunk in self._body:
                if self._parts is not None:
                    self._record(chunk)
                yield chunk
            complete = True
        finally:
            self._end(complete)

    def _record(self, chunk: bytes) -> None:
        n = len(chunk)
        if self._reserved + n <= self._flights.max_bytes and self._flights._reserve(n):
            self._reserved += n
            assert self._parts is not None
            self._parts.append(chunk)
            return
        # too large to keep: stop recording and let the waiting requests go now
        self._parts = None
        self._end(False)

    def _end(self, complete: bool) -> None:
        if self._ended:
            return
        self._ended = True
        parts, self._parts = self._parts, None
        value = tuple(parts) if complete and parts is not None else None
        flight, self._flight = self._flight, None  # bottle keeps the last body per thread: hold nothing
        assert flight is not None
        self._flights._finish(self._key, flight, value, self._reserved, self._reserved)
        self._reserved = 0

    def close(self) -> None:
        try:
            self._end(False)
        finally:
            body, self._body = self._body, ()
            close = getattr(body, "close", None)
            if close is not None:
                close()


#: The agent's :class:`Flights`.
KEY: StashKey[Flights] = StashKey("maintenance flights")
_of_lock = threading.Lock()


def of(agent: Any) -> Flights:
    """The agent's :class:`Flights` (made on first use from its config)."""
    stash: Stash = agent.stash
    with _of_lock:
        flights = stash.get(KEY, None)
        if flights is None:
            section = agent.config.section("maintenance")
            flights = stash[KEY] = Flights(section["estimates_max_age"], section["estimates_max_bytes"])
        return flights
