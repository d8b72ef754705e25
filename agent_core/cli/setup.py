"""``pgwarden setup``: an agent for a local PostgreSQL instance, in one command.

Run as root on the PostgreSQL host. For the chosen cluster (Debian's
``pg_lsclusters``, else ``--pgdata``) it writes, each step printed as it
happens:

- ``<etc-dir>/<instance>/pgwarden.conf`` (root, group of the cluster's OS
  user, 0640: it holds the agent key), with the cluster's socket and port and
  an agent port no other instance of this host uses;
- a self-signed certificate for the host's names and its key (or takes
  ``--tls-cert``/``--tls-key``);
- ``<state-dir>/<instance>`` owned by the cluster's OS user, 0700, with the
  users file holding ``admin`` and a generated password, printed once;
- optionally a least-privilege PostgreSQL role, from the ``-- level:`` blocks
  of docs/least-privilege.md;
- the templated systemd unit ``pgwarden@.service`` (when none is installed),
  enabled and started as ``pgwarden@<instance>`` when systemd runs.

What exists is left as it is and said so (a second run changes nothing);
``--force`` makes everything again (a new key, certificate and password).
``--dry-run`` prints every step and changes nothing.
"""

from __future__ import annotations

import argparse
import datetime
import grp
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from agent_core.errors import PgwardenError

DEFAULT_ETC = "/etc/pgwarden"
DEFAULT_STATE = "/var/lib/pgwarden"
DEFAULT_SYSTEMD = "/etc/systemd/system"
FIRST_PORT = 2345
PLUGINS = ("activity", "maintenance", "dashboard")
#: Where a package puts the templated unit (setup writes none then).
PACKAGED_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")

UNIT_TEMPLATE = """\
# pgwarden@.service: one agent per PostgreSQL instance, {origin}.
# The instance name is Debian's <version>-<cluster> (pgwarden@15-main follows
# postgresql@15-main); its config is {etc_dir}/<instance>/pgwarden.conf.
# It runs as the postgres OS user so that the activity plugin can read the
# backends' I/O counters and the agent can use the socket with peer
# authentication (another cluster owner: a drop-in pgwarden@<instance>.service.d/user.conf).
[Unit]
Description=pgwarden agent for the PostgreSQL instance %i
After=network-online.target postgresql.service postgresql@%i.service
Wants=network-online.target

[Service]
Type=simple
User=postgres
Group=postgres
Environment=PGWARDEN_CONFIG={etc_dir}/%i/pgwarden.conf
ExecStartPre={pgwarden} check-config
ExecStart={pgwarden} serve
# SIGTERM: stop accepting, let running operations finish for a few seconds,
# cancel the rest, exit 0.
KillSignal=SIGTERM
TimeoutStopSec=60
# Descriptors: [agent] max_connections (default 4096) client connections per
# listening address, plus about 256 for PostgreSQL, the store and the log.
LimitNOFILE=8192
Restart=on-failure
RestartSec=5
NoNewPrivileges=true
ProtectSystem=full
ProtectHome=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
"""


def unit_text(pgwarden: str, etc_dir: str = DEFAULT_ETC, packaged: bool = False) -> str:
    """The templated unit: as ``pgwarden setup`` writes it, or as the Debian
    package ships it (``packaged``: ``make deb`` takes it from here)."""
    origin = "written by `pgwarden setup`"
    if packaged:
        origin = "from the pgwarden package (`pgwarden setup` makes instances)"
    return UNIT_TEMPLATE.format(pgwarden=pgwarden, etc_dir=etc_dir.rstrip("/") or "/", origin=origin)


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


# --- the steps ----------------------------------------------------------------------------------


