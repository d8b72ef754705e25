"""The background sampler: one sample of the instance every ``interval`` seconds,
the last ``history_length`` kept in memory.

One thread per agent, whatever the number of clients: requests only read what
it kept (:meth:`Sampler.latest`, :meth:`Sampler.history`), so a request never
queries PostgreSQL. A sample costs one SQL statement (:mod:`.queries`) plus
reading ``/proc`` through psutil (CPU times, memory, load average); the core
adds its own locality check (``agent.postgres.locality()``, kept 60 s).

- Rates (commits, rollbacks, TPS) are the differences of the cumulative
  counters of ``pg_stat_database`` between this sample and the previous one
  that reached PostgreSQL, divided by the time between the two statements
  (PostgreSQL's ``clock_timestamp()``); null for the first sample, and when a
  counter went down (statistics reset).
- CPU percentages cover the time since the previous sample (never a sleep):
  user (+nice), system (+irq, softirq), idle, iowait, steal.
- PostgreSQL on another host (``[postgresql] local = no``, or detected):
  CPU, memory and load average describe the agent's host, not PostgreSQL's,
  so they are null (the objects stay, with null figures).
- PostgreSQL unreachable: the sample is still taken and says so
  (``postgres.available`` false and the reason); its PostgreSQL figures are
  null, except ``databases``, which carries the last known one (its
  ``timestamp`` says when PostgreSQL read it) with null rates: the temboard
  9.x UI computes TPS from every sample's ``databases`` counters and stops
  drawing the page at a null one; null only when PostgreSQL was never
  reached. A statement that failed on a reachable server (a timeout) gives
  the same with ``available`` true and the error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import psutil

from agent_core.errors import PostgresUnavailable, first_line

from .queries import sample_statement

log = logging.getLogger("pgwarden.dashboard")

CPU_FIELDS = ("user", "system", "idle", "iowait", "steal")
MEMORY_FIELDS = ("total", "free", "active", "cached")


class CpuTimes(NamedTuple):
    user: float
    system: float
    idle: float
    iowait: float
    steal: float


def cpu_times() -> CpuTimes:
    """The host's CPU times in seconds, grouped as temboard shows them."""
    t = psutil.cpu_times()

    def f(name: str) -> float:
        return float(getattr(t, name, 0.0))

    return CpuTimes(
        user=f("user") + f("nice"),
        system=f("system") + f("irq") + f("softirq"),
        idle=f("idle"),
        iowait=f("iowait"),
        steal=f("steal"),
    )


def cpu_percent(before: Optional[CpuTimes], after: Optional[CpuTimes]) -> dict[str, Optional[float]]:
    """Share of each group of CPU time between two readings, in percent (one
    decimal); nulls without two readings or when no time passed."""
    if before is None or after is None:
        return dict.fromkeys(CPU_FIELDS)
    deltas = [max(0.0, a - b) for a, b in zip(after, before)]
    total = sum(deltas)
    if total <= 0:
        return dict.fromkeys(CPU_FIELDS)
    return {name: round(d / total * 100, 1) for name, d in zip(CPU_FIELDS, deltas)}


def memory_figures(total: int, free: int, cached: int) -> dict[str, Any]:
    """Memory as temboard's dashboard has it: ``total`` in kB, ``free``,
    ``active`` and ``cached`` in percent of it (they add up to 100), where
    ``active`` is what is neither free nor cache (``total - free - cached``,
    not the kernel's ``Active``); the same in bytes as ``*_bytes``."""
    active = max(0, total - free - cached)

    def pct(value: int) -> Optional[float]:
        return round(value / total * 100, 1) if total else None

    return {
        "total": total // 1024,
        "free": pct(free),
        "active": pct(active),
        "cached": pct(cached),
        "total_bytes": total,
        "free_bytes": free,
        "active_bytes": active,
        "cached_bytes": cached,
    }


def null_memory() -> dict[str, Any]:
    return dict.fromkeys((*MEMORY_FIELDS, *(f + "_bytes" for f in MEMORY_FIELDS)))


def rate(now: Optional[int], before: Optional[int], seconds: float) -> Optional[float]:
    """Per-second rate of a cumulative counter (three decimals); null when a
    reading is missing, no time passed or the counter went down (reset)."""
    if now is None or before is None or seconds <= 0 or now < before:
        return None
    return round((now - before) / seconds, 3)


def empty_sample(at: float) -> dict[str, Any]:
    """A sample with every figure null, in the shape of a real one (answered
    before the first sample is taken)."""
    return {
        "timestamp": at,
        "postgres": {"available": None, "error": None},
        "pg_local": None,
        "buffers": None,
        "hitratio": None,
        "active_backends": None,
        "max_connections": None,
        "databases": None,
        "tps": None,
        "cpu": dict.fromkeys(CPU_FIELDS),
        "loadaverage": None,
        "memory": null_memory(),
    }


