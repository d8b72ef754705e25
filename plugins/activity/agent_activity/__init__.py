"""pgwarden-activity: PostgreSQL backends with per-process CPU, memory and I/O,
lock waiters and blockers, and kill. The hooks are in :mod:`agent_activity.plugin`."""

__version__ = "0.1.0"
