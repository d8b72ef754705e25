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
``Age`` header. At most :data:`MAX_ENTRIES` results are kept (least recently
used dropped first, expired ones dropped at the next request), so memory
stays bounded however many databases and schemas are read; the views keep a
schema's listing as its JSON text, several times smaller than the objects.
A maintenance operation forgets the results of its database when it ends.

``computed`` counts the computations actually run (tests read it: two
concurrent requests, one computation).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

#: Results kept at most, all keys together.
MAX_ENTRIES = 64


class _Flight:
    """One computation: its start, then its value or error."""

    def __init__(self, started: float):
        self.started = started
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.keep = True  # false once forgotten while running


class Flights:
    def __init__(self, max_age: float, max_entries: int = MAX_ENTRIES):
        self.max_age = max_age
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, _Flight] = OrderedDict()
        self._running: dict[Hashable, _Flight] = {}
        self._waiting: dict[Hashable, int] = {}
        self.computed = 0

    def get(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, float]:
        """``(value, age in seconds)`` for ``key``: a kept result younger than
        ``max_age``, the result of the computation running now, or
        ``compute()`` run here. An error of the computation is raised to every
        request that waited for it, and nothing is kept."""
        with self._lock:
            now = time.monotonic()
            self._trim(now)  # expired results are not kept a moment longer than needed
            kept = self._kept.get(key)
            if kept is not None and now - kept.started <= self.max_age:
                self._kept.move_to_end(key)
                return kept.value, now - kept.started
            flight = self._running.get(key)
            if flight is None:
                flight = self._running[key] = _Flight(now)
                self.computed += 1
                leading = True
            else:
                self._waiting[key] = self._waiting.get(key, 0) + 1
                leading = False
        if not leading:
            try:
                flight.done.wait()
            finally:
                with self._lock:
                    self._waiting[key] -= 1
                    if not self._waiting[key]:
                        del self._waiting[key]
            if flight.error is not None:
                raise flight.error
            return flight.value, time.monotonic() - flight.started
        try:
            flight.value = compute()
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                del self._running[key]
                if flight.error is None and flight.keep and self.max_age > 0:
                    self._kept[key] = flight
                    self._kept.move_to_end(key)
                    self._trim(time.monotonic())
            flight.done.set()
        return flight.value, time.monotonic() - flight.started

    def _trim(self, now: float) -> None:
        for key in [k for k, f in self._kept.items() if now - f.started > self.max_age]:
            del self._kept[key]
        while len(self._kept) > self.max_entries:
            self._kept.popitem(last=False)

    def waiting(self) -> int:
        """Requests waiting now for a computation another one runs."""
        with self._lock:
            return sum(self._waiting.values())

    def __len__(self) -> int:
        """Results kept now."""
        with self._lock:
            return len(self._kept)

    def forget(self, dbname: str) -> None:
        """Drop the results of database ``dbname`` (keys whose first item it
        is); one running now will not be kept."""
        with self._lock:
            for key in [k for k in self._kept if isinstance(k, tuple) and k[0] == dbname]:
                del self._kept[key]
            for key, flight in self._running.items():
                if isinstance(key, tuple) and key[0] == dbname:
                    flight.keep = False


_flights: weakref.WeakKeyDictionary[Any, Flights] = weakref.WeakKeyDictionary()
_flights_lock = threading.Lock()


def of(agent: Any) -> Flights:
    """The agent's :class:`Flights` (made on first use from its config)."""
    with _flights_lock:
        flights = _flights.get(agent)
        if flights is None:
            flights = _flights[agent] = Flights(agent.config.section("maintenance")["estimates_max_age"])
        return flights