class Sampler:
    """Takes a sample every ``interval`` seconds in a thread of its own."""

    def __init__(
        self,
        agent: Any,
        interval: float,
        history_length: int,
        clock: Callable[[], float] = time.time,
    ):
        self.agent = agent
        self.interval = interval
        self.clock = clock
        self._history: deque[dict[str, Any]] = deque(maxlen=history_length)
        #: (CPU seconds, wall seconds) of the last samples, for bench/dashboard.py
        self.costs: deque[tuple[float, float]] = deque(maxlen=history_length)
        #: PostgreSQL facts of the last sample that reached it, for the ``status`` of GET /dashboard
        self.facts: dict[str, Any] = {}
        self._counters: Optional[tuple[float, int, int]] = None  # (at, commits, rollbacks)
        #: ``databases`` of the last sample that reached PostgreSQL, carried by samples that did not
        self._databases: Optional[dict[str, Any]] = None
        self.first = threading.Event()
        self._cpu: Optional[CpuTimes] = None
        self._local: Optional[bool] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- reading (requests) -----------------------------------------------------

    def latest(self) -> Optional[dict[str, Any]]:
        with self._lock:
            return self._history[-1] if self._history else None

    def history(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._history)

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        self._cpu = self._read_cpu()
        self._thread = threading.Thread(target=self._run, name="pgwarden-dashboard-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # never let the thread die: the next interval tries again
                log.exception("dashboard sample failed")
            due += self.interval
            now = time.monotonic()
            if due < now:  # a sample took longer than the interval: skip the missed ones
                due = now
            self._stop.wait(due - now)

    # -- one sample -------------------------------------------------------------

    def sample(self) -> dict[str, Any]:
        """Take one sample, keep it and return it."""
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        at = self.clock()
        sample = empty_sample(at)
        try:
            row = self.agent.postgres.query(sample_statement(self.agent.postgres.server_version))[0]
        except Exception as e:  # PostgreSQL down; or up, but the statement failed (a timeout)
            down = isinstance(e, PostgresUnavailable)
            sample["postgres"] = {"available": not down, "error": first_line(e)}
            if down:
                self.facts = {**self.facts, "available": False}
            if self._databases is not None:
                sample["databases"] = {**self._databases, "commits_per_sec": None, "rollbacks_per_sec": None}
        else:
            sample["postgres"] = {"available": True, "error": None}
            self._postgres(sample, row, at)
        # PostgreSQL unreachable: no second attempt to reach it, the last known locality
        local = self._locality() if sample["postgres"]["available"] else self._local
        sample["pg_local"] = local
        if local:
            cpu = self._read_cpu()
            sample["cpu"] = cpu_percent(self._cpu, cpu)
            self._cpu = cpu
            sample["loadaverage"] = round(psutil.getloadavg()[0], 2)
            vm = psutil.virtual_memory()
            sample["memory"] = memory_figures(vm.total, vm.free, getattr(vm, "cached", 0))
        with self._lock:
            self._history.append(sample)
        self.first.set()
        self.costs.append((time.thread_time() - cpu0, time.perf_counter() - wall0))
        return sample

    def _postgres(self, sample: dict[str, Any], row: dict[str, Any], at: float) -> None:
        commits, rollbacks = row["total_commit"], row["total_rollback"]
        seconds = row["at"] - self._counters[0] if self._counters else 0.0
        commit_rate = rate(commits, self._counters[1] if self._counters else None, seconds)
        rollback_rate = rate(rollbacks, self._counters[2] if self._counters else None, seconds)
        if commits is not None and rollbacks is not None:
            self._counters = (row["at"], commits, rollbacks)
        hit, read = row["blks_hit"] or 0, row["blks_read"] or 0
        sample.update(
            {
                "buffers": {"nb": row["buffers_alloc"], "time": at},
                "hitratio": round(hit / (hit + read) * 100, 2) if hit + read else None,
                "active_backends": {"nb": row["active_backends"], "time": at},
                "max_connections": row["max_connections"],
                "databases": {
                    "databases": row["databases"],
                    "nb": row["databases"],
                    "total_size": row["total_size"],
                    "total_size_bytes": row["total_size_bytes"],
                    "total_commit": commits,
                    "total_rollback": rollbacks,
                    "commits_per_sec": commit_rate,
                    "rollbacks_per_sec": rollback_rate,
                    "time": time.strftime("%H:%M", time.localtime(at)),
                    # when PostgreSQL read the counters: the rates' time base
                    "timestamp": row["at"],
                },
                "tps": None if commit_rate is None or rollback_rate is None else round(commit_rate + rollback_rate, 3),
            }
        )
        self._databases = sample["databases"]
        self.facts = {
            "available": True,
            "start_time": row["start_time"],
            "is_standby": row["is_standby"],
            "pending_restart": row["pending_restart"],
            "primary": row["primary_host"],
        }

    def _locality(self) -> Optional[bool]:
        """Whether PostgreSQL runs on this host; the last known answer when it
        cannot be told now (PostgreSQL down), None if never known."""
        try:
            self._local = bool(self.agent.postgres.locality().local)
        except Exception as e:
            log.debug("locality unknown: %s", first_line(e))
        return self._local

    @staticmethod
    def _read_cpu() -> Optional[CpuTimes]:
        try:
            return cpu_times()
        except Exception as e:  # no /proc/stat (a sandbox)
            log.debug("CPU times unreadable: %s", first_line(e))
            return None
