"""The plugin as a package: entry point, hooks, config section and sample
config, route table, pg_size_pretty."""

from __future__ import annotations

import inspect
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from agent_core.agent import load
from agent_core.config import RawConfig
from agent_core.errors import ConfigError
from agent_maintenance import routes, sizes

SAMPLE = Path(__file__).resolve().parents[3] / "conf" / "pgwarden.conf"


def test_entry_point_and_hooks(plugin: Any) -> None:
    (ep,) = [e for e in metadata.entry_points(group="pgwarden") if e.name == "maintenance"]
    assert ep.value == "agent_maintenance.plugin"
    assert ep.dist is not None and ep.dist.metadata["Name"] == "pgwarden-maintenance"
    assert ep.load() is plugin
    functions = [f for _, f in inspect.getmembers(plugin, inspect.isfunction) if f.__module__ == plugin.__name__]
    assert functions and all(hasattr(f, "pgwarden_impl") for f in functions)  # only hook implementations


def test_sample_config_declares_every_option(plugin: Any) -> None:
    raw = RawConfig.read(str(SAMPLE))
    config, _ = load(raw, {"maintenance": plugin}, environ={})
    declared = set(config.schemas["maintenance"].options)
    assert set(raw.sections["maintenance"]) == declared
    assert config.section("maintenance") == {
        "lock_timeout": 60.0,
        "max_operations": 2,
        "reindex_concurrently": True,
        "max_notices": 1000,
        "estimates_max_age": 10.0,
        "estimates_max_bytes": 33554432,
    }
    for key, value, reason in (
        ("max_operations", "0", "must be at least 1"),
        ("lock_timeout", "-1", "must be at least 0"),
        ("estimates_max_age", "-1", "must be at least 0"),
        ("estimates_max_bytes", "-1", "must be at least 0"),
        ("reindex_concurrently", "maybe", "expected a boolean"),
        ("nope", "1", "unknown key"),
    ):
        bad = RawConfig({**raw.sections, "maintenance": {**raw.sections["maintenance"], key: value}})
        with pytest.raises(ConfigError) as info:
            load(bad, {"maintenance": plugin}, environ={})
        assert any(p.startswith(f"maintenance.{key}: ") and reason in p for p in info.value.problems), info.value


def test_every_route_takes_the_key_and_documents_its_status_codes() -> None:
    table = routes.routes()
    assert len(table) == 25
    assert len({(r.method, r.path) for r in table}) == len(table)
    for route in table:
        assert route.key is True, route.path
        assert route.path.startswith("/maintenance")
        assert "200" in (route.view.__doc__ or "") and "401" in route.view.__doc__, route.path


def test_disabled_plugin_answers_404(make_agent: Any) -> None:
    res = make_agent().login().get("/maintenance")
    assert res.status == 404 and "error" in res.json()


def test_pretty_sizes_are_pg_size_pretty(pg_cluster: Any) -> None:
    values = [0, 1, 10239, 10240, 10241, 20 * 1024 * 1024 - 1, 20 * 1024 * 1024, 10485247, 10485248, 2**40, 3 * 2**50]
    values += [7 * 10**k + k for k in range(19)] + [-10240, -5]
    rows = pg_cluster.execute("SELECT v, pg_size_pretty(v) FROM unnest(%s::bigint[]) v", (values,))
    assert [(v, sizes.pretty(v)) for v, _ in rows] == rows
    assert sizes.pretty(None) is None
