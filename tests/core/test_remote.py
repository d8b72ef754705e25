"""Remote instances: the agent detects whether PostgreSQL runs on its host.

Local: the throwaway cluster reached over TCP, over its Unix socket and
through a TCP forwarder (another address and port in between). Remote: a
cluster started in a PID namespace of its own, whose process ids mean nothing
on this host, exactly like a server in a container or on another machine;
and the ``[postgresql] local`` switch.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading

import psutil
import pytest

from agent_core.cluster import Cluster, find_bindir
from agent_core.postgres import Locality, detect_local

FIELDS = ("cpu", "memory", "read_s", "write_s", "iow")


class Forwarder:
    """A TCP forwarder on 127.0.0.1: every connection accepted is piped to ``target``."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            s.close()


@pytest.fixture
def forwarder(pg_cluster):
    f = Forwarder((pg_cluster.host, pg_cluster.port))
    yield f
    f.close()


@pytest.fixture(scope="module")
def isolated():
    """A second throwaway cluster running in its own PID namespace."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    cluster = Cluster(bindir)
    try:
        cluster.init()
        try:
            cluster.start_isolated()
        except RuntimeError as e:
            pytest.skip(str(e))
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def activity():
    return pytest.importorskip(
        "agent_activity.plugin", reason="activity plugin not installed (pip install -e plugins/activity)"
    )


def server_pids(conn):
    """(the pid of ``conn``'s backend, the pids of its checkpointer, background
    writer...) as PostgreSQL reports them; the backend lives while ``conn`` is open."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_backend_pid(),"
            " array_agg(pid) FILTER (WHERE backend_type IN ('checkpointer', 'background writer'))"
            " FROM pg_stat_activity"
        )
        return cur.fetchone()


def test_detection_on_real_processes(backends):
    # a session kept open: a backend whose connection closed may be gone before it is looked up
    backend, aux = server_pids(backends.open())
    assert len(aux) == 2
    assert detect_local(backend, aux).local is True
    # the same backend pid with a process of this host that is not a child of its postmaster
    found = detect_local(backend, [*aux, os.getpid()])
    assert found.local is False and f"[{os.getpid()}] are not children of postmaster" in found.reason
    # a pid that is no PostgreSQL process here (this Python), and one that exists no more
    me = psutil.Process().name()
    found = detect_local(os.getpid(), aux)
    assert found == Locality(False, f"pid {os.getpid()} of the agent's PostgreSQL backend is {me!r} on this host")
    gone = subprocess.Popen(["true"])
    gone.wait()
    found = detect_local(gone.pid, aux)
    assert found == detect_local(gone.pid, []) and not found.local
    assert found.reason == f"PostgreSQL's process {gone.pid} does not exist on this host"
    assert detect_local(backend, []).local is False  # nothing to check the postmaster against


def assert_local(running):
    res = running.login().get("/discover")
    assert res.status == 200, res
    body = res.json()
    assert body["pg_local"] is True, body
    assert "children of postmaster" in body["pg_local_reason"]
    assert body["cpu"] == os.cpu_count() and body["memory_size"] > 0


def test_local_over_tcp_the_socket_and_a_forwarder(make_agent, pg_cluster, forwarder):
    assert_local(make_agent())  # 127.0.0.1
    assert_local(make_agent(config={"postgresql": {"host": pg_cluster.sockdir}}))
    assert_local(make_agent(config={"postgresql": {"port": forwarder.port}}))
    assert forwarder.accepted > 0  # the last agent did go through the forwarder


def test_server_in_its_own_pid_namespace_is_remote(make_agent, isolated, activity):
    running = make_agent(
        plugins={"activity": activity},
        config={"postgresql": {"host": isolated.host, "port": isolated.port}, "activity": {"sample_interval": 0.2}},
    )
    api = running.login()
    res = api.get("/discover")
    assert res.status == 200, res
    body = res.json()
    assert body["pg_local"] is False, body
    assert "on this host" in body["pg_local_reason"] and "null" in body["pg_local_reason"]
    assert body["cpu"] is None and body["memory_size"] is None
    assert body["pg_port"] == isolated.port and body["pg_version"]  # what PostgreSQL answers still works
    # activity: the rows are there, from PostgreSQL; their per-process metrics are unknown
    idle = isolated.connect()
    try:
        pid = idle.info.backend_pid
        res = api.get("/activity")
        assert res.status == 200, res
        (row,) = [r for r in res.json()["rows"] if r["pid"] == pid]
        assert {field: row[field] for field in FIELDS} == dict.fromkeys(FIELDS)
    finally:
        idle.close()


def test_the_same_listing_has_metrics_when_local(make_agent, activity, backends):
    api = make_agent(plugins={"activity": activity}, config={"activity": {"sample_interval": 0.2}}).login()
    pid = backends.idle().info.backend_pid
    res = api.get("/activity")
    assert res.status == 200, res
    (row,) = [r for r in res.json()["rows"] if r["pid"] == pid]
    assert row["memory"] is not None and row["iow"] in ("Y", "N")


def test_the_local_switch_overrides_detection(make_agent, activity, backends):
    running = make_agent(plugins={"activity": activity}, config={"postgresql": {"local": "no"}})
    api = running.login()
    body = api.get("/discover").json()
    assert body["pg_local"] is False and body["pg_local_reason"].startswith("[postgresql] local = no: ")
    assert body["cpu"] is None and body["memory_size"] is None
    pid = backends.idle().info.backend_pid
    (row,) = [r for r in api.get("/activity").json()["rows"] if r["pid"] == pid]
    assert {field: row[field] for field in FIELDS} == dict.fromkeys(FIELDS)
    body = make_agent(config={"postgresql": {"local": "yes"}}).login().get("/discover").json()
    assert body["pg_local"] is True and body["pg_local_reason"] == "[postgresql] local = yes"


def test_unreadable_process_list_is_not_local_with_the_reason(make_agent, pg_cluster, databases):
    # a database where pg_stat_activity is not readable by everyone, a role that is not superuser
    db = databases.create("pgw_nostat", setup="REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC")
    role = f"pgw_nostat_{db[-8:]}"
    pg_cluster.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        running = make_agent(config={"postgresql": {"dbname": db, "user": role}})
        res = running.login().get("/discover")
        assert res.status == 200, res
        body = res.json()
        assert body["pg_local"] is False and body["pg_data"] is None  # data_directory: not for this role
        assert body["pg_local_reason"].startswith(
            "cannot list PostgreSQL's processes: permission denied for view pg_stat_activity"
        )
    finally:
        pg_cluster.execute(f'DROP ROLE "{role}"')  # owns nothing; its sessions end with the test
