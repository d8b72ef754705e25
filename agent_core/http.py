"""The HTTP layer: one bottle app, JSON always.

Every route, the core's and the plugins', is added to the one app by
:func:`build_app` and wrapped by :func:`_guard`, which reads the request's
credentials and asks :func:`agent_core.auth.authenticate` (deny by default),
calls the view and turns its result (a JSON value or a
:class:`~agent_core.responses.Response`) into the answer. Errors become
``{"error": ...}`` with the status :mod:`agent_core.web_errors` gives them;
bottle's own errors (404, 405, 413...) by :func:`_error_handler`; an
unexpected exception is a 500 whose traceback goes to the log only. A
small WSGI wrapper adds ``Server``, CORS headers and the access log line
(with the agent key redacted: :mod:`agent_core.redaction`).

The app is served by cheroot behind pgwarden's own network front
(:mod:`agent_core.server`, :mod:`agent_core.front`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import bottle

from . import __version__, paging
from .auth import KEY_HEADERS, SIGNED_MARKERS, Credentials, authenticate
from .errors import InvalidInput, NotFound, TooLarge
from .hookspecs import Route
from .metrics import PREFLIGHT, UNMATCHED
from .redaction import redact_target
from .responses import Response
from .signing import SIGNATURE_HEADER
from .web_errors import Limits, answer_for, error_body, limits_of

if TYPE_CHECKING:
    from .agent import Agent
    from .metrics import Metrics

log = logging.getLogger("pgwarden.http")
access_log = logging.getLogger("pgwarden.access")

ALLOWED_HEADERS = (
    "X-Session, Content-Type, Authorization, "
    + ", ".join(KEY_HEADERS)
    + ", X-TemBoard-Signature, X-TemBoard-Date, X-TemBoard-Request-Id, X-TemBoard-User"
)
SERVER = f"pgwarden/{__version__}"
#: What a client is told of an unexpected failure; the traceback is logged.
INTERNAL_ERROR = "Internal server error; see the agent's log."


class Request:
    """What a view receives: the parsed request and who made it.

    ``username`` is the session's user, the UI user named by a signed
    request (``auth == "signature"``, ``X-TemBoard-User``), or None when
    authenticated by the agent key (``auth == "key"``) or on a public route.
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
            raise InvalidInput("The query string is not valid percent-encoded UTF-8.") from None
        self.remote_addr: str = raw.environ.get("REMOTE_ADDR", "")
        self._json: Any = None
        self._parsed = False

    @property
    def requester(self) -> str:
        """Who asked, for records: the user name (of a session, or the UI user of a
        signed request), or ``key`` for the agent key."""
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


def request_body(raw: bottle.BaseRequest, limit: int) -> bytes:
    """The exact body bytes (read once, kept in the environ: the signature
    check and the view both read them). 413 beyond ``limit``."""
    cached = raw.environ.get("pgwarden.body")
    if cached is not None:
        return bytes(cached)
    length = raw.content_length
    if length > limit:
        raise TooLarge(f"Request body too large (limit {limit} bytes).")
    if raw.environ.get("wsgi.input_terminated"):
        # a chunked body, already decoded by cheroot: bottle would parse the chunks again and fail
        try:
            data = raw.environ["wsgi.input"].read(limit + 1)
        except ValueError:  # cheroot: a chunk size that is not hexadecimal...
            raise InvalidInput("Request body is not valid chunked transfer coding.") from None
        except OSError:  # cheroot: chunks beyond max_request_body_size (= max_body)
            raise TooLarge(f"Request body too large (limit {limit} bytes).") from None
    else:
        data = raw.body.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"Request body too large (limit {limit} bytes).")
    raw.environ["pgwarden.body"] = data
    return bytes(data)


def read_json_body(raw: bottle.BaseRequest, limit: int) -> Any:
    data = request_body(raw, limit)
    if not data.strip():
        return {}
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys)
    except RecursionError:
        raise InvalidInput("Request body is nested too deeply.") from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidInput("Request body is not valid JSON.") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; 400 when a key appears twice (parsers disagree on which wins)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidInput(f"Request body has the key {key!r} twice.")
        out[key] = value
    return out


