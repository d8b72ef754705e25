"""The HTTP layer: one bottle app, authentication in one place, JSON always.

Every route, the core's and the plugins', is added to the one app by
:func:`build_app` and wrapped by :func:`_guard`, which authenticates the
request (deny by default), calls the view and turns its result into JSON.
Bottle's own errors (404, 405, 413...) and unexpected exceptions are answered
as ``{"error": ...}`` by :func:`_error_handler`; the traceback goes to the
log only. A small WSGI wrapper adds ``Server``, CORS headers and the access
log line (with the agent key redacted).

The app is served by ``cheroot.wsgi.Server`` (:class:`Server`).
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlencode, urlsplit

import bottle
import psycopg2.errors
from cheroot import errors as cheroot_errors
from cheroot import server as cheroot_server
from cheroot import wsgi

from . import __version__
from .errors import HTTPError, json_error
from .hookspecs import ROLES, Route
from .tls import PgwardenSSLAdapter

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("pgwarden.http")
access_log = logging.getLogger("pgwarden.access")

KEY_HEADERS = ("X-Pgwarden-Key", "X-TemBoard-Agent-Key")
ALLOWED_HEADERS = "X-Session, Content-Type, " + ", ".join(KEY_HEADERS)
SERVER = f"pgwarden/{__version__}"
#: What a client is told of an unexpected failure; the traceback is logged.
INTERNAL_ERROR = "Internal server error; see the agent's log."

# cheroot keeps only the last of a header sent twice; joined instead ("a, b",
# as HTTP combines repeated fields), a repeated session or key header is
# malformed or wrong (406/401) and never silently half-used.
_JOINED: list[bytes] = cheroot_server.comma_separated_headers  # type: ignore[attr-defined]
_JOINED.extend(name for name in (b"X-Session", b"X-Pgwarden-Key", b"X-Temboard-Agent-Key") if name not in _JOINED)


class Request:
    """What a view receives: the parsed request and who made it.

    ``username`` is the session's user, or None when authenticated by the
    agent key (``auth == "key"``) or on a public route.
    """

    def __init__(
        self, agent: Agent, raw: bottle.BaseRequest, username: str | None, auth: str | None, role: str | None = None
    ):
        self.agent = agent
        self.raw = raw
        self.username = username
        self.auth = auth
        #: ``admin`` or ``read`` (see :data:`agent_core.auth.ROLES`); None on a public route
        self.role = role
        self.method: str = raw.method
        self.path: str = raw.path
        try:
            self.query: dict[str, str] = dict(raw.query.decode().items())  # type: ignore[attr-defined]
        except UnicodeError:
            raise HTTPError(400, "The query string is not valid percent-encoded UTF-8.") from None
        self.remote_addr: str = raw.environ.get("REMOTE_ADDR", "")
        self._json: Any = None
        self._parsed = False

    @property
    def requester(self) -> str:
        """Who asked, for records: the user name, or ``key`` for the agent key."""
        return self.username or (self.auth or "anonymous")

    def header(self, name: str) -> str | None:
        return self.raw.get_header(name)

    def json(self) -> Any:
        """The body parsed as JSON whatever its Content-Type (the temboard UI
        sends JSON as form-encoded); ``{}`` when empty. 413 when larger than
        ``[agent] max_body``; 400 when not JSON."""
        if not self._parsed:
            self._json = read_json_body(self.raw, self.agent.config.agent["max_body"])
            self._parsed = True
        return self._json


def read_json_body(raw: bottle.BaseRequest, limit: int) -> Any:
    length = raw.content_length
    if length > limit:
        raise HTTPError(413, f"Request body too large (limit {limit} bytes).")
    if raw.environ.get("wsgi.input_terminated"):
        # a chunked body, already decoded by cheroot: bottle would parse the chunks again and fail
        try:
            data = raw.environ["wsgi.input"].read(limit + 1)
        except ValueError:  # cheroot: a chunk size that is not hexadecimal...
            raise HTTPError(400, "Request body is not valid chunked transfer coding.") from None
    else:
        data = raw.body.read(limit + 1)
    if len(data) > limit:
        raise HTTPError(413, f"Request body too large (limit {limit} bytes).")
    if not data.strip():
        return {}
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise HTTPError(400, "Request body is nested too deeply.") from None
    except ValueError:  # UnicodeDecodeError included
        raise HTTPError(400, "Request body is not valid JSON.") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; 400 when a key appears twice (parsers disagree on which wins)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise HTTPError(400, f"Request body has the key {key!r} twice.")
        out[key] = value
    return out


def _json_response(value: Any, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(body=json.dumps(value, default=str), status=status)
    response.content_type = "application/json"
    return response


def _authenticate(agent: Agent, raw: bottle.BaseRequest, route: Route) -> tuple[str | None, str, str]:
    """The single authentication and authorisation decision. Deny by default.

    Returns (username or None for the key, ``session`` or ``key``, role).

    A valid ``X-Session`` is always enough to be authenticated. On a route
    that accepts the key, a key given (``?key=`` or a key header) is enough
    when right, and 401 ``Invalid key.`` when wrong (unless the session is
    valid). Otherwise the ``X-Session`` header must hold a valid session (406
    when missing or malformed, 401 when unknown or expired).

    Then the role must hold the route's permission (``Route.needs``): 403
    naming it otherwise. The key has the ``read`` role, or ``admin`` with
    ``[agent] key_writes``.
    """
    username, how, role = _identify(agent, raw, route.key)
    if route.needs not in ROLES[role]:
        who = f"user {username!r} has the {role!r} role" if username else "the agent key is read-only"
        raise HTTPError(
            403, f"Permission denied: {route.method} {route.path} needs the {route.needs!r} permission; {who}."
        )
    return username, how, role


def _header(raw: bottle.BaseRequest, name: str) -> str | None:
    """A request header; when it is not UTF-8 (bottle's get_header raises), its
    bytes as latin-1, which match no session or key: 406 or 401, not a 500."""
    try:
        return raw.get_header(name)
    except UnicodeError:
        return raw.environ.get("HTTP_" + name.upper().replace("-", "_"))


def _identify(agent: Agent, raw: bottle.BaseRequest, key_allowed: bool) -> tuple[str | None, str, str]:
    session = _header(raw, "X-Session")
    key = None
    if key_allowed:
        key = raw.query.get("key")  # type: ignore[attr-defined]
        if key is None:
            key = next((_header(raw, h) for h in KEY_HEADERS if _header(raw, h) is not None), None)
    if key is None:
        user, role = agent.auth.session_user(session)
        return user, "session", role
    if session is not None:
        # clients such as the temboard UI send both: a valid session wins, so the
        # user is known (and recorded) and a stale or absent key does not matter
        try:
            user, role = agent.auth.session_user(session)
            return user, "session", role
        except HTTPError:
            pass
    agent.auth.key_ok(key)
    return None, "key", "admin" if agent.config.agent["key_writes"] else "read"


_WILDCARD = re.compile(r"^<([A-Za-z_][A-Za-z0-9_]*)(?::[^>]*)?>$")


def exact_wildcards(environ: dict[str, Any], pattern: str, params: dict[str, Any]) -> dict[str, Any]:
    """Wildcard values percent-decoded exactly once from the raw request target.

    cheroot decodes the path except ``%2F``, so ``a%2Fb`` (meaning ``a/b``) and
    ``a%252Fb`` (meaning ``a%2Fb``) would reach a view alike; reading the raw
    target keeps names with slashes or percent signs exact. Patterns whose
    wildcards span several segments keep bottle's values.
    """
    target = environ.get("REQUEST_URI")
    if not target:
        return params
    path = target.split("?", 1)[0]
    if not path.startswith("/"):  # absolute-form target: http://host/path
        path = urlsplit(path).path
    segments = path.split("/")
    pieces = pattern.split("/")
    if len(segments) != len(pieces):
        return params
    out = dict(params)
    for piece, segment in zip(pieces, segments):
        match = _WILDCARD.match(piece)
        if match and match.group(1) in out:
            try:
                out[match.group(1)] = unquote_to_bytes(segment.encode("latin-1")).decode("utf-8")
            except (UnicodeError, ValueError):
                raise HTTPError(400, "The request path is not valid percent-encoded UTF-8.") from None
    for name, value in out.items():
        if isinstance(value, str) and "\x00" in value:  # PostgreSQL names cannot hold NUL: no such object
            raise HTTPError(404, f"Not found: {name} {value!r} (names cannot contain NUL characters).")
    return out


def _guard(agent: Agent, route: Route, public: bool) -> Callable[..., Any]:
    view = route.view

    def wrapper(**params: Any) -> Any:
        raw = bottle.request
        try:
            if public:
                username, how, role = None, None, None
            else:
                username, how, role = _authenticate(agent, raw, route)
            params = exact_wildcards(raw.environ, route.path, params)
            result = view(Request(agent, raw, username, how, role), **params)
        except HTTPError as e:
            return json_error(e.status, e.message, e.headers)
        except psycopg2.errors.QueryCanceled:
            limit = agent.config.postgresql["statement_timeout"]
            return json_error(504, f"PostgreSQL took longer than statement_timeout ({limit} s) to answer.")
        except psycopg2.errors.LockNotAvailable:
            # 504 like statement_timeout: a wait limit of the agent ran out, PostgreSQL is
            # up (503 means unreachable) and the same request may succeed once the lock is gone
            limit = agent.config.postgresql.get("lock_timeout")
            return json_error(
                504, f"PostgreSQL waited longer than lock_timeout ({limit} s) for a lock held by another session."
            )
        except bottle.HTTPResponse:
            raise
        except BaseException:  # SystemExit from a plugin too: re-raised, it stopped cheroot
            log.exception("unexpected error on %s %s", raw.method, loggable(raw.path))
            return json_error(500, INTERNAL_ERROR)
        if isinstance(result, bottle.HTTPResponse):
            return result
        return _json_response(result)

    wrapper.__name__ = getattr(view, "__name__", "view")
    wrapper.__doc__ = view.__doc__
    return wrapper


def _error_handler(error: bottle.HTTPError) -> str:
    """Bottle's own errors as JSON: never an HTML page."""
    status = error.status_code
    if status == 404:
        message = f"Not found: {bottle.request.method} {bottle.request.path}"
    elif status == 405:
        message = f"Method {bottle.request.method} not allowed on {bottle.request.path}."
    elif status == 413:
        message = "Request body too large."
    elif status >= 500:
        if error.traceback:
            log.error(
                "unexpected error on %s %s\n%s", bottle.request.method, loggable(bottle.request.path), error.traceback
            )
        message = INTERNAL_ERROR
    else:
        message = str(error.body) if error.body else bottle.HTTP_CODES.get(status, "Error")
    bottle.response.content_type = "application/json"
    return json.dumps({"error": message})


def build_app(agent: Agent, core_routes: Iterable[tuple[Route, bool]], plugin_routes: Iterable[Route]) -> bottle.Bottle:
    """The one app: core routes (some public) and plugin routes (never public)."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    app.default_error_handler = _error_handler  # type: ignore[method-assign]
    routes = [*core_routes, *((route, False) for route in plugin_routes)]
    for route, public in routes:
        app.route(route.path, method=route.method, callback=_guard(agent, route, public))
    app.config["pgwarden.routes"] = routes  # what GET /openapi.json describes

    return app


def redact(query: str) -> str:
    """The query string with the agent key's value replaced (names compared
    decoded: ``%6Bey`` is ``key`` to bottle too)."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k == "key" for k, _ in pairs):
        return query
    return urlencode([(k, "REDACTED" if k == "key" else v) for k, v in pairs])


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def loggable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class Middleware:
    """Adds Server and CORS headers to every response and logs one line per request."""

    def __init__(self, app: Callable[..., Any], cors_origin: str):
        self.app = app
        self.cors_origin = cors_origin

    def _preflight(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """CORS preflight: any path, no authentication, no body."""
        start_response(
            "204 No Content",
            [
                ("Server", SERVER),
                ("Access-Control-Allow-Origin", self.cors_origin),
                ("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS"),
                ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
                ("Access-Control-Max-Age", "600"),
            ],
        )
        access_log.info('%s "OPTIONS %s" 204', environ.get("REMOTE_ADDR", "-"), loggable(environ.get("PATH_INFO", "")))
        return []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        seen: dict[str, str] = {}
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return self._preflight(environ, start_response)

        def _start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            names = {h.lower() for h, _ in headers}
            headers = [h for h in headers if h[0].lower() != "server"]
            headers.append(("Server", SERVER))
            if "access-control-allow-origin" not in names:
                headers.append(("Access-Control-Allow-Origin", self.cors_origin))
            if "age" in names:  # how old a reused figure is (maintenance reads): readable by browser clients
                headers.append(("Access-Control-Expose-Headers", "Age"))
            if "content-type" not in names and not status.startswith(("204", "304")):
                headers.append(("Content-Type", "application/json"))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, _start)  # type: ignore[no-any-return]
        finally:
            target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            path, _, query = target.partition("?")
            path = loggable(path + ("?" + redact(query) if query else ""))
            access_log.info(
                '%s "%s %s" %s %.1fms',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD"),
                path,
                seen.get("status", "-"),
                (time.monotonic() - started) * 1000,
            )


