"""The activity plugin's metrics in GET /metrics, from real backends and lock waits."""

from __future__ import annotations

from metrics_helpers import at, scrape

import agent_activity.plugin as activity_plugin


def test_backends_by_state_blocked_oldest_transaction_and_kills(make_agent, databases, backends):
    db = databases.create("actm", setup="CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t VALUES (1, 0)")
    running = make_agent(plugins={"activity": activity_plugin}, config={"agent": {"metrics_max_age": "0"}})
    holder = backends.open(db, autocommit=False)
    with holder.cursor() as cur:
        cur.execute("UPDATE t SET v = 1 WHERE id = 1")
    update = backends.run("UPDATE t SET v = 2 WHERE id = 1", dbname=db)
    backends.wait_state(update.pid, "active", "Lock")

    m = scrape(running)
    assert at(m, "pg_stat_activity_count", datname=db, state="idle in transaction") == 1
    assert at(m, "pg_stat_activity_count", datname=db, state="active") == 1
    assert at(m, "pg_stat_activity_max_tx_duration", datname=db, state="idle in transaction") > 0
    assert at(m, "pgwarden_activity_backends", state="active", wait_event_type="Lock") >= 1
    assert at(m, "pgwarden_activity_blocked_backends") >= 1
    assert at(m, "pgwarden_activity_oldest_xact_age_seconds") >= at(
        m, "pg_stat_activity_max_tx_duration", datname=db, state="idle in transaction"
    )
    assert at(m, "pgwarden_activity_kills_total", result="terminated") == 0

    res = running.login().post("/activity/kill", {"pids": [holder.info.backend_pid, 1]})
    assert res.status == 200, res
    update.join()
    m = scrape(running)
    assert at(m, "pgwarden_activity_kills_total", result="terminated") == 1
    assert at(m, "pgwarden_activity_kills_total", result="refused") == 1
    assert at(m, "pg_stat_activity_count", datname=db, state="idle in transaction") is None


def test_one_query_per_metrics_max_age_however_many_scrapes(make_agent):
    running = make_agent(plugins={"activity": activity_plugin}, config={"agent": {"metrics_max_age": "3600"}})
    for _ in range(5):
        assert at(scrape(running), "pgwarden_activity_blocked_backends") is not None
    assert running.agent.metrics.live_values.computed["activity.backends"] == 1
