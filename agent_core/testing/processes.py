"""Programs a test runs as processes: stopped with a bounded wait, and
``pgwarden serve`` run for the length of a ``with`` block.

``stop_process(proc, timeout=30, sig=signal.SIGTERM)``
    Sends ``sig`` to ``proc`` if it still runs, waits up to ``timeout`` s for
    it to exit, then kills it (SIGKILL) and waits up to 10 s more. Returns a
    :class:`subprocess.CompletedProcess`: ``returncode`` (``-9`` when it had
    to be killed) and what was left to read of its ``stdout`` and ``stderr``
    pipes, read through their descriptors while waiting, so that a process
    blocked on a full pipe still exits (``None`` for a stream that is not a
    pipe; what a ``readline()`` already buffered is not in it). Safe in a
    ``finally``, on a process that has already ended, and twice.

``with serve(config) as served:``
    Runs ``pgwarden -c config serve`` (``python -m agent_core.cli``; ``argv``:
    another command line, such as a unit's ``ExecStart`` with the
    configuration in ``env``), in ``env`` (default: this environment without
    its ``PGWARDEN_*`` variables), other keywords going to
    :class:`subprocess.Popen` (``umask``, ``user``, ``cwd``, ``preexec_fn``...).
    Its stdout and stderr go to temporary files, never to a pipe that could
    fill up. Waits up to ``timeout`` s (60) for its ``listening on <url>``
    line and for ``GET <url>/status`` to be answered (any HTTP status), and
    fails (AssertionError with the end of its stderr) if it exits or does not
    answer by then. Yields a :class:`ServedAgent`: ``proc``, ``url``,
    ``stdout`` and ``stderr`` (the text so far). At the end of the block it is
    stopped with :func:`stop_process` (SIGTERM, ``stop_timeout`` s, 30), and
    when the block raised, the end of its stderr is printed (pytest shows it
    with the failure). ``served.stop()`` stops it sooner and returns the
    result (``returncode``, ``stdout``, ``stderr`` as text), kept as
    ``served.result``. :class:`ServedAgent` itself starts one without a
    ``with`` block (for a fixture or a harness that stops it later).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent_core.testing.http_client import Client

#: How ``serve`` runs the agent by default (followed by ``-c <config> serve``).
COMMAND = (sys.executable, "-m", "agent_core.cli")

#: How much of a stderr failures show.
TAIL = 4000


def stop_process(
    proc: subprocess.Popen[Any], timeout: float = 30, sig: int = signal.SIGTERM
) -> subprocess.CompletedProcess[Any]:
    """Stop ``proc`` with a bounded wait and collect its output (see the module's docstring)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def clean_env() -> dict[str, str]:
    """This environment without its ``PGWARDEN_*`` variables (the agent would read them as settings)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}


class ServedAgent:
    """``pgwarden serve`` started and answering (see the module's docstring)."""

    def __init__(
        self,
        config: str | os.PathLike[str] | None = None,
        *,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        stop_timeout: float = 30,
        **popen: Any,
    ):
        if argv is None:
            if config is None:
                raise TypeError("serve needs a config file or an argv")
            argv = [*COMMAND, "-c", str(config), "serve"]
        self.argv = [str(a) for a in argv]
        self.stop_timeout = stop_timeout
        self.result: subprocess.CompletedProcess[str] | None = None
        self.url = ""
        self._dir = Path(tempfile.mkdtemp(prefix="pgwarden-serve-"))
        self._paths = {"stdout": self._dir / "stdout", "stderr": self._dir / "stderr"}
        with open(self._paths["stdout"], "wb") as out, open(self._paths["stderr"], "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=err, env=dict(clean_env() if env is None else env), **popen
            )
        try:
            self._wait(timeout)
        except BaseException:
            self.stop()
            raise

    def _read(self, stream: str) -> str:
        try:
            return self._paths[stream].read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def stdout(self) -> str:
        return self.result.stdout if self.result is not None else self._read("stdout")

    @property
    def stderr(self) -> str:
        return self.result.stderr if self.result is not None else self._read("stderr")

    def _answers(self) -> bool:
        try:
            Client(self.url, timeout=2).get("/status")
            return True
        except (OSError, http.client.HTTPException):
            return False

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.url:
                found = re.search(r"listening on (\S+)", self._read("stdout"))
                self.url = found.group(1) if found else ""
            if self.url and self._answers():
                return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"pgwarden serve exited ({self.proc.returncode}) before answering; stdout: {self.stdout!r};"
                    f" stderr ends:\n{self.stderr[-TAIL:]}"
                )
            if time.monotonic() > deadline:
                said = f"answered not at {self.url}" if self.url else "printed no 'listening on' line"
                raise AssertionError(f"pgwarden serve {said} within {timeout} s; stderr ends:\n{self.stderr[-TAIL:]}")
            time.sleep(0.05)

    def stop(self, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """SIGTERM, up to ``timeout`` s (``stop_timeout``) before SIGKILL; its
        exit status and output. Once: later calls return the same result."""
        if self.result is None:
            done = stop_process(self.proc, self.stop_timeout if timeout is None else timeout)
            self.result = subprocess.CompletedProcess(
                done.args, done.returncode, self._read("stdout"), self._read("stderr")
            )
            shutil.rmtree(self._dir, ignore_errors=True)
        return self.result


@contextmanager
def serve(config: str | os.PathLike[str] | None = None, **options: Any) -> Iterator[ServedAgent]:
    """``pgwarden serve`` for the length of the block (see the module's docstring)."""
    served = ServedAgent(config, **options)
    try:
        yield served
    except BaseException:
        result = served.stop()
        print(
            f"pgwarden serve ({' '.join(served.argv)}) exited {result.returncode};"
            f" its stderr ends:\n{result.stderr[-TAIL:]}",
            file=sys.stderr,
        )
        raise
    served.stop()
