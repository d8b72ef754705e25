"""HTTPS from the config, with optional client-certificate verification."""

import shutil
import ssl
import subprocess

import pytest

from agent_core.testing import PASSWORD, Client

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="openssl command not found (apt-get install openssl)"
)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        cwd=d,
    )
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        cwd=d,
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "client.key",
        "-out",
        "client.csr",
        "-subj",
        "/CN=client",
        cwd=d,
    )
    openssl(
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "client.pem",
        "-days",
        "2",
        cwd=d,
    )
    return d


def test_https_login(make_agent, pki):
    running = make_agent(config={"agent": {"tls_cert": pki / "server.pem", "tls_key": pki / "server.key"}})
    assert running.url.startswith("https://")
    c = running.client().login("alice", PASSWORD)
    assert c.get("/profile").json() == {"username": "alice", "role": "admin"}
    # plain HTTP on the TLS port is never served: an HTTP 400 or a dropped connection
    try:
        res = Client(running.url.replace("https://", "http://"), timeout=5).get("/status")
    except (ConnectionError, OSError):
        pass
    else:
        assert res.status == 400, res


def test_client_certificate_required(make_agent, pki):
    import http.client
    from urllib.parse import urlsplit

    running = make_agent(
        config={
            "agent": {
                "tls_cert": pki / "server.pem",
                "tls_key": pki / "server.key",
                "tls_ca": pki / "ca.pem",
                "tls_client_verify": "required",
            }
        }
    )
    parts = urlsplit(running.url)

    def get(with_cert):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if with_cert:
            ctx.load_cert_chain(pki / "client.pem", pki / "client.key")
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, context=ctx, timeout=10)
        try:
            conn.request("GET", "/status")
            return conn.getresponse().status
        finally:
            conn.close()

    assert get(with_cert=True) == 200
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)):
        get(with_cert=False)
