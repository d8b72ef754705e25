"""What ``GET /discover`` and ``GET /status`` answer, for both temboard UI generations.

- the flat 7.x document (``hostname``, ``cpu``, ``pg_version``...): to the
  temboard UI 7.11 and every client that authenticates with a session or the
  agent key;
- the nested 9.x document (``postgres``, ``system``, ``temboard``,
  ``signature_status``, with an ``ETag``): to signed requests (the temboard UI
  8.0 and later), see :mod:`agent_core.auth.signing`.

``GET /status`` (public) answers ``alive``, ``version``, ``uptime`` as always;
when signed requests are enabled (``[signing] public_key``) it adds the 9.x
``postgres``, ``temboard`` and ``system`` objects and the
``X-TemBoard-Discover-ETag`` header. Their PostgreSQL part is read at most once
per :data:`STATUS_TTL` seconds whatever the request rate, and a request never
waits for a refresh another one is doing (it gets the previous figures).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil

from agent_core import __version__

if TYPE_CHECKING:
    from agent_core.interfaces import Agent

#: Seconds the PostgreSQL facts of GET /status are reused.
STATUS_TTL = 2.0

_QUERY = (
    "SELECT current_setting('server_version_num')::int AS num, version() AS full_version,"
    " current_setting('server_version') AS version, current_setting('port')::int AS port,"
    " current_setting('block_size')::int AS block_size,"
    " current_setting('max_connections')::int AS max_connections,"
    " current_setting('server_encoding') AS server_encoding,"
    " current_setting('cluster_name') AS cluster_name,"
    " pg_postmaster_start_time() AS start_time, pg_is_in_recovery() AS is_standby, pg_backend_pid() AS backend,"
    # pg_settings leaves out what the role may not read (current_setting() would raise)
    " (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'data_directory') AS data,"
    " EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE pending_restart) AS pending_restart"
)


def _iso(when: float | datetime.datetime | None) -> str | None:
    if when is None:
        return None
    if isinstance(when, datetime.datetime):
        return when.astimezone(datetime.timezone.utc).isoformat()
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat()


def postgres_facts(agent: Agent) -> dict[str, Any]:
    """One row of facts about PostgreSQL (PostgresUnavailable when down)."""
    return agent.postgres.query(_QUERY)[0]


def version_summary(server_version: str) -> str:
    """``PostgreSQL 15.18`` from ``15.18 (Debian 15.18-1.pgdg120+1)``, as temboard's agent says it."""
    return "PostgreSQL " + server_version.split(" ", 1)[0]


@functools.lru_cache(maxsize=1)
def _static_system() -> dict[str, Any]:
    """What does not change while the agent runs."""
    model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        distribution = platform.freedesktop_os_release().get("PRETTY_NAME")
    except OSError:
        distribution = None
    return {
        "fqdn": socket.getfqdn(),
        "hostname": socket.gethostname(),
        "cpu_model": model or platform.processor() or None,
        "distribution": distribution,
        "os": platform.system(),
        "os_version": platform.release(),
        "arch": platform.machine(),
        "start_time": _iso(psutil.boot_time()),
    }


def _hugepage() -> int | None:
    """Size of a huge page in bytes (``Hugepagesize`` of /proc/meminfo), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def system_facts(local: bool) -> dict[str, Any]:
    """The ``system`` object: the host's figures are null when PostgreSQL does not run here."""
    facts = dict(_static_system())
    facts.update(
        {
            "cpu_count": os.cpu_count() if local else None,
            "memory": psutil.virtual_memory().total if local else None,
            "swap": psutil.swap_memory().total if local else None,
            "hugepage": _hugepage() if local else None,
        }
    )
    if not local:
        facts["cpu_model"] = None
    return facts


def flat(agent: Agent, pg: dict[str, Any], local: bool, reason: str, details: bool) -> dict[str, Any]:
    """The 7.x document (the temboard agent 7.11's fields, and pgwarden's own)."""
    return {
        "hostname": socket.getfqdn(),
        "cpu": os.cpu_count() if local else None,
        "memory_size": psutil.virtual_memory().total if local else None,
        "pg_local": local,
        "pg_local_reason": reason,
        "pg_port": pg["port"],
        # as the 7.11 agent: the full version() here, "PostgreSQL 15.18" as the summary
        "pg_version": pg["full_version"],
        "pg_version_num": pg["num"],
        "pg_version_summary": version_summary(pg["version"]),
        "pg_data": pg["data"] if details else None,
        "pg_block_size": pg["block_size"],
        "instance": agent.config.postgresql["instance"],
        "plugins": agent.plugin_names,
        "agent_version": __version__,
    }


