"""How the agent connects to PostgreSQL: a role with a password over TCP and
over the Unix socket, sslmode and other libpq parameters, errors that name the
cause without the password, and the monitoring timeouts of pooled connections."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import uuid

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from agent_core.config import RawConfig, agent_schema, postgresql_schema, validate
from agent_core.errors import ConfigError
from agent_core.testing import wait_for

#: Quotes, spaces, backslash, '=' and '@': what a hand-built conninfo string would get wrong.
SECRET = "s3cr'et pa ss\\w=rd@x"


@pytest.fixture
def password_role(pg_cluster):
    """A login role (pg_monitor) that must give SECRET, over TCP and the socket (see agent_core.cluster)."""
    name = f"pgw_pw_{uuid.uuid4().hex[:8]}"
    pg_cluster.password_role(name, SECRET, "pg_monitor")
    yield name
    pg_cluster.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    pg_cluster.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def agent_sessions(pg_cluster, role):
    """(client_addr, ssl) of the role's sessions, as PostgreSQL sees them."""
    return pg_cluster.execute(
        "SELECT host(a.client_addr), s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.usename = %s AND a.application_name = 'pgwarden'",
        (role,),
    )


def test_password_role_over_tcp(make_agent, pg_cluster, password_role):
    running = make_agent(config={"postgresql": {"user": password_role, "password": SECRET, "host": "127.0.0.1"}})
    res = running.login().get("/discover")
    assert res.status == 200, res
    assert res.json()["pg_port"] == pg_cluster.port
    assert agent_sessions(pg_cluster, password_role)[0] == ("127.0.0.1", False)


def test_password_role_over_the_unix_socket(make_agent, pg_cluster, password_role):
    running = make_agent(config={"postgresql": {"user": password_role, "password": SECRET, "host": pg_cluster.sockdir}})
    res = running.login().get("/discover")
    assert res.status == 200, res
    assert agent_sessions(pg_cluster, password_role)[0] == (None, False)  # no client address: the socket


@pytest.mark.parametrize("host", ["127.0.0.1", "socket"])
def test_wrong_password_is_a_503_naming_the_cause_never_the_password(
    make_agent, pg_cluster, password_role, host, caplog
):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-" + SECRET
    host = pg_cluster.sockdir if host == "socket" else host
    running = make_agent(config={"postgresql": {"user": password_role, "password": wrong, "host": host}})
    res = running.login().get("/discover")
    assert res.status == 503, res
    assert res.headers["Content-Type"].startswith("application/json")
    error = res.json()["error"]
    assert error.startswith("PostgreSQL is unavailable: ")
    assert f'password authentication failed for user "{password_role}"' in error
    assert wrong not in res.text and SECRET not in res.text
    assert wrong not in caplog.text and SECRET not in caplog.text


def run_check_config(tmp_path, postgresql: str) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "pgwarden.conf"
    conf.write_text(f"[agent]\nhome = {tmp_path}\n[postgresql]\n" + textwrap.dedent(postgresql))
    conf.chmod(0o600)  # it holds a password: a looser mode is warned about (test_file_modes.py)
    return subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "-c", str(conf), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_connects_and_reports_a_wrong_password(tmp_path, pg_cluster, password_role):
    settings = f"host = 127.0.0.1\nport = {pg_cluster.port}\nuser = {password_role}\n"
    res = run_check_config(tmp_path, settings + f"password = {SECRET}\n")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout and "warning" not in res.stderr

    res = run_check_config(tmp_path, settings + "password = wrong-password\n")
    assert res.returncode == 2
    assert f"postgresql: cannot connect as '{password_role}'" in res.stderr
    assert "password authentication failed" in res.stderr
    assert "wrong-password" not in res.stderr and "Traceback" not in res.stderr


def test_check_config_only_warns_when_postgresql_is_down(tmp_path, pg_cluster):
    # a port nobody listens on: PostgreSQL down is not a configuration error
    from agent_core.cluster import free_port

    res = run_check_config(tmp_path, f"host = 127.0.0.1\nport = {free_port()}\n")
    assert res.returncode == 0, res.stderr
    assert "warning: postgresql: cannot connect now" in res.stderr and "Connection refused" in res.stderr


