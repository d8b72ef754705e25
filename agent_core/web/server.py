"""Serving the app: cheroot's HTTP parsing and worker threads behind
pgwarden's own network front (:mod:`agent_core.web.front`).

cheroot is kept for what it does well (parsing a request, the WSGI gateway,
the worker pool). Its connection manager is replaced: see
:mod:`agent_core.web.front` for the reasons and the limits. Here:

- :class:`Server` binds every ``[agent] address`` (one cheroot server per
  address, all sharing the app and the port) and builds the TLS context;
- :class:`_WSGIServer` installs the front in place of cheroot's manager;
- :class:`_Request` answers cheroot's own errors as JSON;
- the open-files limit is raised to fit ``max_connections`` where the hard
  limit allows it, and a warning says when it does not.
"""

from __future__ import annotations

import json
import logging
import resource
import ssl
import threading
from collections.abc import Callable
from typing import Any

from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi

from agent_core.web.app import SERVER
from agent_core.web.front import BufferedInput, FrontManager, Limits, Output, Peer
from agent_core.web.tls import PgwardenSSLAdapter

log = logging.getLogger("pgwarden.http")

#: Largest request line plus headers accepted (cheroot's default is no limit:
#: a client could send gigabytes of headers): 414 or 413 JSON above it.
MAX_HEADER_BYTES = 64 * 1024

#: Descriptors the agent needs besides client connections (PostgreSQL pool,
#: store, log, plugins, listening sockets), counted when checking the
#: open-files limit against ``max_connections``.
FD_RESERVE = 256

# cheroot keeps only the last of a header sent twice; joined instead ("a, b",
# as HTTP combines repeated fields), a repeated session or key header is
# malformed or wrong (406/401) and never silently half-used.
_JOINED: list[bytes] = cheroot_server.comma_separated_headers  # type: ignore[attr-defined]
_JOINED.extend(name for name in (b"X-Session", b"X-Pgwarden-Key", b"X-Temboard-Agent-Key") if name not in _JOINED)


class _Request(cheroot_server.HTTPRequest):
    """cheroot's own error answers (a request it cannot parse, headers too
    large) as ``{"error": ...}`` JSON like the app's, instead of text/plain."""

    def simple_response(self, status: Any, msg: Any = "") -> None:
        status = str(status)
        if status[:1] not in "45":
            super().simple_response(status, msg)
            return
        if status[:3] in ("413", "414"):
            self.close_connection = True
            if self.response_protocol != "HTTP/1.1":  # HTTP/1.0 has neither status
                status = "400 Bad Request"
        text = msg.decode("latin-1") if isinstance(msg, bytes) else str(msg)
        body = json.dumps({"error": text or status[4:]}).encode()
        head = [f"{self.server.protocol} {status}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"Server: {SERVER}"] + (["Connection: close"] if self.close_connection else [])
        try:
            self.conn.wfile.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
        except OSError as e:
            if e.args[0] not in cheroot_errors.socket_errors_to_ignore:
                raise


class _Connection(cheroot_server.HTTPConnection):
    """A connection handed to a worker by the front: reads come from the
    front's buffer, writes have a deadline, and closing it tells the front
    (which counts connections per address)."""

    RequestHandlerClass = _Request
    peer: Peer
    manager: FrontManager

    def communicate(self) -> bool:
        """One request; what it wrote goes out in one send at its end (see
        :class:`~agent_core.web.front.Output`)."""
        keep = bool(super().communicate())
        try:
            self.wfile.flush()
        except OSError:  # the client went away or did not read in time
            return False
        return keep

    def close(self) -> None:
        try:
            if isinstance(self.wfile, Output):
                self.wfile.discard()
            super().close()
        finally:
            self.manager.forget(self.peer)


def _make_connection(server: Any, limits: Limits) -> Callable[[FrontManager, Peer], _Connection]:
    def make(manager: FrontManager, peer: Peer) -> _Connection:
        def files(sock: Any, mode: str = "r", bufsize: int = 0) -> Any:
            return Output(sock, limits.send_timeout) if "w" in mode else BufferedInput(b"", sock, limits.header_timeout)

        conn = _Connection(server, peer.sock, files)
        conn.peer, conn.manager = peer, manager
        conn.remote_addr, conn.remote_port = peer.address, peer.port
        conn.ssl_env = peer.ssl_env
        return conn

    return make


class _WSGIServer(wsgi.Server):
    """cheroot's WSGI server with :class:`~agent_core.web.front.FrontManager` as
    its connection manager."""

    limits: Limits
    tls_context: ssl.SSLContext | None = None

    def prepare(self) -> None:
        super().prepare()
        original: Any = self._connections  # type: ignore[has-type]
        original._selector.close()  # it registered the listening socket; the front owns it now
        self._connections = FrontManager(self, self.limits, self.tls_context, _make_connection(self, self.limits))

    @property
    def front(self) -> FrontManager:
        return self._connections  # type: ignore[no-any-return]


def _cheroot_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own messages (dropped clients, worker errors) go to the log, not to stderr."""
    log.log(level if traceback else min(level, logging.INFO), "cheroot: %s", msg, exc_info=traceback)


def limits_from(settings: dict[str, Any]) -> Limits:
    """The front's limits from the ``[agent]`` settings (defaults where absent)."""
    defaults = Limits()
    values = {name: settings.get(name, getattr(defaults, name)) for name in Limits.__dataclass_fields__}
    values["max_head"] = MAX_HEADER_BYTES
    values["max_body"] = int(settings.get("max_body", defaults.max_body))
    return Limits(**values)


def fit_open_files(max_connections: int) -> str | None:
    """Raise the soft open-files limit to fit ``max_connections`` (up to the
    hard limit). A warning when it cannot fit, else None."""
    needed = max_connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"the open-files limit is {soft}, below [agent] max_connections ({max_connections}) + {FD_RESERVE}: "
            "when descriptors run out the agent pauses accepting; raise LimitNOFILE (systemd) or "
            "lower max_connections"
        )
    return None


