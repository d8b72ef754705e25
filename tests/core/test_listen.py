"""Listening: IPv6, several addresses on one port, plain HTTP on loopback only."""

from __future__ import annotations

import socket

import pytest

from agent_core.config import RawConfig, agent_schema, postgresql_schema, validate
from agent_core.errors import ConfigError, StartupError
from agent_core.testing import Client


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="IPv6 loopback (::1) not available on this host")


@needs_ipv6
def test_ipv6_only(make_agent):
    running = make_agent(config={"agent": {"address": "[::1]"}})
    assert running.url.startswith("http://[::1]:")
    api = running.login()
    res = api.get("/profile")
    assert res.status == 200, res
    assert res.json()["username"] == "alice"


@needs_ipv6
def test_ipv4_and_ipv6_on_one_port_sharing_sessions(make_agent):
    running = make_agent(config={"agent": {"address": "127.0.0.1, ::1"}})
    server = running.agent.server
    port = server.port
    assert server.urls == [f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]
    v4, v6 = (Client(url) for url in server.urls)
    assert v4.get("/status").status == 200 and v6.get("/status").status == 200
    session = v6.login().session  # one app: a session made on one address works on the other
    res = Client(server.urls[0], session=session).get("/profile")
    assert res.status == 200, res
    assert res.json()["username"] == "alice"
    urls = server.urls
    running.stop()
    for url in urls:  # both stopped
        with pytest.raises(OSError):
            Client(url, timeout=5).get("/status")


@needs_ipv6
def test_one_address_that_cannot_be_bound_releases_the_others(make_agent):
    with socket.socket(socket.AF_INET6) as taken:
        taken.bind(("::1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"cannot listen on \[::1\]:{port}: "):
            make_agent(config={"agent": {"address": "127.0.0.1, ::1", "port": port}})
    with socket.socket() as again:  # 127.0.0.1 was bound first, then released
        again.bind(("127.0.0.1", port))


@pytest.mark.parametrize("address", ["127.0.0.1, 0.0.0.0", "::1, ::", "::1, 2001:db8::1"])
def test_plain_http_refused_on_any_non_loopback_address(address):
    raw = RawConfig.from_dict({"agent": {"address": address}})
    with pytest.raises(ConfigError) as e:
        validate(raw, [agent_schema(), postgresql_schema()], environ={})
    refused = address.split(", ")[1]
    assert e.value.problems == [
        f"agent.address: refusing plain HTTP on {refused}: set tls_cert and tls_key,"
        " or bind to loopback addresses (127.0.0.1, ::1) only"
    ]


def test_addresses_normalised_and_required():
    raw = RawConfig.from_dict({"agent": {"address": "127.0.0.1, [::1], 127.0.0.1"}})
    assert validate(raw, [agent_schema(), postgresql_schema()], environ={}).agent["address"] == ["127.0.0.1", "::1"]
    with pytest.raises(ConfigError) as e:
        validate(RawConfig.from_dict({"agent": {"address": " , "}}), [agent_schema(), postgresql_schema()], environ={})
    assert e.value.problems == ["agent.address: at least one address is required"]
