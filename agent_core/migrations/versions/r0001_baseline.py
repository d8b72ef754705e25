"""baseline, the core's tables as written before migrations

core_sessions, core_operations and core_notifications as pgwarden wrote them
before its schema was under Alembic.

A frozen copy, on purpose: a later change to ``agent_core/store.py`` gets its
own revision and leaves this one alone.

The upgrade creates what is missing and leaves what exists: on an empty store
it makes every table; on a store written before migrations (no
``alembic_version``, the tables there) it adds only what an earlier release
lacked (the listing and retention indexes of ``core_operations``), keeps every
row, and the store is recorded at this revision.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def baseline() -> sa.MetaData:
    """The core's tables at this revision."""
    md = sa.MetaData()
    stamp = sa.DateTime(timezone=True)  # agent_core.store.UTCDateTime: its DDL is its impl's
    sa.Table(
        "core_sessions",
        md,
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False, index=True),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("last_seen", stamp, nullable=False),
        sa.Column("address", sa.String(64)),
    )
    sa.Table(
        "core_operations",
        md,
        sa.Column("id", sa.String(8), primary_key=True),
        sa.Column("task", sa.String(100), nullable=False, index=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("dbname", sa.Text),
        sa.Column("schema", sa.Text),
        sa.Column("table", sa.Text),
        sa.Column("index", sa.Text),
        sa.Column("scheduled_at", stamp, nullable=False, index=True),
        sa.Column("status", sa.String(10), nullable=False, index=True),
        sa.Column("created_at", stamp, nullable=False),
        sa.Column("started_at", stamp),
        sa.Column("finished_at", stamp),
        sa.Column("requested_by", sa.Text),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("notices", sa.JSON, nullable=False),
        sa.Column("info", sa.JSON, nullable=False),
        sa.Index("core_operations_listing", "task", "scheduled_at", "created_at", "id"),
        sa.Index("core_operations_finished_at", "finished_at"),
    )
    sa.Table(
        "core_notifications",
        md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", stamp, nullable=False),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    return md


def upgrade() -> None:
    bind = op.get_bind()
    md = baseline()
    md.create_all(bind, checkfirst=True)
    for table in md.sorted_tables:  # create_all skips an existing table with its indexes
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    baseline().drop_all(op.get_bind())
