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
    the plugins given are loaded (no entry-point autoload). ``users`` maps a
    name to a password (an ``admin``) or to ``(password, role)``; default
    ``{"alice": PASSWORD}``.
``agent``
    ``make_agent()`` with no plugin: the core alone.
``client``
    A :class:`Client` logged in as ``alice`` on ``agent``.

``databases`` (function)
    :class:`Databases`: ``databases.create("prefix")`` makes a database named
    ``prefix_<8 hex>`` on ``pg_cluster`` (optionally with ``CREATE DATABASE``
    options and a setup script run in it) and returns its name; every one is
    dropped ``WITH (FORCE)`` (PostgreSQL 13+) at teardown.
``backends`` (function)
    :class:`Backends`: real PostgreSQL sessions on ``pg_cluster``: ``open()``,
    ``idle(statement)``, ``run(statement)`` in a thread (it may block on a
    lock: a :class:`Held`), ``hold(statement)`` run in a thread and waited for
    (``"BEGIN; LOCK TABLE t"`` keeps its lock), ``wait_state(pid, "active",
    "Lock")``, ``gone(pid)``. At teardown, before ``databases`` are dropped,
    statements still running are canceled, threads joined, transactions
    rolled back and connections closed.

Tests talk to the agent over real HTTP with :class:`Client`.

The users the fixtures write are hashed with :data:`TEST_SCRYPT`, cheap scrypt
parameters (:func:`add_user`): a login verifies with the parameters stored in
the hash, so the tests' logins cost microseconds, not ~65 ms each. Only the
test harness does this: ``pgwarden user`` and ``pgwarden setup`` hash with
:mod:`agent_core.auth`'s own parameters, and so does any test that calls
:meth:`~agent_core.auth.UsersFile.set`. :class:`Clock` moves time forward
where the code has a clock seam, instead of sleeping.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import sql

from agent_core.agent import Agent
from agent_core.auth import User, UsersFile, hash_password
from agent_core.testing.cluster import INSTALL_HINT, Cluster, find_bindir, free_port

__all__ = [
    "INSTALL_HINT",
    "TEST_SCRYPT",
    "Backends",
    "Client",
    "Clock",
    "Cluster",
    "Databases",
    "Held",
    "Response",
    "RunningAgent",
    "TemboardSigner",
    "add_user",
    "agent_config",
    "certificate_files",
    "find_bindir",
    "free_port",
    "run_now",
    "wait_for",
]
from agent_core.config import RawConfig
from agent_core.operations.model import Operation
from agent_core.store import now, operations
from agent_core.testing.peers import client_context

PASSWORD = "correct horse battery staple"
KEY = "0123456789abcdef-test-key"
#: scrypt parameters of the users the fixtures write: about 2,000 times cheaper
#: than the agent's own (n=2**14, r=8), for tests only (see the module's docstring).
TEST_SCRYPT = {"n": 2**4, "r": 1, "p": 1}


def add_user(users: UsersFile, username: str, password: str, role: str = "admin") -> None:
    """Add or replace a user of ``users``, its password hashed with :data:`TEST_SCRYPT`."""
    current = users.load()
    current[username] = User(role, hash_password(password, **TEST_SCRYPT))
    users.save(current)


def certificate_files(directory: str | os.PathLike[str], identity: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``identity`` and its key, written as ``cert.pem`` and
    ``key.pem`` in ``directory``: issued in-process by a test CA of trustme
    (``ca.pem`` beside them); skips when trustme is not installed."""
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (make venv installs it)")
    d = Path(directory)
    ca = trustme.CA()
    issued = ca.issue_cert(identity)
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    issued.private_key_pem.write_to_path(str(d / "key.pem"))
    return d / "cert.pem", d / "key.pem"


class Clock:
    """Real time moved forward by :meth:`advance`, for the code's clock seams
    (``running.agent.auth.clock = clock.now``, ``Throttle(clock=clock.monotonic)``):
    a test advances it past a limit instead of sleeping until then."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def now(self) -> datetime:
        """Aware UTC, as :func:`agent_core.store.now`."""
        return datetime.now(timezone.utc) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset


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
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout, context=client_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout)
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


