import pathlib

import pytest

pytest_plugins = ["agent_core.testing"]

#: The installed agent's default places: the test suite must never write there.
SYSTEM_PATHS = ("/var/lib/pgwarden", "/etc/pgwarden")


def snapshot(paths=SYSTEM_PATHS):
    """Every file and directory under ``paths`` with its size and mtime (what was
    there before the run is allowed; anything new or changed is not)."""
    out = {}
    for top in paths:
        root = pathlib.Path(top)
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            try:
                st = path.lstat()
            except OSError:
                continue
            out[str(path)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def nothing_written_to_system_paths():
    """Fails the run if a test created or changed anything under /var/lib/pgwarden
    or /etc/pgwarden (tests work in temporary directories only)."""
    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(p for p in after if before.get(p) != after[p])
    if changed:
        pytest.fail(f"the tests wrote outside temporary directories: {changed}", pytrace=False)
