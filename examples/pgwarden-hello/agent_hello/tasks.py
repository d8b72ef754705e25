"""The hello.count task: runs in a scheduler worker thread."""


def count_tables(ctx):
    rows = ctx.agent.postgres.query(
        "SELECT count(*) AS n FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace",
        dbname=ctx.operation.dbname,
    )
    return {"tables": rows[0]["n"]}
