"""``pgwarden demo``: a throwaway PostgreSQL cluster and an agent, ready to curl."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from agent_core.agent import Agent
from agent_core.auth import UsersFile
from agent_core.cluster import INSTALL_HINT, Cluster, find_bindir
from agent_core.config import RawConfig
from agent_core.errors import PgwardenError
from agent_core.plugins import installed

DEMO_SQL = """
CREATE TABLE city (id serial PRIMARY KEY, name text NOT NULL, population int);
INSERT INTO city (name, population) SELECT 'city ' || g, g * 10 FROM generate_series(1, 5000) g;
CREATE INDEX city_name ON city (name);
DELETE FROM city WHERE id % 3 = 0;
ANALYZE city;
"""


def _write_config(path: str, cluster: Cluster, home: str, port: int, plugins: list[str], key: str) -> None:
    with open(path, "w") as f:
        f.write(
            "# Written by 'pgwarden demo'.\n"
            "[agent]\n"
            f"address = 127.0.0.1\nport = {port}\nhome = {home}\nkey = {key}\n"
            f"plugins = {', '.join(plugins)}\nlog_level = INFO\n\n"
            "[postgresql]\n"
            f"host = {cluster.host}\nport = {cluster.port}\nuser = postgres\ndbname = postgres\ninstance = demo\n"
        )


class _Steps:
    """``with steps(text):`` prints ``[n] text`` as the step starts and its
    duration as it ends (on lines of their own: the agent logs in between)."""

    def __init__(self) -> None:
        self.n = 0

    @contextlib.contextmanager
    def __call__(self, text: str) -> Iterator[None]:
        self.n += 1
        print(f"[{self.n}] {text}", flush=True)
        started = time.monotonic()
        try:
            yield
        except BaseException:
            print("    failed", flush=True)
            raise
        print(f"    done in {time.monotonic() - started:.1f} s", flush=True)


def run_demo(home: str, port: int, plugins_text: str) -> int:
    bindir = find_bindir()
    if bindir is None:
        raise PgwardenError(INSTALL_HINT)
    available = installed()
    plugins = [p.strip() for p in plugins_text.split(",") if p.strip()]
    missing = [p for p in plugins if p not in available]
    if missing:
        raise PgwardenError(
            f"plugin(s) not installed: {', '.join(missing)} (installed: {', '.join(sorted(available)) or 'none'})"
        )
    home = os.path.abspath(home)
    os.makedirs(home, exist_ok=True)
    cluster = Cluster(bindir)
    steps = _Steps()
    agent: Any = None
    try:
        with steps(f"initdb: a throwaway cluster in {cluster.datadir} ({bindir})"):
            cluster.init()
        with steps(f"start PostgreSQL on 127.0.0.1:{cluster.port}"):
            cluster.start()
        with steps("database demo: a table city of 5,000 rows, an index, a third deleted (bloat to look at)"):
            cluster.execute("CREATE DATABASE demo")
            cluster.execute(DEMO_SQL, dbname="demo")
        password = secrets.token_urlsafe(12)
        key = secrets.token_hex(16)
        config_path = os.path.join(home, "pgwarden.conf")
        with steps(f"config {config_path}, user admin in {os.path.join(home, 'users')}"):
            _write_config(config_path, cluster, home, port, plugins, key)
            UsersFile(os.path.join(home, "users")).set("admin", password)
        with steps(f"start the agent on 127.0.0.1:{port} (plugins: {', '.join(plugins) or 'none'})"):
            agent = Agent.from_config(RawConfig.read(config_path))
            agent.start()
        url = agent.server.url
        # The handlers are in place before "Press Ctrl-C" is printed: a Ctrl-C
        # sent as soon as it shows stops the demo cleanly, never a traceback.
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print(
            f"""
pgwarden demo is running: {url}
  config:    {config_path}
  user:      admin
  password:  {password}
  agent key: {key}

Try:
  SESSION=$(curl -s -X POST {url}/login -d '{{"username": "admin", "password": "{password}"}}' \\
            | python3 -c 'import json,sys; print(json.load(sys.stdin)["session"])')
  curl -s {url}/discover -H "X-Session: $SESSION"
  curl -s {url}/activity -H "X-Session: $SESSION"
  curl -s "{url}/maintenance?key={key}"
  curl -s {url}/maintenance/demo/schema/public -H "X-Session: $SESSION"
  curl -s -X POST {url}/maintenance/demo/schema/public/table/city/vacuum \\
       -H "X-Session: $SESSION" -d '{{"mode": "analyze"}}'
  curl -s {url}/maintenance/vacuum/scheduled -H "X-Session: $SESSION"
  curl -s "{url}/dashboard?key={key}"

Press Ctrl-C to stop (the cluster is removed).""",
            flush=True,
        )
        stop.wait()
    finally:
        if agent is not None:
            agent.stop()
        cluster.destroy()
        print("demo stopped, cluster removed", file=sys.stderr)
    return 0
