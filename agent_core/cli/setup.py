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

This module holds the arguments and the steps (:class:`Setup`); the cluster
and the role are in :mod:`~agent_core.cli.setup_postgres`, the host's side
(directories, unit text, port, certificate) in :mod:`~agent_core.cli.setup_system`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
from typing import Any

from agent_core.cli.setup_postgres import (
    PgCluster,
    cluster_from_pgdata,
    create_role,
    debian_clusters,
    least_privilege_blocks,
    role_statements,
)
from agent_core.cli.setup_system import (
    DEFAULT_ETC,
    DEFAULT_STATE,
    DEFAULT_SYSTEMD,
    FIRST_PORT,
    PACKAGED_UNIT_DIRS,
    UNIT_TEMPLATE,
    _existing_setting,
    _group,
    _installed,
    _user,
    free_agent_port,
    host_names,
    pgwarden_command,
    self_signed,
    unit_text,
)
from agent_core.errors import PgwardenError

# the names moved to setup_postgres and setup_system stay importable from here
__all__ = [
    "DEFAULT_ETC",
    "DEFAULT_STATE",
    "DEFAULT_SYSTEMD",
    "FIRST_PORT",
    "PACKAGED_UNIT_DIRS",
    "PLUGINS",
    "UNIT_TEMPLATE",
    "PgCluster",
    "Setup",
    "add_arguments",
    "cluster_from_pgdata",
    "create_role",
    "debian_clusters",
    "free_agent_port",
    "host_names",
    "least_privilege_blocks",
    "pgwarden_command",
    "role_statements",
    "self_signed",
    "unit_text",
]

PLUGINS = ("activity", "maintenance", "dashboard")

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
