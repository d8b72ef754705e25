"""Commits, rollbacks and TPS per second from real transactions, consistent
with the cumulative counters; the history bound. Real PostgreSQL."""

from __future__ import annotations

import pytest
from dashboard_helpers import get, samples_until

COMMITS = 300
ROLLBACKS = 40


def test_rates_from_real_commits_and_rollbacks(dashboard_agent, pg_cluster, databases):
    db = databases.create("dash_rates", setup="CREATE TABLE t (id int)")
    base = samples_until(dashboard_agent, lambda h: len(h) >= 2)[-1]["databases"]
    conn = pg_cluster.connect(db)
    conn.autocommit = True  # each INSERT is a transaction committed; BEGIN ... ROLLBACK one rolled back
    try:
        with conn.cursor() as cur:
            for i in range(COMMITS):
                cur.execute("INSERT INTO t VALUES (%s)", (i,))
            for i in range(ROLLBACKS):
                cur.execute("BEGIN")
                cur.execute("INSERT INTO t VALUES (%s)", (i,))
                cur.execute("ROLLBACK")
    finally:
        conn.close()  # a session's statistics reach pg_stat_database at the latest when it ends

    def reached(history):
        last = history[-1]["databases"]
        return (
            last["total_commit"] >= base["total_commit"] + COMMITS
            and last["total_rollback"] >= base["total_rollback"] + ROLLBACKS
        )

    history = samples_until(dashboard_agent, reached)
    after = [s for s in history if s["databases"]["timestamp"] > base["timestamp"]]
    assert max(s["databases"]["commits_per_sec"] for s in after) > 0
    assert max(s["databases"]["rollbacks_per_sec"] for s in after) > 0
    # each rate is the difference of the counters over the time between the two statements
    for before, now in zip(history, history[1:]):
        b, n = before["databases"], now["databases"]
        seconds = n["timestamp"] - b["timestamp"]
        assert n["commits_per_sec"] == pytest.approx((n["total_commit"] - b["total_commit"]) / seconds, abs=0.002)
        assert n["rollbacks_per_sec"] == pytest.approx((n["total_rollback"] - b["total_rollback"]) / seconds, abs=0.002)
        assert now["tps"] == pytest.approx(n["commits_per_sec"] + n["rollbacks_per_sec"], abs=0.002)
    # so the rates, integrated over the window, give back every commit made
    counted = sum(
        n["databases"]["commits_per_sec"] * (n["databases"]["timestamp"] - b["databases"]["timestamp"])
        for b, n in zip(history, history[1:])
        if n["databases"]["timestamp"] > base["timestamp"]
    )
    assert counted == pytest.approx(history[-1]["databases"]["total_commit"] - base["total_commit"], abs=1)
    assert counted >= COMMITS - 1


def test_first_sample_has_no_rate(dashboard_agent):
    first = samples_until(dashboard_agent, lambda h: len(h) >= 1)[0]
    assert first["databases"]["commits_per_sec"] is None and first["tps"] is None


def test_history_keeps_the_last_history_length_samples(make_agent, plugin):
    running = make_agent(plugins={"dashboard": plugin}, config={"dashboard": {"interval": 0.1, "history_length": 5}})
    full = samples_until(running, lambda h: len(h) == 5)
    later = samples_until(running, lambda h: h[0]["timestamp"] > full[-1]["timestamp"])
    assert len(later) == 5, "never more than history_length"
    stamps = [s["timestamp"] for s in later]
    assert stamps == sorted(stamps)
    assert get(running, "/dashboard")["timestamp"] >= stamps[-1]


def test_restart_starts_an_empty_history(make_agent, plugin):
    running = make_agent(plugins={"dashboard": plugin}, config={"dashboard": {"interval": 0.2}})
    old = samples_until(running, lambda h: len(h) >= 3)
    running.restart()
    new = get(running, "/dashboard/history")
    assert all(s["timestamp"] > old[-1]["timestamp"] for s in new)
    assert len(new) < 3
