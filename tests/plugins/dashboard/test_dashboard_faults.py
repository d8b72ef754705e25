"""PostgreSQL on another host (system figures null, the rest works) and
PostgreSQL down (samples say so, the routes answer 200 with what is known,
and recover without a restart)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_helpers import CPU, MEMORY, check_postgres, get, samples_until, ui_tps

from agent_core.cluster import Cluster
from agent_core.testing import throwaway_cluster


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster of this test alone (it is stopped)."""
    yield from throwaway_cluster()


def check_no_system(sample: dict[str, Any]) -> None:
    assert sample["pg_local"] is False
    assert sample["cpu"] == dict.fromkeys(CPU), sample["cpu"]
    assert sample["memory"] == dict.fromkeys(MEMORY), sample["memory"]
    assert sample["loadaverage"] is None


def test_remote_postgresql_has_null_system_figures(make_agent, plugin):
    running = make_agent(
        plugins={"dashboard": plugin}, config={"dashboard": {"interval": 0.2}, "postgresql": {"local": "no"}}
    )
    history = samples_until(running, lambda h: len(h) >= 2)
    for sample in history:
        check_no_system(sample)
        check_postgres(sample)  # the PostgreSQL figures are all there
    assert history[-1]["databases"]["commits_per_sec"] is not None
    latest = get(running, "/dashboard")
    check_no_system(latest)
    assert latest["status"]["system"] == {"status": None, "start_time": None, "cpu_count": None, "memory": None}
    assert latest["status"]["postgres"]["status"] == "running"


def test_postgresql_down_is_sampled_and_the_routes_still_answer(make_agent, plugin, own_cluster):
    running = make_agent(
        plugins={"dashboard": plugin},
        config={"dashboard": {"interval": 0.2}, "postgresql": own_cluster.settings(connect_timeout=2)},
    )
    up = samples_until(running, lambda h: len(h) >= 2)[-1]
    check_postgres(up)

    own_cluster.stop()
    history = samples_until(running, lambda h: h[-1]["postgres"]["available"] is False)
    down = history[-1]
    assert down["postgres"]["error"], down
    for field in ("buffers", "hitratio", "active_backends", "max_connections", "tps"):
        assert down[field] is None, (field, down)
    # databases: the last known, read when PostgreSQL last answered, without rates
    known = [s for s in history if s["postgres"]["available"]][-1]["databases"]
    assert down["databases"] == {**known, "commits_per_sec": None, "rollbacks_per_sec": None}
    points, _ = ui_tps(history)  # the 9.x UI's TPS chart still draws across the outage
    assert len(points) == len(history) - 1 and points[-1] == (0, 0)
    assert down["pg_local"] is True, "the last known locality is kept"
    assert down["memory"]["total_bytes"] > 0  # the host is still sampled
    assert any(s["postgres"]["available"] for s in history), "the history keeps the samples before"
    latest = get(running, "/dashboard")  # no PostgreSQL behind any of the three routes
    assert latest["postgres"]["available"] is False and latest["databases"]["timestamp"] == known["timestamp"]
    assert latest["status"]["postgres"]["status"] == "unavailable"
    assert latest["status"]["postgres"]["start_time"] is not None, "what was known is kept"
    assert get(running, "/dashboard/config")["history_length"] == 150

    own_cluster.start()  # the agent was not restarted
    back = samples_until(running, lambda h: h[-1]["postgres"]["available"] is True)[-1]
    check_postgres(back)
    assert get(running, "/dashboard")["status"]["postgres"]["status"] == "running"
