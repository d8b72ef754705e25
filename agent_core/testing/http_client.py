"""Talking to an agent over real HTTP(S) in tests: :class:`Client` (one
connection per request, sessions), :class:`Response`, and
:class:`TemboardSigner`, which signs requests as the temboard UI 8.0 and
later does."""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent_core.testing.credentials import PASSWORD
from agent_core.testing.peers import client_context


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:200]!r}>"


class Client:
    """A small HTTP client for tests: one connection per request, real sockets."""

    def __init__(self, base_url: str, session: str | None = None, key: str | None = None, timeout: float = 60):
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.key = key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        body: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(self.base_url)
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout, context=client_context()
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=self.timeout)
        hdrs = {}
        if self.session:
            hdrs["X-Session"] = self.session
        if json is not None:
            body = jsonlib.dumps(json)
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        try:
            conn.request(method, path, body=body, headers=hdrs)
            res = conn.getresponse()
            return Response(res.status, res.headers, res.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return self.request("POST", path, json=json, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)

    def login(self, username: str = "alice", password: str = PASSWORD) -> Client:
        """A new client carrying a session of ``username``."""
        res = self.post("/login", {"username": username, "password": password})
        assert res.status == 200, res
        return Client(self.base_url, session=res.json()["session"], timeout=self.timeout)


class TemboardSigner:
    """Signs requests as the temboard UI 8.0 and later does (its RSA private
    key; written from the protocol as recorded, independently of
    :mod:`agent_core.auth.signing`): ``signer.public_pem`` is what the UI serves at
    ``/signing.key``; :meth:`headers` the headers of one signed request;
    :meth:`request` sends one over real HTTP(S), the raw target as given."""

    def __init__(self, bits: int = 2048, user: str = "alice"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.user = user

    @property
    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def write_public(self, path: str | os.PathLike[str]) -> str:
        Path(path).write_bytes(self.public_pem)
        return str(path)

    def sign(self, text: str) -> str:
        import base64

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = self.private_key.sign(
            text.encode("utf-8"),
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.MAX_LENGTH),
            hashes.SHA256(),
        )
        return "v1:" + base64.b64encode(signature).decode("ascii")

    @staticmethod
    def canonical(method: str, target: str, headers: Mapping[str, str], body: bytes | None) -> str:
        """The signed text: ``METHOD quote_plus(target, safe="/")``, an empty
        line, the headers ``name: value`` sorted, and for POST an empty line
        and the SHA-256 of the body; a final newline."""
        import hashlib
        from urllib.parse import quote_plus

        lines = [f"{method} {quote_plus(target, safe='/')}", ""]
        lines += [f"{name}: {headers[name]}" for name in sorted(headers)]
        if method == "POST":
            lines += ["", hashlib.sha256(body or b"").hexdigest()]
        return "\n".join(lines) + "\n"

    def headers(
        self,
        method: str,
        target: str,
        host: str,
        body: bytes | None = None,
        user: str | None = None,
        date: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, str]:
        signed = {
            "host": host,
            "x-temboard-date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if date is None else date)),
            "x-temboard-request-id": request_id or str(uuid.uuid4()),
            "x-temboard-user": self.user if user is None else user,
        }
        if method == "POST":
            signed["content-type"] = "application/json"
            signed["content-length"] = str(len(body or b""))
        out = {
            "Host": signed["host"],
            "X-TemBoard-Date": signed["x-temboard-date"],
            "X-TemBoard-Request-Id": signed["x-temboard-request-id"],
            "X-TemBoard-User": signed["x-temboard-user"],
            "X-TemBoard-Signature": self.sign(self.canonical(method, target, signed, body)),
        }
        if method == "POST":
            out["Content-Type"] = signed["content-type"]
            out["Content-Length"] = signed["content-length"]
        return out

    def request(
        self,
        base_url: str,
        method: str,
        target: str,
        json: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60,
        **sign: Any,
    ) -> Response:
        """One signed request (``sign``: ``user``, ``date``, ``request_id``,
        ``host``); ``headers`` are sent as given instead when set (to send a
        recorded request again byte for byte)."""
        import ssl

        parts = urlsplit(base_url)
        host = parts.hostname or "127.0.0.1"
        if json is not None:
            body = jsonlib.dumps(json).encode("utf-8")
        if headers is None:
            sign.setdefault("host", f"{host}:{parts.port}")
            headers = self.headers(method, target, body=body, **sign)
        if parts.scheme == "https":
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, parts.port, timeout=timeout, context=ctx
            )
        else:
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Accept-Encoding", "identity")
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            res = conn.getresponse()
            return Response(res.status, res.headers, res.read())
        finally:
            conn.close()
