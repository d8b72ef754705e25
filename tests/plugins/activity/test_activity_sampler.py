"""The sampler on real PostgreSQL backend processes: honest rates, pruning,
pid reuse, processes that are gone."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from agent_activity import service
from agent_activity.sampler import UNKNOWN, Reading, Sampler, format_bytes
from agent_core.testing import wait_for


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.00B"),
        (0.5, "0.50B"),
        (1023, "1023.00B"),
        (1024, "1.00K"),
        (1536, "1.50K"),
        (5 * 1024**2 + 1024**2 // 4, "5.25M"),
        (3 * 1024**3, "3.00G"),
        (2 * 1024**4, "2.00T"),
    ],
)
def test_format_bytes(value, text):
    assert format_bytes(value) == text


def test_a_first_reading_has_no_rate(backends):
    pid = backends.idle().info.backend_pid
    sampler = Sampler(0.2, lambda: [pid])

    first = sampler.measure([pid])[pid]
    assert (first.cpu, first.read_s, first.write_s) == (None, None, None), "never seen: no rate, not 0"
    assert 0 < first.memory < 100
    assert first.iow == "N"

    sampler.tick()
    assert sampler.measure([pid])[pid].cpu is None, "a window shorter than interval/2 gives no rate"

    time.sleep(sampler.min_window)
    later = sampler.measure([pid])[pid]
    assert later.cpu is not None and 0 <= later.cpu < 50
    assert later.read_s is not None and later.write_s is not None, "root reads /proc/<pid>/io"


def test_cpu_of_a_busy_backend_against_an_idle_one(backends):
    idle = backends.idle().info.backend_pid
    busy = backends.run("SELECT count(*) FROM generate_series(1, 2000000000)")
    backends.wait_state(busy.pid)
    sampler = Sampler(0.5, lambda: [idle, busy.pid])
    sampler.tick()
    time.sleep(0.6)
    metrics = sampler.measure([idle, busy.pid])
    # busy: a share of a core that an idle backend never shows (not "most of a
    # core": on a shared 2-core machine running the suites in parallel it got 25 %)
    assert metrics[busy.pid].cpu > 5, metrics[busy.pid]
    assert metrics[idle].cpu < 5, metrics[idle]


def test_a_reused_pid_never_inherits_counters(backends):
    pid = backends.idle().info.backend_pid
    sampler = Sampler(0.2)
    now = sampler.read(pid)
    assert now.key == (pid, psutil.Process(pid).create_time())
    # Counters kept for an earlier process that had the same pid (another start time).
    earlier = Reading(pid, (pid, now.key[1] - 60), now.at - 1, cpu=0.0, rss=1, status="sleeping")
    sampler.record([earlier])
    assert sampler.measure([pid])[pid].cpu is None
    # The same process kept one second ago gives a rate.
    sampler.record([Reading(pid, now.key, now.at - 1, cpu=now.cpu, rss=now.rss, status="sleeping")])
    assert sampler.measure([pid])[pid].cpu is not None


def test_gone_processes_are_pruned(backends):
    stays, leaves = backends.idle(), backends.idle()
    pids = [stays.info.backend_pid, leaves.info.backend_pid]
    sampler = Sampler(0.2, lambda: pids)
    sampler.tick()
    assert {pid for pid, _ in sampler.tracked()} == set(pids)
    leaves.close()
    wait_for(lambda: not psutil.pid_exists(pids[1]))
    sampler.tick()
    assert {pid for pid, _ in sampler.tracked()} == {pids[0]}


def test_a_process_gone_between_sql_and_proc_keeps_its_row(activity_agent, backends, unique):
    """The race of a request: the backend is listed by SQL, then exits before
    its /proc entry is read. Its row stays, with null metrics."""
    activity = service.get(activity_agent.agent)
    victim = backends.idle(f"SELECT 'leaving {unique}'")
    pid = victim.info.backend_pid
    with activity.cursor() as (cur, q):
        cur.execute(q.backends, {"own": activity.own_pids(), "idle": True, "limit": 1000})
        listed = cur.fetchall()
    assert pid in [r["pid"] for r in listed]
    victim.close()
    wait_for(lambda: not psutil.pid_exists(pid))

    rows = {row["pid"]: row for row in activity.with_metrics(listed)}

    assert rows[pid]["query"] == f"SELECT 'leaving {unique}'"
    assert rows[pid]["state"] == "idle"
    assert (rows[pid]["cpu"], rows[pid]["memory"], rows[pid]["read_s"], rows[pid]["write_s"], rows[pid]["iow"]) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert Sampler(0.2).measure([pid]) == {pid: UNKNOWN}


def test_a_process_that_is_not_postgres_gives_no_metrics():
    """A pid of the agent's host that is not PostgreSQL (PostgreSQL on another
    host, or a pid reused by another program) is not measured."""
    assert Sampler(0.2).measure([os.getpid()]) == {os.getpid(): UNKNOWN}
    anything = Sampler(0.2, names=None).measure([os.getpid()])[os.getpid()]
    assert anything.memory is not None


def test_background_thread_samples_and_survives_errors(backends):
    pid = backends.idle().info.backend_pid
    calls = []

    def pids():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("PostgreSQL is unavailable")
        return [pid]

    sampler = Sampler(0.1, pids)
    sampler.start()
    try:
        wait_for(lambda: sampler.samples >= 2, timeout=10)
        assert {p for p, _ in sampler.tracked()} == {pid}
    finally:
        sampler.stop()
    count = sampler.samples
    time.sleep(0.3)
    assert sampler.samples == count, "stopped"
