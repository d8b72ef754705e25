"""The hello.count task: runs in a scheduler worker thread when it is due."""

import logging

log = logging.getLogger("pgwarden.hello")


def count_tables(ctx):
    """Count the ordinary tables of schema public in the operation's database."""
    rows = ctx.agent.postgres.query(
        "SELECT count(*) AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
        dbname=ctx.operation.dbname,
    )
    log.info("database %s has %d tables", ctx.operation.dbname, rows[0]["n"])
    return {"tables": rows[0]["n"]}