class Setup:
    def __init__(self, args: argparse.Namespace, out: Any = None):
        self.args = args
        self.out = out or sys.stdout
        self.dry = bool(args.dry_run)
        self.force = bool(args.force)
        self.changed = 0
        self.step_no = 0
        self.root = os.geteuid() == 0
        self.new_password: str | None = None
        self.new_key: str | None = None

    # output
    def step(self, text: str) -> None:
        self.step_no += 1
        print(f"[{self.step_no}] {text}", file=self.out, flush=True)

    def say(self, text: str) -> None:
        print(f"    {text}", file=self.out, flush=True)

    def did(self, text: str) -> bool:
        """Report a change; False in a dry run (the caller then does nothing)."""
        self.changed += 1
        self.say(("would " if self.dry else "") + text)
        return not self.dry

    # ownership
    def _ids(self, owner: str) -> tuple[int, int]:
        entry = pwd.getpwnam(owner)
        return entry.pw_uid, entry.pw_gid

    def chown(self, path: str, uid: int, gid: int) -> None:
        if self.root:
            os.chown(path, uid, gid)

    def run(self) -> int:
        a = self.args
        cluster = self.find_cluster()
        instance = a.instance or cluster.name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", instance):
            raise PgwardenError(f"instance name {instance!r}: use letters, digits, '.', '_' and '-'")
        etc = os.path.join(a.etc_dir, instance)
        state = os.path.join(a.state_dir, instance)
        conf_path = os.path.join(etc, "pgwarden.conf")
        uid, gid = self._ids(cluster.owner)
        if not self.root and uid != os.geteuid() and not a.dry_run:
            raise PgwardenError(f"the cluster belongs to {cluster.owner!r}: run setup as root")

        self.step(f"configuration directory {etc}")
        self.make_dir(etc, 0, gid, 0o750)

        self.step("TLS certificate and key")
        cert, key = self.tls(etc, gid)

        self.step(f"state directory {state} (owned by {cluster.owner}, 0700)")
        self.make_dir(state, uid, gid, 0o700)

        self.step(f"PostgreSQL role ({a.pg_role or 'none: the agent connects as ' + cluster.owner})")
        pg_user, pg_password = self.pg_role(cluster, conf_path)

        self.step(f"configuration file {conf_path}")
        port = self.config_file(conf_path, cluster, instance, state, cert, key, pg_user, pg_password, gid)

        self.step(f"admin user in {os.path.join(state, 'users')}")
        self.admin_user(os.path.join(state, "users"), uid, gid)

        self.step("systemd unit")
        self.systemd(instance, cluster.owner)

        scheme = "https"
        print("", file=self.out)
        if self.changed == 0:
            print(f"nothing changed: instance {instance!r} is set up (use --force to redo it)", file=self.out)
        elif self.dry:
            print(f"dry run: {self.changed} change(s) would be made; nothing was written", file=self.out)
        else:
            print(f"instance {instance!r} set up ({self.changed} change(s)).", file=self.out)
        print(f"  config:   {conf_path}", file=self.out)
        print(f"  URL:      {scheme}://{socket.getfqdn()}:{port}/", file=self.out)
        if self.new_password:
            print(f"  user:     admin, password: {self.new_password}   (shown once: note it now)", file=self.out)
        if self.new_key:
            print(f"  agent key: {self.new_key}   (also [agent] key in {conf_path})", file=self.out)
        print(f"  start it by hand: runuser -u {cluster.owner} -- env PGWARDEN_CONFIG={conf_path} "
              f"{pgwarden_command()} serve", file=self.out)  # fmt: skip
        return 0

    def find_cluster(self) -> PgCluster:
        a = self.args
        self.step("PostgreSQL cluster")
        if a.pgdata:
            cluster = cluster_from_pgdata(a.pgdata, a.port, a.instance)
        else:
            found = debian_clusters()
            if a.cluster:
                found = [c for c in found if c.name == a.cluster.replace("/", "-")]
            if not found:
                raise PgwardenError(
                    "no PostgreSQL cluster found"
                    + (f" named {a.cluster!r}" if a.cluster else " (pg_lsclusters lists none)")
                    + ": give its data directory with --pgdata (and --port)"
                )
            if len(found) > 1:
                names = ", ".join(c.name.replace("-", "/", 1) for c in found)
                raise PgwardenError(f"several clusters ({names}): choose one with --cluster VERSION/NAME")
            cluster = found[0]
        self.say(
            f"{cluster.name}: PostgreSQL {cluster.version or '?'}, port {cluster.port}, socket {cluster.socket_dir},"
            f" owner {cluster.owner}, data {cluster.datadir}{'' if cluster.running else ' (not running)'}"
        )
        return cluster

    def make_dir(self, path: str, uid: int, gid: int, mode: int) -> None:
        if os.path.isdir(path):
            st = os.stat(path)
            if (st.st_mode & 0o777) == mode and (not self.root or (st.st_uid, st.st_gid) == (uid, gid)):
                self.say(f"unchanged: {path} exists")
                return
            if self.did(f"set {path} to {mode:04o}, owner {_user(uid)}:{_group(gid)}"):
                os.chmod(path, mode)
                self.chown(path, uid, gid)
            return
        if self.did(f"create {path} ({mode:04o}, owner {_user(uid)}:{_group(gid)})"):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.mkdir(path, mode)
            os.chmod(path, mode)
            self.chown(path, uid, gid)

    def write_file(self, path: str, text: str | bytes, uid: int, gid: int, mode: int, what: str) -> None:
        if self.did(f"{'rewrite' if os.path.exists(path) else 'write'} {path} ({what}, {mode:04o})"):
            data = text.encode() if isinstance(text, str) else text
            tmp = path + ".new"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, mode)
            self.chown(tmp, uid, gid)
            os.replace(tmp, path)

    def tls(self, etc: str, gid: int) -> tuple[str, str]:
        a = self.args
        if a.tls_cert or a.tls_key:
            if not (a.tls_cert and a.tls_key):
                raise PgwardenError("--tls-cert and --tls-key go together")
            for path in (a.tls_cert, a.tls_key):
                if not os.path.isfile(path):
                    raise PgwardenError(f"{path}: no such file")
            self.say(f"given: {a.tls_cert}, {a.tls_key}")
            return os.path.abspath(a.tls_cert), os.path.abspath(a.tls_key)
        cert, key = os.path.join(etc, "server.pem"), os.path.join(etc, "server.key")
        if os.path.exists(cert) and os.path.exists(key) and not self.force:
            self.say(f"unchanged: {cert} and {key} exist")
            return cert, key
        names = host_names(a.tls_name)
        self.say(f"self-signed for {', '.join(names)}")
        if self.dry:
            self.did(f"write {cert} (0644) and {key} (0640)")
            return cert, key
        cert_pem, key_pem = self_signed(names)
        self.write_file(key, key_pem, 0, gid, 0o640, "TLS private key")
        self.write_file(cert, cert_pem, 0, gid, 0o644, "TLS certificate")
        return cert, key

    def pg_role(self, cluster: PgCluster, conf_path: str) -> tuple[str, str | None]:
        a = self.args
        if not a.pg_role:
            self.say(f"skipped: no --pg-role asked (monitor|kill|maintain); the agent connects as {cluster.owner}")
            return cluster.owner, None
        role = a.pg_role_name
        existing = _existing_setting(conf_path, "postgresql", "password")
        if existing and not self.force and _existing_setting(conf_path, "postgresql", "user") == role:
            self.say(f"unchanged: role {role} is in {conf_path}")
            return role, existing
        password = secrets.token_urlsafe(24)
        if self.did(f"create role {role} ({a.pg_role} level of docs/least-privilege.md) with a generated password"):
            create_role(cluster, a.pg_role, role, password, a.app_owner)
        return role, password

    def config_file(
        self,
        path: str,
        cluster: PgCluster,
        instance: str,
        state: str,
        cert: str,
        key: str,
        pg_user: str,
        pg_password: str | None,
        gid: int,
    ) -> int:
        a = self.args
        if os.path.exists(path) and not self.force:
            port = int(_existing_setting(path, "agent", "port") or 0)
            self.say(f"unchanged: {path} exists (agent port {port})")
            return port
        port = a.agent_port or (int(_existing_setting(path, "agent", "port") or 0) or free_agent_port(a.etc_dir))
        agent_key = secrets.token_urlsafe(32)
        plugins = [p for p in PLUGINS if _installed(p)]
        host = "127.0.0.1" if pg_password else cluster.socket_dir
        text = f"""\
# pgwarden for the PostgreSQL instance {instance}, written by `pgwarden setup`
# on {datetime.date.today()}. Every key is described in the sample config
# (/usr/share/doc/pgwarden/pgwarden.conf.sample, conf/pgwarden.conf) and in
# docs/operator-guide.md. Check with: pgwarden -c {path} check-config
[agent]
address = {a.address}
port = {port}
tls_cert = {cert}
tls_key = {key}
home = {state}
# The agent key (temboard registers an agent with it): keep this file 0640 root:<agent's group>.
key = {agent_key}
plugins = {", ".join(plugins)}
log_file = stderr

[postgresql]
host = {host}
port = {cluster.port}
user = {pg_user}
{"password = " + pg_password if pg_password else "#password ="}
dbname = postgres
instance = {instance}
"""
        self.write_file(path, text, 0, gid, 0o640, f"agent port {port}, PostgreSQL {host}:{cluster.port}")
        if not self.dry:
            self.new_key = agent_key
        return port

    def admin_user(self, path: str, uid: int, gid: int) -> None:
        from agent_core.auth import UsersFile

        users = UsersFile(path)
        if "admin" in users.load() and not self.force:
            self.say("unchanged: user admin exists (new password: pgwarden user passwd admin)")
            return
        password = secrets.token_urlsafe(15)
        if self.did("add user admin (role admin) with a generated password"):
            users.set("admin", password, "admin")
            for name in (path,):
                self.chown(name, uid, gid)
            self.new_password = password

    def systemd(self, instance: str, owner: str) -> None:
        a = self.args
        unit_dir = a.systemd_dir
        installed = [d for d in (unit_dir, *PACKAGED_UNIT_DIRS) if os.path.exists(os.path.join(d, "pgwarden@.service"))]
        unit = os.path.join(unit_dir, "pgwarden@.service")
        if installed and not (self.force and installed[0] == unit_dir):
            self.say(f"unchanged: {os.path.join(installed[0], 'pgwarden@.service')} exists")
        else:
            if not self.dry:
                os.makedirs(unit_dir, exist_ok=True)
            self.write_file(unit, unit_text(pgwarden_command(), a.etc_dir), 0, 0, 0o644, "templated unit")
        if owner != "postgres":
            dropin = os.path.join(unit_dir, f"pgwarden@{instance}.service.d", "user.conf")
            if os.path.exists(dropin) and not self.force:
                self.say(f"unchanged: {dropin} exists")
            elif self.did(f"write {dropin} (User={owner})"):
                os.makedirs(os.path.dirname(dropin), exist_ok=True)
                with open(dropin, "w") as f:
                    f.write(f"[Service]\nUser={owner}\nGroup={_group(pwd.getpwnam(owner).pw_gid)}\n")
        name = f"pgwarden@{instance}.service"
        if a.no_enable:
            self.say(f"not enabled (--no-enable): systemctl enable --now {name}")
        elif os.path.abspath(unit_dir) != DEFAULT_SYSTEMD:
            self.say(f"not enabled: --systemd-dir is not {DEFAULT_SYSTEMD}")
        elif not os.path.isdir("/run/systemd/system") or not shutil.which("systemctl"):
            self.say(f"not enabled: systemd is not running here (later: systemctl enable --now {name})")
        else:
            active = subprocess.run(["systemctl", "is-enabled", "--quiet", name], check=False).returncode == 0
            if active and not self.force:
                self.say(f"unchanged: {name} is enabled")
            elif self.did(f"systemctl daemon-reload; systemctl enable --now {name}"):
                subprocess.run(["systemctl", "daemon-reload"], check=True)
                subprocess.run(["systemctl", "enable", "--now", name], check=True)