class TemboardSigner:
    """Signs requests as the temboard UI 8.0 and later does (its RSA private
    key; written from the protocol as recorded, independently of
    :mod:`agent_core.auth.signing`): ``signer.public_pem`` is what the UI serves at
    ``/signing.key``; :meth:`headers` the headers of one signed request;
    :meth:`request` sends one over real HTTP(S), the raw target as given."""

    def __init__(self, bits: int = 2048, user: str = "alice"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.user = user

    @property
    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_public(self, path: str | os.PathLike[str]) -> str:
        Path(path).write_bytes(self.public_pem)
        return str(path)

    def sign(self, text: str) -> str:
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = self.private_key.sign(
            text.encode("utf-8"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
            hashes.SHA256(),
        )
        return "v1:" + base64.b64encode(signature).decode("ascii")

    @staticmethod
    def canonical(method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> str:
        """The signed text: ``METHOD quote_plus(target, safe="/")``, an empty
        line, the headers ``name: value`` sorted, and for POST an empty line
        and the SHA-256 of the body; a final newline."""
        import hashlib
        from urllib.parse import quote_plus

        lines = [f"{method} {quote_plus(target, safe='/')}", ""]
        lines += [f"{name}: {headers[name]}" for name in sorted(headers)]
        if method == "POST":
            lines += ["", hashlib.sha256(body or b"").hexdigest()]
        return "\n".join(lines) + "\n"

    def headers(
        self,
        method: str,
        target: str,
        host: str,
        body: bytes | None = None,
        user: str | None = None,
        date: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, str]:
        signed = {
            "host": host,
            "x-temboard-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if date is None else date)),
            "x-temboard-request-id": request_id or str(uuid.uuid4()),
            "x-temboard-user": self.user if user is None else user,
        }
        if method == "POST":
            signed["content-type"] = "application/json"
            signed["content-length"] = str(len(body or b""))
        out = {
            "Host": signed["host"],
            "X-TemBoard-Date": signed["x-temboard-date"],
            "X-TemBoard-Request-Id": signed["x-temboard-request-id"],
            "X-TemBoard-User": signed["x-temboard-user"],
            "X-TemBoard-Signature": self.sign(self.canonical(method, target, signed, body)),
        }
        if method == "POST":
            out["Content-Type"] = signed["content-type"]
            out["Content-Length"] = signed["content-length"]
        return out

    def request(
        self,
        base_url: str,
        method: str,
        target: str,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
        **sign: Any,
    ) -> Response:
        """One signed request (``sign``: ``user``, ``date``, ``request_id``,
        ``host``); ``headers`` are sent as given instead when set (to send a
        recorded request again byte for byte)."""
        import ssl

        parts = urlsplit(base_url)
        host = parts.hostname or "127.0.0.1"
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
        if headers is None:
            sign.setdefault("host", f"{host}:{parts.port}")
            headers = self.headers(method, target, body=body, **sign)
        if parts.scheme == "https":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Accept-Encoding", "identity")
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            res = conn.getresponse()
            return Response(res.status, res.headers, res.read())
        finally:
            conn.close()


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

    def start(self) -> None:
        """Start a new agent with the same configuration and home (after :meth:`stop`)."""
        self.agent = Agent.from_config(self.raw, self.modules, self.environ)
        self.agent.start()

    def restart(self) -> None:
        """Stop, then start a new agent with the same configuration and home."""
        self.agent.stop()
        self.start()


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
    yield from throwaway_cluster()


def throwaway_cluster() -> Iterator[Cluster]:
    """A new cluster, initialised and started, destroyed when the generator is
    closed; skips naming what to install when the server binaries are missing.
    For a fixture of a test's own cluster: ``yield from throwaway_cluster()``."""
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
        users: Mapping[str, str | tuple[str, str]] | None = None,
        environ: Mapping[str, str] | None = None,
        home: str | os.PathLike[str] | None = None,
    ) -> RunningAgent:
        plugins = dict(plugins or {})
        home = home or tmp_path / f"agent{next(counter)}"
        raw = agent_config(pg_cluster, home, plugins, config)
        users_file = UsersFile(os.path.join(str(home), "users"))
        for name, entry in (users if users is not None else {"alice": PASSWORD}).items():
            password, role = (entry, "admin") if isinstance(entry, str) else entry
            add_user(users_file, name, password, role)
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


def run_now(agent: Agent | RunningAgent, task: str, timeout: float = 30) -> Operation:
    """Run the next operation of ``task`` waiting to run (``todo``) now rather
    than at its time, and return it once finished (``status``, ``result``...).

    The way to test a recurring task (``TaskType(interval=...)``, whose first
    run is ``interval`` seconds after start-up) or one submitted for later
    without waiting: the operation keeps its id and runs as any other, in a
    scheduler worker; a recurring one is then scheduled again ``interval``
    seconds after it ended. Fails the test when no operation of ``task`` is
    ``todo``, or when it has not finished within ``timeout`` seconds.
    """
    scheduler = (agent.agent if isinstance(agent, RunningAgent) else agent).scheduler
    pending = scheduler.list(task=task, status="todo")
    if not pending:
        raise AssertionError(f"no operation of {task!r} waits to run")
    op_id = pending[0].id
    with scheduler.store.begin() as conn:
        todo = operations.c.id == op_id, operations.c.status == "todo"
        conn.execute(operations.update().where(*todo).values(scheduled_at=now()))
    scheduler._wake()
    recurring = bool(scheduler.tasks[task].interval)

    def ended() -> Operation | None:
        op = scheduler.get(op_id)
        if op is None or not op.finished:
            return None
        # a recurring task's next run is submitted just after the end is
        # stored: returned once it is there, as this docstring promises
        if recurring and not scheduler.list(task=task, status="todo"):
            return None
        return op

    return wait_for(ended, timeout)


class Databases:
    """Databases with unique names on a cluster, all dropped by :meth:`drop_all`."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        #: The names made, in order.
        self.names: list[str] = []

    def create(self, prefix: str = "pgw", setup: Any = None, options: str | None = None) -> str:
        """A new database named ``<prefix>_<8 hex>`` (the prefix may hold any
        character), made with ``CREATE DATABASE`` ``options`` (SQL, as in
        ``"ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"``);
        ``setup`` (SQL) is then run in it."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if options:
            create = sql.SQL(" ").join([create, sql.SQL(options)])
        self.cluster.execute(create)
        self.names.append(name)
        if setup:
            self.cluster.execute(setup, dbname=name)
        return name

    def drop_all(self) -> None:
        """Drop every database made, newest first, ending its sessions."""
        for name in reversed(self.names):
            self.cluster.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class Held:
    """A statement run in a thread on its own connection: it may block (on a
    lock) or return leaving a transaction open. ``error`` is what it raised
    (canceled, terminated...), ``done`` is set when it returned."""

    def __init__(self, conn: Any, statement: Any, params: Any = None):
        self.conn = conn
        self.pid: int = conn.info.backend_pid
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(statement, params), daemon=True)
        self.thread.start()

    def _run(self, statement: Any, params: Any) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute(statement, params)
        except BaseException as e:  # canceled or terminated: reported to the test
            self.error = e
        finally:
            self.done.set()

    def join(self, timeout: float = 30) -> None:
        """Wait for the statement to return; fail if it is still blocked after ``timeout`` s."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "statement still blocked"


class Backends:
    """Real PostgreSQL sessions (server backends) of a test; :meth:`close` ends them all."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.conns: list[Any] = []
        self.held: list[Held] = []

    def open(
        self,
        dbname: str = "postgres",
        autocommit: bool = True,
        unix: bool = False,
        user: str | None = None,
        **connect: Any,
    ) -> Any:
        """A new psycopg2 connection, over TCP or (``unix``) the cluster's Unix socket."""
        if unix:
            c = self.cluster
            conn = psycopg2.connect(host=c.sockdir, port=c.port, user=user or c.superuser, dbname=dbname, **connect)
            conn.autocommit = autocommit
        else:
            conn = self.cluster.connect(dbname, user=user, autocommit=autocommit, **connect)
        self.conns.append(conn)
        return conn

    def idle(
        self, statement: str = "SELECT 1", dbname: str = "postgres", unix: bool = False, user: str | None = None
    ) -> Any:
        """A session that ran ``statement`` and now sits idle."""
        conn = self.open(dbname, unix=unix, user=user)
        with conn.cursor() as cur:
            cur.execute(statement)
        return conn

    def run(self, statement: Any, params: Any = None, conn: Any = None, dbname: str = "postgres") -> Held:
        """Run ``statement`` in a thread (on ``conn`` or a new autocommit session); return at once."""
        held = Held(conn if conn is not None else self.open(dbname), statement, params)
        self.held.append(held)
        return held

    def hold(self, statement: Any, dbname: str = "postgres", params: Any = None, timeout: float = 10) -> Held:
        """Run ``statement`` in a thread on a new autocommit session and wait up
        to ``timeout`` s for it to return: ``"BEGIN; LOCK TABLE t"`` then holds
        its lock until the test ends."""
        held = self.run(statement, params, dbname=dbname)
        held.done.wait(timeout)
        return held

    def wait_state(self, pid: int, state: str = "active", wait_event_type: str | None = None) -> None:
        """Wait until backend ``pid`` is in ``state`` (and waits on ``wait_event_type``)."""

        def ready() -> bool:
            rows = self.cluster.execute("SELECT state, wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
            return bool(rows) and rows[0][0] == state and (wait_event_type is None or rows[0][1] == wait_event_type)

        wait_for(ready, timeout=15)

    def gone(self, pid: int) -> bool:
        """Backend ``pid`` is no longer in pg_stat_activity."""
        return not self.cluster.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,))

    def close(self) -> None:
        """Cancel the statements still running, join their threads, roll back and close every connection."""
        for held in self.held:
            if held.thread.is_alive():
                self.cluster.execute("SELECT pg_cancel_backend(%s)", (held.pid,))
        for held in self.held:
            held.thread.join(30)
        for conn in self.conns:
            if not conn.closed:
                try:
                    if not conn.autocommit:
                        conn.rollback()
                except psycopg2.Error:
                    pass
                conn.close()


@pytest.fixture
def databases(pg_cluster: Cluster) -> Iterator[Databases]:
    dbs = Databases(pg_cluster)
    try:
        yield dbs
    finally:
        dbs.drop_all()


@pytest.fixture
def backends(pg_cluster: Cluster, databases: Databases) -> Iterator[Backends]:
    # Depends on ``databases``: its sessions end before the databases are dropped.
    b = Backends(pg_cluster)
    try:
        yield b
    finally:
        b.close()
