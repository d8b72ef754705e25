"""Alembic's environment for the operations store.

pgwarden runs it programmatically (:func:`agent_core.migrations.migrate`),
handing it an open connection in ``config.attributes["connection"]``; a
developer may also run the ``alembic`` command with a configuration naming
``script_location = agent_core:migrations`` and ``sqlalchemy.url`` (to write a
new revision with ``alembic revision --autogenerate`` against a scratch
store).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from agent_core.store import metadata


def _run(connection: sa.Connection) -> None:
    # render_as_batch: SQLite alters a table by copying it; autogenerate writes batch operations
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # the alembic command of a developer
    engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()
