#!/usr/bin/python3
"""``make deb``: pgwarden_<version>_<arch>.deb, a self-contained virtualenv.

Run with Debian's own Python (``/usr/bin/python3``, standard library only): the
package's virtualenv is made with it, so the installed agent needs nothing but
the ``python3`` package of the same minor version. What the package holds:

- ``/opt/pgwarden``: a virtualenv (``python3 -m venv``) with the core, the
  three plugins and their dependencies from PyPI wheels, and pip (operators
  may add plugins with ``/opt/pgwarden/bin/pip``);
- ``/usr/bin/pgwarden``: a symbolic link to ``/opt/pgwarden/bin/pgwarden``;
- ``/lib/systemd/system/pgwarden@.service``: the templated unit, the very
  text ``pgwarden setup`` writes when no package provides one
  (:func:`agent_core.cli.setup.unit_text`);
- ``/usr/share/doc/pgwarden/``: the sample config (``pgwarden.conf.sample``),
  README, copyright, changelog;
- maintainer scripts (``packaging/debian/``): bytecode compiled at install and
  removed before removal, ``/opt/pgwarden`` removed whole on remove, the
  configuration and state ``pgwarden setup`` made removed on purge.

The virtualenv is built in a staging directory (``build/deb/root/opt/pgwarden``)
and relocated: the only files naming the staging path are the scripts'
``#!`` lines and ``pyvenv.cfg``, rewritten to ``/opt/pgwarden``; the build
fails if the staging path is left anywhere. No bytecode is shipped (it would
name the staging path; the postinst compiles it in place).

The package is compressed with gzip, which any dpkg reads, at a fifth of
xz's time. It is built in ``build/deb/`` and copied to ``--out`` (default: the
source tree, where ``apt install ./pgwarden_*.deb`` finds it). The build is
skipped when the sources (and this script) have not changed since the last
one: ``build/deb/source.sha256`` holds their hash; ``--force`` rebuilds. The
last line printed is the path of the package.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "/opt/pgwarden"
PLUGINS = ("activity", "maintenance", "dashboard")
#: What the package is made of: a change here makes a new build.
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "agent_core", "conf", "packaging")
SOURCES += tuple(f"plugins/{p}" for p in PLUGINS)
SKIP_DIRS = {"__pycache__", "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache", "tests"}
MAINTAINER = "pgwarden developers <dev@pgwarden.invalid>"


#: How long a build waits for another build of the same checkout (seconds).
LOCK_WAIT = 900


def step(text: str) -> None:
    print(f"== {text}", flush=True)


def run(*args: str, **kw: object) -> None:
    subprocess.run(args, check=True, **kw)  # type: ignore[call-overload]


def source_files() -> list[str]:
    out = []
    for top in SOURCES:
        path = os.path.join(ROOT, top)
        if os.path.isfile(path):
            out.append(top)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            for name in sorted(filenames):
                if not name.endswith((".pyc", ".deb")):
                    out.append(os.path.relpath(os.path.join(dirpath, name), ROOT))
    return out


def source_hash(files: list[str], python: str) -> str:
    h = hashlib.sha256()
    h.update(python.encode() + b"\0" + sys.version.encode() + b"\0")
    for rel in files:
        h.update(rel.encode() + b"\0")
        with open(os.path.join(ROOT, rel), "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def version() -> str:
    with open(os.path.join(ROOT, "agent_core", "__init__.py")) as f:
        m = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if not m:
        raise SystemExit("no __version__ in agent_core/__init__.py")
    return m.group(1)


def architecture() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()


def relocate(venv: str, staging: str) -> None:
    """Rewrite the staging path to PREFIX in the scripts and pyvenv.cfg; fail
    if any file still names it."""
    old, new = staging.encode(), PREFIX.encode()
    targets = [os.path.join(venv, "pyvenv.cfg")]
    bindir = os.path.join(venv, "bin")
    targets += [os.path.join(bindir, n) for n in os.listdir(bindir)]
    for path in targets:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if old in data:
            with open(path, "wb") as f:
                f.write(data.replace(old, new))
    left = []
    for dirpath, _, filenames in os.walk(venv):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                if old in os.readlink(path).encode():
                    left.append(path)
                continue
            with open(path, "rb") as f:
                if old in f.read():
                    left.append(path)
    if left:
        raise SystemExit(f"the staging path {staging} is still named in: {', '.join(left)}")


SHARED_OBJECT = re.compile(r"\.so(\.[0-9.]+)?$")


def normalize_modes(root: str) -> None:
    """Directories 0755; shared objects 0644; other files 0755 when executable
    by anyone, else 0644 (root owns all: dpkg-deb --root-owner-group)."""
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & 0o111 and not SHARED_OBJECT.search(name) else 0o644)


def strip_objects(venv: str) -> None:
    """Strip the wheels' shared objects of their debugging symbols, as dh_strip
    does (binutils' strip; skipped without it)."""
    if not shutil.which("strip"):
        print("   strip not found (apt-get install binutils): shared objects left unstripped", flush=True)
        return
    objects = [
        os.path.join(d, n) for d, _, names in os.walk(venv) for n in names if SHARED_OBJECT.search(n)
    ]  # fmt: skip
    run("strip", "--strip-unneeded", "--remove-section=.comment", "--remove-section=.note", *objects)


def glibc_needed(venv: str) -> str:
    """The newest glibc a wheel of the virtualenv needs: each wheel runs from the
    oldest of its manylinux tags on."""
    aliases = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    needed = (2, 17)
    for dirpath, _, names in os.walk(venv):
        if dirpath.endswith(".dist-info") and "WHEEL" in names:
            with open(os.path.join(dirpath, "WHEEL")) as f:
                tags = re.findall(r"^Tag: \S+-\S+-(\S+)$", f.read(), re.M)
            versions = []
            for tag in tags:
                m = re.match(r"manylinux_(\d+)_(\d+)_", tag)
                if m:
                    versions.append((int(m.group(1)), int(m.group(2))))
                elif tag.split("_")[0] in aliases:
                    versions.append(aliases[tag.split("_")[0]])
            if versions:
                needed = max(needed, min(versions))
    return f"{needed[0]}.{needed[1]}"


def changelog(ver: str) -> bytes:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or time.time())
    date = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
    text = (
        f"pgwarden ({ver}) unstable; urgency=medium\n\n"
        f"  * pgwarden {ver}: built from the source tree by make deb.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    )
    return gzip.compress(text.encode(), compresslevel=9, mtime=epoch)


def build(out_dir: str, python: str) -> str:
    ver, arch = version(), architecture()
    work = os.path.join(ROOT, "build", "deb")
    root = os.path.join(work, "root")
    src = os.path.join(work, "src")
    venv = root + PREFIX
    for path in (root, src):
        shutil.rmtree(path, ignore_errors=True)
    os.makedirs(os.path.dirname(venv))

    step(f"copy the sources to {os.path.relpath(src, ROOT)} (pip builds there, not in the tree)")
    for rel in source_files():
        os.makedirs(os.path.dirname(os.path.join(src, rel)), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), os.path.join(src, rel))

    step(f"virtualenv with {python} at {os.path.relpath(venv, ROOT)}")
    run(python, "-m", "venv", "--without-pip", venv)
    vpy = os.path.join(venv, "bin", "python")
    # pip installed by a step of its own, its output kept: `venv` alone hides
    # why ensurepip failed. It failed twice in make test on a loaded machine
    # (four test workers beside the benchmark smokes) and never alone; the
    # cause is not known yet, so a failure is printed whole and tried once more.
    for attempt in (1, 2):
        ensurepip = subprocess.run(
            [vpy, "-m", "ensurepip", "--upgrade", "--default-pip"], capture_output=True, text=True, check=False
        )
        if ensurepip.returncode == 0:
            break
        print(
            f"ensurepip failed (attempt {attempt}, exit {ensurepip.returncode}):\n"
            f"{ensurepip.stdout[-3000:]}{ensurepip.stderr[-3000:]}",
            file=sys.stderr,
            flush=True,
        )
    else:
        sys.exit("ensurepip failed twice: see above")
    step("pip install the core and the plugins (wheels from the package index)")
    run(
        vpy, "-m", "pip", "install", "--quiet", "--no-compile", "--no-warn-script-location",
        src, *(os.path.join(src, "plugins", p) for p in PLUGINS),
    )  # fmt: skip
    step("the templated unit, from agent_core.cli.setup.unit_text")
    code = "from agent_core.cli.setup import unit_text; print(unit_text('/usr/bin/pgwarden', packaged=True), end='')"
    unit = subprocess.run(
        [vpy, "-c", code],
        capture_output=True, text=True, check=True, cwd="/",
    ).stdout  # fmt: skip
    step("remove bytecode, relocate the virtualenv to /opt/pgwarden")
    for dirpath, dirnames, _ in os.walk(venv):
        for d in list(dirnames):
            if d == "__pycache__":
                shutil.rmtree(os.path.join(dirpath, d))
                dirnames.remove(d)
    relocate(venv, venv)
    for name in os.listdir(os.path.join(venv, "bin")):  # one interpreter path for every script
        path = os.path.join(venv, "bin", name)
        if not os.path.islink(path) and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            if data.startswith(f"#!{PREFIX}/bin/python3\n".encode()):
                with open(path, "wb") as f:
                    f.write(data.replace(b"/bin/python3\n", b"/bin/python\n", 1))
    step("strip the shared objects")
    strip_objects(venv)

    unit_dir = os.path.join(root, "lib", "systemd", "system")
    os.makedirs(unit_dir)
    with open(os.path.join(unit_dir, "pgwarden@.service"), "w") as f:
        f.write(unit)
    os.makedirs(os.path.join(root, "usr", "bin"))
    os.symlink(f"{PREFIX}/bin/pgwarden", os.path.join(root, "usr", "bin", "pgwarden"))
    doc = os.path.join(root, "usr", "share", "doc", "pgwarden")
    os.makedirs(doc)
    shutil.copy(os.path.join(ROOT, "conf", "pgwarden.conf"), os.path.join(doc, "pgwarden.conf.sample"))
    with open(os.path.join(ROOT, "README.md"), "rb") as f, gzip.open(os.path.join(doc, "README.md.gz"), "wb", 9) as g:
        g.write(f.read())
    shutil.copy(os.path.join(ROOT, "packaging", "debian", "copyright"), os.path.join(doc, "copyright"))
    with open(os.path.join(doc, "changelog.gz"), "wb") as f:
        f.write(changelog(ver))
    overrides = os.path.join(root, "usr", "share", "lintian", "overrides")
    os.makedirs(overrides)
    shutil.copy(os.path.join(ROOT, "packaging", "debian", "lintian-overrides"), os.path.join(overrides, "pgwarden"))

    step("control files")
    control = os.path.join(root, "DEBIAN")
    os.makedirs(control)
    for script in ("postinst", "prerm", "postrm"):
        shutil.copy(os.path.join(ROOT, "packaging", "debian", script), os.path.join(control, script))
    normalize_modes(root)
    for script in ("postinst", "prerm", "postrm"):
        os.chmod(os.path.join(control, script), 0o755)
    major, minor = subprocess.run(
        [python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, check=True
    ).stdout.split()
    size_kb = (
        sum(os.lstat(os.path.join(d, n)).st_size for d, _, names in os.walk(root) for n in names if "DEBIAN" not in d)
        // 1024
    )
    with open(os.path.join(ROOT, "packaging", "debian", "control")) as f:
        template = f.read()
    with open(os.path.join(control, "control"), "w") as f:
        f.write(
            template.format(
                version=ver, arch=arch, maintainer=MAINTAINER, installed_size=size_kb,
                python_depends=f"python3 (>= {major}.{minor}), python3 (<< {major}.{int(minor) + 1}),"
                f" libc6 (>= {glibc_needed(venv)})",
            )
        )  # fmt: skip
    with open(os.path.join(control, "md5sums"), "w") as f:
        for dirpath, _, names in os.walk(root):
            if dirpath.startswith(control):
                continue
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    continue
                with open(path, "rb") as g:
                    f.write(f"{hashlib.md5(g.read()).hexdigest()}  {os.path.relpath(path, root)}\n")
    os.chmod(os.path.join(control, "md5sums"), 0o644)

    deb = os.path.join(out_dir, f"pgwarden_{ver}_{arch}.deb")
    step(f"dpkg-deb --build {os.path.relpath(deb, ROOT)}")
    # gzip: every dpkg reads it (zstd needs dpkg 1.21.18), and it takes 3 s where
    # xz took 17 s of both cores for a package 4 MB smaller (15 MB instead of 11)
    run("dpkg-deb", "--root-owner-group", "-Zgzip", "-z6", "--build", root, deb, stdout=subprocess.DEVNULL)
    return deb


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=ROOT, help="directory to put the package in (default: the source tree)")
    p.add_argument("--python", default="/usr/bin/python3", help="the Python of the package (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="build even when the sources did not change")
    a = p.parse_args()
    for tool in ("dpkg-deb", "dpkg"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: make deb builds on Debian (apt-get install dpkg-dev)")
    check = subprocess.run([a.python, "-c", "import venv, ensurepip"], capture_output=True, check=False)
    if check.returncode != 0:
        raise SystemExit(f"{a.python} cannot make a virtualenv: apt-get install python3-venv")
    work = os.path.join(ROOT, "build", "deb")
    os.makedirs(work, exist_ok=True)
    # one build of this checkout at a time: two at once (two test workers,
    # a make deb beside make test) delete and refill each other's staging
    # tree; the second waits, then finds the package built
    try:
        with held(os.path.join(work, ".lock"), LOCK_WAIT):
            return _build_or_reuse(a, work)
    except Busy:
        sys.exit(f"another build of this checkout held {work}/.lock for {LOCK_WAIT} s")


class Busy(Exception):
    """Another process held the lock longer than the wait."""


@contextlib.contextmanager
def held(path: str, wait: float, shared: bool = False):
    """An exclusive ``flock`` on ``path`` (``shared``: a shared one) for the
    ``with`` block, waited for at most ``wait`` seconds (:class:`Busy` then).
    Also the install tests' lock (tests/install_helpers.py)."""
    with open(path, "a") as lock:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(path) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build_or_reuse(a: argparse.Namespace, work: str) -> int:
    stamp = os.path.join(work, "source.sha256")
    digest = source_hash(source_files(), a.python)
    built = os.path.join(work, f"pgwarden_{version()}_{architecture()}.deb")
    try:
        with open(stamp) as f:
            same = f.read().strip() == digest
    except OSError:
        same = False
    if same and os.path.isfile(built) and not a.force:
        step(f"sources unchanged since the last build: {os.path.relpath(built, ROOT)} (--force rebuilds)")
    else:
        started = time.monotonic()
        if os.path.exists(stamp):
            os.remove(stamp)
        built = build(work, a.python)
        with open(stamp, "w") as f:
            f.write(digest + "\n")
        step(f"built in {time.monotonic() - started:.0f} s: {os.path.getsize(built) / 1e6:.1f} MB")
    deb = os.path.join(os.path.abspath(a.out), os.path.basename(built))
    if deb != built:
        os.makedirs(os.path.dirname(deb), exist_ok=True)
        shutil.copyfile(built, deb)
    print(deb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