def test_sslmode_reaches_libpq(make_agent, pg_cluster):
    # the throwaway cluster has no certificate: require fails, disable works
    res = make_agent(config={"postgresql": {"sslmode": "require"}}).login().get("/discover")
    assert res.status == 503, res
    assert "server does not support SSL, but SSL was required" in res.json()["error"]
    res = make_agent(config={"postgresql": {"sslmode": "disable"}}).login().get("/discover")
    assert res.status == 200, res


def test_conninfo_passes_other_libpq_parameters(make_agent, pg_cluster):
    # target_session_attrs=read-only refuses a primary: proof the parameter reached libpq
    res = make_agent(config={"postgresql": {"conninfo": "target_session_attrs=read-only"}}).login().get("/discover")
    assert res.status == 503, res
    assert "session is not read-only" in res.json()["error"]
    ok = make_agent(config={"postgresql": {"conninfo": "target_session_attrs=read-write keepalives_idle=30"}})
    assert ok.login().get("/discover").status == 200


def problems(postgresql):
    with pytest.raises(ConfigError) as e:
        validate(RawConfig.from_dict({"postgresql": postgresql}), [agent_schema(), postgresql_schema()], environ={})
    return e.value.problems


def test_connection_options_are_validated_without_echoing_secrets():
    assert problems({"sslmode": "always"}) == [
        "postgresql.sslmode: must be one of disable, allow, prefer, require, verify-ca, verify-full, got 'always'"
    ]
    assert problems({"conninfo": "sslrootcert=/x colour=red"}) == [
        "postgresql.conninfo: not a libpq connection string of key=value pairs: unknown libpq parameter 'colour'"
    ]
    (bad,) = problems({"conninfo": "sslpassword='hunter2"})
    assert bad.startswith("postgresql.conninfo: not a libpq connection string") and "hunter2" not in bad
    (own,) = problems({"conninfo": "password=hunter2"})
    assert own == "postgresql.conninfo: 'password' cannot be set here: use [postgresql] password instead"
    (own,) = problems({"conninfo": "host=db1 sslcert=/x"})
    assert own == "postgresql.conninfo: 'host' cannot be set here: use [postgresql] host instead"
    # hostaddr (connect to this IP, verify the certificate against host) is allowed
    assert validate(
        RawConfig.from_dict({"postgresql": {"conninfo": "hostaddr=127.0.0.1 sslrootcert='/etc/a b/root.crt'"}}),
        [agent_schema(), postgresql_schema()],
        environ={},
    ).postgresql["conninfo"]
    assert problems({"lock_timeout": "0"}) == ["postgresql.lock_timeout: must be greater than 0"]


# -- monitoring timeouts ---------------------------------------------------------


def test_pooled_query_blocked_by_access_exclusive_fails_with_lock_timeout(make_agent, databases, backends):
    db = databases.create("pgw_lock", setup="CREATE TABLE t (i int)")
    running = make_agent(config={"postgresql": {"lock_timeout": 1, "statement_timeout": 60}})
    pg = running.agent.postgres
    holder = backends.hold("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE", dbname=db)
    assert holder.done.is_set() and holder.error is None
    # LockNotAvailable, not QueryCanceled: lock_timeout (1 s) ended the wait, not statement_timeout (60 s)
    with pytest.raises(psycopg2.errors.LockNotAvailable):
        pg.query("SELECT count(*) FROM t", dbname=db)
    with holder.conn.cursor() as cur:
        cur.execute("ROLLBACK")  # the lock is released: the pooled connection still serves
    assert pg.query("SELECT count(*) AS n FROM t", dbname=db) == [{"n": 0}]


