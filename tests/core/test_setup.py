"""``pgwarden setup`` run as an operator would, in a scratch root (never /etc nor
/var/lib), against the tests' throwaway cluster; the agent it sets up is
started and answers over TLS with the generated key and password."""

from __future__ import annotations

import json
import os
import pathlib
import pwd
import re
import ssl
import subprocess
import sys
import urllib.request

import psycopg2
import pytest
from install_helpers import package_lock

from agent_core.cli.setup import least_privilege_blocks
from agent_core.cluster import free_port
from agent_core.testing import serve

#: runs pgwarden (or the demo) in subprocesses: not in the fast unit layer
pytestmark = pytest.mark.process


@pytest.fixture(autouse=True)
def no_package_installed_meanwhile():
    """pgwarden setup writes its own unit only when the package's is absent: not while
    tests/packaging/test_deb.py has the package installed on this host."""
    with package_lock(shared=True):
        yield


ROOT = pathlib.Path(__file__).resolve().parents[2]


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}


def run_setup(scratch, cluster, *args, command=(sys.executable, "-m", "agent_core.cli")):
    """``pgwarden setup`` for ``cluster`` with every system path under ``scratch``."""
    res = subprocess.run(
        [
            *command,
            "setup",
            "--pgdata", cluster.datadir,
            "--etc-dir", str(scratch / "etc" / "pgwarden"),
            "--state-dir", str(scratch / "var" / "lib" / "pgwarden"),
            "--systemd-dir", str(scratch / "etc" / "systemd" / "system"),
            "--address", "127.0.0.1",
            *args,
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def printed(output, label):
    if label == "user":
        m = re.search(r"^  user:\s+admin, password: (\S+)", output, re.M)
        return m.group(1) if m else None
    m = re.search(rf"^  {label}:\s+(\S+)", output, re.M)
    return m.group(1) if m else None


def conf_value(conf, key):
    m = re.search(rf"^{key} = (.*)$", pathlib.Path(conf).read_text(), re.M)
    return m.group(1).strip() if m else None


def tls_get(port, path, cafile, headers=None, body=None):
    """GET or POST over TLS, the certificate checked against ``cafile`` for the name localhost."""
    context = ssl.create_default_context(cafile=cafile)
    request = urllib.request.Request(f"https://localhost:{port}{path}", headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def mode(path):
    return os.stat(path).st_mode & 0o777


def owner(path):
    return pwd.getpwuid(os.stat(path).st_uid).pw_name


def test_setup_writes_a_working_agent_for_the_cluster(tmp_path, pg_cluster):
    port = free_port()
    out = run_setup(tmp_path, pg_cluster, "--instance", "t1", "--agent-port", str(port))
    # every step printed as it happens
    assert [int(n) for n in re.findall(r"^\[(\d+)\]", out, re.M)] == list(range(1, 9)), out
    conf = tmp_path / "etc/pgwarden/t1/pgwarden.conf"
    state = tmp_path / "var/lib/pgwarden/t1"
    cluster_owner = owner(pg_cluster.datadir)
    assert mode(conf) == 0o640 and mode(conf.parent / "server.key") == 0o640, out
    assert mode(state) == 0o700 and owner(state) == cluster_owner
    assert owner(state / "users") == cluster_owner and mode(state / "users") == 0o600
    assert conf_value(conf, "port") == str(port)
    assert conf_value(conf, "host") == pg_cluster.sockdir  # the cluster's socket, its port
    assert f"port = {pg_cluster.port}" in conf.read_text()
    password = printed(out, "user")
    key = printed(out, "agent key")
    assert password and key and key == conf_value(conf, "key")
    unit = (tmp_path / "etc/systemd/system/pgwarden@.service").read_text()
    assert "LimitNOFILE=8192" in unit
    assert f"Environment=PGWARDEN_CONFIG={tmp_path}/etc/pgwarden/%i/pgwarden.conf" in unit
    assert re.search(r"^ExecStart=/\S+ serve$", unit, re.M), unit  # an absolute path: venvs are not on PATH
    assert not (state / "pgwarden.db").exists()  # serve makes it, as the agent's user

    res = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "-c", str(conf), "check-config"],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    # readable by the agent's group only (check-config as that user warns about nothing)
    assert "every user" not in res.stderr, res.stderr
    assert not (state / "pgwarden.db").exists()

    # as the unit would (PGWARDEN_CONFIG), as the test's user (a venv under /root is not executable by postgres)
    unit_env = {**clean_env(), "PGWARDEN_CONFIG": str(conf)}
    with serve(argv=[sys.executable, "-m", "agent_core.cli", "serve"], env=unit_env, cwd="/", stop_timeout=60):
        cafile = str(conf.parent / "server.pem")
        status, body = tls_get(port, "/discover", cafile, {"X-Pgwarden-Key": key})
        assert status == 200, body
        assert body["pg_port"] == pg_cluster.port
        status, body = tls_get(
            port, "/login", cafile, {"Content-Type": "application/json"},
            json.dumps({"username": "admin", "password": password}).encode(),
        )  # fmt: skip
        assert status == 200 and body["session"], body


def test_second_run_changes_nothing_and_force_redoes(tmp_path, pg_cluster):
    first = run_setup(tmp_path, pg_cluster, "--instance", "t2", "--agent-port", str(free_port()))
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    again = run_setup(tmp_path, pg_cluster, "--instance", "t2")
    assert "nothing changed" in again, again
    assert "would" not in again and printed(again, "user") is None  # the password is shown once
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files} == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    forced = run_setup(tmp_path, pg_cluster, "--instance", "t2", "--force")
    assert printed(forced, "user") not in (None, printed(first, "user"))
    conf = tmp_path / "etc/pgwarden/t2/pgwarden.conf"
    assert conf_value(conf, "key") == printed(forced, "agent key") != printed(first, "agent key")
    assert conf_value(conf, "port") == re.search(r"^port = (\d+)", before[conf][1].decode(), re.M).group(1)


def test_dry_run_prints_every_step_and_writes_nothing(tmp_path, pg_cluster):
    out = run_setup(tmp_path, pg_cluster, "--instance", "t3", "--dry-run")
    assert list(tmp_path.iterdir()) == []
    for what in ("would create", "would write", "server.key", "pgwarden.conf", "would add user admin", "@.service"):
        assert what in out, (what, out)
    assert "dry run" in out and printed(out, "user") is None


def test_instances_get_distinct_ports(tmp_path, pg_cluster):
    run_setup(tmp_path, pg_cluster, "--instance", "a")
    run_setup(tmp_path, pg_cluster, "--instance", "b")
    ports = {conf_value(tmp_path / f"etc/pgwarden/{i}/pgwarden.conf", "port") for i in ("a", "b")}
    assert len(ports) == 2, ports


def test_pg_role_creates_the_documented_least_privilege_role(tmp_path, pg_cluster):
    role = f"pgw_setup_{os.getpid()}"
    try:
        out = run_setup(tmp_path, pg_cluster, "--instance", "t4", "--pg-role", "kill", "--pg-role-name", role)
        assert f"create role {role} (kill level" in out
        conf = tmp_path / "etc/pgwarden/t4/pgwarden.conf"
        assert conf_value(conf, "user") == role and conf_value(conf, "password")
        with psycopg2.connect(host=pg_cluster.host, port=pg_cluster.port, user="postgres", dbname="postgres") as c:
            with c.cursor() as cur:
                cur.execute(
                    "SELECT r.rolsuper, array_agg(g.rolname ORDER BY g.rolname) FROM pg_roles r"
                    " JOIN pg_auth_members m ON m.member = r.oid JOIN pg_roles g ON g.oid = m.roleid"
                    " WHERE r.rolname = %s GROUP BY r.rolsuper",
                    (role,),
                )
                assert cur.fetchone() == (False, ["pg_monitor", "pg_signal_backend"])
        again = run_setup(tmp_path, pg_cluster, "--instance", "t4", "--pg-role", "kill", "--pg-role-name", role)
        assert "nothing changed" in again, again
    finally:
        c = psycopg2.connect(host=pg_cluster.host, port=pg_cluster.port, user="postgres", dbname="postgres")
        c.autocommit = True
        with c.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        c.close()


def test_a_cluster_that_does_not_exist_is_a_clear_error(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "setup", "--pgdata", str(tmp_path), "--etc-dir", str(tmp_path / "e")],
        capture_output=True, text=True, env=clean_env(), timeout=60,
    )  # fmt: skip
    assert res.returncode == 1 and "not a PostgreSQL data directory" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "e").exists()


def test_the_role_statements_are_the_documented_ones():
    doc = (ROOT / "docs" / "least-privilege.md").read_text()
    documented = {}
    for block in re.findall(r"```sql\n(-- level: .*?)```", doc, re.S):
        first, _, body = block.partition("\n")
        documented[first[len("-- level: ") :]] = body.strip()
    assert least_privilege_blocks() == documented


def test_the_templated_unit_keeps_the_single_units_limits():
    from agent_core.cli.setup import unit_text

    single = (ROOT / "conf" / "pgwarden.service").read_text()
    templated = unit_text("/usr/bin/pgwarden")
    for setting in ("LimitNOFILE", "KillSignal", "TimeoutStopSec", "NoNewPrivileges", "ProtectSystem", "User"):
        assert re.findall(rf"^{setting}=.*$", single, re.M) == re.findall(rf"^{setting}=.*$", templated, re.M)
