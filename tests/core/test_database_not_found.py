"""A database that does not exist is a 404, from the core: a plugin's view
queries it through ``agent.postgres`` with no look-up of its own."""

import types
import urllib.parse

import psycopg2
import pytest

from agent_core.errors import DatabaseNotFound, NotFound, PostgresUnavailable
from agent_core.hookspecs import Route, hookimpl


def current_database(request, dbname):
    """GET /dbprobe/<dbname>: the plugin code a third-party author writes, and nothing more."""
    return request.agent.postgres.query("SELECT current_database() AS db", dbname=dbname)[0]


def dbprobe():
    routes = [Route("GET", "/dbprobe/<dbname>", current_database)]
    return types.SimpleNamespace(agent_register_routes=hookimpl(lambda agent: routes))


@pytest.fixture
def client(make_agent):
    return make_agent(plugins={"dbprobe": dbprobe()}).login()


@pytest.mark.parametrize("dbname", ["no_such_db", "No Such 'db\" %x", "x" * 64])
def test_an_unknown_database_is_a_404_json_naming_it(client, dbname):
    res = client.get("/dbprobe/" + urllib.parse.quote(dbname, safe=""))
    assert res.status == 404
    assert res.headers["Content-Type"].startswith("application/json")
    assert res.json() == {"error": f"Database '{dbname}' not found."}


def test_an_existing_database_is_answered(client, databases):
    db = databases.create("probe")
    assert client.get(f"/dbprobe/{db}").json() == {"db": db}
    assert client.get("/dbprobe/postgres").json() == {"db": "postgres"}


def test_a_name_longer_than_postgresql_keeps_never_reaches_its_first_63_bytes(client, databases):
    """PostgreSQL truncates a name to 63 bytes at connection: the longer name
    would reach another database. It cannot exist: 404."""
    db = databases.create("d" * 54)
    assert len(db.encode()) == 63 and client.get(f"/dbprobe/{db}").json() == {"db": db}
    res = client.get(f"/dbprobe/{db}tail")
    assert res.status == 404 and res.json() == {"error": f"Database '{db}tail' not found."}


def test_a_database_refusing_connections_stays_a_503(client, databases):
    """It exists: the failure is not "not found" (the maintenance plugin answers it 409)."""
    db = databases.create("closed", options="ALLOW_CONNECTIONS false")
    res = client.get(f"/dbprobe/{db}")
    assert res.status == 503
    assert res.json()["error"].startswith("PostgreSQL is unavailable: ")
    assert "is not currently accepting connections" in res.json()["error"]


def test_dedicated_connections_raise_database_not_found_too(make_agent):
    """Tasks get the same typed error (an operation then fails with its message)."""
    postgres = make_agent().agent.postgres
    with pytest.raises(DatabaseNotFound) as caught:
        postgres.dedicated("no_such_db", "pgwarden test")
    assert caught.value.dbname == "no_such_db" and isinstance(caught.value, NotFound)  # 404
    assert caught.value.message == "Database 'no_such_db' not found."


def test_a_message_in_another_language_is_decided_by_pg_database(make_agent, databases):
    """The server may send its FATAL in the language of its lc_messages (this
    machine has only the C locale, so no translated message can be had here):
    when the English text is not there, pg_database decides. A real failure
    whose text does not say "does not exist" stands for the translated one."""
    db = databases.create("closed", options="ALLOW_CONNECTIONS false")
    postgres = make_agent().agent.postgres
    with pytest.raises(psycopg2.OperationalError) as caught:
        psycopg2.connect(**postgres._params(db, "pgwarden test", timeouts=False))
    assert "does not exist" not in str(caught.value)
    assert postgres._missing("no_such_db", caught.value)  # looked up: absent
    assert not postgres._missing(db, caught.value)  # looked up: present


def test_the_default_database_missing_is_a_503_not_a_404(make_agent, pg_cluster, databases):
    """The configured database gone is the agent's configuration, not the client's request."""
    db = databases.create("default")
    running = make_agent(config={"postgresql": {"dbname": db}})
    pg_cluster.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    running.agent.postgres.close_idle()  # its pooled sessions were ended with the database
    with pytest.raises(PostgresUnavailable, match=f'database "{db}" does not exist'):
        running.agent.postgres.query("SELECT 1")
