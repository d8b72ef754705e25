"""The maintenance plugin run by the least-privilege roles of docs/least-privilege.md.

The roles are made with the SQL blocks of that page, as written (role names
made unique). Every read route answers for every level, what the role may
not see being null; operations on objects the role may not touch end
``failed`` with PostgreSQL's reason, never ``done``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from maintenance_helpers import path, run
from psycopg2 import sql

from agent_core.testing import Cluster, Databases, RunningAgent

DOC = Path(__file__).resolve().parents[3] / "docs" / "least-privilege.md"


def documented_levels() -> dict[str, str]:
    """The SQL blocks of docs/least-privilege.md by their ``-- level: <name>`` first line."""
    blocks = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    levels = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        if first.startswith("-- level: "):
            levels[first.removeprefix("-- level: ").strip()] = rest
    return levels


LEVELS = documented_levels()

SETUP = """
CREATE SCHEMA app AUTHORIZATION {owner};
SET ROLE {owner};
CREATE TABLE app.mine (id int PRIMARY KEY, v text);
INSERT INTO app.mine SELECT i, md5(i::text) FROM generate_series(1, 500) i;
RESET ROLE;
CREATE TABLE public.other (id int PRIMARY KEY, v text);
INSERT INTO public.other SELECT i, md5(i::text) FROM generate_series(1, 500) i;
ANALYZE;
"""


class Roles:
    """Roles made from the documented levels; all dropped at teardown."""

    def __init__(self, cluster: Cluster, databases: Databases):
        self.cluster = cluster
        self.databases = databases
        suffix = uuid.uuid4().hex[:8]
        self.app_owner = f"lp_app_{suffix}"
        self.made: list[str] = [self.app_owner]
        self._suffix = suffix
        cluster.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(self.app_owner)))

    def make(self, level: str) -> str:
        """A login role created with the documented SQL of ``level``."""
        name = f"lp_{re.sub(r'[^a-z]', '', level)}_{self._suffix}"
        statements = re.sub(r"\bpgwarden\b", name, LEVELS[level])
        statements = re.sub(r"\bapp_owner\b", self.app_owner, statements)
        self.made.append(name)
        self.cluster.execute(statements)
        return name

    def drop(self) -> None:
        for name in reversed(self.made):
            ident = sql.Identifier(name)
            self.cluster.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,)
            )
            for dbname in [*self.databases.names, "postgres"]:  # databases it may own too
                self.cluster.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(ident), dbname=dbname)
                self.cluster.execute(sql.SQL("DROP OWNED BY {}").format(ident), dbname=dbname)
            self.cluster.execute(sql.SQL("DROP ROLE {}").format(ident))


@pytest.fixture
def roles(pg_cluster: Cluster, databases: Databases) -> Iterator[Roles]:
    made = Roles(pg_cluster, databases)
    try:
        yield made
    finally:
        made.drop()


@pytest.fixture
def lp_db(databases: Databases, roles: Roles) -> str:
    return databases.create("lp", setup=SETUP.format(owner=roles.app_owner))  # a plain lower-case name


@pytest.fixture
def agent_as(roles: Roles, start_agent: Callable[..., RunningAgent]) -> Callable[[str], Any]:
    """``agent_as(level)``: a client of an agent connecting as a new role of that level.

    ``roles`` comes first: the agents stop before the roles are dropped."""

    def start(level: str) -> Any:
        return start_agent(postgresql={"user": roles.make(level)}).login()

    return start


def read_everything(api: Any, db: str) -> dict[str, Any]:
    """Every read route of the plugin, each answering 200; the table documents by name."""
    instance = api.get("/maintenance")
    assert instance.status == 200, instance
    assert db in {d["datname"] for d in instance.json()["databases"]}
    database = api.get(path(db))
    assert database.status == 200, database
    assert {"app", "public"} <= {s["name"] for s in database.json()["schemas"]}
    for schema in ("app", "public"):
        res = api.get(path(db, "schema", schema))
        assert res.status == 200, res
    tables = {}
    for schema, table in (("app", "mine"), ("public", "other")):
        res = api.get(path(db, "schema", schema, "table", table))
        assert res.status == 200, res
        tables[table] = res.json()
        assert tables[table]["total_bytes"] > 0 and tables[table]["row_estimate"] == 500
        assert tables[table]["n_live_tup"] == 500  # usage counters are readable
    for verb in ("vacuum", "analyze", "reindex"):
        for url in (f"/maintenance/{verb}/scheduled", path(db, verb, "scheduled")):
            res = api.get(url)
            assert res.status == 200, res
    return tables


@pytest.mark.parametrize("level", ["monitor", "kill"])
def test_monitoring_roles_read_everything_and_maintain_nothing(agent_as: Any, lp_db: str, pg_cluster: Any, level):
    api = agent_as(level)
    discover = api.get("/discover")
    assert discover.status == 200 and discover.json()["pg_version"], discover
    tables = read_everything(api, lp_db)
    for table in tables.values():  # pg_stats hides columns the role may not SELECT: no estimate, no error
        assert table["bloat_bytes"] is None and table["indexes"][0]["bloat_bytes"] is None
        assert table["indexes"][0]["total_bytes"] > 0 and table["indexes"][0]["def"]

    mine = path(lp_db, "schema", "app", "table", "mine")
    denied = run(api, f"{mine}/vacuum", "vacuum")
    assert denied["status"] == "failed" and denied["error"] == "permission denied for schema app", denied
    other = path(lp_db, "schema", "public", "table", "other")
    vacuum = run(api, f"{other}/vacuum", "vacuum")
    assert vacuum["status"] == "failed", vacuum
    assert vacuum["error"] == 'skipping "other" --- only table or database owner can vacuum it', vacuum
    reindex = run(api, f"{other}/reindex", "reindex")
    assert reindex["status"] == "failed" and reindex["error"] == "must be owner of table other", reindex
    last = pg_cluster.execute("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'other'", dbname=lp_db)
    assert last == [(None,)]


def test_maintain_level_maintains_what_its_owner_role_owns(agent_as: Any, lp_db: str, pg_cluster: Any) -> None:
    api = agent_as("maintain")
    tables = read_everything(api, lp_db)
    assert tables["mine"]["bloat_bytes"] is not None, "a member of the owner reads its statistics"
    assert tables["other"]["bloat_bytes"] is None

    def counts() -> tuple[int, int]:
        rows = pg_cluster.execute(
            "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables WHERE relname = 'mine'", dbname=lp_db
        )
        return rows[0]

    before = counts()
    mine = path(lp_db, "schema", "app", "table", "mine")
    for verb in ("vacuum", "analyze", "reindex"):
        done = run(api, f"{mine}/{verb}", verb)
        assert done["status"] == "done", done
    assert counts() == (before[0] + 1, before[1] + 1)

    other = path(lp_db, "schema", "public", "table", "other")
    analyze = run(api, f"{other}/analyze", "analyze")
    assert analyze["status"] == "failed", analyze
    assert analyze["error"] == 'skipping "other" --- only table or database owner can analyze it', analyze
    reindex = run(api, f"{other}/reindex", "reindex")
    assert reindex["status"] == "failed" and reindex["error"] == "must be owner of table other", reindex

    # database-wide: it skips every table it may not touch, so it did not vacuum the database
    everything = run(api, path(lp_db, "vacuum"), "vacuum")
    assert everything["status"] == "failed", everything
    assert re.fullmatch(
        r'skipping "[^"]+" --- only .* can vacuum it \(and \d+ more relations skipped; see the notices\)',
        everything["error"],
    ), everything
    assert any('skipping "other"' in n for n in everything["notices"]), everything
    reindex_db = run(api, path(lp_db, "reindex"), "reindex")
    assert reindex_db["status"] == "failed" and reindex_db["error"] == f"must be owner of database {lp_db}"


def test_the_database_owner_vacuums_the_whole_database(
    agent_as: Any, lp_db: str, roles: Roles, pg_cluster: Any
) -> None:
    """Only the shared catalogs, which no database owner may vacuum, are skipped: done, with notices."""
    pg_cluster.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(lp_db), sql.Identifier(roles.app_owner))
    )
    api = agent_as("maintain")
    vacuum = run(api, path(lp_db, "vacuum"), "vacuum")
    assert vacuum["status"] == "done", vacuum
    assert any('skipping "pg_authid" --- only superuser can vacuum it' in n for n in vacuum["notices"]), vacuum
    last = pg_cluster.execute("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'other'", dbname=lp_db)
    assert last[0][0] is not None, "the owner of the database vacuumed a table it does not own"
    reindex = run(api, path(lp_db, "reindex"), "reindex")
    assert reindex["status"] == "done", reindex


def test_pg_maintain_level(agent_as: Any, lp_db: str, pg_cluster: Any) -> None:
    version = int(pg_cluster.execute("SHOW server_version_num")[0][0])
    if version < 170000:
        pytest.skip(f"pg_maintain needs PostgreSQL 17 or later; this cluster is {version}")
    api = agent_as("maintain, PostgreSQL 17")
    read_everything(api, lp_db)
    other = path(lp_db, "schema", "public", "table", "other")
    for verb in ("vacuum", "analyze", "reindex"):
        done = run(api, f"{other}/{verb}", verb)
        assert done["status"] == "done", done


def test_every_documented_level_is_exercised() -> None:
    assert set(LEVELS) == {"monitor", "kill", "maintain", "maintain, PostgreSQL 17"}