def nested(agent: Agent, pg: dict[str, Any], local: bool, reason: str) -> dict[str, Any]:
    """The 9.x document, every detail included (the caller hides what the requester may not see)."""
    return {
        "postgres": {
            "version": pg["full_version"],
            "version_summary": version_summary(pg["version"]),
            "version_num": pg["num"],
            "port": pg["port"],
            "data_directory": pg["data"],
            "max_connections": pg["max_connections"],
            "start_time": _iso(pg["start_time"]),
            "block_size": pg["block_size"],
            "server_encoding": pg["server_encoding"],
            "cluster_name": pg["cluster_name"] or None,
            "is_standby": pg["is_standby"],
            "local": local,
            "local_reason": reason,
            "instance": agent.config.postgresql["instance"],
        },
        "system": system_facts(local),
        "temboard": {
            "agent_version": __version__,
            "agent": "pgwarden",
            "plugins": agent.plugin_names,
            "configfile": agent.config.path,
        },
    }


def etag(document: dict[str, Any]) -> str:
    """A strong validator of the 9.x document (without ``signature_status``)."""
    body = {k: v for k, v in document.items() if k != "signature_status"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return f'"{digest[:32]}"'


def invalid_document() -> dict[str, Any]:
    """What a refused signature gets on GET /discover: the 9.x keys, no facts."""
    return {
        "postgres": {"version": None, "version_summary": None, "port": None, "data_directory": None},
        "system": {"fqdn": None, "hostname": None, "cpu_count": None, "memory": None},
        "temboard": {"agent_version": None, "plugins": []},
        "signature_status": "invalid",
    }


class StatusFacts:
    """The PostgreSQL part of GET /status: read at most once per STATUS_TTL, never waited for twice."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        """``{"pg": row or None, "local": bool, "etag": str or None}``, or None before any read."""
        if time.monotonic() - self._at < STATUS_TTL or not self._lock.acquire(blocking=self._value is None):
            return self._value
        try:
            if time.monotonic() - self._at >= STATUS_TTL:
                self._value = self._read()
                self._at = time.monotonic()
        finally:
            self._lock.release()
        return self._value

    def _read(self) -> dict[str, Any]:
        agent = self.agent
        try:
            pg = postgres_facts(agent)
            locality = agent.postgres.locality()
        except Exception:  # PostgreSQL down or refusing: the status says so
            previous = self._value or {}
            return {"pg": None, "local": previous.get("local", False), "etag": previous.get("etag")}
        document = nested(agent, pg, locality.local, locality.reason)
        return {"pg": pg, "local": locality.local, "etag": etag(document)}


def status_nested(agent: Agent, facts: dict[str, Any] | None, started_at: float) -> dict[str, Any]:
    """The 9.x objects of GET /status."""
    pg = (facts or {}).get("pg")
    local = bool((facts or {}).get("local"))
    postmaster = None
    if pg is not None and local:
        try:
            postmaster = psutil.Process(pg["backend"]).ppid()
        except (psutil.Error, OSError):
            postmaster = None
    system = system_facts(local)
    return {
        "postgres": {
            "status": "running" if pg is not None else "unavailable",
            "pid": postmaster,
            "start_time": _iso(pg["start_time"]) if pg else None,
            "is_standby": pg["is_standby"] if pg else None,
            # not on a public route: the primary's address and user
            "primary_conninfo": None,
            "pending_restart": pg["pending_restart"] if pg else False,
            "primary": None,
        },
        "temboard": {"status": "running", "pid": os.getpid(), "start_time": _iso(started_at)},
        "system": {
            "status": "running",
            "start_time": system["start_time"],
            "cpu_count": system["cpu_count"],
            "cpu_model": system["cpu_model"],
            "memory": system["memory"],
            "swap": system["swap"],
            "hugepage": system["hugepage"],
        },
    }
