"""The TLS adapter of the HTTP server: cheroot's ``BuiltinSSLAdapter`` without
the per-connection memory leak (issue 13, docs/reliability.md "TLS memory").

Cause of the leak: cheroot's ``BuiltinSSLAdapter.get_environ``, called once
per TLS connection right after the handshake, reads ``sock.session`` to put
``SSL_SESSION_ID`` in the WSGI environ. On CPython 3.11 (3.11.7 here) the
``ssl.SSLSocket.session`` getter leaks one ``SSL_SESSION`` copy per read:
``PySSL_get_session`` duplicates the session (``_ssl_session_dup``, a
``d2i_SSL_SESSION``) and then overwrites the pointer with
``SSL_get1_session``, so the duplicate is never freed (python/cpython#116810,
fixed upstream by python/cpython#123249; valgrind: "definitely lost",
``SSL_SESSION_new`` <- ``d2i_SSL_SESSION`` <- ``_ssl_session_dup`` <-
``PySSL_get_session``). Measured: about 1,000 bytes per read of
``.session``, about 1,240 bytes of RSS per TLS connection on a bare cheroot
server, never given back (``malloc_trim``, ``gc.collect`` do not help).

So :class:`PgwardenSSLAdapter` builds the same environ without reading
``sock.session``: no ``SSL_SESSION_ID`` (nothing in pgwarden reads it, nor
any ``SSL_*`` key). It also looks the cipher's key size up once per cipher
instead of listing every cipher of the context on each connection.

Any replacement of cheroot's connection handling must not read
``SSLSocket.session`` on server sockets either (nor call
``BuiltinSSLAdapter.get_environ``/``wrap``, which does).
"""

from __future__ import annotations

import ssl
import sys
from contextlib import suppress
from typing import Any

from cheroot.server import HTTPServer
from cheroot.ssl.builtin import BuiltinSSLAdapter


class PgwardenSSLAdapter(BuiltinSSLAdapter):  # type: ignore[misc]
    """``BuiltinSSLAdapter`` whose per-connection environ does not leak.

    Drop-in: same constructor, ``wrap`` (handshake, cheroot's error mapping),
    ``makefile`` and ``context``; only :meth:`get_environ` differs.
    """

    _alg_bits: dict[tuple[str, str], int | None]

    def get_environ(self, sock: ssl.SSLSocket) -> dict[str, Any]:  # type: ignore[override]  # cheroot's stub lacks sock
        """The WSGI ``SSL_*`` entries of cheroot's adapter, minus ``SSL_SESSION_ID``:
        reading ``sock.session`` leaks about 1 KB a call on CPython 3.11 (see
        the module's docstring). Never read ``sock.session`` here."""
        cipher = sock.cipher() or ("", "", 0)
        env: dict[str, Any] = {
            "wsgi.url_scheme": "https",
            "HTTPS": "on",
            "SSL_PROTOCOL": cipher[1],
            "SSL_CIPHER": cipher[0],
            "SSL_CIPHER_EXPORT": "",
            "SSL_CIPHER_USEKEYSIZE": cipher[2],
            "SSL_VERSION_INTERFACE": f"{HTTPServer.version} Python/{sys.version}",
            "SSL_VERSION_LIBRARY": ssl.OPENSSL_VERSION,
            "SSL_CLIENT_VERIFY": "NONE",
        }
        compression = sock.compression()
        if compression is not None:
            env["SSL_COMPRESS_METHOD"] = compression
        bits = self._cipher_bits(sock, (cipher[0], cipher[1]))
        if bits is not None:
            env["SSL_CIPHER_ALGKEYSIZE"] = bits
        with suppress(AttributeError):
            env["SSL_TLS_SNI"] = sock.sni  # type: ignore[attr-defined]  # set by cheroot's SNI callback
        if self.context.verify_mode != ssl.CERT_NONE:
            client_cert = sock.getpeercert()
            if client_cert:
                env["SSL_CLIENT_VERIFY"] = "SUCCESS"
                env.update(self._make_env_cert_dict("SSL_CLIENT", client_cert))  # type: ignore[attr-defined]
                der = sock.getpeercert(binary_form=True)
                if der:
                    env["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der).strip()
        env.update(self._server_env)  # type: ignore[attr-defined]  # the server certificate's SSL_SERVER_*
        return env

    def _cipher_bits(self, sock: ssl.SSLSocket, name_protocol: tuple[str, str]) -> int | None:
        """The cipher's ``alg_bits``, from the context's cipher list read once
        per cipher (cheroot lists all of them for each connection)."""
        cache = self.__dict__.setdefault("_alg_bits", {})
        if name_protocol not in cache:
            cache[name_protocol] = next(
                (c["alg_bits"] for c in sock.context.get_ciphers() if (c["name"], c["protocol"]) == name_protocol),
                None,
            )
        return cache[name_protocol]
