"""The pytest fixtures of :mod:`agent_core.testing` (documented there and
in docs/plugins/testing.md): ``pg_cluster``, ``make_agent``, ``agent``,
``client``, ``databases``, ``backends``; and :func:`throwaway_cluster` for a
test's own cluster."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent_core.auth import UsersFile
from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.testing.agents import RunningAgent, agent_config
from agent_core.testing.credentials import PASSWORD, add_user
from agent_core.testing.http_client import Client
from agent_core.testing.postgres import Backends, Databases


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
