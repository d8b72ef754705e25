"""Helpers of the dashboard plugin tests: requests as the UI sends them and
the shape of a sample, field by field (contract: temboard-9-ui.md, "Pages")."""

from __future__ import annotations

import math
from typing import Any

from agent_core.testing import KEY, wait_for

#: Fast sampling so samples pile up within a test.
INTERVAL = 0.2
#: How the temboard UIs send the key (beside ?key=).
KEY_HEADERS = {"X-TemBoard-Agent-Key": KEY}

CPU = ("user", "system", "idle", "iowait", "steal")
MEMORY = ("total", "free", "active", "cached", "total_bytes", "free_bytes", "active_bytes", "cached_bytes")
DATABASES = (
    "databases",
    "nb",
    "total_size",
    "total_size_bytes",
    "total_commit",
    "total_rollback",
    "commits_per_sec",
    "rollbacks_per_sec",
    "time",
    "timestamp",
)
SAMPLE = (
    "timestamp",
    "postgres",
    "pg_local",
    "buffers",
    "hitratio",
    "active_backends",
    "max_connections",
    "databases",
    "tps",
    "cpu",
    "loadaverage",
    "memory",
)


def get(running: Any, path: str) -> Any:
    """GET with the agent key as the UI sends it; asserts a JSON 200 and returns the body."""
    res = running.client().get(f"{path}?key={KEY}", headers=KEY_HEADERS)
    assert res.status == 200, res
    assert res.headers["Content-Type"].startswith("application/json"), res
    return res.json()


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def samples_until(running: Any, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
    """Polls GET /dashboard/history until ``predicate(history)`` holds; returns that history."""
    return wait_for(lambda: (h := get(running, "/dashboard/history")) and predicate(h) and h, timeout=timeout)


def check_local_system(sample: dict[str, Any]) -> None:
    """CPU, memory and load average of a host that runs PostgreSQL: numbers that add up."""
    assert sample["pg_local"] is True, sample
    cpu = sample["cpu"]
    assert sorted(cpu) == sorted(CPU), cpu
    if cpu["idle"] is not None:  # null only when no CPU time passed between two samples
        assert all(is_number(cpu[f]) and 0 <= cpu[f] <= 100 for f in CPU), cpu
        assert abs(sum(cpu.values()) - 100) < 0.6, cpu
    assert is_number(sample["loadaverage"]) and sample["loadaverage"] >= 0
    memory = sample["memory"]
    assert sorted(memory) == sorted(MEMORY), memory
    assert all(isinstance(memory[f], int) and memory[f] > 0 for f in ("total", "total_bytes", "free_bytes")), memory
    assert memory["total"] == memory["total_bytes"] // 1024  # kB, as the UI multiplies it by 1000
    assert memory["active_bytes"] + memory["free_bytes"] + memory["cached_bytes"] == memory["total_bytes"]
    assert abs(memory["active"] + memory["free"] + memory["cached"] - 100) < 0.2, memory
    assert memory["free"] == round(memory["free_bytes"] / memory["total_bytes"] * 100, 1)


def check_postgres(sample: dict[str, Any]) -> None:
    """The PostgreSQL figures of a sample taken while PostgreSQL answered."""
    assert sample["postgres"] == {"available": True, "error": None}, sample
    assert isinstance(sample["buffers"]["nb"], int) and sample["buffers"]["nb"] >= 0
    assert sample["hitratio"] is None or 0 <= sample["hitratio"] <= 100
    assert isinstance(sample["active_backends"]["nb"], int) and sample["active_backends"]["nb"] >= 0
    assert isinstance(sample["max_connections"], int) and sample["max_connections"] > 0
    db = sample["databases"]
    assert sorted(db) == sorted(DATABASES), db
    assert db["databases"] == db["nb"] and db["nb"] >= 1
    assert isinstance(db["total_size_bytes"], int) and db["total_size_bytes"] > 0
    assert isinstance(db["total_size"], str) and db["total_size"].split()[-1] in ("bytes", "kB", "MB", "GB", "TB")
    assert isinstance(db["total_commit"], int) and isinstance(db["total_rollback"], int)


def check_sample(sample: dict[str, Any]) -> None:
    """Every field of a sample of a local, running PostgreSQL."""
    assert list(sample)[: len(SAMPLE)] == list(SAMPLE), list(sample)
    assert is_number(sample["timestamp"])
    check_postgres(sample)
    check_local_system(sample)


def ui_tps(samples, last=None):
    """updateTps(): commits and rollbacks per second between samples, from the
    top-level ``timestamp`` and the cumulative counters, rounded up."""
    points = []
    if len(samples) > 1:
        last, samples = samples[0], samples[1:]
    for datum in samples:
        duration = datum["timestamp"] - last["timestamp"]
        if duration == 0:
            continue
        db, before = datum["databases"], last["databases"]
        points.append(
            (
                math.ceil((db["total_commit"] - before["total_commit"]) / duration),
                math.ceil((db["total_rollback"] - before["total_rollback"]) / duration),
            )
        )
        last = datum
    return points, last
