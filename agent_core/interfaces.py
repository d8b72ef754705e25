"""What a plugin sees of the agent: the types of ``agent``, ``agent.scheduler`` and ``agent.metrics``.

Hooks receive the running agent (:class:`agent_core.agent.Agent`); a view gets it
as ``request.agent`` and a task as ``ctx.agent``. These protocols are the part of
it plugins may use, and the part the core's own lower layers use: they are typed
against these protocols, never against the class that wires them together, so
that no module imports the agent it is a part of. The agent class is checked
against :class:`Agent` by mypy (``agent_core.agent._conforms``).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from prometheus_client.registry import CollectorRegistry

    from agent_core.config import Config
    from agent_core.operations.model import Listed, Operation
    from agent_core.postgres import Postgres
    from agent_core.stash import Stash
    from agent_core.store import Store


class Operations(Protocol):
    """``agent.scheduler``: submit, read and cancel operations (see :mod:`agent_core.operations`)."""

    @property
    def tasks(self) -> Mapping[str, object]:
        """The registered task types by name (``<plugin>.<verb>``)."""
        ...

    @property
    def running(self) -> int:
        """How many operations run now in this agent."""
        ...

    def submit(
        self,
        task: str,
        params: dict[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        dbname: str | None = None,
        schema: str | None = None,
        table: str | None = None,
        index: str | None = None,
        requested_by: str | None = None,
        capped: bool = True,
    ) -> str:
        """Store a new ``todo`` operation; its id."""
        ...

    def get(self, op_id: str) -> Operation | None:
        """The operation ``op_id``, or None."""
        ...

    def list(self, **filters: Any) -> builtins.list[Operation]:
        """The operations matching ``filters`` (task, dbname, schema, table, index, status)."""
        ...

    def page(
        self, limit: int, cursor: str | None = None, **filters: Any
    ) -> tuple[builtins.list[Operation], str | None]:
        """One page of operations and the cursor of the next (None at the end)."""
        ...

    def listing(
        self, limit: int, cursor: str | None = None, **filters: Any
    ) -> tuple[builtins.list[Listed], str | None]:
        """As :meth:`page`, rows kept as their stored JSON text (for HTTP listings)."""
        ...

    def cancel(self, op_id: str, task: str | None = None, wait: float = 10.0) -> Operation:
        """Cancel a ``todo`` or running operation; the operation as it is afterwards (still ``doing``
        if it did not end within ``wait`` seconds)."""
        ...


class Metrics(Protocol):
    """``agent.metrics``: what a plugin's collector may ask of the agent's metrics."""

    #: The agent's own ``CollectorRegistry`` (``GET /metrics`` renders it).
    registry: CollectorRegistry

    def live(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()``'s value, computed at most once per ``[agent] metrics_max_age``."""
        ...


class Agent(Protocol):
    """The running agent, as hooks, views (``request.agent``) and tasks (``ctx.agent``) see it."""

    #: The validated configuration: ``config.agent``, ``config.postgresql``, ``config.section("<plugin>")``.
    config: Config
    #: The connection helper (:class:`agent_core.postgres.Postgres`).
    postgres: Postgres
    #: Per-agent state of plugins (:mod:`agent_core.stash`).
    stash: Stash
    #: The operations store (SQLAlchemy), holding the plugins' own tables too.
    store: Store
    #: The names of the enabled plugins, in config order.
    plugin_names: list[str]
    #: pgwarden's version.
    version: str
    #: When the agent started (Unix time).
    started_at: float

    @property
    def scheduler(self) -> Operations: ...

    @property
    def metrics(self) -> Metrics: ...

    def notify(self, username: str, message: str) -> None:
        """Record an audit log entry (``GET /notifications``); never raises."""
        ...

    def notify_many(self, username: str, messages: list[str]) -> None:
        """Record audit log entries in one write; never raises."""
        ...
