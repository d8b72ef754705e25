"""``pgwarden setup``: the PostgreSQL side of it.

Finding the cluster (Debian's ``pg_lsclusters``, else ``--pgdata``) and
creating the least-privilege role from the ``-- level:`` blocks of
least_privilege.sql (docs/least-privilege.md).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from agent_core.errors import PgwardenError


@dataclass
class PgCluster:
    name: str  # the instance name: "15-main", or given
    port: int
    socket_dir: str
    owner: str
    datadir: str
    version: str = ""
    running: bool = True


# --- finding clusters ---------------------------------------------------------------------------


def _conf_value(path: str, key: str) -> str | None:
    """The last setting of ``key`` in a postgresql.conf (no includes), unquoted."""
    value = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(rf"^\s*{key}\s*=?\s*('(?:[^']|'')*'|[^#\s]+)", line)
                if m:
                    value = m.group(1).strip("'").replace("''", "'")
    except OSError:
        return None
    return value


def debian_clusters() -> list[PgCluster]:
    """The clusters ``pg_lsclusters`` lists (none without it)."""
    if not shutil.which("pg_lsclusters"):
        return []
    res = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False)
    out = []
    for line in res.stdout.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        version, name, port, status, owner, datadir = fields[:6]
        conf = f"/etc/postgresql/{version}/{name}/postgresql.conf"
        sockets = _conf_value(conf, "unix_socket_directories") or "/var/run/postgresql"
        out.append(
            PgCluster(
                name=f"{version}-{name}",
                port=int(port),
                socket_dir=sockets.split(",")[0].strip() or "/var/run/postgresql",
                owner=owner,
                datadir=datadir,
                version=version,
                running=status.startswith("online"),
            )
        )
    return out


def cluster_from_pgdata(pgdata: str, port: int | None, name: str | None) -> PgCluster:
    """A cluster given by its data directory: port and socket from postmaster.pid
    when it runs, else from postgresql.conf; the owner is the directory's."""
    pgdata = os.path.abspath(pgdata)
    if not os.path.isfile(os.path.join(pgdata, "PG_VERSION")):
        raise PgwardenError(f"--pgdata {pgdata}: not a PostgreSQL data directory (no PG_VERSION)")
    owner = pwd.getpwuid(os.stat(pgdata).st_uid).pw_name
    with open(os.path.join(pgdata, "PG_VERSION")) as f:
        version = f.read().strip()
    pid_port = pid_socket = None
    running = False
    try:
        with open(os.path.join(pgdata, "postmaster.pid")) as f:
            lines = f.read().splitlines()
        if len(lines) >= 5:
            pid_port, pid_socket, running = int(lines[3]), lines[4].strip(), True
    except (OSError, ValueError):
        pass
    conf = os.path.join(pgdata, "postgresql.conf")
    conf_port = _conf_value(conf, "port")
    socket_dir = pid_socket or (_conf_value(conf, "unix_socket_directories") or "/var/run/postgresql").split(",")[0]
    final_port = port or pid_port or int(conf_port or 5432)
    return PgCluster(
        name=name or f"{version}-{os.path.basename(pgdata)}",
        port=final_port,
        socket_dir=socket_dir.strip() or "127.0.0.1",
        owner=owner,
        datadir=pgdata,
        version=version,
        running=running,
    )


# --- the least-privilege role -------------------------------------------------------------------


def least_privilege_blocks() -> dict[str, str]:
    """The SQL blocks of docs/least-privilege.md by their ``-- level:`` line,
    as shipped in the package (agent_core/cli/least_privilege.sql)."""
    path = os.path.join(os.path.dirname(__file__), "least_privilege.sql")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = {}
    for block in re.split(r"(?m)^(?=-- level: )", text):
        first, _, body = block.partition("\n")
        if first.startswith("-- level: "):
            out[first[len("-- level: ") :].strip()] = body.strip()
    return out


def role_statements(level: str, server_version: int, role: str, password: str, app_owner: str | None) -> Any:
    """The statements of a level, with the role, its password and the owner
    role as an Identifier and a Literal (never pasted into the text)."""
    from psycopg2 import sql

    blocks = least_privilege_blocks()
    name = level
    if level == "maintain" and server_version >= 170000:
        name = "maintain, PostgreSQL 17"
    elif level == "maintain" and not app_owner:
        raise PgwardenError(
            "--pg-role maintain before PostgreSQL 17 needs --app-owner ROLE (the role owning the tables to maintain)"
        )
    text = "\n".join(line for line in blocks[name].splitlines() if not line.lstrip().startswith("--"))
    text = text.replace("{", "{{").replace("}", "}}")
    text = re.sub(r"\bpgwarden\b", "{role}", text).replace("'change me'", "{password}")
    text = re.sub(r"\bapp_owner\b", "{app_owner}", text)
    statements = [s.strip() for s in text.split(";") if s.strip()]
    return [
        sql.SQL(s).format(
            role=sql.Identifier(role), password=sql.Literal(password), app_owner=sql.Identifier(app_owner or "")
        )
        for s in statements
    ]


def create_role(cluster: PgCluster, level: str, role: str, password: str, app_owner: str | None) -> None:
    """Create (or, when it exists, give a new password and the level's grants to)
    ``role``, connected over the socket as the cluster's owner. As root, a
    forked child takes the owner's identity first (peer authentication)."""
    import psycopg2

    def work() -> None:
        conn = psycopg2.connect(host=cluster.socket_dir, port=cluster.port, user=cluster.owner, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                exists = cur.fetchone() is not None
                for statement in role_statements(level, conn.server_version, role, password, app_owner):
                    if exists and statement.as_string(conn).upper().startswith("CREATE ROLE"):
                        from psycopg2 import sql

                        statement = sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(role), sql.Literal(password)
                        )
                    cur.execute(statement)
        finally:
            conn.close()

    if os.geteuid() != 0 or cluster.owner == "root":
        work()
        return
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        status = 0
        try:
            entry = pwd.getpwnam(cluster.owner)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            work()
        except BaseException as e:
            os.write(write, f"{type(e).__name__}: {e}".encode())
            status = 1
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        error = f.read().decode(errors="replace").strip()
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise PgwardenError(f"cannot create the PostgreSQL role {role}: {error or 'failed'}")