#: Largest request line plus headers accepted (cheroot's default is no limit:
#: a client could send gigabytes of headers): 414 or 413 JSON above it.
MAX_HEADER_BYTES = 64 * 1024


class _Request(cheroot_server.HTTPRequest):
    """cheroot's own error answers (a request it cannot parse, headers too
    large, plain HTTP on the TLS port) as ``{"error": ...}`` JSON like the
    app's, instead of text/plain."""

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
    RequestHandlerClass = _Request


def _cheroot_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own messages (TLS handshake failures, dropped clients) go to the
    log, not to stderr."""
    log.log(level if traceback else min(level, logging.INFO), "cheroot: %s", msg, exc_info=traceback)


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
        self.servers: list[wsgi.Server] = []
        self._threads: list[threading.Thread] = []

    def _server(self, address: str, port: int) -> wsgi.Server:
        settings = self.settings
        server = wsgi.Server(
            (address, port),
            self.app,
            numthreads=settings["threads"],
            request_queue_size=128,
            server_name=SERVER,
            timeout=30,
            shutdown_timeout=5,
        )
        server.error_log = _cheroot_log  # type: ignore[method-assign]
        server.ConnectionClass = _Connection
        server.max_request_header_size = MAX_HEADER_BYTES
        if self.tls:
            adapter = PgwardenSSLAdapter(settings["tls_cert"], settings["tls_key"])  # not cheroot's: it leaks (tls.py)
            verify = settings.get("tls_client_verify", "none")
            if verify != "none":
                adapter.context.load_verify_locations(settings["tls_ca"])
                adapter.context.verify_mode = ssl.CERT_REQUIRED if verify == "required" else ssl.CERT_OPTIONAL
            server.ssl_adapter = adapter
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

    def start(self) -> None:
        """Bind every address, then serve. OSError naming the address when one
        cannot be bound (the others are released)."""
        port = int(self.settings["port"])
        try:
            for address in self.addresses:
                server = self._server(address, port)
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
