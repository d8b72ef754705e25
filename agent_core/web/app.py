"""The HTTP layer: one bottle app, JSON always.

Every route, the core's and the plugins', is added to the one app by
:func:`build_app` and wrapped by :func:`_guard`, which reads the request's
credentials and asks :func:`agent_core.auth.authenticate` (deny by default),
calls the view and turns its result (a JSON value or a
:class:`~agent_core.web.responses.Response`) into the answer. Errors become
``{"error": ...}`` with the status :mod:`agent_core.web.errors` gives them;
bottle's own errors (404, 405, 413...) by :func:`_error_handler`; an
unexpected exception is a 500 whose traceback goes to the log only. A
small WSGI wrapper adds ``Server``, CORS headers and the access log line
(with the agent key redacted: :mod:`agent_core.redaction`).

The app is served by cheroot behind pgwarden's own network front
(:mod:`agent_core.web.server`, :mod:`agent_core.web.front`).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes, urlsplit

import bottle

from agent_core import __version__
from agent_core.auth import KEY_HEADERS, Gate, authenticate
from agent_core.errors import InvalidInput, NotFound
from agent_core.metrics import PREFLIGHT, UNMATCHED
from agent_core.redaction import loggable, redact_target
from agent_core.registrations import Route
from agent_core.web import paging
from agent_core.web.errors import Limits, answer_for, error_body, limits_of
from agent_core.web.request import Request, credentials
from agent_core.web.responses import Response

if TYPE_CHECKING:
    from agent_core.interfaces import Agent
    from agent_core.metrics import Metrics

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


def json_response(value: Any, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(body=json.dumps(value, default=str), status=status)
    response.content_type = "application/json"
    return response


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
    """The JSON error response: :func:`agent_core.web.errors.error_body` with ``status`` and ``headers``."""
    response = bottle.HTTPResponse(body=error_body(message), status=status)
    response.content_type = "application/json"
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    return response


def to_response(result: Any) -> bottle.HTTPResponse:
    """What a view returned, as bottle's response: a :class:`~agent_core.web.responses.Response`
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


def _guard(agent: Agent, gate: Gate, route: Route, public: bool) -> Callable[..., Any]:
    view = route.view

    def wrapper(**params: Any) -> Any:
        raw = bottle.request
        try:
            who = authenticate(gate, credentials(raw, agent.config.agent["max_body"]), route, public)
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


def build_app(
    agent: Agent, gate: Gate, core_routes: Iterable[tuple[Route, bool]], plugin_routes: Iterable[Route]
) -> bottle.Bottle:
    """The one app: core routes (some public) and plugin routes (never public)."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    app.default_error_handler = _error_handler  # type: ignore[method-assign]
    routes = [*core_routes, *((route, False) for route in plugin_routes)]
    for route, public in routes:
        app.route(route.path, method=route.method, callback=_guard(agent, gate, route, public))
    app.config["pgwarden.routes"] = routes  # what GET /openapi.json describes

    return app


def redact(target: str) -> str:
    """A request target as it may be logged: the values of key-like query and
    path parameters (any case, percent-encoded names, brackets) and the
    configured agent key anywhere, in any encoding, replaced
    (:func:`agent_core.redaction.redact_target`)."""
    return redact_target(target)


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
            # a paginated listing's next page (agent_core.web.paging): readable by browser clients
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
