"""Packaging, configuration, store table, SQL per server version."""

from __future__ import annotations

from pathlib import Path

import psycopg2.extensions
import psycopg2.extras
import pytest
import sqlalchemy as sa

import agent_activity.plugin
from agent_activity import queries
from agent_activity.service import root_blockers
from agent_activity.settings import OPTIONS
from agent_core.agent import Agent
from agent_core.config import RawConfig, SectionSchema, agent_schema, postgresql_schema, signing_schema, validate
from agent_core.errors import StartupError
from agent_core.plugins import installed
from agent_core.testing import KEY, Client, agent_config

SAMPLE_CONFIG = Path(__file__).resolve().parents[3] / "conf" / "pgwarden.conf"


def test_installed_as_an_entry_point():
    entry = installed()["activity"]
    assert entry.distribution == "pgwarden-activity"
    assert entry.value == "agent_activity.plugin"


@pytest.mark.parametrize("enabled", [True, False])
def test_enable_list_decides_whether_routes_exist(pg_cluster, tmp_path, enabled):
    """Loaded from its entry point when listed; 404 (JSON) when not, package installed."""
    raw = agent_config(pg_cluster, tmp_path, {"activity": None} if enabled else {})
    agent = Agent.from_config(raw)  # entry points, as `pgwarden serve` does
    agent.start()
    try:
        client = Client(agent.server.url)
        res = client.get(f"/activity?key={KEY}")
        if enabled:
            assert agent.plugin_names == ["activity"]
            assert res.status == 200, res
            assert "rows" in res.json()
        else:
            assert agent.plugin_names == []
            assert (res.status, res.json()) == (404, {"error": "Not found: GET /activity"})
            for path in ("/activity/waiting", "/activity/blocking"):
                assert client.get(f"{path}?key={KEY}").status == 404
            res = client.post("/activity/kill", {"pids": [1]})
            assert (res.status, res.json()) == (404, {"error": "Not found: POST /activity/kill"})
    finally:
        agent.stop()


def test_disabled_with_make_agent(make_agent):
    client = make_agent().login()
    res = client.get("/activity")
    assert (res.status, res.json()) == (404, {"error": "Not found: GET /activity"})
    res = client.post("/activity/activity/kill", {"pids": [1]})
    assert res.status == 404 and "error" in res.json()


def test_kill_table_is_created(activity_agent):
    tables = sa.inspect(activity_agent.agent.store.engine).get_table_names()
    assert "activity_kills" in tables


def test_sample_config_documents_every_option():
    raw = RawConfig.read(str(SAMPLE_CONFIG))
    schema = SectionSchema("activity")
    agent_activity.plugin.agent_add_config(schema=schema)
    assert set(raw.sections["activity"]) == set(schema.options)
    config = validate(
        raw,
        [agent_schema(), postgresql_schema(), signing_schema(), schema],
        {},
        ignored_sections=["maintenance", "dashboard"],
    )
    assert config.section("activity") == {o.name: o.default for o in OPTIONS}, "the sample shows the defaults"
    text = SAMPLE_CONFIG.read_text()
    section = text[text.index("[activity]") :]
    for option in OPTIONS:
        before = section[: section.index(f"\n{option.name} =")]
        assert before.rstrip().splitlines()[-1].startswith("#"), f"{option.name} has a comment"


def test_config_values_are_checked(pg_cluster, tmp_path):
    from agent_core.errors import ConfigError

    raw = agent_config(
        pg_cluster,
        tmp_path,
        {"activity": agent_activity.plugin},
        {"activity": {"limit": 0, "sample_interval": "often", "show_idle": "maybe", "colour": "red"}},
    )
    with pytest.raises(ConfigError) as caught:
        Agent.from_config(raw, {"activity": agent_activity.plugin})
    problems = "\n".join(caught.value.problems)
    for key in ("activity.limit", "activity.sample_interval", "activity.show_idle", "activity.colour: unknown key"):
        assert key in problems


def test_kill_wait_must_be_shorter_than_the_statement_timeout(make_agent, plugin):
    with pytest.raises(
        StartupError, match=r"activity.kill_wait \(30 s\) must be less than postgresql.statement_timeout"
    ):
        make_agent(plugins={"activity": plugin}, config={"activity": {"kill_wait": 30}})


def test_older_servers_are_refused():
    with pytest.raises(queries.UnsupportedVersion, match="10 or later"):
        queries.for_version(90624)


@pytest.mark.parametrize("version", [100000, 120000, 130000, 140000, 150000])
def test_every_version_of_the_sql_runs(pg_cluster, version):
    """Each variant is valid SQL on the installed server (newer than all of them)."""
    q = queries.for_version(version)
    assert q.terminate_waits is (version >= 140000)
    conn = pg_cluster.connect()
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            psycopg2.extensions.register_type(psycopg2.extensions.BYTES, cur)
            cur.execute(q.backends, {"own": [], "idle": True, "limit": 10})
            cur.execute(q.backends_by_pid, {"own": [], "pids": [conn.info.backend_pid]})
            assert cur.fetchall() == [], "the reader itself is never listed"
            cur.execute(q.lock_waits, {"own": []})
            cur.execute(q.locks_of, {"pids": [conn.info.backend_pid]})
            assert any(r["lock_type"] == b"virtualxid" for r in cur.fetchall())
            cur.execute(q.relations, {"oids": [1259]})
            assert cur.fetchone()["name"] == b"pg_catalog.pg_class"
            cur.execute(q.kill_targets, {"pids": [conn.info.backend_pid]})
            assert cur.fetchone()["backend_type"] == b"client backend"
            cur.execute(q.terminate, {"pid": conn.info.backend_pid, "wait_ms": 0})
            assert cur.fetchall() == [], "never terminates the reader itself"
            cur.execute(q.pids)
            assert cur.fetchall()
    finally:
        conn.close()


def test_decode():
    assert queries.decode(b"caf\xe9", "LATIN1") == "café"
    assert queries.decode("café".encode(), "UTF8") == "café"
    assert queries.decode(b"\xff ok", "UTF8") == "\ufffd ok"
    assert queries.decode(b"\xff ok", "SQL_ASCII") == "\ufffd ok"
    assert queries.decode(b"abc", "MULE_INTERNAL") == "abc"
    assert queries.decode(None, "UTF8") is None


def test_root_blockers():
    chain = {3: [2], 2: [1]}
    assert root_blockers(3, chain) == [1]
    assert root_blockers(2, chain) == [1]
    assert root_blockers(1, chain) == []
    assert root_blockers(4, {4: [3, 5], 3: [1], 5: [0]}) == [0, 1], "0: a prepared transaction"
    assert root_blockers(1, {1: [2], 2: [1]}) == [], "a deadlock cycle has no root"
