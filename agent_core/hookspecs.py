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

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    import sqlalchemy
    from prometheus_client.registry import Collector

    from .agent import Agent
    from .config import SectionSchema
    from .scheduler import Operation, TaskContext

PROJECT = "pgwarden"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: HTTP methods a plugin route may use.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Permissions a route may need; the ``admin`` role holds both, ``read`` only ``read``.
PERMISSIONS = ("read", "write")
#: User roles and the permissions each holds.
ROLES: dict[str, tuple[str, ...]] = {"admin": ("read", "write"), "read": ("read",)}
_PATH_RE = re.compile(r"^(/[^/]+)+$|^/[^/]*$")
_TASK_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Route:
    """One HTTP route of a plugin.

    ``method``
        One of :data:`METHODS`. ``OPTIONS`` preflight and ``HEAD`` are answered
        by the core.
    ``path``
        Absolute bottle path under the plugin's prefix: ``/<plugin>`` or
        ``/<plugin>/...``, with wildcards such as ``<db>`` or ``<id:re:[0-9a-f]{8}>``.
        Wildcards match one path segment; their values are percent-decoded
        exactly once from the raw request target, so ``%2F`` is a slash inside
        a value and ``%25`` a percent sign.
    ``view``
        ``view(request, **wildcards)`` where ``request`` is an
        :class:`agent_core.http.Request`. It returns a JSON-serialisable dict or
        list (answered 200), or an :class:`agent_core.responses.Response`
        (status, headers), or raises an error of :mod:`agent_core.errors`
        (its status is :mod:`agent_core.web_errors`' table's).
        A statement canceled by ``[postgresql] statement_timeout`` or
        ``lock_timeout`` is a 504; PostgreSQL unreachable or the operations
        store unavailable a 503; a database that does not exist a 404
        (:class:`agent_core.errors.DatabaseNotFound`). Any other exception is a 500 with a
        generic message, the traceback going to the log only.
    ``key``
        ``True`` if the agent key (``?key=``, ``X-Pgwarden-Key`` or
        ``X-TemBoard-Agent-Key``) is accepted instead of a session. A session is
        always accepted. Plugins cannot make a route public.
    ``permission``
        ``"read"`` or ``"write"``; empty (the default) means ``"read"`` for
        ``GET`` and ``"write"`` for every other method. Users of the ``read``
        role and the agent key (unless ``[agent] key_writes`` is on) hold only
        ``read``; calling a ``write`` route they get 403. Checked by the core
        with authentication, before the view runs.
    ``openapi``
        Optional OpenAPI 3 Operation Object fragment describing the route
        (``summary``, ``description``, ``parameters``, ``requestBody``,
        ``responses``...). The core merges it into ``GET /openapi.json``,
        adding what it knows itself: path parameters, authentication and
        the core's error responses.
    """

    method: str
    path: str
    view: Callable[..., Any]
    key: bool = False
    permission: str = ""
    openapi: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def needs(self) -> str:
        """The permission the route needs: ``"read"`` or ``"write"``."""
        return self.permission or ("read" if self.method == "GET" else "write")

    def problems(self, plugin: str) -> list[str]:
        """What is wrong with this route for ``plugin`` (empty when valid)."""
        out = []
        if self.method not in METHODS:
            out.append(f"route {self.path!r}: method {self.method!r} is not one of {', '.join(METHODS)}")
        prefix = f"/{plugin}"
        if not isinstance(self.path, str) or not (self.path == prefix or self.path.startswith(prefix + "/")):
            out.append(f"route {self.path!r}: path must start with {prefix!r}")
        if not callable(self.view):
            out.append(f"route {self.path!r}: view is not callable")
        if self.permission not in (*PERMISSIONS, ""):
            out.append(f"route {self.path!r}: permission {self.permission!r} is not one of {', '.join(PERMISSIONS)}")
        if self.openapi is not None and not isinstance(self.openapi, Mapping):
            out.append(f"route {self.path!r}: openapi must be a mapping (an OpenAPI Operation Object)")
        return out


@dataclass(frozen=True)
class TaskType:
    """A kind of operation the core scheduler can run.

    ``name``
        ``<plugin>.<verb>``, lowercase (``maintenance.vacuum``).
    ``run``
        ``run(ctx)`` with a :class:`agent_core.scheduler.TaskContext`; runs in a
        scheduler worker thread. Its return value (JSON-serialisable or None)
        is stored as the operation's result and the operation ends ``done``.
        If it raises, the operation ends ``failed`` with the exception's text as
        its error, or ``canceled`` if a cancel was requested meanwhile.
    ``cancel``
        ``cancel(ctx)``, called from another thread when a running operation
        is canceled; it must make ``run`` return or raise soon (for SQL work:
        ``pg_cancel_backend`` of the operation's own backend). ``None`` means a
        running operation of this type cannot be canceled (409).
    ``abort``
        ``abort(operation, agent)``, called at start-up for each operation of
        this type found ``doing`` (the agent stopped while it ran), before it is
        marked ``aborted``: clean up what it left behind. It may return a list
        of strings, kept as notices of the operation (what it cleaned up); if
        it raises, the failure is logged and kept as a notice.
    ``interval``
        If set, seconds between runs of a recurring operation the core keeps
        scheduled by itself (with empty parameters, requested by ``agent``).
    """

    name: str
    run: Callable[[TaskContext], Any]
    cancel: Callable[[TaskContext], None] | None = None
    abort: Callable[[Operation, Agent], list[str] | None] | None = None
    interval: float | None = None
    description: str = ""

    def problems(self, plugin: str) -> list[str]:
        out = []
        if not isinstance(self.name, str) or not _TASK_RE.match(self.name):
            out.append(f"task {self.name!r}: name must look like '{plugin}.verb' (lowercase)")
        elif self.name.split(".")[0] != plugin:
            out.append(f"task {self.name!r}: name must start with '{plugin}.'")
        if not callable(self.run):
            out.append(f"task {self.name!r}: run is not callable")
        if self.interval is not None and not self.interval > 0:
            out.append(f"task {self.name!r}: interval must be a positive number of seconds")
        return out


@dataclass(frozen=True)
class Option:
    """One option of a config section.

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or ``list`` (comma
    separated strings). ``default`` is used when the key is absent (``None``
    with ``required=False`` means "unset"). ``choices`` restricts the value.
    ``validator(value)`` may raise ``ValueError`` whose text becomes the
    reason in ``section.key: reason``. ``minimum`` bounds numbers.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    validator: Callable[[Any], Any] | None = field(default=None, compare=False)
    secret: bool = False


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
