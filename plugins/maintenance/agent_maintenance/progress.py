"""Progress of the running maintenance operations, as listings show it:
what ``pg_stat_progress_*`` tells of each one's backend (found by its pid
and ``application_name``), or what it waits for."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .queries import fetch, progress_sql
from .tasks import application_name

if TYPE_CHECKING:
    from agent_core.interfaces import Agent
    from agent_core.operations.model import Operation

log = logging.getLogger("pgwarden.maintenance")


def progress(agent: Agent, ops: list[Operation]) -> dict[str, dict[str, Any]]:
    """Progress of the running operations among ``ops``, by id: what
    ``pg_stat_progress_*`` tells of their backend (phase, percentage of the
    phase, relation being processed), or what they wait for. One query per
    database with running operations."""
    out: dict[str, dict[str, Any]] = {}
    by_db: dict[str, list[Operation]] = {}
    for op in ops:
        if op.status != "doing":
            continue
        if not (op.info or {}).get("backend_pid"):
            out[op.id] = {"phase": "waiting for a free maintenance slot or connecting"}
            continue
        by_db.setdefault(op.dbname or "", []).append(op)
    for dbname, running in by_db.items():
        pids = [op.info["backend_pid"] for op in running]
        try:
            with agent.postgres.connect(dbname or None) as conn:
                rows = fetch(conn, progress_sql(conn.server_version), {"pids": pids})
        except Exception as e:  # progress is best effort: never fail a listing for it
            log.warning("progress of maintenance operations in %r: %s", dbname, e)
            continue
        found = {(r["pid"], r["application_name"]): r for r in rows}
        for op in running:
            row = found.get((op.info["backend_pid"], application_name(op.id)))
            if row is None:
                continue
            entry = {
                "backend_pid": row["pid"],
                "command": row["command"],
                "phase": row["phase"],
                "percent": row["percent"],
                "relation": row["relation"],
            }
            if row["wait_event_type"] == "Lock":
                entry["waiting_for"] = f"lock ({row['wait_event']})"
                entry["phase"] = entry["phase"] or "waiting for a lock"
            out[op.id] = entry
    return out
