"""README's "Install for real" pip path, its commands read from README.md and
run as a new operator would (root, Debian's PATH and ``python3``, a copy of the
repository as the current directory), against a throwaway cluster; then the
agent is started with the command ``setup`` printed, as the cluster's OS user,
and answers over TLS.

What differs from a real host, and why:

- ``/opt/pgwarden`` is ``<scratch>/opt/pgwarden``: the real one is the Debian
  package's (tests/packaging/test_deb.py installs it) and this machine is shared;
- ``pgwarden setup`` is given ``--pgdata``/``--instance`` (the throwaway
  cluster is not in ``pg_lsclusters``; the README names ``--pgdata`` for that
  case), scratch ``--etc-dir``/``--state-dir``/``--systemd-dir`` (tests never
  write under /etc/pgwarden nor /var/lib/pgwarden) and a free ``--agent-port``;
- an ``apt-get install`` line whose packages are all installed already is
  not run (it would change nothing, and needs dpkg's lock).

The block is also the first ``sh`` block of the section whose prose says
"With pip": a change of wording that loses it fails here, not silently."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import time

import pytest
from install_helpers import operator_env, package_lock, printed, scratch_root, serving, tls_request

from agent_core.cluster import free_port

pytestmark = pytest.mark.packaging

ROOT = pathlib.Path(__file__).resolve().parents[2]
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".demo", "*.deb", ".*_cache", "out"
)


def readme_block(marker: str) -> list[str]:
    """The command lines of the first ``sh`` block after ``marker`` in README's "Install for real"."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Install for real") :]
    section = section[: section.index("\n## ", 1)]
    after = section[section.index(marker) :]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, f"no sh block after {marker!r} in README.md's Install for real"
    return [line for line in block.group(1).splitlines() if line.strip()]


def already_installed(line: str) -> bool:
    words = shlex.split(line, comments=True)
    if words[:2] != ["apt-get", "install"]:
        return False
    packages = [w for w in words[2:] if not w.startswith("-")]
    return all(
        subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout.endswith(
            "installed"
        )
        for p in packages
    )


def test_the_readme_pip_path_works_as_written(pg_cluster):
    if os.geteuid() != 0:
        pytest.skip("the README's install runs as root (CI runs as root)")
    if not os.path.exists("/usr/bin/python3") or not shutil.which("runuser"):
        pytest.skip("not a Debian host: /usr/bin/python3 and runuser are needed")
    lines = readme_block("With pip")
    assert any(line.startswith("python3 -m venv /opt/pgwarden") for line in lines), lines
    # pgwarden setup's unit step depends on whether the package's unit exists: not while test_deb installs it
    with package_lock(shared=True), scratch_root("pgwarden-readme-") as scratch:
        clone = scratch / "pgwarden"
        shutil.copytree(ROOT, clone, ignore=COPY_IGNORE, symlinks=True)
        venv = scratch / "opt" / "pgwarden"
        instance, port = "readme", free_port()
        setup_options = [
            "--pgdata", pg_cluster.datadir, "--instance", instance, "--agent-port", str(port),
            "--etc-dir", str(scratch / "etc/pgwarden"), "--state-dir", str(scratch / "var/lib/pgwarden"),
            "--systemd-dir", str(scratch / "etc/systemd/system"),
        ]  # fmt: skip
        script = ["set -e"]
        for line in lines:
            if already_installed(line):
                continue
            line = line.replace("/opt/pgwarden", str(venv))
            line = re.sub(r"\bpgwarden setup\b", "pgwarden setup " + shlex.join(setup_options), line)
            script.append(line)
        started = time.monotonic()
        res = subprocess.run(
            ["bash", "-c", "\n".join(script)], cwd=clone, env=operator_env(), capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        print(f"README pip path: {time.monotonic() - started:.0f} s")
        assert res.returncode == 0, "\n".join(script) + "\n" + res.stdout[-5000:] + res.stderr[-5000:]
        out = res.stdout
        assert "dry run:" in out and f"instance '{instance}' set up" in out, out
        # the virtualenv is Debian's python3's, as a fresh host's would be
        assert os.path.realpath(venv / "bin" / "python").startswith("/usr/bin/python3")
        key, password = printed(out, "agent key"), printed(out, "user")
        assert key and password, out
        by_hand = re.search(r"^  start it by hand: (.*)$", out, re.M)
        assert by_hand, out
        conf = scratch / "etc/pgwarden" / instance / "pgwarden.conf"
        with serving(shlex.split(by_hand.group(1)), operator_env()):
            cafile = str(conf.parent / "server.pem")
            status, body = tls_request(f"https://localhost:{port}/discover", cafile, {"X-Pgwarden-Key": key})
            assert status == 200, body
            assert body["pg_port"] == pg_cluster.port
            assert {"activity", "maintenance", "dashboard"} <= set(body["plugins"]), body
            login = {"username": "admin", "password": password}
            status, body = tls_request(f"https://localhost:{port}/login", cafile, body=login)
            assert status == 200 and body["session"], body


def test_the_readme_deb_path_is_the_one_tested():
    """README's package block builds with ``make deb`` (packaging/build_deb.py,
    what test_deb.py builds and installs), installs the file it makes, runs setup."""
    lines = [shlex.split(line, comments=True) for line in readme_block("The Debian package")]
    assert ["make", "deb"] in lines and ["apt", "install", "./pgwarden_*.deb"] in lines, lines
    assert ["pgwarden", "setup"] in lines, lines
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^deb:\n\t\$\(DEB_PYTHON\) packaging/build_deb\.py", makefile, re.M)
    # the file make deb leaves in the clone is the one apt install is given
    assert "default=ROOT" in (ROOT / "packaging" / "build_deb.py").read_text()
