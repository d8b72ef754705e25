"""Small helpers for tests: :func:`wait_for` (poll with a deadline instead
of sleeping), :func:`run_now` (run a task's next operation now), :class:`Clock`
(moves time forward where the code has a clock seam, instead of sleeping),
:func:`certificate_files` (a TLS certificate issued in-process)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agent_core.agent import Agent
from agent_core.operations.model import Operation
from agent_core.store import now, operations
from agent_core.testing.agents import RunningAgent


def wait_for(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def run_now(agent: Agent | RunningAgent, task: str, timeout: float = 30) -> Operation:
    """Run the next operation of ``task`` waiting to run (``todo``) now rather
    than at its time, and return it once finished (``status``, ``result``...).

    The way to test a recurring task (``TaskType(interval=...)``, whose first
    run is ``interval`` seconds after start-up) or one submitted for later
    without waiting: the operation keeps its id and runs as any other, in a
    scheduler worker; a recurring one is then scheduled again ``interval``
    seconds after it ended. Fails the test when no operation of ``task`` is
    ``todo``, or when it has not finished within ``timeout`` seconds.
    """
    scheduler = (agent.agent if isinstance(agent, RunningAgent) else agent).scheduler
    pending = scheduler.list(task=task, status="todo")
    if not pending:
        raise AssertionError(f"no operation of {task!r} waits to run")
    op_id = pending[0].id
    with scheduler.store.begin() as conn:
        todo = operations.c.id == op_id, operations.c.status == "todo"
        conn.execute(operations.update().where(*todo).values(scheduled_at=now()))
    scheduler.wake()
    recurring = bool(scheduler.tasks[task].interval)

    def ended() -> Operation | None:
        op = scheduler.get(op_id)
        if op is None or not op.finished:
            return None
        # a recurring task's next run is submitted just after the end is
        # stored: returned once it is there, as this docstring promises
        if recurring and not scheduler.list(task=task, status="todo"):
            return None
        return op

    return wait_for(ended, timeout)


def certificate_files(directory: str | os.PathLike[str], identity: str = "127.0.0.1") -> tuple[Path, Path]:
    """A certificate for ``identity`` and its key, written as ``cert.pem`` and
    ``key.pem`` in ``directory``: issued in-process by a test CA of trustme
    (``ca.pem`` beside them); skips when trustme is not installed."""
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (make venv installs it)")
    d = Path(directory)
    ca = trustme.CA()
    issued = ca.issue_cert(identity)
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    issued.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    issued.private_key_pem.write_to_path(str(d / "key.pem"))
    return d / "cert.pem", d / "key.pem"


class Clock:
    """Real time moved forward by :meth:`advance`, for the code's clock seams
    (``running.agent.auth.clock = clock.now``, ``Throttle(clock=clock.monotonic)``):
    a test advances it past a limit instead of sleeping until then."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def now(self) -> datetime:
        """Aware UTC, as :func:`agent_core.store.now`."""
        return datetime.now(timezone.utc) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def time(self) -> float:
        return time.time() + self.offset
