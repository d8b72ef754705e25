"""The temboard 9.x UI's dashboard page, replayed: what it requests, in order,
and what it reads from each answer (ui/temboardui/static/src/views/Dashboard.vue
of temboard 9.0.1). Unsigned here, with the agent key."""

from __future__ import annotations

from dashboard_helpers import get, is_number, samples_until, ui_tps

from agent_core.testing import wait_for


def ui_update_dashboard(data):
    """updateDashboard(): the figures of the page from one GET /dashboard."""
    memory = data["memory"]
    cpu = data["cpu"]
    return {
        "memory": memory["total"] * 1000,  # filesize(total * 1000): total is in kB
        "total_memory": int(memory["active"] + memory["cached"]),
        "total_cpu": int(cpu["iowait"] + cpu["steal"] + cpu["user"] + cpu["system"]),
        "hit": data["hitratio"],
        "sessions": data["active_backends"]["nb"] if data["active_backends"] else None,
        "nb_db": data["databases"]["databases"] if data["databases"] else None,
        "size": data["databases"]["total_size"] if data["databases"] else None,
        "secondary": bool(data["status"]["postgres"]["primary"] and data["status"]["postgres"]["is_standby"]),
    }


def test_dashboard_page_request_sequence(dashboard_agent):
    samples_until(dashboard_agent, lambda h: len(h) >= 3)  # the agent has been running a little

    # page render: /status (unsigned), then what the page is built from
    assert dashboard_agent.client().get("/status").status == 200
    assert "dashboard" in get(dashboard_agent, "/discover")["plugins"], "the home card links here only then"
    config = get(dashboard_agent, "/dashboard/config")
    assert is_number(config["scheduler_interval"]) and config["scheduler_interval"] > 0
    assert isinstance(config["history_length"], int) and config["history_length"] > 0
    history = get(dashboard_agent, "/dashboard/history")  # jdataHistory
    assert 3 <= len(history) <= config["history_length"]
    points, last = ui_tps(list(history))
    assert len(points) == len(history) - 1 and all(c >= 0 and r >= 0 for c, r in points)
    loadaverage = [(s["timestamp"] * 1000, s["loadaverage"]) for s in history]
    assert all(is_number(y) for _, y in loadaverage)

    # then GET /dashboard every scheduler_interval seconds
    seen = []
    for _ in range(3):
        after = last["timestamp"]
        data = wait_for(lambda: (d := get(dashboard_agent, "/dashboard"))["timestamp"] > after and d)  # noqa: B023
        figures = ui_update_dashboard(data)
        assert figures["memory"] > 0 and 0 <= figures["total_memory"] <= 100 and 0 <= figures["total_cpu"] <= 100
        assert 0 <= figures["hit"] <= 100 and figures["sessions"] >= 0 and figures["nb_db"] >= 1
        assert figures["size"] and figures["secondary"] is False
        new_points, last = ui_tps([data], last)
        assert len(new_points) == 1 and min(new_points[0]) >= 0
        assert isinstance(data["notifications"], list)
        seen.append(data["timestamp"])
    assert seen == sorted(set(seen)), "each poll shows a newer sample"
