"""free_port: the ports tests start servers on are never the kernel's to hand out to clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from agent_core.cluster import PORT_BANDS, _ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable():
    ports = [free_port() for _ in range(20)]
    assert len(set(ports)) == 20
    assert all(port < _ephemeral_low() for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # raises if it was not free


def test_a_port_in_use_is_skipped():
    port = free_port()
    with socket.socket() as held:  # the port free_port would give next, taken by a listener meanwhile
        held.bind(("127.0.0.1", port + 1))
        held.listen()
        assert free_port() not in (port, port + 1)


def test_each_xdist_worker_has_a_band_of_its_own():
    first, size, count = PORT_BANDS
    worker_code = "import pytest; from agent_core.cluster import free_port; print(free_port())"
    program_code = "from agent_core.cluster import free_port; print(free_port())"
    seen = {}
    for worker in ("gw0", "gw1", "gw2"):
        env = {**os.environ, "PYTEST_XDIST_WORKER": worker}
        for kind, code in (("worker", worker_code), ("program", program_code)):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            seen[worker, kind] = (int(out.stdout) - first) // size
    # a worker has its band; a program a test runs (the variable inherited, no pytest) the shared last one
    assert seen == {
        ("gw0", "worker"): 0, ("gw1", "worker"): 1, ("gw2", "worker"): 2,
        ("gw0", "program"): count - 1, ("gw1", "program"): count - 1, ("gw2", "program"): count - 1,
    }  # fmt: skip
