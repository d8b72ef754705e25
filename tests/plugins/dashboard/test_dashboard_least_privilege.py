"""The dashboard sampled by roles without superuser: a bare login role and the
monitor level of docs/least-privilege.md. A database the role may not connect
to is counted but left out of the size (``pg_database_size`` would fail the
whole statement); ``pg_monitor`` sizes every database."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from dashboard_helpers import check_postgres, samples_until
from psycopg2 import sql

DOC = Path(__file__).resolve().parents[3] / "docs" / "least-privilege.md"


def documented(level: str) -> str:
    """The SQL block of docs/least-privilege.md whose first line is ``-- level: <level>``."""
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S):
        first, _, rest = block.partition("\n")
        if first == f"-- level: {level}":
            return rest
    raise AssertionError(f"docs/least-privilege.md has no level {level!r}")


@pytest.fixture
def make_role(pg_cluster: Any) -> Any:
    """``make_role(level)``: a login role made with the documented SQL (``None``:
    a bare login role), dropped at the end of the test."""
    made: list[str] = []
    unique = uuid.uuid4().hex[:10]

    def make(level: str | None) -> str:
        name = f"dash_{level or 'none'}_{unique}"
        if level is None:
            pg_cluster.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        else:
            pg_cluster.execute(re.sub(r"\bpgwarden\b", name, documented(level)))
        made.append(name)
        return name

    yield make
    for name in made:
        pg_cluster.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", (name,))
        pg_cluster.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def sizes(pg_cluster: Any) -> tuple[int, int]:
    """(count, total bytes) of the non-template databases, as a superuser sees them."""
    count, total = pg_cluster.execute(
        "SELECT count(*), sum(pg_database_size(oid)) FROM pg_database WHERE NOT datistemplate"
    )[0]
    return int(count), int(total)


@pytest.mark.parametrize("level", [None, "monitor"])
def test_sampled_without_superuser(make_agent, plugin, pg_cluster, databases, make_role, level):
    closed = databases.create("dash_closed")
    pg_cluster.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(closed)))
    closed_size = pg_cluster.execute("SELECT pg_database_size(%s)", (closed,))[0][0]
    role = make_role(level)
    running = make_agent(
        plugins={"dashboard": plugin},
        config={"dashboard": {"interval": 0.2}, "postgresql": {"user": role}},
    )
    sample = samples_until(running, lambda h: len(h) >= 2)[-1]
    check_postgres(sample)  # the one statement worked for this role
    count, total = sizes(pg_cluster)
    databases_ = sample["databases"]
    assert databases_["nb"] == count, "every database is counted"
    slack = 1024 * 1024  # sizes move a little as the cluster works
    if level is None:
        assert databases_["total_size_bytes"] <= total - closed_size + slack
    else:  # pg_monitor holds pg_read_all_stats: every database is sized
        assert abs(databases_["total_size_bytes"] - total) <= slack
