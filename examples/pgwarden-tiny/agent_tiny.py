"""pgwarden-tiny: a whole pgwarden plugin in one module. Every ``[tiny] interval``
seconds the recurring task ``tiny.count`` counts the ordinary tables of schema
public in the default database into the store table ``tiny_counts``;
``GET /tiny/counts`` answers the newest counts."""

from datetime import timedelta

import sqlalchemy as sa

from agent_core.hookspecs import Option, Route, TaskType, hookimpl
from agent_core.store import UTCDateTime, now

COUNT_TABLES = "SELECT count(*) AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = %(schema)s::regnamespace"

metadata = sa.MetaData()
counts = sa.Table(
    "tiny_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", UTCDateTime(), nullable=False),  # not sa.DateTime(timezone=True): naive on SQLite
    sa.Column("tables", sa.Integer, nullable=False),
)


def count_tables(ctx):
    """The task ``tiny.count``: one row of ``tiny_counts``, also the operation's result."""
    tables = ctx.agent.postgres.query(COUNT_TABLES, {"schema": "public"})[0]["n"]
    with ctx.agent.store.begin() as conn:
        conn.execute(counts.insert().values(at=now(), tables=tables))
        conn.execute(counts.delete().where(counts.c.at < now() - timedelta(days=30)))
    return {"tables": tables}


def list_counts(request):
    """GET /tiny/counts -> {"counts": [{"at": "2026-01-31T22:00:00Z", "tables": 3}...]}, newest first.

    200; 401 bad session or key; 406 no session or key; 503 store unavailable."""
    with request.agent.store.connect() as conn:
        rows = conn.execute(counts.select().order_by(counts.c.id.desc()).limit(100)).all()
    return {"counts": [{"at": f"{r.at:%Y-%m-%dT%H:%M:%SZ}", "tables": r.tables} for r in rows]}


@hookimpl
def agent_add_config(schema):
    schema.add(Option("interval", int, 3600, "Seconds between two counts.", minimum=1))


@hookimpl
def agent_db_metadata():
    return metadata


@hookimpl
def agent_register_tasks(agent):
    interval = agent.config.section("tiny")["interval"]
    return [TaskType("tiny.count", count_tables, interval=interval)]


@hookimpl
def agent_register_routes(agent):
    return [Route("GET", "/tiny/counts", list_counts, key=True)]
