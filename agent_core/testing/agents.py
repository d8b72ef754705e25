"""A real agent served over HTTP on 127.0.0.1 in the test's process
(:class:`RunningAgent`, what ``make_agent`` returns), and the configuration
it is made from (:func:`agent_config`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from agent_core.agent import Agent
from agent_core.cluster import Cluster
from agent_core.config import RawConfig
from agent_core.testing.credentials import KEY, PASSWORD
from agent_core.testing.http_client import Client


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
