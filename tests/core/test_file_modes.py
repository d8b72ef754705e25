"""The agent's files are private whatever the umask: the store, its -wal and
-shm files and the log file 0600, the directories it creates 0700; and
``check-config`` warns about a config file holding a secret, a users file, a
store or a log file other OS users can read. Real ``pgwarden serve`` and
``check-config`` processes, real PostgreSQL, real HTTP."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from agent_core.auth import UsersFile
from agent_core.cluster import free_port
from agent_core.testing import PASSWORD, wait_for
from agent_core.testing import serve as serve_process

#: runs pgwarden (or the demo) in subprocesses: not in the fast unit layer
pytestmark = pytest.mark.process

LOOSE_UMASK = 0o022


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}


def cli(*args, input=None):
    return subprocess.run(
        [sys.executable, "-m", "agent_core.cli", *args],
        capture_output=True,
        text=True,
        env=env(),
        input=input,
        timeout=60,
        umask=LOOSE_UMASK,
    )


def write(path, text, file_mode=0o644) -> str:
    path.write_text(textwrap.dedent(text))
    os.chmod(path, file_mode)
    return str(path)


@pytest.fixture(params=[LOOSE_UMASK, 0o000], ids=["umask022", "umask000"])
def serve(request, tmp_path, pg_cluster):
    """``pgwarden serve`` under umask 022 (the usual one) or 000 with a home
    and a log directory it must create or fill itself; yields (base URL,
    home, log file, config file)."""
    port = free_port()
    home = tmp_path / "state" / "home"  # neither exists yet
    log_file = tmp_path / "logs" / "pgwarden.log"
    log_file.parent.mkdir()
    users = tmp_path / "users"
    UsersFile(str(users)).set("alice", PASSWORD)
    conf = write(
        tmp_path / "pgwarden.conf",
        f"""
        [agent]
        home = {home}
        users = {users}
        port = {port}
        log_file = {log_file}
        key = a-long-random-agent-key
        [postgresql]
        host = {pg_cluster.host}
        port = {pg_cluster.port}
        """,
        0o644,  # readable by everyone and holds the key: logged at start-up
    )
    with serve_process(conf, env=env(), umask=request.param) as served:  # fails unless it answers
        yield f"http://127.0.0.1:{port}", home, log_file, conf
        assert served.stop(timeout=30).returncode == 0  # SIGTERM


def login(url: str) -> None:
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/login", data=body), timeout=30) as res:
        assert res.status == 200


def test_store_wal_shm_log_and_directories_private_whatever_the_umask(serve):
    url, home, log_file, conf = serve
    login(url)  # a session written: the WAL and its index exist
    store = home / "pgwarden.db"
    modes = {name: mode(f"{store}{name}") for name in ("", "-wal", "-shm")}
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}, {k: oct(v) for k, v in modes.items()}
    assert mode(home) == 0o700 and mode(home.parent) == 0o700, "directories the agent created"
    assert mode(log_file) == 0o600
    logged = log_file.read_text()
    assert f"WARNING pgwarden: {conf} (config file holding agent.key) has mode 0644" in logged, logged
    assert "a-long-random-agent-key" not in logged
    # logrotate moves the file away: the agent creates a new one, 0600 too
    os.rename(log_file, f"{log_file}.1")
    login(url)
    wait_for(lambda: log_file.exists(), timeout=10)
    assert mode(log_file) == 0o600


def test_user_add_creates_its_directory_0700_and_the_file_0600(tmp_path):
    users = tmp_path / "etc" / "pgwarden" / "users"
    res = cli("user", "--users-file", str(users), "add", "carol", input="pa55word\n")
    assert res.returncode == 0, res.stderr
    assert mode(users) == 0o600
    assert mode(users.parent) == 0o700 and mode(users.parent.parent) == 0o700


def test_check_config_warns_about_a_readable_config_holding_the_key(tmp_path):
    home = tmp_path / "home"
    conf = write(
        tmp_path / "pgwarden.conf",
        f"""
        [agent]
        home = {home}
        key = a-long-random-agent-key
        [postgresql]
        port = 1
        password = hunter2
        """,
    )
    res = cli("-c", conf, "check-config")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:") and conf in line]
    assert warnings == [
        f"warning: {conf} (config file holding agent.key, postgresql.password) has mode 0644:"
        f" readable by every user; chmod 600 {conf}"
    ], res.stderr
    assert "a-long-random-agent-key" not in res.stderr + res.stdout and "hunter2" not in res.stderr + res.stdout

    os.chmod(conf, 0o600)
    res = cli("-c", conf, "check-config")
    assert res.returncode == 0 and conf not in res.stderr, res.stderr


def test_check_config_warns_about_loose_users_store_tls_key_and_log_files(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    log_file = tmp_path / "pgwarden.log"
    conf = write(
        tmp_path / "pgwarden.conf",
        f"""
        [agent]
        home = {home}
        log_file = {log_file}
        address = 127.0.0.1
        tls_cert = {tmp_path / "server.pem"}
        tls_key = {tmp_path / "server.key"}
        [postgresql]
        port = 1
        """,
    )
    # files left by an older version, or copied with cp: world-readable
    (tmp_path / "server.pem").touch()
    for path in (home / "users", home / "pgwarden.db", log_file, tmp_path / "server.key"):
        path.touch()
        os.chmod(path, 0o644)
    os.chmod(home / "users", 0o666)
    res = cli("-c", conf, "check-config")
    assert res.returncode == 0, res.stderr
    warnings = sorted(line for line in res.stderr.splitlines() if line.startswith("warning:") and "mode" in line)
    assert warnings == sorted(
        [
            f"warning: {home / 'users'} (users file: password hashes) has mode 0666:"
            f" readable by every user, writable by every user; chmod 600 {home / 'users'}",
            f"warning: {home / 'pgwarden.db'} (operations store: sessions, audit log) has mode 0644:"
            f" readable by every user; chmod 600 {home / 'pgwarden.db'}",
            f"warning: {log_file} (log file) has mode 0644: readable by every user; chmod 600 {log_file}",
            f"warning: {tmp_path / 'server.key'} (TLS private key) has mode 0644: readable by every user;"
            f" chmod 600 {tmp_path / 'server.key'}",
        ]
    ), res.stderr
    assert f"{conf} (config file)" not in res.stderr, "no secret in it: a readable config is fine"
