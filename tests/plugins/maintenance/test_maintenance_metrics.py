"""The maintenance plugin's metrics in GET /metrics: sizes from the kept
figures, refreshed in the background at most once per estimates_max_age."""

from __future__ import annotations

from maintenance_helpers import ONE_TABLE, run
from metrics_helpers import at, scrape

from agent_core.testing import KEY, wait_for
from agent_maintenance import flight


def test_database_size_is_pg_database_size_and_bloat_is_shown(start_agent, databases, pg_cluster):
    db = databases.create("mmet", setup=ONE_TABLE)
    running = start_agent(maintenance={"estimates_max_age": "3600"})
    m = wait_for(lambda: (s := scrape(running)) and at(s, "pg_database_size_bytes", datname=db) and s)
    size = pg_cluster.execute("SELECT pg_database_size(%s)", (db,))[0][0]
    assert at(m, "pg_database_size_bytes", datname=db) == size
    assert at(m, "pgwarden_maintenance_bloat_bytes", datname=db, kind="table") is not None
    assert at(m, "pgwarden_maintenance_estimates_age_seconds") >= 0
    # the same figures as GET /maintenance, not computed again for it
    entry = next(e for e in running.client().get(f"/maintenance?key={KEY}").json()["databases"] if e["datname"] == db)
    assert entry["total_bytes"] == size


def test_scrapes_never_compute_estimates_more_often_than_estimates_max_age(start_agent, databases):
    databases.create("mmet", setup=ONE_TABLE)
    running = start_agent(maintenance={"estimates_max_age": "3600"})
    collector = next(c.collector for c in running.agent.metrics.registry._collector_to_names if hasattr(c, "plugin"))
    wait_for(lambda: scrape(running) and collector._read_at is not None)
    computed = flight.of(running.agent).computed
    for _ in range(10):
        scrape(running)
    assert collector.refreshes == 1
    assert flight.of(running.agent).computed == computed  # no statement ran again


def test_operations_by_kind_and_status(start_agent, databases):
    db = databases.create("mmet", setup=ONE_TABLE)
    running = start_agent(agent={"metrics_max_age": "0"})
    api = running.login()
    assert run(api, f"/maintenance/{db}/vacuum", "vacuum")["status"] == "done"
    m = scrape(running)
    assert at(m, "pgwarden_maintenance_operations", kind="vacuum", status="done") == 1
    assert at(m, "pgwarden_maintenance_operations", kind="analyze", status="todo") == 0
