"""Logins, sessions and the agent key: :class:`Auth`.

Sessions: ``secrets.token_hex(32)`` given to the client; only its SHA-256
is stored (``core_sessions``), so a copy of the store does not leak usable
sessions. They expire after ``session_idle`` seconds without use (sliding)
and ``session_lifetime`` seconds after login (absolute). A session's
``last_seen`` is written at most once every :data:`SESSION_REFRESH` seconds
(or a tenth of ``session_idle`` when smaller), not on every request (it was
one store write per request): a session used without pause may so expire
up to that long before ``session_idle`` after its last use. A session read
from the store is kept in memory and read again at most every
:data:`SESSION_RECHECK` seconds (not on every request): a session ended by
this agent (logout, expiry, user deleted or role changed in the users file)
ends at once; one deleted from the store by something else (another agent
sharing a PostgreSQL store) is still accepted for up to that long.

A login checks, cheapest first: a user name longer than
:data:`MAX_USERNAME` characters (``pgwarden user`` never writes one) is
refused with 400 before anything else (no hash, no throttle entry, nothing
kept); then the throttle (429) and the hashing slots (503) of
:mod:`agent_core.auth.throttle`; then the password
(:mod:`agent_core.auth.passwords`, 401 when wrong).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from agent_core.auth.passwords import UsersFile
from agent_core.auth.throttle import LoginSlots, Throttle
from agent_core.errors import InvalidInput, MalformedParameter, TooMany, Unauthorized, Unavailable
from agent_core.store import Store, now, sessions

SESSION_RE = re.compile(r"^[0-9a-f]{64}$")
#: Longest user name a login may carry (``USERNAME_RE``'s bound); longer: 400, before any hash.
MAX_USERNAME = 64
#: Seconds between two writes of a session's ``last_seen`` (at most).
SESSION_REFRESH = 60.0
#: Seconds a session read from the store is trusted before it is read again.
SESSION_RECHECK = 1.0


# Built once (building a statement per request cost as much as running it).
_SESSION = sa.select(sessions.c.username, sessions.c.created_at, sessions.c.last_seen).where(
    sessions.c.token_hash == sa.bindparam("digest")
)


@dataclass(frozen=True)
class _Session:
    """A session as read from the store (``read_at``: when)."""

    username: str
    created_at: datetime
    last_seen: datetime
    read_at: datetime


class Auth:
    """Users, sessions and the key: what :func:`agent_core.auth.gate.authenticate` asks."""

    def __init__(
        self,
        store: Store,
        users: UsersFile,
        key: str | None,
        idle: int,
        lifetime: int,
        login_concurrency: int = 1,
        login_failures: int = 60,
    ):
        self.store = store
        self.users = users
        self.key = key
        self.idle = idle
        self.lifetime = lifetime
        self.refresh = min(SESSION_REFRESH, idle / 10)
        self.throttle = Throttle(login_failures)
        self.slots = LoginSlots(login_concurrency)
        self._sessions: dict[str, _Session] = {}  # by token digest: read from the store lately
        self._sessions_lock = threading.Lock()
        #: Called with ``success``, ``failure``, ``throttled`` or ``busy`` for each login (GET /metrics).
        self.observe_login: Callable[[str], None] = lambda result: None
        #: The time of logins and session checks (aware UTC). A seam for tests, which
        #: move it forward instead of sleeping through idle and lifetime limits.
        self.clock: Callable[[], datetime] = now

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def login(self, username: str, password: str, address: str) -> str:
        """A new session token; 400 name too long, 429 throttled, 503 too many
        logins at once, 401 wrong credentials (checks cheapest first)."""
        if len(username) > MAX_USERNAME:
            raise InvalidInput(f"Parameter 'username' is too long (at most {MAX_USERNAME} characters).")
        wait = self.throttle.retry_after(username, address)
        if wait:
            self.observe_login("throttled")
            raise TooMany("Too many failed logins: retry later.", retry_after=wait)
        try:
            with self.slots.slot():
                ok = self.users.check(username, password)
        except Unavailable:
            self.observe_login("busy")
            raise
        if not ok:
            self.throttle.failed(username, address)
            self.observe_login("failure")
            raise Unauthorized("Invalid username/password.")
        self.throttle.succeeded(username, address)
        self.observe_login("success")
        token = secrets.token_hex(32)
        stamp = self.clock()
        with self.store.begin() as conn:
            conn.execute(
                sessions.insert().values(
                    token_hash=self._digest(token),
                    username=username,
                    created_at=stamp,
                    last_seen=stamp,
                    address=address,
                )
            )
            conn.execute(sessions.delete().where(sessions.c.created_at < stamp - timedelta(seconds=self.lifetime)))
        return token

    def session_user(self, token: str | None) -> tuple[str, str]:
        """(user, role) owning a valid session, sliding its idle expiry; 406/401
        otherwise (also when the user was deleted meanwhile)."""
        if token is None or not SESSION_RE.match(token):
            raise MalformedParameter("X-Session")
        digest = self._digest(token)
        stamp = self.clock()
        with self._sessions_lock:
            known = self._sessions.get(digest)
        if known is None or (stamp - known.read_at).total_seconds() >= SESSION_RECHECK:
            known = self._read_session(digest, stamp)
        user = self.users.load().get(known.username)
        expired = (stamp - known.last_seen).total_seconds() > self.idle or (
            stamp - known.created_at
        ).total_seconds() > self.lifetime
        if expired or user is None:
            self.logout_digest(digest)
            raise Unauthorized("Invalid session.")
        if (stamp - known.last_seen).total_seconds() >= self.refresh:
            with self.store.begin() as conn:
                conn.execute(sessions.update().where(sessions.c.token_hash == digest).values(last_seen=stamp))
            with self._sessions_lock:
                if digest in self._sessions:  # not ended meanwhile
                    self._sessions[digest] = _Session(known.username, known.created_at, stamp, known.read_at)
        return known.username, user.role

    def _read_session(self, digest: str, stamp: datetime) -> _Session:
        """The session from the store, kept in memory; 401 when unknown.
        Under the lock, so a logout cannot slip between the read and the keep."""
        with self._sessions_lock:
            with self.store.begin() as conn:
                row = conn.execute(_SESSION, {"digest": digest}).first()
            if row is None:
                self._sessions.pop(digest, None)
                raise Unauthorized("Invalid session.")
            if len(self._sessions) > 10000:  # bound memory: forget all, they are read again
                self._sessions.clear()
            known = self._sessions[digest] = _Session(str(row.username), row.created_at, row.last_seen, stamp)
        return known

    def logout(self, token: str) -> None:
        self.logout_digest(self._digest(token))

    def logout_digest(self, digest: str) -> None:
        """End the session of this token digest, in the store and in memory."""
        with self._sessions_lock:
            with self.store.begin() as conn:
                conn.execute(sessions.delete().where(sessions.c.token_hash == digest))
            self._sessions.pop(digest, None)

    def key_ok(self, key: str) -> bool:
        """Constant-time comparison with the configured agent key; 401 if wrong."""
        if not self.key or not hmac.compare_digest(key.encode(), self.key.encode()):
            raise Unauthorized("Invalid key.")
        return True