# --- helpers ------------------------------------------------------------------------------------


def pgwarden_command() -> str:
    """The absolute path of this installation's pgwarden command (a virtualenv
    is not on the agent user's PATH)."""
    candidate = os.path.join(os.path.dirname(sys.executable), "pgwarden")
    if os.path.isfile(candidate):
        return candidate
    found = shutil.which("pgwarden")
    return os.path.abspath(found) if found else f"{sys.executable} -m agent_core.cli"


def _installed(plugin: str) -> bool:
    from agent_core.plugins import installed

    return plugin in installed()


def _existing_setting(path: str, section: str, key: str) -> str | None:
    from agent_core.config import RawConfig

    if not os.path.exists(path):
        return None
    try:
        value = RawConfig.read(path).sections.get(section, {}).get(key)
    except Exception:
        return None
    return value.strip() if value else None


def free_agent_port(etc_dir: str) -> int:
    """The first port from 2345 that no instance under ``etc_dir`` uses and
    nothing listens on."""
    used = set()
    if os.path.isdir(etc_dir):
        for name in os.listdir(etc_dir):
            text = _existing_setting(os.path.join(etc_dir, name, "pgwarden.conf"), "agent", "port")
            if text and text.isdigit():
                used.add(int(text))
    port = FIRST_PORT
    while port in used or not _bindable(port):
        port += 1
    return port


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - only a probe: is the port free on every address
        except OSError:
            return False
    return True


