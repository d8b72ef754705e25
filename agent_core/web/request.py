"""What a view receives: :class:`Request`, the parsed request and who made it.

Also what authentication reads from a request (:func:`credentials`) and the
body readers, bounded by ``[agent] max_body``. Views, the core's and the
plugins', are typed against :class:`Request`; plugins never see bottle.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import bottle

from agent_core.auth import KEY_HEADERS, SIGNED_MARKERS, Credentials
from agent_core.auth.signing import SIGNATURE_HEADER
from agent_core.errors import InvalidInput, TooLarge

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.interfaces import Agent


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


def credentials(raw: bottle.BaseRequest, max_body: int) -> Credentials:
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
        return raw.method, target, headers, request_body(raw, max_body)

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
