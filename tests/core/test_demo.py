"""``pgwarden demo`` (what ``make demo`` runs) shows each step as it happens,
ends with a working agent, and removes its cluster on Ctrl-C."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from install_helpers import read_until

from agent_core.cluster import INSTALL_HINT, find_bindir, free_port

#: runs pgwarden (or the demo) in subprocesses: not in the fast unit layer
pytestmark = pytest.mark.process


def test_demo_prints_its_steps_then_serves(tmp_path):
    if find_bindir() is None:
        pytest.skip(INSTALL_HINT)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_core.cli", "demo", "--home", str(tmp_path / "demo"), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        out = read_until(proc, "Press Ctrl-C", timeout=120)
        steps = re.findall(r"^\[(\d+)\] (\S+)", out, re.M)
        assert [int(n) for n, _ in steps] == [1, 2, 3, 4, 5], out
        assert out.count("    done in ") == 5, out
        assert out.index("[5] start the agent") < out.index("pgwarden demo is running"), out
        url = re.search(r"pgwarden demo is running: (\S+)", out).group(1)
        with urllib.request.urlopen(f"{url}/status", timeout=30) as res:
            assert res.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0 and "cluster removed" in rest, rest
