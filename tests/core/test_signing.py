"""Signed requests (the temboard UI 8.0 and later): the canonical string, every
refusal, replays, dates, hosts, roles and key reloads, over real HTTP.

The signatures are made with ``cryptography`` by :class:`TemboardSigner`,
written from the recorded protocol (``api/temboard-9-ui.md``), not from
:mod:`agent_core.auth.signing`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from agent_core.auth import signing
from agent_core.cluster import free_port
from agent_core.testing import KEY, TemboardSigner, serve, wait_for

NOW = 1_780_000_000.0  # a fixed clock for the pure tests


@pytest.fixture(scope="module")
def signer():
    return TemboardSigner()


@pytest.fixture(scope="module")
def stranger():
    """Another UI: a key the agent does not know."""
    return TemboardSigner()


def signed_agent(make_agent, probe, key_path, **settings):
    return make_agent(plugins={"probe": probe}, config={"signing": {"public_key": key_path, **settings}})


@pytest.fixture
def key_path(tmp_path, signer):
    return signer.write_public(tmp_path / "ui.pem")


@pytest.fixture
def admin_agent(make_agent, probe, key_path):
    return signed_agent(make_agent, probe, key_path, role="admin")


# -- the canonical string, as the notes give it ------------------------------------------


HEADERS = {
    "host": "db1.example:2345",
    "x-temboard-date": "20260101T120000Z",
    "x-temboard-request-id": "0b7e3c1c-6d1f-4c59-9d5b-0f9f5a6f1e2d",
    "x-temboard-user": "alice",
}
SIGNED_PART = (
    "host: db1.example:2345\nx-temboard-date: 20260101T120000Z\n"
    "x-temboard-request-id: 0b7e3c1c-6d1f-4c59-9d5b-0f9f5a6f1e2d\nx-temboard-user: alice\n"
)


@pytest.mark.parametrize(
    "method, target, body, first_line, tail",
    [
        # a percent-encoded name: % quoted once more
        ("GET", "/maintenance/sales%20x/schema/public", None, "GET /maintenance/sales%2520x/schema/public", ""),
        # a query string: ? and = quoted
        ("GET", "/activity?limit=1", None, "GET /activity%3Flimit%3D1", ""),
        ("DELETE", "/maintenance/vacuum/0a1b2c3d", None, "DELETE /maintenance/vacuum/0a1b2c3d", ""),
        # a POST body: its SHA-256 after an empty line; content-* headers signed, sorted first
        ("POST", "/activity/kill", b'{"pids": [4242]}', "POST /activity/kill", None),
    ],
)
def test_canonical_string_vectors(signer, method, target, body, first_line, tail):
    headers = dict(HEADERS)
    expected_headers = SIGNED_PART
    if method == "POST":
        headers.update({"content-type": "application/json", "content-length": str(len(body))})
        expected_headers = f"content-length: {len(body)}\ncontent-type: application/json\n" + SIGNED_PART
        tail = "\n" + hashlib.sha256(body).hexdigest() + "\n"
    expected = f"{first_line}\n\n{expected_headers}{tail}"
    assert signing.canonical_string(method, target, headers, body) == expected
    assert TemboardSigner.canonical(method, target, headers, body) == expected  # the test's signer agrees

    # and a signature made over it verifies (fixed clock, the signed host is the agent's)
    verifier = signing.Signing({}, listen=lambda: (["127.0.0.1"], 2345), clock=lambda: NOW)
    verifier.path, verifier._key = "(test)", signing.load_public_key(signer.public_pem)
    verifier._stat = verifier._file_stat()
    sent = signer.headers(method, target, "127.0.0.1:2345", body=body, date=NOW)
    lower = {name.lower(): value for name, value in sent.items()}
    assert verifier.verify(method, target, lower, body) == signing.Signer("alice", "read")
    with pytest.raises(signing.SignatureRefused) as refused:  # the same, decoded path: another text
        verifier.verify(method, target.replace("%20", " "), lower, body)
    assert isinstance(refused.value, signing.SignatureInvalid)  # 403


def test_dates_are_parsed_never_compared_as_text():
    assert signing.parse_date("20260101T120000Z") == 1767268800.0
    for text in (
        "zzz",
        "20261301T000000Z",
        "2026-01-01T12:00:00Z",
        "20260101T120000",
        "\uff12\uff10\uff12\uff160101T120000Z",
    ):
        with pytest.raises(ValueError):
            signing.parse_date(text)


def test_replay_cache_is_bounded_and_never_reopens_a_replay():
    cache = signing.ReplayCache(100)
    for i in range(100):
        assert cache.add(f"id-{i}", NOW + i, NOW + i + 301, NOW + 100) is None
    assert cache.add("id-5", NOW + 5, NOW + 306, NOW + 100) == "this request id was already used (a replayed request)"
    # full: the oldest (id-0) is dropped, and anything dated at or before it refused from then on
    assert cache.add("id-new", NOW + 100, NOW + 401, NOW + 100) is None
    assert len(cache) == 100
    assert "too many signed requests" in cache.add("id-0", NOW, NOW + 301, NOW + 100)
    # expired entries leave on their own
    assert cache.add("later", NOW + 1000, NOW + 1301, NOW + 1000) is None
    assert len(cache) == 1


# -- over HTTP ---------------------------------------------------------------------------


def test_signed_get_and_post(admin_agent, signer):
    res = signer.request(admin_agent.url, "GET", "/probe/hello?x=1")
    assert res.status == 200, res
    assert res.json() == {"hello": "alice", "auth": "signature"}
    res = signer.request(admin_agent.url, "POST", "/probe/echo", json={"pids": [1], "name": "é"})
    assert res.status == 200, res
    assert res.json() == {"body": {"pids": [1], "name": "é"}}
    # a session or a key beside a signature does not matter: the signature decides
    res = signer.request(admin_agent.url, "GET", "/probe/hello", user="bob")
    assert res.json()["hello"] == "bob"


def send(agent, signer, method, target, change=None, drop=(), body=None, **sign):
    """A signed request with headers changed or dropped after signing."""
    host = f"127.0.0.1:{agent.agent.server.port}"
    headers = signer.headers(method, target, sign.pop("host", host), body=body, **sign)
    headers.update(change or {})
    for name in drop:
        headers.pop(name)
    if "Host" not in headers:
        headers["Host"] = host  # HTTP/1.1 requires one; it is just not the signed one
    return signer.request(agent.url, method, target, body=body, headers=headers)


@pytest.mark.parametrize(
    "change, drop, status, message",
    [
        ({}, ["X-TemBoard-Date"], 400, "Missing signed header X-Temboard-Date."),
        ({}, ["X-TemBoard-Signature"], 400, "Missing X-TemBoard-Signature header."),
        ({}, ["X-TemBoard-User"], 400, "Missing signed header X-Temboard-User."),
        ({}, ["X-TemBoard-Request-Id"], 400, "Missing signed header X-Temboard-Request-Id."),
        ({"X-TemBoard-Signature": "v2:AAAA"}, [], 400, "X-TemBoard-Signature must be v1:<base64>."),
        ({"X-TemBoard-Signature": "v1:"}, [], 400, "X-TemBoard-Signature is empty."),
        ({"X-TemBoard-Signature": "v1:not base64!"}, [], 400, "X-TemBoard-Signature is not valid base64."),
        ({"X-TemBoard-Date": "zzz"}, [], 400, "X-TemBoard-Date is not a UTC date YYYYMMDDTHHMMSSZ."),
        ({"X-TemBoard-Date": "20991231T235959Z"}, [], 400, "in the future"),
        ({"X-TemBoard-Request-Id": "x"}, [], 400, "X-TemBoard-Request-Id is malformed"),
        ({"X-TemBoard-User": "mallory"}, [], 403, "Invalid signature."),
        ({"X-TemBoard-Signature": "v1:" + "QUFB" * 100}, [], 403, "Invalid signature."),
    ],
)
def test_every_refusal(admin_agent, signer, change, drop, status, message):
    res = send(admin_agent, signer, "GET", "/probe/hello", change, drop)
    assert res.status == status, res
    assert message in res.json()["error"], res


def test_signature_over_something_else_is_refused(admin_agent, signer, stranger):
    # another UI's key
    assert stranger.request(admin_agent.url, "GET", "/probe/hello").status == 403
    # the body changed after signing
    signed = signer.headers("POST", "/probe/echo", f"127.0.0.1:{admin_agent.agent.server.port}", body=b'{"a": 1}')
    res = signer.request(admin_agent.url, "POST", "/probe/echo", body=b'{"a": 2}', headers=signed)
    assert res.status == 403 and res.json() == {"error": "Invalid signature."}
    # the query string added after signing
    signed = signer.headers("GET", "/probe/hello", f"127.0.0.1:{admin_agent.agent.server.port}")
    assert signer.request(admin_agent.url, "GET", "/probe/hello?x=1", headers=signed).status == 403
    # a body on a signed GET is not covered by the signature: refused
    res = signer.request(admin_agent.url, "GET", "/probe/hello", headers={**signed, "Content-Length": "2"}, body=b"{}")
    assert res.status == 400 and "must not have a body" in res.json()["error"]


def test_replayed_request_is_refused(admin_agent, signer):
    port = admin_agent.agent.server.port
    recorded = signer.headers("POST", "/probe/echo", f"127.0.0.1:{port}", body=b"{}")
    first = signer.request(admin_agent.url, "POST", "/probe/echo", body=b"{}", headers=recorded)
    assert first.status == 200, first
    again = signer.request(admin_agent.url, "POST", "/probe/echo", body=b"{}", headers=recorded)
    assert again.status == 403
    assert again.json() == {"error": "Refused: this request id was already used (a replayed request)."}


def test_dates_beyond_the_skew_or_the_window_are_refused(admin_agent, signer):
    now = time.time()
    assert send(admin_agent, signer, "GET", "/probe/hello", date=now + 30).status == 200  # within clock_skew
    ahead = send(admin_agent, signer, "GET", "/probe/hello", date=now + 60 + 30)
    assert ahead.status == 400 and "in the future" in ahead.json()["error"]
    assert send(admin_agent, signer, "GET", "/probe/hello", date=now - 200).status == 200  # within max_age
    old = send(admin_agent, signer, "GET", "/probe/hello", date=now - 300 - 30)
    assert old.status == 400 and "old (more than [signing] max_age = 300 s)" in old.json()["error"]


def test_signed_host_must_be_the_agents(make_agent, probe, key_path, signer):
    agent = signed_agent(make_agent, probe, key_path, hosts="db1.example, 203.0.113.7:12345")
    port = agent.agent.server.port
    for host in (f"127.0.0.1:{port}", f"db1.example:{port}", f"DB1.example.:{port}", "203.0.113.7:12345"):
        assert send(agent, signer, "GET", "/probe/hello", host=host).status == 200, host
    for host in (f"10.1.2.3:{port}", "127.0.0.1:1", "db1.example:1", f"db2.example:{port}", "203.0.113.7"):
        res = send(agent, signer, "GET", "/probe/hello", host=host)
        assert res.status == 403 and "signed for host" in res.json()["error"], host


def test_roles_of_signed_requests(make_agent, probe, key_path, signer):
    agent = signed_agent(make_agent, probe, key_path, user_roles="bob:admin, eve:none")
    # default role read: reads pass, writes get the permission message
    assert signer.request(agent.url, "GET", "/probe/hello").status == 200
    res = signer.request(agent.url, "POST", "/probe/echo", json={})
    assert res.status == 403
    assert res.json()["error"] == (
        "Permission denied: POST /probe/echo needs the 'write' permission;"
        " signed requests of UI user 'alice' have the 'read' role ([signing])."
    )
    assert signer.request(agent.url, "POST", "/probe/echo", json={}, user="bob").status == 200
    res = signer.request(agent.url, "GET", "/probe/hello", user="eve")
    assert res.status == 403 and "UI user 'eve' are refused" in res.json()["error"]


def test_signed_requests_are_off_without_a_key(make_agent, probe, signer):
    agent = make_agent(plugins={"probe": probe})
    res = signer.request(agent.url, "GET", "/probe/hello")
    assert res.status == 403 and "not enabled" in res.json()["error"]
    # nothing changes for other clients
    assert agent.client(key=None).get("/probe/hello", headers={"X-Pgwarden-Key": KEY}).json()["auth"] == "key"


def test_key_file_replaced_is_used_at_once(admin_agent, key_path, signer, stranger):
    assert signer.request(admin_agent.url, "GET", "/probe/hello").status == 200
    tmp = key_path + ".new"
    stranger.write_public(tmp)
    os.replace(tmp, key_path)  # what fetch-key --force does
    assert signer.request(admin_agent.url, "GET", "/probe/hello").status == 403
    assert stranger.request(admin_agent.url, "GET", "/probe/hello").status == 200
    # a key file that became unusable: signed requests refused, with a message
    with open(key_path, "w") as f:
        f.write("not a key")
    res = stranger.request(admin_agent.url, "GET", "/probe/hello")
    assert res.status == 503 and "[signing] public_key" in res.json()["error"]


def test_sighup_reloads_the_key(tmp_path, pg_cluster, signer, stranger):
    """``pgwarden serve``: a key rewritten in place with the same size and time
    (so the file looks unchanged) is taken on SIGHUP."""
    key = signer.write_public(tmp_path / "ui.pem")
    port = free_port()
    conf = tmp_path / "pgwarden.conf"
    conf.write_text(
        textwrap.dedent(f"""
        [agent]
        home = {tmp_path}
        port = {port}
        [postgresql]
        host = {pg_cluster.host}
        port = {pg_cluster.port}
        [signing]
        public_key = {key}
        """)
    )
    with serve(conf) as served:  # fails unless it answers
        url = f"http://127.0.0.1:{port}"
        assert signer.request(url, "GET", "/notifications").status == 200
        before = os.stat(key)
        stranger_pem = stranger.public_pem
        assert len(stranger_pem) == before.st_size
        with open(key, "r+b") as f:  # same inode, same size
            f.write(stranger_pem)
        os.utime(key, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert signer.request(url, "GET", "/notifications").status == 200, "still the old key"
        served.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: stranger.request(url, "GET", "/notifications").status == 200, timeout=10)
        assert signer.request(url, "GET", "/notifications").status == 403


# -- /discover and /status for both UI generations ---------------------------------------


def test_discover_nested_to_signed_requests_flat_to_others(admin_agent, signer, stranger, pg_cluster):
    server_version = pg_cluster.execute("SHOW server_version")[0][0]
    full_version = pg_cluster.execute("SELECT version()")[0][0]
    res = signer.request(admin_agent.url, "GET", "/discover")
    assert res.status == 200, res
    doc = res.json()
    assert set(doc) == {"postgres", "system", "temboard", "signature_status"}
    assert doc["signature_status"] == "valid"
    assert doc["postgres"]["port"] == pg_cluster.port
    assert doc["postgres"]["version_summary"] == "PostgreSQL " + server_version.split()[0]
    assert doc["postgres"]["version"] == full_version
    assert doc["postgres"]["data_directory"] == str(pg_cluster.datadir)
    assert doc["system"]["fqdn"] and doc["system"]["cpu_count"] > 0 and doc["system"]["memory"] > 0
    assert doc["temboard"]["plugins"] == ["probe"] and "dashboard" not in doc["temboard"]["plugins"]
    assert res.headers["ETag"].startswith('"')
    # a signature the agent cannot verify: the document says so, and holds nothing
    bad = stranger.request(admin_agent.url, "GET", "/discover")
    assert bad.status == 200 and bad.json()["signature_status"] == "invalid"
    assert bad.json()["system"]["fqdn"] is None and bad.json()["postgres"]["data_directory"] is None
    # the key (the 7.11 UI, REST clients): the flat 7.x document, versions the 7.11 agent's way round
    flat = admin_agent.client().get("/discover", headers={"X-TemBoard-Agent-Key": KEY}).json()
    assert "postgres" not in flat and "signature_status" not in flat
    assert flat["pg_version_summary"] == "PostgreSQL " + server_version.split()[0]
    assert flat["pg_version"] == full_version


@pytest.mark.process
def test_status_keeps_its_shape_and_adds_the_9x_objects_when_signing_is_on(
    make_agent, probe, admin_agent, signer, pg_cluster
):
    plain = make_agent(plugins={"probe": probe}).client().get("/status")
    assert set(plain.json()) == {"alive", "version", "uptime"}
    assert "X-TemBoard-Discover-ETag" not in plain.headers
    res = admin_agent.client().get("/status")
    body = res.json()
    assert {"alive", "version", "uptime"} <= set(body) and body["alive"] is True
    assert body["postgres"]["status"] == "running" and body["postgres"]["pending_restart"] is False
    assert body["temboard"]["pid"] == os.getpid() and body["system"]["cpu_count"] > 0
    discover = signer.request(admin_agent.url, "GET", "/discover")
    assert res.headers["X-TemBoard-Discover-ETag"] == discover.headers["ETag"]
    # a setting changed that needs a restart: the UI's banner
    pg_cluster.execute("ALTER SYSTEM SET max_connections = 101")
    try:
        pg_cluster.execute("SELECT pg_reload_conf()")
        wait_for(lambda: admin_agent.client().get("/status").json()["postgres"]["pending_restart"], timeout=20)
    finally:
        pg_cluster.execute("ALTER SYSTEM RESET max_connections")
        pg_cluster.execute("SELECT pg_reload_conf()")
    wait_for(lambda: not admin_agent.client().get("/status").json()["postgres"]["pending_restart"], timeout=20)


# -- fetch-key and check-config -------------------------------------------------------------


@pytest.fixture
def ui_server(tmp_path, signer):
    """A stand-in for the UI's /signing.key: HTTPS with a certificate of a test CA (trustme)."""
    import http.server
    import ssl
    import threading

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    served = {"body": signer.public_pem}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/signing.key":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(served["body"])))
            self.end_headers()
            self.wfile.write(served["body"])

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}", str(ca_file), served
    finally:
        httpd.shutdown()
        httpd.server_close()


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}
    return subprocess.run(
        [sys.executable, "-m", "agent_core.cli", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.process
def test_fetch_key(tmp_path, ui_server, signer, stranger):
    url, ca_file, served = ui_server
    conf = tmp_path / "pgwarden.conf"
    target = tmp_path / "keys" / "ui.pem"
    target.parent.mkdir()
    conf.write_text(f"[agent]\nhome = {tmp_path}\n[signing]\npublic_key = {target}\n")
    # the UI's certificate is checked: a self-signed one needs --ca-file or --insecure
    res = run_cli("-c", str(conf), "fetch-key", url)
    assert res.returncode == 1 and "--ca-file" in res.stderr and not target.exists()
    res = run_cli("-c", str(conf), "fetch-key", url, "--ca-file", ca_file)
    assert res.returncode == 0, res.stderr
    assert target.read_bytes() == signer.public_pem
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert "RSA 2048 bits" in res.stdout and "a running agent uses it" in res.stdout
    # another key served: kept unless --force
    served["body"] = stranger.public_pem
    res = run_cli("-c", str(conf), "fetch-key", url, "--insecure")
    assert res.returncode == 1 and "--force" in res.stderr
    assert target.read_bytes() == signer.public_pem
    assert run_cli("-c", str(conf), "fetch-key", url, "--insecure", "--force").returncode == 0
    assert target.read_bytes() == stranger.public_pem
    # not a key: refused, the file untouched
    served["body"] = b"<html>temboard</html>"
    res = run_cli("-c", str(conf), "fetch-key", url, "--insecure", "--force")
    assert res.returncode == 1 and "not a PEM public key" in res.stderr
    assert target.read_bytes() == stranger.public_pem
    assert run_cli("fetch-key", "http://127.0.0.1:1", "--output", str(tmp_path / "x.pem")).returncode == 1


@pytest.mark.process
def test_check_config_validates_the_key(tmp_path, pg_cluster, signer):
    key = tmp_path / "ui.pem"
    conf = tmp_path / "pgwarden.conf"
    conf.write_text(
        f"[agent]\nhome = {tmp_path}\n[postgresql]\nhost = {pg_cluster.host}\nport = {pg_cluster.port}\n"
        f"[signing]\npublic_key = {key}\nuser_roles = alice:admin, bob:root\n"
    )
    os.chmod(conf, 0o600)
    key.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    res = run_cli("-c", str(conf), "check-config")
    assert res.returncode == 2
    assert "signing.public_key: not a PEM public key" in res.stderr
    assert "signing.user_roles: 'bob:root': role must be one of admin, read, none" in res.stderr
    conf.write_text(conf.read_text().replace(", bob:root", ""))
    signer.write_public(key)
    os.chmod(key, 0o666)
    res = run_cli("-c", str(conf), "check-config")
    assert res.returncode == 0, res.stderr
    assert "signing public key" in res.stderr and "writable by other users" in res.stderr


def test_request_ids_are_unique_per_request(signer):
    a = signer.headers("GET", "/x", "h:1")["X-TemBoard-Request-Id"]
    b = signer.headers("GET", "/x", "h:1")["X-TemBoard-Request-Id"]
    assert a != b and uuid.UUID(a).version == 4
