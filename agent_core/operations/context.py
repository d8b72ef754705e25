"""What a running task sees: :class:`TaskContext`, shared by its ``run`` and ``cancel``."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent_core.operations.model import Operation

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.interfaces import Agent

log = logging.getLogger("pgwarden.scheduler")

#: Seconds between two saves of a running operation's notices.
NOTICE_SAVE_INTERVAL = 1.0


class Recorder(Protocol):
    """Where a context saves what its task reports (the scheduler)."""

    def _save(self, op_id: str, **values: Any) -> None: ...

    def _update_info(self, op_id: str, values: dict[str, Any]) -> None: ...


@dataclass
class TaskContext:
    """What a running task sees; shared by its ``run`` and ``cancel``.

    ``state`` is a free dict for the task (the backend pid it runs on...).
    ``update_info(**values)`` persists small facts in the operation row
    (visible to listings and to ``TaskType.abort`` after a restart).
    ``notice(text)`` keeps a server notice or warning with the operation.
    ``cancel_requested`` is set before ``TaskType.cancel`` is called.
    """

    operation: Operation
    agent: Agent | None
    scheduler: Recorder
    state: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    stop_reason: str | None = None
    _saved_at: float = 0.0

    @property
    def params(self) -> dict[str, Any]:
        return self.operation.params

    def notice(self, text: str) -> None:
        """Keep ``text`` with the operation; saved at most once a second while
        it runs (so listings show them) and always when it ends."""
        self.notices.append(text.rstrip("\n"))
        if time.monotonic() - self._saved_at >= NOTICE_SAVE_INTERVAL:
            self._saved_at = time.monotonic()
            try:
                self.scheduler._save(self.operation.id, notices=list(self.notices))
            except Exception as e:  # kept here and saved when it ends: the task goes on
                log.warning("could not save the notices of operation %s yet: %s", self.operation.id, e)

    def update_info(self, **values: Any) -> None:
        self.scheduler._update_info(self.operation.id, values)
