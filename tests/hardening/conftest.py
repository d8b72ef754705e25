"""Fixtures of the hardening suites: an agent with the in-repo plugins on the
session's throwaway cluster, an ``admin`` (alice) and a ``read`` user (dash),
and the agent's log captured as text."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import agent_activity.plugin as activity_plugin
import agent_dashboard.plugin as dashboard_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.auth import UsersFile
from agent_core.testing import (
    KEY,
    PASSWORD,
    Client,
    Cluster,
    Databases,
    RunningAgent,
    agent_config,
    free_port,
    wait_for,
)

PLUGINS = {"activity": activity_plugin, "maintenance": maintenance_plugin, "dashboard": dashboard_plugin}
USERS = {"alice": PASSWORD, "dash": (PASSWORD, "read")}


@pytest.fixture
def start_full(databases: Databases, make_agent: Callable[..., RunningAgent]) -> Callable[..., RunningAgent]:
    """``start_full(**config_sections)``: an agent with both plugins and both
    users. Depends on ``databases`` first so agents stop before databases are
    dropped."""

    def start(**sections: dict[str, Any]) -> RunningAgent:
        config: dict[str, dict[str, Any]] = {"agent": {"log_level": "DEBUG"}, "activity": {"sample_interval": 0.5}}
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        return make_agent(plugins=PLUGINS, config=config, users=USERS)

    return start


@pytest.fixture
def full_agent(start_full: Callable[..., RunningAgent]) -> RunningAgent:
    return start_full()


@pytest.fixture(scope="module")
def shared_agent(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    """One agent like ``full_agent`` for a whole module, for tests that change
    nothing (an agent per test costs about a second)."""
    home = tmp_path_factory.mktemp("shared_agent")
    users = UsersFile(os.path.join(str(home), "users"))
    users.set("alice", PASSWORD, "admin")
    users.set("dash", PASSWORD, "read")
    running = RunningAgent(agent_config(pg_cluster, home, PLUGINS, {"agent": {"log_level": "DEBUG"}}), PLUGINS, {})
    try:
        yield running
    finally:
        running.stop()


class LogText(logging.Handler):
    """Every log record of the process (root logger at DEBUG: the agent's,
    cheroot's, SQLAlchemy's...), formatted with its traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def agent_log() -> Iterator[LogText]:
    handler = LogText()
    logger = logging.getLogger()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class AgentProcess:
    """``pgwarden serve`` in its own process (its memory measured apart from
    the tests'), logging at DEBUG to :attr:`log_path`."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log_path: Path):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def client(self, **kw: Any) -> Client:
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
    """``agent_process(**agent_settings)``: ``pgwarden serve`` (core only, alice
    an admin, the test KEY) in a subprocess on 127.0.0.1; stopped at teardown."""
    started: list[AgentProcess] = []

    def start(**settings: Any) -> AgentProcess:
        home = tmp_path / f"home{len(started)}"
        home.mkdir()
        UsersFile(str(home / "users")).set("alice", PASSWORD)
        port = free_port()
        log_path = home / "agent.log"
        agent = {"address": "127.0.0.1", "port": port, "home": home, "key": KEY, "log_level": "DEBUG"}
        agent.update(log_file=log_path, **settings)
        lines = ["[agent]", *(f"{k} = {v}" for k, v in agent.items()), "[postgresql]"]
        lines += [f"{k} = {v}" for k, v in pg_cluster.settings().items()]
        conf = home / "pgwarden.conf"
        conf.write_text("\n".join(lines) + "\n")
        pgwarden = Path(sys.executable).parent / "pgwarden"
        with open(home / "stdout", "wb") as out:
            proc = subprocess.Popen([str(pgwarden), "-c", str(conf), "serve"], stdout=out, stderr=out)
        running = AgentProcess(proc, f"http://127.0.0.1:{port}", log_path)
        started.append(running)

        def up() -> bool:
            assert proc.poll() is None, (home / "stdout").read_text()
            try:
                return running.client(timeout=5).get("/status").status == 200
            except OSError:
                return False

        wait_for(up, timeout=60)
        return running

    try:
        yield start
    finally:
        for running in started:
            if running.proc.poll() is None:
                running.proc.send_signal(signal.SIGTERM)
                try:
                    running.proc.wait(20)
                except subprocess.TimeoutExpired:
                    running.proc.kill()
                    running.proc.wait(10)
