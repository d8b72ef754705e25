"""The authentication decision of a request: :func:`authenticate`, the one
place that decides authentication and authorisation (deny by default).

The web layer reads what a request presents (:class:`Credentials`) and asks
:func:`authenticate` with the agent's :class:`Gate` (users and sessions,
signatures, the ``[agent]`` settings); it answers who made the request
(:class:`Identity`) or raises 400/401/403/406. Roles:
:data:`agent_core.roles.ROLES` maps a role to the permissions it holds. The
agent key holds ``read``, or both with ``[agent] key_writes = true``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent_core.auth.signing import NO_ROLE, SIGNATURE_HEADER, SignatureRefused
from agent_core.errors import DomainError, Forbidden
from agent_core.roles import ROLES

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.auth.sessions import Auth
    from agent_core.auth.signing import Signing
    from agent_core.registrations import Route

log = logging.getLogger("pgwarden.auth")

#: Headers that mark a request as signed (temboard UI 8.0 and later): judged by its signature alone.
SIGNED_MARKERS = (SIGNATURE_HEADER, "X-TemBoard-Date", "X-TemBoard-Request-Id")
#: Headers that may carry the agent key (besides ``?key=`` and ``Authorization: Bearer``).
KEY_HEADERS = ("X-Pgwarden-Key", "X-TemBoard-Agent-Key")
#: Routes that answer a refused signature with a document saying so (the UI's registration reads it).
SIGNATURE_TOLERANT = {("GET", "/discover")}
#: ``Identity.how`` of a request whose signature was refused on a :data:`SIGNATURE_TOLERANT` route.
INVALID_SIGNATURE = "invalid-signature"
#: The one route ``[agent] metrics_loopback_open`` may open to loopback clients without credentials.
METRICS_PATH = "/metrics"


def is_loopback(address: str) -> bool:
    """Whether a peer address is a loopback one (127.0.0.0/8, ::1, or 127.x mapped in IPv6)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@dataclass(frozen=True)
class Credentials:
    """What a request presents, as the web layer read it (no decision yet).

    ``key``: the first of ``?key=``, a :data:`KEY_HEADERS` header,
    ``Authorization: Bearer <key>``; ``signed``: whether a
    :data:`SIGNED_MARKERS` header is there; ``signed_request()`` gives
    (method, target, lower-case headers, body) for the signature check (it
    reads the body, so it may raise :class:`~agent_core.errors.TooLarge`).
    """

    session: str | None
    key: str | None
    signed: bool
    remote_addr: str
    signed_request: Callable[[], tuple[str, str, dict[str, str | None], bytes]]


@dataclass(frozen=True)
class Identity:
    """Who made a request: ``username`` (a session's user, the UI user of a
    signed request, None for the key or loopback), ``how`` (``session``,
    ``key``, ``signature``, ``loopback``, :data:`INVALID_SIGNATURE`; None on
    a public route) and ``role`` (None on a public route)."""

    username: str | None
    how: str | None
    role: str | None


PUBLIC = Identity(None, None, None)


@dataclass(frozen=True)
class Gate:
    """What :func:`authenticate` asks: users and sessions, signatures, and the ``[agent]`` settings."""

    auth: Auth
    signing: Signing
    settings: Mapping[str, Any]


def authenticate(gate: Gate, credentials: Credentials, route: Route, public: bool = False) -> Identity:
    """The single authentication and authorisation decision. Deny by default.

    A public route (only the core makes one) lets anyone in. Otherwise a
    valid ``X-Session`` is always enough to be authenticated. On a route
    that accepts the key, a key given (``?key=``, a key header, or
    ``Authorization: Bearer <key>`` as Prometheus sends it) is enough when
    right, and 401 ``Invalid key.`` when wrong (unless the session is valid).
    On ``GET /metrics`` alone, with ``[agent] metrics_loopback_open``, a
    client on loopback that gives no credential at all is let in with the
    ``read`` role. Otherwise the ``X-Session`` header must hold a valid
    session (406 when missing or malformed, 401 when unknown or expired).

    A request carrying a signature header (:data:`SIGNED_MARKERS`) is judged
    by its signature alone, on every route (:mod:`agent_core.auth.signing`: 400
    malformed, 403 not valid); a session or key beside it is ignored. Its
    role is ``[signing] role`` or the UI user's in ``[signing] user_roles``.
    On a :data:`SIGNATURE_TOLERANT` route a refused signature lets the view
    in as :data:`INVALID_SIGNATURE` (it answers a document saying so).

    Then the role must hold the route's permission (``Route.needs``): 403
    naming it otherwise. The key has the ``read`` role, or ``admin`` with
    ``[agent] key_writes``.
    """
    if public:
        return PUBLIC
    try:
        username, how, role = _identify(gate, credentials, route.key, route.path)
    except SignatureRefused as refused:
        if (route.method, route.path) not in SIGNATURE_TOLERANT:
            raise
        log.info("signature refused on %s %s: %s", route.method, route.path, refused.message)
        return Identity(None, INVALID_SIGNATURE, None)
    if role == NO_ROLE:
        raise Forbidden(f"Permission denied: signed requests of UI user {username!r} are refused ([signing]).")
    if route.needs not in ROLES[role]:
        if how == "signature":
            who = f"signed requests of UI user {username!r} have the {role!r} role ([signing])"
        else:
            who = f"user {username!r} has the {role!r} role" if username else "the agent key is read-only"
        raise Forbidden(f"Permission denied: {route.method} {route.path} needs the {route.needs!r} permission; {who}.")
    return Identity(username, how, role)


def _identify(gate: Gate, credentials: Credentials, key_allowed: bool, path: str) -> tuple[str | None, str, str]:
    if credentials.signed:
        method, target, headers, body = credentials.signed_request()
        signer = gate.signing.verify(method, target, headers, body)
        return signer.user, "signature", signer.role
    session = credentials.session
    key = credentials.key if key_allowed else None
    if (
        key is None
        and session is None
        and path == METRICS_PATH
        and gate.settings["metrics_loopback_open"]
        and is_loopback(credentials.remote_addr)
    ):
        return None, "loopback", "read"
    if key is None:
        user, role = gate.auth.session_user(session)
        return user, "session", role
    if session is not None:
        # clients such as the temboard UI send both: a valid session wins, so the
        # user is known (and recorded) and a stale or absent key does not matter
        try:
            user, role = gate.auth.session_user(session)
            return user, "session", role
        except DomainError:
            pass
    gate.auth.key_ok(key)
    return None, "key", "admin" if gate.settings["key_writes"] else "read"