class Server:
    """cheroot serving the app on every ``[agent] address``: one cheroot server
    per address (cheroot binds one address per server), all sharing the app.

    :meth:`start` binds them all in the caller's thread (errors surface there;
    nothing stays bound after a failure), then serves each in a thread. With
    ``port = 0`` the first address picks a free port and the others use the
    same one."""

    def __init__(self, app: Callable[..., Any], settings: dict[str, Any]):
        self.app = app
        self.settings = settings
        addresses = settings["address"]
        self.addresses: list[str] = [addresses] if isinstance(addresses, str) else list(addresses)
        self.tls = bool(settings.get("tls_cert"))
        self.limits = limits_from(settings)
        self.servers: list[_WSGIServer] = []
        self._threads: list[threading.Thread] = []

    def _adapter(self) -> PgwardenSSLAdapter:
        settings = self.settings
        # not cheroot's BuiltinSSLAdapter: its environ leaks ~1 KB per TLS connection (agent_core/web/tls.py)
        adapter = PgwardenSSLAdapter(settings["tls_cert"], settings["tls_key"])
        context = adapter.context
        # no renegotiation: a client could otherwise make the agent redo
        # handshakes on one connection at will (CPU)
        context.options |= ssl.OP_NO_RENEGOTIATION
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        verify = settings.get("tls_client_verify", "none")
        if verify != "none":
            context.load_verify_locations(settings["tls_ca"])
            context.verify_mode = ssl.CERT_REQUIRED if verify == "required" else ssl.CERT_OPTIONAL
        return adapter

    def _server(self, address: str, port: int, adapter: PgwardenSSLAdapter | None) -> _WSGIServer:
        settings = self.settings
        server = _WSGIServer(
            (address, port),
            self.app,
            numthreads=settings["threads"],
            request_queue_size=128,
            server_name=SERVER,
            timeout=int(self.limits.keepalive_timeout),
            shutdown_timeout=5,
        )
        server.limits = self.limits
        server.error_log = _cheroot_log  # type: ignore[method-assign]
        server.ConnectionClass = _Connection
        server.max_request_header_size = MAX_HEADER_BYTES
        server.max_request_body_size = self.limits.max_body
        if adapter is not None:
            server.ssl_adapter = adapter
            server.tls_context = adapter.context
        return server

    @property
    def port(self) -> int:
        return int(self.servers[0].bind_addr[1]) if self.servers else int(self.settings["port"])

    @property
    def address(self) -> str:
        """The first address."""
        return self.addresses[0]

    @property
    def urls(self) -> list[str]:
        """One URL per address, in the configured order."""
        out = []
        for server in self.servers:
            host, port = server.bind_addr[:2]
            host = f"[{host}]" if ":" in host else host
            out.append(f"{'https' if self.tls else 'http'}://{host}:{port}")
        return out

    @property
    def url(self) -> str:
        """The URL of the first address."""
        return self.urls[0]

    @property
    def fronts(self) -> list[FrontManager]:
        """The network front of each address (counts, for tests and figures)."""
        return [server.front for server in self.servers]

    def start(self) -> None:
        """Bind every address, then serve. OSError naming the address when one
        cannot be bound (the others are released)."""
        warning = fit_open_files(self.limits.max_connections * len(self.addresses))
        if warning:
            log.warning("%s", warning)
        port = int(self.settings["port"])
        adapter = self._adapter() if self.tls else None
        try:
            for address in self.addresses:
                server = self._server(address, port, adapter)
                try:
                    server.prepare()
                except OSError as e:
                    host = f"[{address}]" if ":" in address else address
                    raise OSError(e.errno, f"{host}:{port}: {e.strerror or e}") from None
                self.servers.append(server)
                port = int(server.bind_addr[1])
        except BaseException:
            self.stop()
            raise
        for server in self.servers:
            thread = threading.Thread(target=server.serve, name="pgwarden-http", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for thread in self._threads:
            thread.join(10)
        self.servers, self._threads = [], []
