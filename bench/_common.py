"""What the harness is made of: the agent as its own process, the load process,
direct timings of the floors, and a few small helpers.

``bench/run.py`` is the harness; it imports this module (Python puts
``bench/`` on ``sys.path`` when a script there is run) and this module puts
the repository root there too, for ``agent_core``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from load import summary

from agent_core.auth import UsersFile
from agent_core.cluster import Cluster
from agent_core.testing import PASSWORD, Client, ServedAgent

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PGWARDEN = Path(sys.executable).parent / "pgwarden"


def timed(fn: Callable[[], object], n: int, warmup: int = 3) -> dict[str, Any]:
    """``fn`` called ``warmup`` times, then ``n`` times timed: p50/p95/p99/max in ms."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return {**summary(samples), "requests": n}


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 (``openssl`` command)."""
    cert, key = directory / "server.pem", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class AgentProcess:
    """``pgwarden serve`` in its own process, on a free port, with both plugins,
    user ``alice`` (admin) and a fresh home; production defaults otherwise
    (INFO log, to a file in its home)."""

    def __init__(
        self,
        cluster: Cluster,
        tls: bool,
        settings: Mapping[str, Any] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
    ):
        self.home = Path(tempfile.mkdtemp(prefix="pgwarden-bench-"))
        agent = {
            "address": "127.0.0.1",
            "port": 0,
            "home": str(self.home),
            "plugins": "activity, maintenance",
            "log_file": str(self.home / "agent.log"),
            **(settings or {}),
        }
        if tls:
            cert, key = self_signed(self.home)
            agent.update(tls_cert=str(cert), tls_key=str(key))
        sections = dict(sections or {})
        postgresql = {**cluster.settings(), **sections.pop("postgresql", {})}
        config = self.home / "pgwarden.conf"
        with open(config, "w") as f:
            for name, section in (("agent", agent), ("postgresql", postgresql), *(sections or {}).items()):
                f.write(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in section.items()))
        UsersFile(str(self.home / "users")).set("alice", PASSWORD)
        # answering (AssertionError with its stderr if not, within 60 s); stopped by stop()
        self.served = ServedAgent(config, argv=[str(PGWARDEN), "-c", str(config), "serve"], stop_timeout=20)
        self.proc = self.served.proc
        self.url = self.served.url
        self.ps = psutil.Process(self.proc.pid)

    def client(self) -> Client:
        return Client(self.url)

    def session(self) -> str:
        """A new session of ``alice``."""
        return str(self.client().login().session)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def stop(self) -> None:
        self.served.stop()
        shutil.rmtree(self.home, ignore_errors=True)


class PeakRss:
    """Samples a process's RSS every 50 ms in a thread; ``peak_mb`` is the highest seen."""

    def __init__(self, agent: AgentProcess):
        self.agent = agent
        self.peak_mb = agent.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak_mb = max(self.peak_mb, self.agent.rss_mb())
            except psutil.Error:
                return

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_mb


def load(
    agent: AgentProcess,
    paths: list[str],
    concurrency: int,
    requests: int,
    seconds: float,
    session: str | None = None,
    method: str = "GET",
    body: Any = None,
    warmup: int = 2,
    close: bool = False,
) -> dict[str, Any]:
    """One run of the load process (``bench/load.py``) against ``agent``, with
    the agent's CPU seconds per request measured around it."""
    job = {
        "url": agent.url,
        "paths": paths,
        "method": method,
        "headers": {"X-Session": session} if session else {},
        "body": body,
        "concurrency": concurrency,
        "requests": requests,
        "seconds": seconds,
        "warmup": warmup,
        "close": close,
    }
    cpu0 = agent.cpu_s()
    peak = PeakRss(agent)
    out = subprocess.run(
        [sys.executable, str(HERE / "load.py")], input=json.dumps(job), capture_output=True, text=True, check=True
    )
    cpu = agent.cpu_s() - cpu0
    result: dict[str, Any] = json.loads(out.stdout)
    # the warm-up requests are in the agent's CPU time too
    total = result["requests"] + result["errors"] + warmup * concurrency
    result["agent_cpu_ms_per_request"] = cpu * 1000 / total if total else None
    result["agent_peak_mb"] = round(peak.stop(), 1)
    result["agent_rss_after_mb"] = round(agent.rss_mb(), 1)
    return result
