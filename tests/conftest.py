from __future__ import annotations

import contextlib
import os
import pathlib
import resource
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# before anything imports agent_core.testing (the cluster helpers below are in it):
# pytest rewrites the asserts of its fixtures only if it imports the module first
pytest.register_assert_rewrite("agent_core.testing")

from agent_core.auth import UsersFile  # noqa: E402
from agent_core.cluster import Cluster, free_port  # noqa: E402

pytest_plugins = ["agent_core.testing"]

#: The installed agent's default places: the test suite must never write there.
SYSTEM_PATHS = ("/var/lib/pgwarden", "/etc/pgwarden")

#: Fixtures that start PostgreSQL (every agent fixture depends on ``pg_cluster``).
PG_FIXTURES = frozenset({"pg_cluster", "own_cluster"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast layer: a test that needs no PostgreSQL cluster (none of
    :data:`PG_FIXTURES` among its fixtures, direct or not) and is not marked
    ``slow``, ``packaging`` or ``process`` (a test that runs a program: the
    CLI, a cluster or a server started by itself) is marked ``unit``. ``make test`` runs ``-m unit`` first
    (seconds), then ``-m "not unit"``: the two selections make the whole suite."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # a pytest-xdist worker (make test): the minutes-long install tests first,
        # so that they overlap the rest instead of ending the run alone
        items.sort(key=lambda item: item.get_closest_marker("packaging") is None)
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & PG_FIXTURES:
            continue
        if any(item.get_closest_marker(m) for m in ("slow", "packaging", "process")):
            continue
        item.add_marker(pytest.mark.unit)


def snapshot(paths=SYSTEM_PATHS):
    """Every file and directory under ``paths`` with its size and mtime (what was
    there before the run is allowed; anything new or changed is not)."""
    out = {}
    for top in paths:
        root = pathlib.Path(top)
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            try:
                st = path.lstat()
            except OSError:
                continue
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def nothing_written_to_system_paths():
    """Fails the run if a test created or changed anything under /var/lib/pgwarden
    or /etc/pgwarden (tests work in temporary directories only)."""
    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(p for p in after if before.get(p) != after[p])
    if changed:
        pytest.fail(f"the tests wrote outside temporary directories: {changed}", pytrace=False)


def _limit_open_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class AgentProcess:
    """``pgwarden serve`` in its own process (its memory measured apart from
    the tests'), logging at DEBUG to :attr:`log_path`."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def client(self, **kw: Any) -> Any:
        from agent_core.testing import Client

        return Client(self.url, **kw)

    def peak_rss_mb(self) -> float:
        """The process's resident memory high-water mark (``VmHWM``), in MB."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM in /proc/<pid>/status")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def agent_process(pg_cluster: Cluster, tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """``agent_process(open_files=None, **agent_settings)``: ``pgwarden serve``
    (core only, alice an admin, the test KEY) in a subprocess on 127.0.0.1,
    its open-files limit (soft and hard) set to ``open_files`` when given;
    stopped at teardown."""
    started: list[AgentProcess] = []
    stack = contextlib.ExitStack()

    from agent_core.testing import KEY, PASSWORD, add_user, serve, wait_for

    def start(open_files: int | None = None, **settings: Any) -> AgentProcess:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        add_user(UsersFile(str(home / "users")), "alice", PASSWORD)
        port = free_port()
        log_path = home / "agent.log"
        agent = {"address": "127.0.0.1", "port": port, "home": home, "key": KEY, "log_level": "DEBUG"}
        agent.update(log_file=log_path, **settings)
        lines = ["[agent]", *(f"{k} = {v}" for k, v in agent.items()), "[postgresql]"]
        lines += [f"{k} = {v}" for k, v in pg_cluster.settings().items()]
        conf = home / "pgwarden.conf"
        conf.write_text("\n".join(lines) + "\n")
        limit = None if open_files is None else lambda: _limit_open_files(open_files)
        # answering, stopped at teardown (SIGTERM, 20 s before SIGKILL)
        served = stack.enter_context(serve(conf, stop_timeout=20, preexec_fn=limit))
        running = AgentProcess(served.proc, f"http://127.0.0.1:{port}", log_path)
        started.append(running)

        def up() -> bool:
            assert served.proc.poll() is None, served.stdout + served.stderr
            return running.client(timeout=5).get("/status").status == 200

        wait_for(up, timeout=60)
        return running

    with stack:
        yield start
