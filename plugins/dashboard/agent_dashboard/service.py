"""The dashboard plugin's state for one agent: its sampler.

One :class:`Dashboard` exists per running agent (tests run several agents in
one process), kept in ``agent.stash`` under :data:`KEY`: :func:`attach` makes
it at start-up, :func:`get` finds it for a request, :func:`detach` stops it
at shutdown.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from typing import Any, Optional

import psutil

from agent_core.errors import Unavailable
from agent_core.stash import Stash, StashKey

from .sampler import Sampler

#: Seconds agent_startup waits for the first sample (PostgreSQL hung: the agent starts anyway).
FIRST_SAMPLE_WAIT = 1.0

#: The agent's Dashboard (between agent_startup and agent_shutdown).
KEY: StashKey[Dashboard] = StashKey("dashboard")
_attach_lock = threading.Lock()


def attach(agent: Any) -> Dashboard:
    with _attach_lock:
        stash: Stash = agent.stash
        instance = stash.get(KEY, None)
        if instance is None:
            instance = stash[KEY] = Dashboard(agent)
    return instance


def get(agent: Any) -> Dashboard:
    stash: Stash = agent.stash
    instance = stash.get(KEY, None)
    if instance is None:
        raise Unavailable("The dashboard plugin is not started.")
    return instance


def detach(agent: Any) -> None:
    stash: Stash = agent.stash
    instance = stash.pop(KEY, None)
    if instance is not None:
        instance.stop()


def iso(at: Optional[float]) -> Optional[str]:
    """A UNIX time as ISO 8601 in UTC (``2026-12-05T14:02:03+00:00``), None as None."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds")


class Dashboard:
    def __init__(self, agent: Any):
        self.agent = agent
        settings = agent.config.section("dashboard")
        self.interval: float = settings["interval"]
        self.history_length: int = settings["history_length"]
        self.sampler = Sampler(agent, self.interval, self.history_length)

    def start(self) -> None:
        """Start the sampler and give it a moment for its first sample, so
        that the history is not empty when the HTTP server opens (the
        temboard UIs render the page from its last sample)."""
        self.sampler.start()
        self.sampler.first.wait(timeout=FIRST_SAMPLE_WAIT)

    def stop(self) -> None:
        self.sampler.stop()

    def status(self, local: Optional[bool]) -> dict[str, Any]:
        """The ``status`` of GET /dashboard, from what the sampler last saw
        (the shape of the temboard agent's GET /status)."""
        facts = self.sampler.facts
        available = facts.get("available")
        system: dict[str, Any] = {
            "status": None,
            "start_time": None,
            "cpu_count": None,
            "memory": None,
        }
        if local:
            system = {
                "status": "running",
                "start_time": iso(psutil.boot_time()),
                "cpu_count": os.cpu_count(),
                "memory": psutil.virtual_memory().total,
            }
        return {
            "postgres": {
                "status": None if available is None else "running" if available else "unavailable",
                "pid": None,
                "start_time": iso(facts.get("start_time")),
                "is_standby": facts.get("is_standby"),
                "primary_conninfo": None,
                "pending_restart": facts.get("pending_restart"),
                "primary": facts.get("primary"),
            },
            "temboard": {"status": "running", "pid": os.getpid(), "start_time": iso(self.agent.started_at)},
            "system": system,
        }