def test_monitoring_timeouts_on_pooled_connections_only(make_agent):
    pg = make_agent(config={"postgresql": {"lock_timeout": 2, "statement_timeout": 7}}).agent.postgres
    shown = "SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS statement"
    assert pg.query(shown) == [{"lock": "2s", "statement": "7s"}]
    conn = pg.dedicated(timeouts=True)
    try:
        with conn.cursor() as cur:
            cur.execute(shown)
            assert cur.fetchone() == ("2s", "7s")
    finally:
        pg.release(conn)
    conn = pg.dedicated()  # maintenance: its own settings, none from the monitoring timeouts
    try:
        with conn.cursor() as cur:
            cur.execute(shown)
            assert cur.fetchone() == ("0", "0")
    finally:
        pg.release(conn)


# -- what the pool keeps: never an idle session outside the default database ------------------------


def sessions_in(pg_cluster, dbname: str) -> int:
    """The agent's sessions (application_name pgwarden) connected to ``dbname`` now."""
    return pg_cluster.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'pgwarden'", (dbname,)
    )[0][0]


def test_a_connection_to_another_database_is_closed_when_the_request_ends(make_agent, pg_cluster, databases):
    other = databases.create("pool_other")
    pg = make_agent().agent.postgres
    assert pg.query("SELECT current_database() AS d", dbname=other) == [{"d": other}]
    # closed on return, not left for the pool's reaper (pool_idle, 5 s): the
    # backend is gone within 2 s (its exit after the client's close is
    # asynchronous), and a DROP DATABASE then needs no FORCE
    wait_for(lambda: sessions_in(pg_cluster, other) == 0, timeout=2)
    pg_cluster.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(other)))
    assert pg.query("SELECT 1 AS one", dbname="template1") == [{"one": 1}]
    wait_for(lambda: sessions_in(pg_cluster, "template1") == 0, timeout=2)


def test_the_default_database_is_pooled_for_pool_idle_seconds(make_agent, pg_cluster):
    from agent_core.testing import wait_for

    pg = make_agent(config={"postgresql": {"pool_idle": 0.5}}).agent.postgres
    assert pg.pool_idle == 0.5
    pg.query("SELECT 1")
    own = list(pg.own_pids)
    assert len(own) == 1  # kept for the next request
    assert pg_cluster.execute("SELECT datname FROM pg_stat_activity WHERE pid = %s", (own[0],)) == [("postgres",)]
    wait_for(lambda: not pg.own_pids and not sessions_in(pg_cluster, "postgres"), timeout=10)


def test_pool_idle_zero_keeps_nothing(make_agent, pg_cluster):
    pg = make_agent(config={"postgresql": {"pool_idle": 0}}).agent.postgres
    assert pg.query("SELECT 2 AS two") == [{"two": 2}]
    assert not pg.own_pids and sessions_in(pg_cluster, "postgres") == 0


def test_pool_idle_is_validated():
    assert problems({"pool_idle": "-1"}) == ["postgresql.pool_idle: must be at least 0"]
    assert problems({"pool_idle": "soon"})[0].startswith("postgresql.pool_idle:")


def test_create_database_never_fails_while_template1_is_read(make_agent, pg_cluster):
    """Reads of template1 through the pool (what GET /maintenance/template1
    does) in a loop, and CREATE DATABASE, which copies template1 and fails
    when another session is connected to it for more than 5 s."""
    import threading

    pg = make_agent().agent.postgres
    stop = threading.Event()
    reads: list[int] = []

    def reader() -> None:
        while not stop.is_set() and len(reads) < 2000:
            pg.query("SELECT count(*) FROM pg_catalog.pg_class", dbname="template1")
            reads.append(1)
            stop.wait(0.05)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    failures = []
    try:
        for i in range(10):
            name = sql.Identifier(f"pool_copy_{uuid.uuid4().hex[:8]}")
            try:
                pg_cluster.execute(sql.SQL("CREATE DATABASE {}").format(name))
            except psycopg2.Error as e:
                failures.append(f"{i}: {e}".strip())
                break
            pg_cluster.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name))
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert reads, "the readers ran"
    assert failures == []
