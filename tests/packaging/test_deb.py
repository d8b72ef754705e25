"""The Debian package (``make deb``) built, installed with ``dpkg -i`` on this
machine, set up with the installed ``pgwarden setup`` for a throwaway cluster,
its unit's command run as the unit's user, answering over TLS; then purged,
leaving nothing. Root and dpkg only (CI runs as root); never on a machine
where pgwarden is installed or configured for real (purge would remove it).

The one departure from a real host: ``setup`` is given scratch directories
(``--etc-dir``, ``--state-dir``, ``--systemd-dir``, ``--pgdata`` of the
throwaway cluster) and the unit's ``PGWARDEN_CONFIG=/etc/pgwarden/%i/...``
is read with that scratch directory for ``/etc/pgwarden``: tests never write
under /etc/pgwarden nor /var/lib/pgwarden."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import time

import pytest
from install_helpers import conf_value, operator_env, package_lock, printed, scratch_root, serving, tls_request

from agent_core.cluster import free_port

pytestmark = [pytest.mark.packaging, pytest.mark.xdist_group("deb")]  # one worker builds the package

ROOT = pathlib.Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
UNIT = pathlib.Path("/lib/systemd/system/pgwarden@.service")
#: What the package installs or its scripts make, and what a real setup writes.
INSTALLED = ("/opt/pgwarden", "/usr/bin/pgwarden", str(UNIT), "/usr/share/doc/pgwarden",
             "/usr/share/lintian/overrides/pgwarden")  # fmt: skip
REAL_SETUP = ("/etc/pgwarden", "/var/lib/pgwarden")


def _missing() -> str | None:
    """Why the package cannot be built here, if it cannot."""
    for tool in ("dpkg", "dpkg-deb"):
        if not shutil.which(tool):
            return f"{tool} not found: not a Debian system"
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} (Debian's python3) not found"
    if subprocess.run([SYSTEM_PYTHON, "-c", "import venv, ensurepip"], capture_output=True).returncode:
        return "Debian's python3 cannot make a virtualenv: apt-get install python3-venv"
    return None


def _real_install() -> str | None:
    """Why installing and purging here would harm a real installation, if it would."""
    if subprocess.run(["dpkg", "-s", "pgwarden"], capture_output=True).returncode == 0:
        return "the pgwarden package is installed on this machine"
    for path in (*INSTALLED, *REAL_SETUP):
        if os.path.lexists(path):
            return f"{path} exists (a real pgwarden here: the purge would remove it)"
    return None


@pytest.fixture(scope="module")
def deb():
    """The package, built by packaging/build_deb.py (reused while the sources are unchanged)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    res = subprocess.run(
        [SYSTEM_PYTHON, str(ROOT / "packaging" / "build_deb.py"), "--out", str(ROOT / "build" / "deb")],
        capture_output=True, text=True, timeout=900, env=operator_env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    path = res.stdout.strip().splitlines()[-1]
    print(f"package: {path} ({os.path.getsize(path) / 1e6:.1f} MB) in {time.monotonic() - started:.0f} s")
    return path


@pytest.fixture
def exclusive():
    """One install test at a time on this machine (other checkouts run it too), and no
    test that depends on the packaged unit's absence meanwhile; bounded wait."""
    with package_lock(shared=False):
        yield


def unit_settings(text: str, instance: str) -> dict[str, str]:
    """The [Service] settings of a unit file, ``%i`` replaced by ``instance``."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).replace("%i", instance)
    return out


def test_lintian_finds_no_errors(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed (apt-get install lintian)")
    command = ["lintian", *(["--allow-root"] if os.geteuid() == 0 else []), deb]
    res = subprocess.run(command, capture_output=True, text=True, timeout=600)
    errors = [line for line in res.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], res.stdout
    assert res.returncode == 0, res.stdout + res.stderr


def test_install_setup_serve_purge(deb, pg_cluster, exclusive):
    if os.geteuid() != 0:
        pytest.skip("installing a package needs root (CI runs as root)")
    harm = _real_install()
    if harm:
        pytest.skip(harm)
    instance = "debtest"
    port = free_port()
    env = operator_env()
    with scratch_root("pgwarden-deb-") as scratch:
        try:
            res = subprocess.run(["dpkg", "-i", deb], capture_output=True, text=True, timeout=600, env=env)
            assert res.returncode == 0, res.stdout + res.stderr
            assert os.readlink("/usr/bin/pgwarden") == "/opt/pgwarden/bin/pgwarden"
            # the virtualenv runs on Debian's python3, compiled in place by the postinst
            assert os.path.realpath("/opt/pgwarden/bin/python").startswith("/usr/bin/python3")
            assert list(pathlib.Path("/opt/pgwarden/lib").glob("python3*/site-packages/agent_core/__pycache__/*.pyc"))
            assert pathlib.Path("/usr/share/doc/pgwarden/pgwarden.conf.sample").is_file()
            res = subprocess.run(["pgwarden", "plugins"], capture_output=True, text=True, timeout=60, env=env)
            assert res.returncode == 0 and all(p in res.stdout for p in ("activity", "maintenance", "dashboard"))

            etc = scratch / "etc" / "pgwarden"
            setup = [
                "pgwarden", "setup", "--pgdata", pg_cluster.datadir, "--instance", instance,
                "--etc-dir", str(etc), "--state-dir", str(scratch / "var/lib/pgwarden"),
                "--systemd-dir", str(scratch / "etc/systemd/system"),
                "--address", "127.0.0.1", "--agent-port", str(port),
            ]  # fmt: skip
            res = subprocess.run(setup, capture_output=True, text=True, timeout=120, env=env)
            assert res.returncode == 0, res.stdout + res.stderr
            out = res.stdout
            # the package's unit (/lib is /usr/lib on a merged-/usr system): none written
            assert re.search(rf"unchanged: (/usr)?{UNIT} exists", out), out
            assert not (scratch / "etc/systemd/system/pgwarden@.service").exists()
            key, password = printed(out, "agent key"), printed(out, "user")
            conf = etc / instance / "pgwarden.conf"
            assert key and password and conf_value(conf, "key") == key

            unit = unit_settings(UNIT.read_text(), instance)
            dropin = scratch / f"etc/systemd/system/pgwarden@{instance}.service.d/user.conf"
            if dropin.exists():  # the cluster's owner is not postgres
                unit.update(unit_settings(dropin.read_text(), instance))
            variable, _, value = unit["Environment"].partition("=")
            assert (variable, value) == ("PGWARDEN_CONFIG", f"/etc/pgwarden/{instance}/pgwarden.conf")
            unit_env = operator_env(PGWARDEN_CONFIG=value.replace("/etc/pgwarden", str(etc), 1))
            as_user = {"user": unit["User"], "group": unit["Group"], "extra_groups": []}
            res = subprocess.run(
                shlex.split(unit["ExecStartPre"]), capture_output=True, text=True, timeout=60, env=unit_env,
                cwd="/", **as_user,
            )  # fmt: skip
            assert res.returncode == 0, res.stdout + res.stderr
            with serving(shlex.split(unit["ExecStart"]), unit_env, **as_user):
                url = f"https://localhost:{port}"
                cafile = str(etc / instance / "server.pem")
                status, body = tls_request(f"{url}/discover", cafile, {"X-Pgwarden-Key": key})
                assert status == 200, body
                assert body["pg_port"] == pg_cluster.port
                assert {"activity", "maintenance", "dashboard"} <= set(body["plugins"]), body
                status, body = tls_request(f"{url}/login", cafile, body={"username": "admin", "password": password})
                assert status == 200 and body["session"], body
            state = scratch / "var/lib/pgwarden" / instance
            assert (state / "pgwarden.db").stat().st_uid == os.stat(pg_cluster.datadir).st_uid
        finally:
            purge = subprocess.run(["dpkg", "--purge", "pgwarden"], capture_output=True, text=True, timeout=600)
        assert purge.returncode == 0, purge.stdout + purge.stderr
    listed = subprocess.run(["dpkg", "-L", "pgwarden"], capture_output=True, text=True, timeout=60)
    assert listed.returncode != 0 and listed.stdout == "", listed.stdout
    assert subprocess.run(["dpkg", "-s", "pgwarden"], capture_output=True).returncode != 0
    left = [path for path in (*INSTALLED, *REAL_SETUP) if os.path.lexists(path)]
    assert left == [], left
