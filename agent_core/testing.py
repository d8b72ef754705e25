"""Test harness for pgwarden and its plugins: a pytest plugin module.

Enable it in your ``conftest.py``::

    pytest_plugins = ["agent_core.testing"]

Fixtures:

``pg_cluster`` (session)
    A throwaway PostgreSQL cluster (:class:`Cluster`) made with ``initdb`` and
    ``pg_ctl`` (run as the ``postgres`` OS user when the tests run as root), on
    a free port and a short socket directory, always torn down. Skips, naming
    what to install, when PostgreSQL's server binaries are missing.
``make_agent`` (function)
    ``make_agent(plugins={"name": module}, config={...}, users={...})`` builds
    and starts a real agent served by cheroot on 127.0.0.1 (free port) and
    returns a :class:`RunningAgent`; every agent is stopped at teardown. Only
    the plugins given are loaded (no entry-point autoload).
``agent``
    ``make_agent()`` with no plugin: the core alone.
``client``
    A :class:`Client` logged in as ``alice`` on ``agent``.

Tests talk to the agent over real HTTP with :class:`Client`.
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from .agent import Agent
from .auth import UsersFile
from .config import RawConfig

PASSWORD = "correct horse battery staple"
KEY = "0123456789abcdef-test-key"
INSTALL_HINT = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"


def find_bindir() -> str | None:
    """Directory holding initdb and pg_ctl (PG_BINDIR, pg_config, Debian's layout, PATH)."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    candidates += sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(os.path.dirname(which))
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "initdb")) and os.path.isfile(os.path.join(path, "pg_ctl")):
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway PostgreSQL cluster; superuser ``postgres``, trust authentication."""

    def __init__(self, bindir: str, extra_conf: Mapping[str, str] | None = None):
        self.bindir = bindir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.superuser = "postgres"
        self.datadir = tempfile.mkdtemp(prefix="pgwarden-data-")
        self.sockdir = tempfile.mkdtemp(prefix="pgw-", dir="/tmp")
        self.logfile = os.path.join(self.sockdir, "postgres.log")
        self.run_as: str | None = "postgres" if os.geteuid() == 0 else None
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.datadir, self.sockdir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.extra_conf = dict(extra_conf or {})

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.run_as, cwd="/tmp")

    def init(self) -> None:
        self._run(
            os.path.join(self.bindir, "initdb"),
            "-D", self.datadir, "-U", self.superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "250",
            "shared_buffers": "32MB",
            "autovacuum": "off",
            "logging_collector": "off",
            **self.extra_conf,
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> None:
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``[postgresql]`` section for an agent of this cluster."""
        return {"host": self.host, "port": self.port, "user": self.superuser, "dbname": "postgres", **overrides}

    def connect(self, dbname: str = "postgres", user: str | None = None, autocommit: bool = True, **kwargs: Any) -> Any:
        """A psycopg2 connection (autocommit by default); close it yourself."""
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=user or self.superuser, dbname=dbname, **kwargs
        )
        conn.autocommit = autocommit
        return conn

    def execute(self, sql: Any, params: Any = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit on a fresh connection; rows if any."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def url(self, dbname: str) -> str:
        """A SQLAlchemy URL for ``dbname`` (for a PostgreSQL operations store)."""
        return f"postgresql+psycopg2://{self.superuser}@{self.host}:{self.port}/{quote(dbname)}"


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:200]!r}>"


class Client:
    """A small HTTP client for tests: one connection per request, real sockets."""

    def __init__(self, base_url: str, session: str | None = None, key: str | None = None, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.key = key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.base_url)
        if parts.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        hdrs = {}
        if self.session:
            hdrs["X-Session"] = self.session
        if json is not None:
            body = jsonlib.dumps(json)
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=hdrs)
            res = conn.getresponse()
            return Response(res.status, res.headers, res.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    def login(self, username: str = "alice", password: str = PASSWORD) -> Client:
        """A new client carrying a session of ``username``."""
        res = self.post("/login", {"username": username, "password": password})
        assert res.status == 200, res
        return Client(self.base_url, session=res.json()["session"], timeout=self.timeout)


class RunningAgent:
    """An agent served over real HTTP on 127.0.0.1; :meth:`restart` keeps its home."""

    def __init__(self, raw: RawConfig, modules: Mapping[str, Any], environ: Mapping[str, str]):
        self.raw = raw
        self.modules = dict(modules)
        self.environ = dict(environ)
        self.agent = Agent.from_config(raw, self.modules, self.environ)
        self.agent.start()

    @property
    def url(self) -> str:
        assert self.agent.server is not None
        return self.agent.server.url

    def client(self, **kw: Any) -> Client:
        return Client(self.url, **kw)

    def login(self, username: str = "alice", password: str = PASSWORD) -> Client:
        return self.client().login(username, password)

    def stop(self) -> None:
        self.agent.stop()

    def restart(self) -> None:
        """Stop, then start a new agent with the same configuration and home."""
        self.agent.stop()
        self.agent = Agent.from_config(self.raw, self.modules, self.environ)
        self.agent.start()


def agent_config(
    cluster: Cluster,
    home: str | os.PathLike[str],
    plugins: Mapping[str, Any],
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> RawConfig:
    """The raw configuration ``make_agent`` uses, with ``config`` merged over it."""
    data: dict[str, dict[str, Any]] = {
        "agent": {
            "address": "127.0.0.1",
            "port": 0,
            "home": str(home),
            "key": KEY,
            "plugins": ", ".join(plugins),
            "threads": 8,
            "log_level": "DEBUG",
        },
        "postgresql": cluster.settings(),
    }
    for section, values in (config or {}).items():
        data.setdefault(section, {}).update(values)
    return RawConfig.from_dict(data)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(INSTALL_HINT)
    cluster = Cluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def make_agent(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., RunningAgent]]:
    started: list[RunningAgent] = []
    counter = iter(range(1000))

    def make(
        plugins: Mapping[str, Any] | None = None,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        users: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        home: str | os.PathLike[str] | None = None,
    ) -> RunningAgent:
        plugins = dict(plugins or {})
        home = home or tmp_path / f"agent{next(counter)}"
        raw = agent_config(pg_cluster, home, plugins, config)
        users_file = UsersFile(os.path.join(str(home), "users"))
        for name, password in (users if users is not None else {"alice": PASSWORD}).items():
            users_file.set(name, password)
        running = RunningAgent(raw, plugins, environ or {})
        started.append(running)
        return running

    yield make
    for running in reversed(started):
        running.stop()


@pytest.fixture
def agent(make_agent: Callable[..., RunningAgent]) -> RunningAgent:
    return make_agent()


@pytest.fixture
def client(agent: RunningAgent) -> Client:
    return agent.login()


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
