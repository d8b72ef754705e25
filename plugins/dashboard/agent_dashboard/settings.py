"""The ``[dashboard]`` configuration section."""

from __future__ import annotations

from agent_core.hookspecs import Option

OPTIONS = (
    Option(
        "interval",
        float,
        2.0,
        "Seconds between two samples of the background sampler (one SQL statement each);"
        " also the polling period GET /dashboard/config tells the UI (scheduler_interval).",
        minimum=0.1,
    ),
    Option(
        "history_length",
        int,
        150,
        "Samples kept in memory for GET /dashboard/history (150 x 2 s = 5 minutes; about 2.4 KB of memory each).",
        minimum=1,
    ),
)
