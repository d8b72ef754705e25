"""A throwaway PostgreSQL cluster, for the test harness, benchmarks and ``pgwarden demo``.

``initdb`` and ``pg_ctl`` refuse to run as root: when we are root they run as
the ``postgres`` OS user, with a data directory and a short socket directory
(socket paths are limited to about 100 bytes) that it owns.

Authentication is ``trust``, except for members of the role
:data:`SCRAM_GROUP`: they must give their password (``scram-sha-256``),
over TCP and over the Unix socket; :meth:`Cluster.password_role` makes such a
role.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install them with "
    "'apt-get install postgresql' (Debian/Ubuntu), or set PG_BINDIR to their directory"
)

#: Members of this role log in with a password; every other role is trusted.
SCRAM_GROUP = "pgwarden_scram"


def find_bindir() -> str | None:
    """Directory holding initdb and pg_ctl (PG_BINDIR, pg_config, Debian's layout, PATH)."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        candidates.append(
            subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
    candidates += sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin")), reverse=True)
    which = shutil.which("initdb")
    if which:
        candidates.append(os.path.dirname(which))
    for path in candidates:
        if path and os.path.isfile(os.path.join(path, "initdb")) and os.path.isfile(os.path.join(path, "pg_ctl")):
            return path
    return None


#: Ports handed out by :func:`free_port`: below the kernel's ephemeral range (32768 and up by
#: default), in one band per pytest-xdist worker (the last band for any other process).
PORT_BANDS = (12000, 2000, 10)
_next_port: dict[int, int] = {}


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    for address in ("0.0.0.0", "127.0.0.1"):  # noqa: S104 (a test checks what an agent may bind)
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def free_port() -> int:
    """A TCP port free now on every address, for a server a test starts (a
    cluster, an agent). Not one the kernel may hand out meanwhile as the local
    port of an outgoing connection: a port chosen that way (bind to port 0)
    can be taken by a client's connection before the server binds it, which
    happened to an agent started a minute after its port was chosen. Ports come
    from a band of :data:`PORT_BANDS` below the ephemeral range, one per
    pytest-xdist worker, so that workers never pick the same one (any other
    process, such as a program a test runs, takes the last band); within a
    band, in turn from a random start, skipping any in use."""
    first, size, count = PORT_BANDS
    # a program a test runs inherits PYTEST_XDIST_WORKER: it is not that worker, and
    # must not pick a port the worker chose and has not bound yet (pgwarden demo's
    # cluster took the port the test had chosen for its agent): the shared band
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if "pytest" in sys.modules else ""
    band = int(worker[2:]) % (count - 1) if worker[2:].isdigit() else count - 1
    low = first + band * size
    if low + size > _ephemeral_low():  # a machine with a wider ephemeral range: the kernel's choice
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    offset = _next_port.get(band, random.randrange(size))  # noqa: S311 (not for security)
    for step in range(size):
        port = low + (offset + step) % size
        if _bindable(port):
            _next_port[band] = (offset + step + 1) % size
            return port
    raise RuntimeError(f"no free port in {low}-{low + size - 1}")


class Cluster:
    """A throwaway PostgreSQL cluster; superuser ``postgres``, trust authentication."""

    def __init__(self, bindir: str, extra_conf: Mapping[str, str] | None = None):
        self.bindir = bindir
        self.port = free_port()
        self.host = "127.0.0.1"
        self.superuser = "postgres"
        self.datadir = tempfile.mkdtemp(prefix="pgwarden-data-")
        self.sockdir = tempfile.mkdtemp(prefix="pgw-", dir="/tmp")
        self.logfile = os.path.join(self.sockdir, "postgres.log")
        self.run_as: str | None = "postgres" if os.geteuid() == 0 else None
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            for path in (self.datadir, self.sockdir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.extra_conf = dict(extra_conf or {})
        self._isolated: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self.run_as, cwd="/tmp")

    def init(self) -> None:
        self._run(
            os.path.join(self.bindir, "initdb"),
            "-D", self.datadir, "-U", self.superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "250",
            "shared_buffers": "32MB",
            "autovacuum": "off",
            "logging_collector": "off",
            **self.extra_conf,
        }
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")
        hba = os.path.join(self.datadir, "pg_hba.conf")
        with open(hba) as f:
            trusted = f.read()
        with open(hba, "w") as f:  # the first matching line wins
            f.write(f"local all +{SCRAM_GROUP} scram-sha-256\n")
            f.write(f"host all +{SCRAM_GROUP} 127.0.0.1/32 scram-sha-256\n")
            f.write(f"host all +{SCRAM_GROUP} ::1/128 scram-sha-256\n")
            f.write(trusted)

    def start(self) -> None:
        self._run(
            os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-l", self.logfile, "-w", "-t", "60", "start"
        )

    def start_isolated(self) -> None:
        """Start the server in a PID namespace of its own (``unshare --pid``,
        root only): its process ids mean nothing on this host, as for a server
        in a container or on another machine, while its port and socket stay
        reachable. RuntimeError when this cannot be done here."""
        if os.geteuid() != 0 or not self.run_as or not shutil.which("unshare") or not shutil.which("setpriv"):
            raise RuntimeError("a server in its own PID namespace needs root and util-linux's unshare and setpriv")
        user = self.run_as
        command = ["unshare", "--pid", "--fork", "--", "setpriv", f"--reuid={user}", f"--regid={user}"]
        command += ["--init-groups", os.path.join(self.bindir, "postgres"), "-D", self.datadir]
        with open(self.logfile, "ab") as log:
            self._isolated = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd="/tmp")
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                if self._isolated.poll() is not None or time.monotonic() > deadline:
                    self.stop("immediate")
                    raise RuntimeError(f"the isolated server did not start; see {self.logfile}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        if self._isolated is not None:
            # signal the postmaster (unshare's child); unshare exits with it
            signals = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
            for pid in _children(self._isolated.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signals[mode])
            try:
                self._isolated.wait(60)
            except subprocess.TimeoutExpired:
                self._isolated.kill()
                self._isolated.wait()
            self._isolated = None
            return
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """A ``[postgresql]`` section for an agent of this cluster."""
        return {"host": self.host, "port": self.port, "user": self.superuser, "dbname": "postgres", **overrides}

    def connect(self, dbname: str = "postgres", user: str | None = None, autocommit: bool = True, **kwargs: Any) -> Any:
        """A psycopg2 connection (autocommit by default); close it yourself."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=user or self.superuser, dbname=dbname, **kwargs)
        conn.autocommit = autocommit
        return conn

    def execute(self, sql: Any, params: Any = None, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in autocommit on a fresh connection; rows if any."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def password_role(self, name: str, password: str, *grants: str) -> None:
        """Create login role ``name`` that must give ``password`` (a member of
        :data:`SCRAM_GROUP`), member of the roles ``grants`` too."""
        from psycopg2 import sql

        self.execute(
            "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %s) THEN"
            f" CREATE ROLE {SCRAM_GROUP} NOLOGIN; END IF; END$$",
            (SCRAM_GROUP,),
        )
        self.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (password,))
        for role in (SCRAM_GROUP, *grants):
            self.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(name)))

    def url(self, dbname: str) -> str:
        """A SQLAlchemy URL for ``dbname`` (for a PostgreSQL operations store)."""
        return f"postgresql+psycopg2://{self.superuser}@{self.host}:{self.port}/{quote(dbname)}"


def _children(pid: int) -> list[int]:
    """Pids of the children of process ``pid`` (from /proc)."""
    import psutil

    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children()]
    return []
