"""The plugin's own table in the operations store: one row per kill request.

Every pid named in a ``POST /activity/kill`` is recorded, refused ones too:
who asked (the session's user, or ``key``), when, the pid, what it was
(database and user of the backend when known), whether it was terminated and,
if not, why.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from agent_core.store import UTCDateTime, now

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


def record_kills(engine: sa.engine.Engine, requested_by: str, results: Iterable[dict[str, Any]]) -> None:
    """Insert one row per result (``pid``, ``killed``, optional ``reason``,
    ``database``, ``user``) in one transaction."""
    stamp = now()
    rows = [
        {
            "requested_at": stamp,
            "requested_by": requested_by,
            "pid": r["pid"],
            "killed": bool(r["killed"]),
            "reason": r.get("reason"),
            "database": r.get("database"),
            "username": r.get("user"),
        }
        for r in results
    ]
    if rows:
        with engine.begin() as conn:
            conn.execute(kills.insert(), rows)
