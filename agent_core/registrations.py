"""What plugins register: the frozen dataclasses the registration hooks return.

:class:`Route` (``agent_register_routes``) and :class:`TaskType`
(``agent_register_tasks``). Each knows its own problems for a plugin
(:meth:`Route.problems`, :meth:`TaskType.problems`); the core validates them all
in one place, :func:`agent_core.plugins.hook_problems`. Plugins import them from
:mod:`agent_core.hookspecs`, which re-exports them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent_core.roles import PERMISSIONS

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.interfaces import Agent
    from agent_core.operations.context import TaskContext
    from agent_core.operations.model import Operation

#: HTTP methods a plugin route may use.
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
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
        :class:`agent_core.web.request.Request`. It returns a JSON-serialisable dict or
        list (answered 200), or an :class:`agent_core.web.responses.Response`
        (status, headers), or raises an error of :mod:`agent_core.errors`
        (its status is :mod:`agent_core.web.errors`' table's).
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
        ``run(ctx)`` with a :class:`agent_core.operations.context.TaskContext`; runs in a
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
