"""The ``[activity]`` configuration section."""

from __future__ import annotations

from agent_core.hookspecs import Option

OPTIONS = (
    Option("limit", int, 500, "Default maximum number of rows of GET /activity (?limit= overrides).", minimum=1),
    Option("show_idle", bool, True, "List idle sessions in GET /activity."),
    Option(
        "sample_interval",
        float,
        2.0,
        "Seconds between two background samples of the backends' CPU and I/O counters.",
        minimum=0.1,
    ),
    Option(
        "kill_wait",
        float,
        3.0,
        "Seconds POST /activity/kill waits for a terminated backend to exit (PostgreSQL 14+; 0: do not wait).",
        minimum=0,
    ),
    Option(
        "read_role_sees_queries",
        bool,
        False,
        "Show the query text of sessions to read clients (read users, the read-only agent key);"
        " off: their rows carry query null, as pg_stat_activity does for unprivileged roles.",
    ),
    Option(
        "kill_max_pids",
        int,
        1000,
        "Pids one POST /activity/kill may name; more is answered 400 before anything is signalled.",
        minimum=1,
    ),
    Option(
        "kills_max",
        int,
        100000,
        "Rows of the kill log (activity_kills) kept at most; each kill request deletes the oldest beyond.",
        minimum=1,
    ),
    Option(
        "kills_max_age",
        int,
        90 * 86400,
        "Seconds a row of the kill log is kept; each kill request deletes older ones.",
        minimum=1,
    ),
)