def host_names(extra: list[str] | None = None) -> list[str]:
    names = [socket.getfqdn(), socket.gethostname(), "localhost", "127.0.0.1", "::1", *(extra or [])]
    return list(dict.fromkeys(n for n in names if n))


def self_signed(names: list[str], days: int = 3650) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``names`` (DNS names and IP addresses) and its key, in PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


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


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster", help="Debian cluster VERSION/NAME (e.g. 15/main) when pg_lsclusters lists several")
    p.add_argument("--pgdata", help="data directory of the cluster (instead of pg_lsclusters)")
    p.add_argument("--port", type=int, help="PostgreSQL port (default: the running cluster's, or postgresql.conf)")
    p.add_argument("--instance", help="instance name (default: VERSION-NAME, e.g. 15-main)")
    p.add_argument("--agent-port", type=int, help="agent port (default: the first free one from 2345)")
    p.add_argument(
        "--address",
        default="0.0.0.0",  # noqa: S104 - TLS on, key and users required
        help="agent listen addresses (default: %(default)s; TLS is on)",
    )
    p.add_argument("--tls-cert", help="PEM certificate to use instead of a self-signed one")
    p.add_argument("--tls-key", help="its private key")
    p.add_argument("--tls-name", action="append", help="another host name or address for the self-signed certificate")
    p.add_argument(
        "--pg-role",
        choices=("monitor", "kill", "maintain"),
        help="create a least-privilege PostgreSQL role (docs/least-privilege.md) for the agent",
    )
    p.add_argument("--pg-role-name", default="pgwarden", help="its name (default: %(default)s)")
    p.add_argument("--app-owner", help="maintain level before PostgreSQL 17: the role owning the tables")
    p.add_argument("--etc-dir", default=DEFAULT_ETC, help="config directory (default: %(default)s)")
    p.add_argument("--state-dir", default=DEFAULT_STATE, help="state directory (default: %(default)s)")
    p.add_argument("--systemd-dir", default=DEFAULT_SYSTEMD, help="unit directory (default: %(default)s)")
    p.add_argument("--no-enable", action="store_true", help="do not enable nor start the unit")
    p.add_argument("--dry-run", action="store_true", help="print every step, change nothing")
    p.add_argument("--force", action="store_true", help="redo every step (new key, certificate, admin password)")
