"""The core's own views: login, logout, profile, the audit log, status, discovery and metrics.

Each view's docstring lists the statuses it answers. Views that need more of
the agent than plugins see (sessions, signatures, the status cache, metrics
rendering) are methods of :class:`CoreViews`, built by the agent with exactly
those parts; :func:`core_routes` gives them to the web app with the ones
that are plain functions.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent_core import __version__
from agent_core.auth import INVALID_SIGNATURE
from agent_core.errors import InvalidInput, MalformedParameter
from agent_core.registrations import Route
from agent_core.store import list_notifications
from agent_core.web import discovery, openapi, paging
from agent_core.web.request import Request
from agent_core.web.responses import Response

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.auth import Auth
    from agent_core.auth.signing import Signing
    from agent_core.metrics import Metrics


def profile(request: Request) -> dict[str, Any]:
    """GET /profile -> {"username": ..., "role": "admin"|"read"}. 200; 401; 406."""
    return {"username": request.username, "role": request.role}


#: The user name a read user sees in place of another user's (never a valid user name).
HIDDEN_USER = "(hidden)"


def sees_details(request: Request) -> bool:
    """Whether the client is shown the instance's details: the data directory
    in GET /discover, other users' names in GET /notifications. Users of the
    ``admin`` role, the agent key and signed requests (temboard registers an
    agent with GET /discover and the key or its signature alone, and keeps
    ``pg_data``) always; users of
    the ``read`` role only with ``[agent] read_role_sees_details``."""
    return (
        request.role == "admin"
        or request.auth in ("key", "signature")
        or request.agent.config.agent["read_role_sees_details"]
    )


def notifications(request: Request) -> Any:
    """GET /notifications[?limit=N&cursor=C] -> [{"date": "YYYY-MM-DDTHH:MM:SS", "username", "message"}, ...]

    The audit log, newest first (dates in UTC): logins, logouts and what
    plugins record with :meth:`Agent.notify` (backends terminated,
    operations scheduled and canceled). Session or agent key (the temboard
    UI sends both), ``read`` permission. A user of the ``read`` role sees
    other requesters as ``(hidden)`` unless ``[agent] read_role_sees_details``.
    Paginated (see :mod:`agent_core.web.paging`): at most ``limit`` entries
    (default ``[agent] listing_limit_default``); ``X-Next-Cursor`` and
    ``Link: <...>; rel="next"`` when there are more. 200; 400 ``limit`` or
    ``cursor`` malformed; 401 invalid session or key; 406 ``X-Session`` malformed.
    """
    page = paging.page(request)
    before = None
    if page.cursor is not None:
        if not page.cursor.isdigit() or len(page.cursor) > 18:
            raise paging.bad_cursor()
        before = int(page.cursor)
    entries, next_id = visible_notifications(request, page.limit, before)
    return paging.answer(request, entries, page.limit, None if next_id is None else str(next_id))


def visible_notifications(
    request: Request, limit: int, before: int | None = None
) -> tuple[list[dict[str, str]], int | None]:
    """The audit log as the client of ``request`` may see it (other users
    ``(hidden)`` for a read user unless ``[agent] read_role_sees_details``):
    at most ``limit`` entries, newest first, older than entry ``before``;
    with the id to pass as ``before`` for the next ones (None: no more).
    For plugins that show the audit log in their own answers (the dashboard)."""
    entries, next_id = list_notifications(request.agent.store, limit, before)
    if not sees_details(request):
        for entry in entries:
            if entry["username"] != request.requester:
                entry["username"] = HIDDEN_USER
    return entries, next_id


NOTIFICATIONS_OPENAPI = {
    "responses": openapi.ok(
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["date", "username", "message"],
                "properties": {
                    "date": {"type": "string", "description": "UTC, YYYY-MM-DDTHH:MM:SS"},
                    "username": {
                        "type": "string",
                        "description": "the session's user, or key; (hidden) for another requester"
                        " when a read user asks, unless [agent] read_role_sees_details",
                    },
                    "message": {"type": "string"},
                },
            },
        },
        "The audit log, newest first.",
    )
}
NOTIFICATIONS_OPENAPI = paging.openapi(NOTIFICATIONS_OPENAPI)


class CoreViews:
    """The core views that need sessions, signatures, the status cache or metrics rendering."""

    def __init__(self, auth: Auth, signing: Signing, status_facts: discovery.StatusFacts, metrics: Metrics):
        self._auth = auth
        self._signing = signing
        self._status_facts = status_facts
        self._metrics = metrics

    def login(self, request: Request) -> dict[str, Any]:
        """POST /login {"username", "password"} -> {"session": "<64 hex>"}.

        200 session created; 400 body not JSON, or user name longer than 64
        characters (refused before any hash); 406 parameter missing or not a
        string; 401 wrong credentials; 429 too many failures (Retry-After); 503
        too many logins at once (Retry-After). See :mod:`agent_core.auth`.
        """
        body = request.json()
        if not isinstance(body, dict):
            raise InvalidInput("Request body must be a JSON object.")
        for name in ("username", "password"):
            if not isinstance(body.get(name), str):
                raise MalformedParameter(name)
        token = self._auth.login(body["username"], body["password"], request.remote_addr)
        request.agent.notify(body["username"], "Login")
        return {"session": token}

    def logout(self, request: Request) -> dict[str, Any]:
        """GET /logout -> {"logout": true}: ends the current session. 200; 401; 406."""
        self._auth.logout(request.header("X-Session") or "")
        request.agent.notify(request.requester, "Logout")
        return {"logout": True}

    def status(self, request: Request) -> Any:
        """GET /status (public): version, uptime in seconds, liveness. 200.

        With signed requests enabled (``[signing] public_key``), also the
        temboard UI 9.x objects ``postgres``, ``temboard`` and ``system``
        (``postgres.pending_restart``: the UI's "restart needed" banner) and the
        ``X-TemBoard-Discover-ETag`` header (:mod:`agent_core.web.discovery`).
        """
        agent = request.agent
        body: dict[str, Any] = {
            "alive": True,
            "version": __version__,
            "uptime": round(time.time() - agent.started_at, 3),
        }
        if not self._signing.enabled:
            return body
        facts = self._status_facts.get()
        body.update(discovery.status_nested(agent, facts, agent.started_at))
        return Response(
            body, headers={"X-TemBoard-Discover-ETag": facts["etag"]} if facts and facts.get("etag") else {}
        )

    def discover(self, request: Request) -> Any:
        """GET /discover: host and PostgreSQL facts. 200; 401; 406; 503 PostgreSQL down.

        Signed requests (the temboard UI 8.0 and later) get the nested 9.x
        document with an ``ETag`` and ``signature_status`` (``valid``, or
        ``invalid`` with no facts when the signature is refused); every other
        client (sessions, the agent key: the temboard UI 7.11) the flat 7.x one.

        ``pg_local`` says whether PostgreSQL runs on the agent's host and
        ``pg_local_reason`` why (see :meth:`Postgres.locality`). When it does not
        (a managed database, another machine), ``cpu`` and ``memory_size`` are
        null (they would describe the agent's host, not the database's) and so are
        the per-process metrics of plugins. ``pg_data`` is null for a user of the
        ``read`` role unless ``[agent] read_role_sees_details`` (and for a role
        PostgreSQL does not show ``data_directory`` to).
        """
        agent = request.agent
        if request.auth == INVALID_SIGNATURE:
            return discovery.invalid_document()
        pg = discovery.postgres_facts(agent)
        locality = agent.postgres.locality()
        reason = locality.reason
        if not locality.local:
            reason += (
                ": PostgreSQL's host cannot be read from here, so its CPU, memory and per-process metrics are null"
            )
        if request.auth != "signature":
            return discovery.flat(agent, pg, locality.local, reason, sees_details(request))
        document = discovery.nested(agent, pg, locality.local, reason)
        tag = discovery.etag(document)
        if not sees_details(request):
            document["postgres"]["data_directory"] = None
            document["temboard"]["configfile"] = None
        document["signature_status"] = "valid"
        return Response(document, headers={"ETag": tag})

    def metrics(self, request: Request) -> Response:
        """GET /metrics: the Prometheus text exposition format (OpenMetrics when
        the ``Accept`` header asks for ``application/openmetrics-text``) of the
        agent's metrics and its plugins' (docs/metrics.md). Session, agent key
        (``?key=``, key headers, or ``Authorization: Bearer <key>``), ``read``
        permission; with ``[agent] metrics_loopback_open``, no credential from
        loopback. 200; 401 invalid session or key; 406 ``X-Session`` malformed.
        """
        body, content_type = self._metrics.render(request.header("Accept"))
        return Response(data=body, content_type=content_type)


def core_routes(views: CoreViews) -> list[tuple[Route, bool]]:
    """(route, public) pairs of the core. Only the core can make a route public."""
    return [
        (Route("POST", "/login", views.login, permission="read", openapi=openapi.LOGIN), True),
        (Route("GET", "/status", views.status, openapi=openapi.STATUS), True),
        (Route("GET", "/logout", views.logout, permission="read", openapi=openapi.LOGOUT), False),
        (Route("GET", "/profile", profile, openapi=openapi.PROFILE), False),
        (Route("GET", "/notifications", notifications, key=True, openapi=NOTIFICATIONS_OPENAPI), False),
        (Route("GET", "/discover", views.discover, key=True, openapi=openapi.DISCOVER), False),
        # authenticated like /discover: the document names the enabled plugins and every route
        (Route("GET", "/openapi.json", openapi.view, key=True, openapi=openapi.OPENAPI), False),
        (Route("GET", "/metrics", views.metrics, key=True, openapi=openapi.METRICS), False),
    ]
