"""The operations store's schema, under Alembic.

The core's tables (``core_sessions``, ``core_operations``,
``core_notifications``) change only through the revisions in ``versions/``,
shipped in the package and run at start by :func:`migrate`, with no
``alembic.ini``:

* an empty store is upgraded to the head revision;
* a store written before migrations (the core's tables there, no
  ``alembic_version``) is recorded at the baseline revision, which adds only
  what an earlier release lacked and keeps every row, then upgraded to head;
* a store at a revision this release does not know (written by a newer
  pgwarden) is refused: :class:`StoreSchemaError`, nothing changed.

Plugins' tables (``agent_db_metadata``) are not migrated here: the store
creates the missing ones at start, and each plugin owns its tables' evolution.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from agent_core.errors import StartupError

log = logging.getLogger("pgwarden.store")

#: This directory: Alembic's script location (env.py, versions/).
HERE = os.path.dirname(os.path.abspath(__file__))

#: The revision of the schema pgwarden wrote before migrations existed.
BASELINE = "0001"

#: The tables of the baseline: a store holding any of them and no
#: ``alembic_version`` was written before migrations.
CORE_TABLES = ("core_sessions", "core_operations", "core_notifications")

#: A PostgreSQL advisory lock key held while a PostgreSQL store is migrated,
#: so two agents starting at once on one store do not both create its tables.
_LOCK_KEY = 0x70677764  # "pgwd"


class _Quiet(logging.Filter):
    """Alembic's notes on every start (its plugins, the dialect's DDL
    transactions) are left out of the agent's log; its "Running upgrade" lines stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Context impl", "Will assume", "setup plugin"))


for _name in ("alembic.runtime.migration", "alembic.runtime.plugins"):
    logging.getLogger(_name).addFilter(_Quiet())


class StoreSchemaError(StartupError):
    """The store's schema cannot be brought to this release's (a revision it does not know)."""


def _config(connection: sa.Connection, locations: Sequence[str]) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", HERE)
    if locations:
        # both names: path_separator since Alembic 1.16, version_path_separator before
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join([os.path.join(HERE, "versions"), *locations]))
    config.attributes["connection"] = connection
    return config


def migrate(engine: sa.Engine, locations: Sequence[str] = ()) -> str:
    """Bring the core's tables to the head revision; return it.

    ``locations``: more directories of revisions (tests). Raises
    :class:`StoreSchemaError` when the store is at a revision none of them
    holds; SQLAlchemyError when the store fails.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    store = engine.url.render_as_string(hide_password=True)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        config = _config(conn, locations)
        script = ScriptDirectory.from_config(config)
        head = script.get_current_head()
        current = MigrationContext.configure(conn).get_current_revision()
        if current == head:
            return str(head)
        if current is None:
            present = set(sa.inspect(conn).get_table_names()) & set(CORE_TABLES)
            if present:
                log.info("operations store %s: written before schema migrations, recorded at %s", store, BASELINE)
        else:
            try:
                script.get_revision(current)
            except CommandError:
                raise StoreSchemaError(
                    f"the operations store {store} is at schema revision {current!r}, which this pgwarden does"
                    f" not know (it knows up to {head!r}): a newer pgwarden wrote it. Run that release, or"
                    " restore the copy of the store taken before the upgrade."
                ) from None
        log.info("operations store %s: upgrading the schema from %s to %s", store, current or "nothing", head)
        command.upgrade(config, "head")
    return str(head)
