"""The plugin's own table in the operations store: one row per kill request.

Every pid named in a ``POST /activity/kill`` is recorded, refused ones too:
who asked (the session's user, or ``key``), when, the pid, what it was
(database and user of the backend when known), whether it was terminated and,
if not, why.

Bounded as it is written: each request deletes the rows beyond the newest
``[activity] kills_max`` and those older than ``[activity] kills_max_age``
seconds; a request names at most ``[activity] kill_max_pids`` pids.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from agent_core.store import Store, UTCDateTime, now

metadata = sa.MetaData()

kills = sa.Table(
    "activity_kills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("requested_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False, index=True),
    sa.Column("killed", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("database", sa.Text),
    sa.Column("username", sa.Text),
)


#: ``reason`` of a row written before its pid is signalled; replaced by the
#: result. A row left so means the result could not be recorded (the request
#: was answered 503 saying so).
PENDING = "requested; its result was not recorded"


def record_requested(store: Store, requested_by: str, pids: list[int], keep: int, max_age: float) -> datetime:
    """Write one row per pid before any is signalled, in one transaction that
    also deletes the rows beyond the newest ``keep`` and those older than
    ``max_age`` seconds; return the request's time stamp (its rows' key with
    ``requested_by``). Raises StoreUnavailable (503) when the store fails:
    nothing is signalled then."""
    stamp = now()
    rows = [
        {"requested_at": stamp, "requested_by": requested_by, "pid": pid, "killed": False, "reason": PENDING}
        for pid in pids
    ]
    with store.begin() as conn:
        if rows:
            conn.execute(kills.insert(), rows)
        conn.execute(kills.delete().where(kills.c.requested_at < stamp - timedelta(seconds=max_age)))
        # ids only grow (the newest rows are never deleted), so the newest
        # ``keep`` rows have ids above max - keep (fewer when ids have gaps)
        newest = conn.execute(sa.select(sa.func.max(kills.c.id))).scalar()
        if newest is not None and newest > keep:
            conn.execute(kills.delete().where(kills.c.id <= newest - keep))
    return stamp


def record_results(store: Store, requested_by: str, stamp: datetime, results: Iterable[dict[str, Any]]) -> None:
    """Replace the rows :func:`record_requested` wrote with the results
    (``pid``, ``killed``, optional ``reason``, ``database``, ``user``), in one
    transaction. Raises StoreUnavailable when the store fails."""
    rows = [
        {
            "_pid": r["pid"],
            "_at": stamp,
            "_by": requested_by,
            "killed": bool(r["killed"]),
            "reason": r.get("reason"),
            "database": r.get("database"),
            "username": r.get("user"),
        }
        for r in results
    ]
    if not rows:
        return
    statement = kills.update().where(
        kills.c.pid == sa.bindparam("_pid"),
        kills.c.requested_at == sa.bindparam("_at", type_=UTCDateTime()),
        kills.c.requested_by == sa.bindparam("_by"),
    )  # the SET clause: the other keys of each row
    with store.begin() as conn:
        conn.execute(statement, rows)
