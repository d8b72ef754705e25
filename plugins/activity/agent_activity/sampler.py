"""Per-process CPU, memory and I/O of PostgreSQL backends, read with psutil.

Rates (CPU percent, bytes read and written per second) need two readings of a
process's counters. A request must not sleep to get them, so a background
thread (:meth:`Sampler.start`) reads the counters of every backend every
``interval`` seconds and keeps the last two readings of each process. A
request reads the counters once more, *now*, and divides the difference with
a kept reading by the time elapsed since it:

* the baseline is the newest kept reading at least ``interval / 2`` seconds
  old, so a rate always covers between ``interval / 2`` and ``1.5 * interval``
  seconds ending at the request (never a noisy few-millisecond window);
* readings are keyed by ``(pid, process start time)``: a pid reused by another
  process never inherits the counters of the previous one;
* a process with no kept reading old enough (seen for the first time, or
  started after the last sample) has no rate yet: ``None``, never a made-up 0;
* every sample keeps only the processes it saw: gone processes are pruned.

Requests use the background samples (:meth:`Sampler.latest`): reading
``/proc`` for every backend on every request cost most of ``GET /activity``
(about 85 % of it with 100 idle sessions). So the metrics a request shows are
those of the latest sample: CPU and I/O rates over the window between the
last two samples (``interval`` seconds), memory and I/O wait as of the latest
sample, so at most ``interval`` seconds (plus the time a sample takes) old.
A process not in the latest sample (a new backend) is read at request time:
memory and I/O wait at once, no rate until it has been sampled; one that has
exited since (its ``/proc/<pid>`` is gone) has no metrics. Metrics are
looked up by pid among the processes of the latest sample, which the
sampler identified by (pid, start time): a pid reused by another process
between the latest sample and the request (the whole pid space cycled within
``interval`` seconds) would show the previous process's figures until the
next sample. The rows themselves (who, what, state) always come from
PostgreSQL at request time. :meth:`Sampler.measure` reads at request time
instead (rates ending at the request, as described above).

Anything that cannot be read (the process exited meanwhile, ``/proc/<pid>/io``
is not readable because the agent runs neither as the PostgreSQL OS user nor
as root, the pid is not a local PostgreSQL process because PostgreSQL runs on
another host) gives ``None`` for that metric only; callers keep the row.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

import psutil

from agent_core.errors import first_line

log = logging.getLogger("pgwarden.activity.sampler")

#: Names (``/proc/<pid>/comm``) a PostgreSQL server process can have.
POSTGRES_NAMES = ("postgres", "postmaster")
_UNITS = ("K", "M", "G", "T", "P", "E")


def format_bytes(value: float) -> str:
    """Bytes as the reference agent shows them: two decimals and a 1024-based
    unit (``0.00B``, ``1023.00B``, ``1.50K``, ``2.00M``)."""
    sign = "-" if value < 0 else ""
    value = abs(float(value))
    for power in range(len(_UNITS), 0, -1):
        step = 1024.0**power
        if value >= step:
            return f"{sign}{value / step:.2f}{_UNITS[power - 1]}"
    return f"{sign}{value:.2f}B"


Key = tuple[int, float]


@dataclass(frozen=True)
class Reading:
    """The counters of one process at one instant (``None``: not readable)."""

    pid: int
    key: Optional[Key]  # (pid, create_time); None when the process could not be read
    at: float  # monotonic clock
    cpu: Optional[float] = None  # user + system CPU seconds
    rss: Optional[int] = None
    status: Optional[str] = None
    read_bytes: Optional[int] = None
    write_bytes: Optional[int] = None


@dataclass(frozen=True)
class Metrics:
    """What a row shows. ``None`` means unknown, never zero."""

    cpu: Optional[float] = None  # percent of one core
    memory: Optional[float] = None  # percent of RAM (resident set size)
    read_s: Optional[str] = None  # human-readable bytes per second
    write_s: Optional[str] = None
    iow: Optional[str] = None  # "Y" when in uninterruptible (disk) sleep

    def as_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory": self.memory, "read_s": self.read_s, "write_s": self.write_s, "iow": self.iow}


UNKNOWN = Metrics()


class Sampler:
    """Keeps recent readings of backend processes and turns them into rates.

    ``pids`` is called by the background thread to list the processes to
    sample (the backends of the instance); ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        interval: float,
        pids: Optional[Callable[[], Iterable[int]]] = None,
        *,
        names: Optional[tuple[str, ...]] = POSTGRES_NAMES,
        clock: Callable[[], float] = time.monotonic,
    ):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = float(interval)
        self.min_window = self.interval / 2
        self._pids = pids
        self._names = names
        self._clock = clock
        self._history: dict[Key, deque[Reading]] = {}
        self._latest: dict[int, Metrics] = {}  # by pid: the metrics of the latest sample
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._memory_total: Optional[int] = None
        self._last_error: Optional[str] = None
        self.samples = 0

    # -- reading ------------------------------------------------------------

    def memory_total(self) -> Optional[int]:
        if self._memory_total is None:
            try:
                self._memory_total = int(psutil.virtual_memory().total)
            except Exception:  # pragma: no cover - /proc/meminfo unreadable
                return None
        return self._memory_total

    def read(self, pid: int) -> Reading:
        """Read one process now. Never raises: what cannot be read is ``None``."""
        at = self._clock()
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if self._names is not None and proc.name() not in self._names:
                    # Not a PostgreSQL process of this host: its numbers would lie.
                    return Reading(pid, None, at)
                key = (pid, proc.create_time())
                times = proc.cpu_times()
                cpu = times.user + times.system
                status = proc.status()
                rss = proc.memory_info().rss
        except (psutil.Error, OSError, ValueError):
            return Reading(pid, None, at)
        read_bytes = write_bytes = None
        try:
            io = proc.io_counters()
            read_bytes, write_bytes = io.read_bytes, io.write_bytes
        except (psutil.Error, OSError, AttributeError):
            pass  # /proc/<pid>/io: owner or root only; or the process just exited
        return Reading(pid, key, at, cpu, rss, status, read_bytes, write_bytes)

    # -- background sampling --------------------------------------------------

    def record(self, readings: Iterable[Reading]) -> None:
        """Keep these readings and their metrics (rates against the kept ones);
        forget every process not among them (pruning)."""
        readings = [r for r in readings if r.key is not None]
        latest = {r.pid: self.metrics(r) for r in readings}
        fresh: dict[Key, deque[Reading]] = {}
        with self._lock:
            self._latest = latest
            for reading in readings:
                if reading.key is None:
                    continue
                kept = self._history.get(reading.key) or deque(maxlen=2)
                kept.append(reading)
                fresh[reading.key] = kept
            self._history = fresh
            self.samples += 1

    def tick(self) -> None:
        """One background sample of every process ``pids()`` lists."""
        if self._pids is None:
            return
        self._memory_total = None  # re-read once per sample (memory hot-plug)
        pids = list(self._pids())
        self.record(self.read(pid) for pid in pids)

    def tracked(self) -> set[Key]:
        """The (pid, start time) keys currently kept."""
        with self._lock:
            return set(self._history)

    def _loop(self) -> None:
        while True:
            try:
                self.tick()
                if self._last_error is not None:
                    log.info("activity sampler: sampling again")
                self._last_error = None
            except Exception as e:
                text = first_line(e)
                if text != self._last_error:
                    log.warning("activity sampler: cannot list backends: %s", text)
                self._last_error = text
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="pgwarden-activity-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    # -- request path ---------------------------------------------------------

    def _baseline(self, reading: Reading) -> Optional[Reading]:
        """The newest kept reading of the same process old enough for a rate."""
        with self._lock:
            kept = list(self._history.get(reading.key, ())) if reading.key is not None else []
        for old in reversed(kept):
            if reading.at - old.at >= self.min_window:
                return old
        return None

    def metrics(self, reading: Reading) -> Metrics:
        """Metrics of a fresh reading, rates against the kept baseline."""
        if reading.key is None:
            return UNKNOWN
        total = self.memory_total()
        memory = round(reading.rss * 100.0 / total, 2) if reading.rss is not None and total else None
        iow = None if reading.status is None else ("Y" if reading.status == psutil.STATUS_DISK_SLEEP else "N")
        cpu = read_s = write_s = None
        old = self._baseline(reading)
        if old is not None:
            elapsed = reading.at - old.at
            if reading.cpu is not None and old.cpu is not None:
                cpu = round(max(0.0, reading.cpu - old.cpu) * 100.0 / elapsed, 1)
            if reading.read_bytes is not None and old.read_bytes is not None:
                read_s = format_bytes(max(0, reading.read_bytes - old.read_bytes) / elapsed)
            if reading.write_bytes is not None and old.write_bytes is not None:
                write_s = format_bytes(max(0, reading.write_bytes - old.write_bytes) / elapsed)
        return Metrics(cpu, memory, read_s, write_s, iow)

    def measure(self, pids: Iterable[int]) -> dict[int, Metrics]:
        """Read each process now and return its metrics; no sleeping."""
        return {pid: self.metrics(self.read(pid)) for pid in pids}

    def latest(self, pids: Iterable[int]) -> dict[int, Metrics]:
        """The metrics of the latest background sample (at most ``interval``
        seconds old, see the module's docstring) for the processes that still
        exist (one ``stat`` of ``/proc/<pid>``); any other process is read now:
        nothing for one that has exited, no rate yet for a new one."""
        with self._lock:
            latest = self._latest
        return {pid: latest[pid] if pid in latest and _exists(pid) else self.metrics(self.read(pid)) for pid in pids}


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")
