"""The plugin contract of pgwarden: every hook a plugin may implement.

A plugin is a module (or object) registered under its entry-point name in the
``pgwarden`` group. That name is the plugin's identity everywhere: the name in
``[agent] plugins``, its config section, its URL prefix (``/<name>``), the
prefix of its store tables (``<name>_``) and of its task names
(``<name>.<verb>``).

Implement hooks with :data:`hookimpl`::

    from agent_core.hookspecs import hookimpl, Route

    @hookimpl
    def agent_register_routes(agent):
        return [Route("GET", "/hello", hello, key=True)]

Rules the core enforces when the agent starts (see :mod:`agent_core.plugins`):

* a misspelled hook (a ``@hookimpl`` whose name is not below) refuses start-up;
* registration hooks return lists of the frozen dataclasses of this module and
  the core validates them in one place: a route outside ``/<name>``, a
  duplicate route, a task not named ``<name>.<verb>`` or a table not prefixed
  ``<name>_`` refuses start-up with a message naming the plugin;
* hooks are called with keyword arguments; pluggy never passes a hookimpl
  parameter that has a default value, so start-up refuses such defaults.

Hooks are called through pluggy, so the ``@hookimpl`` options ``tryfirst``,
``trylast``, ``wrapper``, ``hookwrapper``, ``optionalhook`` and ``specname``
work as pluggy documents them; results and failures are still attributed to
the plugin they come from (see :mod:`agent_core.plugins`).

Set ``PGWARDEN_TRACE_HOOKS=1`` to log every hook call and its result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from agent_core.config import Option
from agent_core.registrations import METHODS, Route, TaskType
from agent_core.roles import PERMISSIONS, ROLES

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import sqlalchemy
    from prometheus_client.registry import Collector

    from agent_core.config import SectionSchema
    from agent_core.interfaces import Agent

__all__ = [
    "METHODS",
    "PERMISSIONS",
    "PROJECT",
    "ROLES",
    "AgentSpec",
    "Option",
    "Route",
    "TaskType",
    "hookimpl",
    "hookspec",
]

PROJECT = "pgwarden"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class AgentSpec:
    """Hook specifications; the docstrings are the contract."""

    @hookspec
    def agent_add_config(self, schema: SectionSchema) -> None:
        """Declare the options of the plugin's own config section.

        Called once per plugin, before the configuration is validated, with
        ``schema`` bound to the section named after the plugin. Call
        ``schema.add(Option(...))`` for each option. The values are available
        afterwards as ``agent.config.section("<plugin>")`` (a dict).

        Raising refuses start-up, naming the plugin.
        """

    @hookspec
    def agent_db_metadata(self) -> sqlalchemy.MetaData | None:
        """Return the plugin's own SQLAlchemy tables, or ``None``.

        Called once at start-up after the configuration is valid. Every table
        name must start with ``<plugin>_``. The core creates missing tables in
        the operations store (``agent.store``); it does not migrate existing
        ones.

        Raising refuses start-up, naming the plugin.
        """
        return None

    @hookspec
    def agent_register_tasks(self, agent: Agent) -> list[TaskType]:
        """The scheduler hook: return the task types this plugin can run.

        Called once at start-up, before operations left over from the previous
        run are recovered (so ``TaskType.abort`` can clean them up). Operations
        are then submitted with ``agent.scheduler.submit("<plugin>.<verb>", ...)``.

        Raising refuses start-up, naming the plugin.
        """
        return []

    @hookspec
    def agent_register_routes(self, agent: Agent) -> list[Route]:
        """Return the plugin's HTTP routes.

        Called once at start-up. Every path must be under ``/<plugin>``;
        duplicates (same method and path as another route) refuse start-up.
        Authentication is applied by the core to every route (session, or the
        agent key where ``Route.key`` is true).

        Raising refuses start-up, naming the plugin.
        """
        return []

    @hookspec
    def agent_metrics(self, agent: Agent) -> list[Collector]:
        """Return the plugin's Prometheus collectors for ``GET /metrics``.

        Called once at start-up, after routes are registered and before
        ``agent_startup``. Each collector is an object with a ``collect()``
        method yielding ``prometheus_client`` metric families (a
        ``prometheus_client.registry.Collector``); the core registers it on
        the agent's own registry (never the global default one) and calls
        ``collect()`` at every scrape, in the HTTP worker thread: keep it
        cheap, read PostgreSQL through ``agent.metrics.live(key, compute)``
        (computed at most once per ``[agent] metrics_max_age`` seconds).
        Name metrics ``pg_*`` like postgres_exporter where it has the same
        figure, ``pgwarden_<plugin>_*`` otherwise.

        Raising refuses start-up, naming the plugin. A ``collect()`` that
        raises at scrape time is logged and its metrics are left out of that
        scrape (counted in ``pgwarden_metrics_collector_errors_total``); the
        scrape still answers 200.
        """
        return []

    @hookspec
    def agent_startup(self, agent: Agent) -> None:
        """Check what the plugin needs and start its background work.

        Called once when the agent starts, after routes and tasks are
        registered, before the HTTP server accepts connections and before the
        scheduler starts running operations. Raise
        :class:`agent_core.errors.StartupError` to refuse to start with a clear
        message; any other exception also refuses start-up, logged with its
        traceback.
        """

    @hookspec
    def agent_shutdown(self, agent: Agent) -> None:
        """Stop background work and release resources.

        Called once when the agent stops, after the HTTP server stopped
        accepting requests and the scheduler stopped, in pluggy's order like
        every hook (that of ``[agent] plugins``; ``@hookimpl(trylast=True)``
        to shut down after the others). Raising is logged and does not
        prevent the other plugins' shutdown.
        """
