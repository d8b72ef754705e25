"""pgwarden-dashboard: live instance figures sampled in the background, with an
in-memory history, in the temboard dashboard contract. The hooks are in
:mod:`agent_dashboard.plugin`."""

__version__ = "0.1.0"
