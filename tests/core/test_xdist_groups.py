"""make test runs the suites with ``--dist loadgroup``: tests marked with one
``xdist_group`` must run on one worker (the two deb tests share one package
build that way). pytest-xdist 3.8 marks a grouped test by renaming its node id,
which pytest 9 ignores: the group was silently split over workers, each
building the package. This runs two grouped tests on two workers and checks
that they ran on the same one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.process


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    (tmp_path / "test_grouped.py").write_text(
        textwrap.dedent(
            """
            import os
            import pathlib
            import pytest

            pytestmark = pytest.mark.xdist_group("together")

            @pytest.mark.parametrize("n", range(4))
            def test_where(n):
                pathlib.Path(f"worker-{n}").write_text(os.environ.get("PYTEST_XDIST_WORKER", ""))
            """
        )
    )
    # xdist alone: the other installed plugins (schemathesis, hypothesis...) only slow each worker's start
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "xdist", "-p", "no:cacheprovider"]
    res = subprocess.run(
        [*command, "-n", "2", "--dist", "loadgroup"], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    workers = {(tmp_path / f"worker-{n}").read_text() for n in range(4)}
    assert len(workers) == 1 and workers != {""}, workers