def json_response(value: Any, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(body=json.dumps(value, default=str), status=status)
    response.content_type = "application/json"
    return response


def credentials(agent: Agent, raw: bottle.BaseRequest) -> Credentials:
    """What the request presents to authenticate (the decision is :func:`agent_core.auth.authenticate`'s)."""
    key = raw.query.get("key")  # type: ignore[attr-defined]
    if key is None:
        key = next((_header(raw, h) for h in KEY_HEADERS if _header(raw, h) is not None), None)
    if key is None:
        key = _bearer(raw)

    def signed_request() -> tuple[str, str, dict[str, str | None], bytes]:
        environ = raw.environ
        target = environ.get("REQUEST_URI") or (
            quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/;:@&=+$,!~*'()")
            + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        )
        headers = {
            "host": environ.get("HTTP_HOST"),
            "content-type": environ.get("CONTENT_TYPE"),
            "content-length": environ.get("CONTENT_LENGTH"),
        }
        for name in ("X-TemBoard-Date", "X-TemBoard-Request-Id", "X-TemBoard-User", SIGNATURE_HEADER):
            headers[name.lower()] = _header(raw, name)
        return raw.method, target, headers, request_body(raw, agent.config.agent["max_body"])

    return Credentials(
        session=_header(raw, "X-Session"),
        key=key,
        signed=is_signed(raw),
        remote_addr=raw.environ.get("REMOTE_ADDR", ""),
        signed_request=signed_request,
    )


def is_signed(raw: bottle.BaseRequest) -> bool:
    """Whether the request carries a signature header (and is judged by it)."""
    return any(_header(raw, name) is not None for name in SIGNED_MARKERS)


def _header(raw: bottle.BaseRequest, name: str) -> str | None:
    """A request header; when it is not UTF-8 (bottle's get_header raises), its
    bytes as latin-1, which match no session or key: 406 or 401, not a 500."""
    try:
        return raw.get_header(name)
    except UnicodeError:
        return raw.environ.get("HTTP_" + name.upper().replace("-", "_"))


def _bearer(raw: bottle.BaseRequest) -> str | None:
    """The token of ``Authorization: Bearer <token>`` (any case of the scheme); None for other schemes."""
    value = _header(raw, "Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


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
                raise InvalidInput("The request path is not valid percent-encoded UTF-8.") from None
    for name, value in out.items():
        if isinstance(value, str) and "\x00" in value:  # PostgreSQL names cannot hold NUL: no such object
            raise NotFound(f"Not found: {name} {value!r} (names cannot contain NUL characters).")
    return out


def json_error(status: int, message: str, headers: Mapping[str, str] | None = None) -> bottle.HTTPResponse:
    """The JSON error response: :func:`agent_core.web_errors.error_body` with ``status`` and ``headers``."""
    response = bottle.HTTPResponse(body=error_body(message), status=status)
    response.content_type = "application/json"
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    return response


def to_response(result: Any) -> bottle.HTTPResponse:
    """What a view returned, as bottle's response: a :class:`~agent_core.responses.Response`
    with its status and headers, or a JSON value answered 200."""
    if isinstance(result, bottle.HTTPResponse):  # the core's own views may still build one
        return result
    if not isinstance(result, Response):
        return json_response(result)
    response = bottle.HTTPResponse(body=result.payload(), status=result.status)
    response.content_type = result.content_type
    for name, value in result.headers.items():
        response.set_header(name, value)
    return response


def _limits(agent: Agent) -> Limits:
    """The wait limits and redaction the driver's error messages use."""
    postgres = getattr(agent, "postgres", None)
    return limits_of(agent.config.postgresql, getattr(postgres, "redact", None))


def _guard(agent: Agent, route: Route, public: bool) -> Callable[..., Any]:
    view = route.view

    def wrapper(**params: Any) -> Any:
        raw = bottle.request
        try:
            who = authenticate(agent, credentials(agent, raw), route, public)
            params = exact_wildcards(raw.environ, route.path, params)
            result = view(Request(agent, raw, who.username, who.how, who.role), **params)
        except bottle.HTTPResponse:
            raise
        except BaseException as e:  # SystemExit from a plugin too: re-raised, it stopped cheroot
            known = answer_for(e, _limits(agent))
            if known is None:
                log.exception("unexpected error on %s %s", raw.method, loggable(raw.path))
                return json_error(500, INTERNAL_ERROR)
            return json_error(known.status, known.message, known.headers)
        return to_response(result)

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
    return error_body(message)


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


def redact(target: str) -> str:
    """A request target as it may be logged: the values of key-like query and
    path parameters (any case, percent-encoded names, brackets) and the
    configured agent key anywhere, in any encoding, replaced
    (:func:`agent_core.redaction.redact_target`)."""
    return redact_target(target)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def loggable(text: str) -> str:
    """``text`` with control characters escaped, so a request cannot forge log lines."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def route_label(environ: dict[str, Any]) -> str:
    """The template of the route that answered (``/maintenance/<dbname>``), never
    the raw path (names would make a label value each); ``(unmatched)`` for a
    404 or 405 of bottle's."""
    route = environ.get("bottle.route")
    rule = getattr(route, "rule", None)
    return rule if isinstance(rule, str) else UNMATCHED


#: Methods counted under their own name; any other is counted as ``other`` (a label value per junk method otherwise).
_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def _method_label(environ: dict[str, Any]) -> str:
    method = environ.get("REQUEST_METHOD", "")
    return method if method in _METHODS else "other"


class Middleware:
    """Adds Server and CORS headers to every response and logs one line per request."""

    def __init__(
        self,
        app: Callable[..., Any],
        cors_origin: str,
        slash_paths: Iterable[str] = (),
        metrics: Metrics | None = None,
    ):
        self.app = app
        self.cors_origin = cors_origin
        #: ``/<plugin>/`` paths routed as ``/<plugin>`` (a plugin's top page; the temboard UI asks GET /maintenance/)
        self.slash_paths = frozenset(slash_paths)
        self.metrics = metrics

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
        target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        access_log.info('%s "OPTIONS %s" 204', environ.get("REMOTE_ADDR", "-"), loggable(redact(target)))
        if self.metrics is not None:
            self.metrics.observe_request(PREFLIGHT, "OPTIONS", "204", 0.0)
        return []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.monotonic()
        seen: dict[str, str] = {}
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return self._preflight(environ, start_response)
        if environ.get("PATH_INFO") in self.slash_paths:
            environ["PATH_INFO"] = environ["PATH_INFO"][:-1]  # REQUEST_URI keeps the raw target (signatures)

        def _start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            names = {h.lower() for h, _ in headers}
            headers = [h for h in headers if h[0].lower() != "server"]
            headers.append(("Server", SERVER))
            if "access-control-allow-origin" not in names:
                headers.append(("Access-Control-Allow-Origin", self.cors_origin))
            exposed = []
            if "age" in names:  # how old a reused figure is (maintenance reads): readable by browser clients
                exposed.append("Age")
            # a paginated listing's next page (agent_core.paging): readable by browser clients
            exposed += [h for h in paging.HEADERS if h.lower() in names]
            if exposed:
                headers.append(("Access-Control-Expose-Headers", ", ".join(exposed)))
            if "content-type" not in names and not status.startswith(("204", "304")):
                headers.append(("Content-Type", "application/json"))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, _start)  # type: ignore[no-any-return]
        finally:
            elapsed = time.monotonic() - started
            target = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
            path = loggable(redact(target))
            access_log.info(
                '%s "%s %s" %s %.1fms',
                environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD"),
                path,
                seen.get("status", "-"),
                elapsed * 1000,
            )
            if self.metrics is not None:
                self.metrics.observe_request(
                    route_label(environ), _method_label(environ), seen.get("status", "-"), elapsed
                )
