"""What the install tests share (tests/packaging/): a scratch root other OS
users can traverse, an operator's environment, ``serve`` started as a given
command and waited for with a deadline, GET over TLS checked against a CA file."""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent_core.testing import ServedAgent, serve

ROOT = Path(__file__).resolve().parents[1]
#: Held exclusively while a test installs the package on this host (the packaged unit
#: /lib/systemd/system/pgwarden@.service exists then), shared by tests whose outcome
#: depends on whether it exists (pgwarden setup writes its own unit only when none is packaged).
PACKAGE_LOCK = "/tmp/pgwarden-deb-test.lock"


def script_module(path: Path) -> Any:
    """A script of the repository as a module (scripts/, packaging/: no package to import it from)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: packaging/build_deb.py, a script run by Debian's python3.
BUILD_DEB = script_module(ROOT / "packaging" / "build_deb.py")


@contextmanager
def package_lock(shared: bool) -> Iterator[None]:
    """:data:`PACKAGE_LOCK`, waited for 15 minutes at most (other checkouts on this machine
    take it too); the test skips, naming it, when it was held longer."""
    try:
        with BUILD_DEB.held(PACKAGE_LOCK, 900, shared=shared):
            yield
    except BUILD_DEB.Busy:
        pytest.skip(f"another run held {PACKAGE_LOCK} for 15 minutes")


#: Debian's PATH for root: ``python3`` is the system's (/usr/bin/python3), as on a fresh host.
DEBIAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def operator_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's root shell: this one without the test
    run's virtualenv, pyenv and PGWARDEN_* settings, with Debian's PATH."""
    drop = ("PGWARDEN_", "VIRTUAL_ENV", "PYENV", "PYTHON", "CONDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PATH"] = DEBIAN_PATH
    env.update(extra)
    return env


@contextmanager
def scratch_root(prefix: str) -> Iterator[Path]:
    """A temporary directory under /tmp that the cluster's OS user can
    traverse (0755: the agent runs as that user, below it), removed after."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def read_until(proc: subprocess.Popen[Any], marker: str, timeout: float) -> str:
    """What ``proc`` printed (stdout, unbuffered reads of its descriptor) up to
    and including the line holding ``marker``; AssertionError after
    ``timeout`` s or when it exits first."""
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            text = seen.decode(errors="replace")
            at = text.find(marker)
            if at >= 0 and "\n" in text[at:]:
                return text
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise AssertionError(f"no {marker!r} within {timeout} s: {text}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited ({proc.wait(10)}) before {marker!r}: {text}")
            seen += chunk


@contextmanager
def serving(argv: Sequence[str], env: Mapping[str, str], timeout: float = 60, **popen: Any) -> Iterator[ServedAgent]:
    """``argv`` (a ``pgwarden serve``) started in ``/``; yields once it
    answers (AssertionError after ``timeout`` s or if it exits); SIGTERM and
    a bounded wait after (:func:`agent_core.testing.serve`)."""
    with serve(argv=argv, env=env, timeout=timeout, stop_timeout=60, cwd="/", **popen) as served:
        yield served


def tls_request(url: str, cafile: str, headers: Mapping[str, str] | None = None, body: Any = None) -> tuple[int, Any]:
    """GET (POST with ``body``, JSON) over TLS, the certificate verified against ``cafile``."""
    context = ssl.create_default_context(cafile=cafile)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
    request = urllib.request.Request(url, headers=hdrs, data=data)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as res:
            return res.status, json.loads(res.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def printed(output: str, label: str) -> str | None:
    """A value of ``pgwarden setup``'s summary: ``user`` (admin's password), ``agent key``, ``config``."""
    import re

    if label == "user":
        m = re.search(r"^  user:\s+admin, password: (\S+)", output, re.M)
    else:
        m = re.search(rf"^  {label}:\s+(\S+)", output, re.M)
    return m.group(1) if m else None


def conf_value(conf: Path, key: str) -> str | None:
    import re

    m = re.search(rf"^{key} = (.*)$", conf.read_text(), re.M)
    return m.group(1).strip() if m else None
