"""Bounded by design (issue 14): a kill request names at most ``kill_max_pids``
pids, the kill log keeps ``kills_max`` rows and ``kills_max_age`` seconds
(enforced as it is written), a store failure is answered, never swallowed after
the backends were signalled, and GET /activity pages with a cursor."""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

import agent_activity.plugin as activity_plugin
from agent_activity.store import PENDING, kills

#: pids no PostgreSQL backend has (refused, recorded)
FAKE = 2_000_000_000


def rows(running):
    with running.agent.store.engine.connect() as conn:
        return [r._asdict() for r in conn.execute(sa.select(kills).order_by(kills.c.id))]


def start(make_agent, **activity):
    return make_agent(plugins={"activity": activity_plugin}, config={"activity": activity})


def test_more_pids_than_kill_max_pids_is_400_and_nothing_is_signalled_or_recorded(make_agent, backends):
    running = start(make_agent, kill_max_pids=3)
    api = running.login()
    pids = [backends.idle().info.backend_pid for _ in range(4)]
    res = api.post("/activity/kill", {"pids": pids})
    assert res.status == 400 and set(res.json()) == {"error"} and "kill_max_pids" in res.json()["error"], res
    assert not any(backends.gone(pid) for pid in pids)
    assert rows(running) == []
    assert api.post("/activity/kill", {"pids": pids[:2] + pids[:2]}).status == 200  # distinct pids count
    assert backends.gone(pids[0]) and backends.gone(pids[1])


def test_the_kill_log_keeps_the_newest_kills_max_rows_as_it_is_written(make_agent):
    running = start(make_agent, kills_max=3)
    api = running.login()
    for n in range(4):  # bounded: 8 pids in 4 requests
        assert api.post("/activity/kill", {"pids": [FAKE + 2 * n, FAKE + 2 * n + 1]}).status == 200
    kept = rows(running)
    assert [r["pid"] for r in kept] == [FAKE + 5, FAKE + 6, FAKE + 7]
    assert all(r["reason"] == "not a backend of this PostgreSQL instance" for r in kept)


def test_rows_older_than_kills_max_age_are_deleted_by_the_next_request(make_agent):
    running = start(make_agent, kills_max_age=3600)
    api = running.login()
    with running.agent.store.begin() as conn:
        old = datetime.now(timezone.utc) - timedelta(hours=2)
        conn.execute(kills.insert().values(requested_at=old, requested_by="bob", pid=FAKE, killed=False))
    assert [r["pid"] for r in rows(running)] == [FAKE]
    assert api.post("/activity/kill", {"pids": [FAKE + 1]}).status == 200
    assert [r["pid"] for r in rows(running)] == [FAKE + 1]


def test_a_store_failing_before_the_kill_is_503_and_nothing_is_signalled(make_agent, backends):
    running = start(make_agent)
    api = running.login()
    pid = backends.idle().info.backend_pid
    with running.agent.store.begin() as conn:
        conn.exec_driver_sql("DROP TABLE activity_kills")
    res = api.post("/activity/kill", {"pids": [pid]})
    assert res.status == 503 and set(res.json()) == {"error"}, res
    assert "store" in res.json()["error"]
    assert not backends.gone(pid)


def test_a_store_failing_after_the_kill_is_answered_naming_what_was_done_in_short_log_lines(
    make_agent, backends, caplog
):
    running = start(make_agent)
    api = running.login()
    pid = backends.idle().info.backend_pid
    with running.agent.store.begin() as conn:  # the results cannot be written, the request can
        conn.exec_driver_sql(
            "CREATE TRIGGER no_results BEFORE UPDATE ON activity_kills BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    refused = [FAKE + n for n in range(900)]
    with caplog.at_level(logging.INFO):
        res = api.post("/activity/kill", {"pids": [pid, *refused]})
    assert res.status == 503 and set(res.json()) == {"error"}, res
    assert re.search(rf"1 of 901 backends terminated \({pid}\)", res.json()["error"]), res.json()
    assert backends.gone(pid)
    assert {r["reason"] for r in rows(running)} == {PENDING} and len(rows(running)) == 901
    assert max(len(r.getMessage()) for r in caplog.records) < 2000


def test_activity_pages_with_a_cursor(make_agent, backends):
    running = start(make_agent)
    api = running.login()
    for _ in range(3):
        backends.idle()
    total = len(api.get("/activity").json()["rows"])
    assert total >= 3
    first = api.get(f"/activity?limit={total - 1}")
    assert first.status == 200 and len(first.json()["rows"]) == total - 1
    cursor = first.headers["X-Next-Cursor"]
    assert first.headers["Link"] == f'</activity?limit={total - 1}&cursor={cursor}>; rel="next"'
    rest = api.get(f"/activity?cursor={cursor}")
    assert rest.status == 200 and len(rest.json()["rows"]) == 1 and "X-Next-Cursor" not in rest.headers
    for bad in ("x", "-1", "1.5", "99999999999"):
        res = api.get(f"/activity?cursor={bad}")
        assert res.status == 400 and set(res.json()) == {"error"}, (bad, res)
    assert api.get("/activity?limit=10001").status == 406  # above [agent] listing_limit_max
