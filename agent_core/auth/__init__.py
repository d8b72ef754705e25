"""Users, passwords, sessions, the agent key and login throttling.

Users file: one ``username:role:scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``
line per user, written by ``pgwarden user``; ``role`` is ``admin`` (every
route) or ``read`` (routes needing the ``read`` permission only). A line
without a role (``username:scrypt$...``, written by pgwarden 0.1) is an
``admin``. Cost parameters live beside each hash so they can be raised later
without breaking old entries.

Roles: :data:`ROLES` maps a role to the permissions it holds. The agent key
holds ``read``, or both with ``[agent] key_writes = true``.

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

Logins are the one public route that costs real resources: an scrypt hash
takes about 65 ms of a core and 16 MiB of memory. What a login costs, in
order, cheapest check first (nothing sleeps in a server thread):

1. A user name longer than :data:`MAX_USERNAME` characters (``pgwarden user``
   never writes one) is refused with 400 before anything else: no hash, no
   throttle entry, nothing kept.
2. The throttle (:class:`Throttle`) may answer 429 with ``Retry-After``
   before any hash:

   * per user, whatever the address: from the third failure in a row the
     user name must wait 2^(n-3) seconds (capped at 5 minutes). Rotating
     client addresses does not help an attacker.
   * except from a *known-good* address: once a user logged in from an
     address, failures for that user from that address are counted apart
     (the same back-off, on their own counter), so an attacker guessing
     ``admin`` from elsewhere cannot lock the real admin out of their usual
     address. Known-good addresses are kept in memory (lost on restart), at
     most :data:`THROTTLE_ENTRIES`, least recently used forgotten first.
   * globally: at most ``[agent] login_failures`` failed logins per minute
     for the whole agent (a token bucket: a burst of that many, then one
     every 60/n seconds). When it is spent, logins from addresses not
     known-good for their user get 429 with ``Retry-After: 1`` (or the
     seconds to the next token) until a token is back. Spraying many names
     then costs at most that many hashes a minute. It slows rather than
     locks: it never blocks anyone for longer than one token's time after an
     attack stops, and a user at a known-good address is never held by it.
     The trade-off, chosen deliberately: during a spray, a legitimate user
     logging in from an address never used before competes with the
     attacker for those tokens and may get 429 until the attack stops.
   * failure counters live in one table of at most :data:`THROTTLE_ENTRIES`
     keys; the least recently used key is forgotten when it is full, never
     the whole table (a spray of names cannot reset everyone's back-off; at
     the global budget's pace, pushing out a counter the attacker keeps
     touching takes hours).
   * a successful login clears the counter it was counted on (the user's,
     or the user's at that known-good address) and makes its address
     known-good for the user.

3. At most ``[agent] login_concurrency`` hashes run at a time (default 1:
   on a 2-core box shared with PostgreSQL, at most one core and 16 MiB go to
   logins, still about 15 logins a second); up to :data:`LOGIN_QUEUE` more
   logins wait for a slot, at most :data:`LOGIN_WAIT` seconds; the others
   (and those whose wait ran out) get 503 with ``Retry-After: 1``. Memory
   spent on hashing is so at most ``login_concurrency`` x 16 MiB, and the
   other server threads stay free for other requests. 503, not 429: the
   agent is busy, the client did nothing wrong (429 is the throttle's).

A wrong user name costs the same as a wrong password (a dummy hash), and an
unknown name is throttled like a known one, so neither timing nor 429s tell
which users exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from agent_core.auth.signing import NO_ROLE, SIGNATURE_HEADER, SignatureRefused
from agent_core.errors import (
    DomainError,
    Forbidden,
    InvalidInput,
    MalformedParameter,
    TooMany,
    Unauthorized,
    Unavailable,
)
from agent_core.files import private_dirs
from agent_core.metrics import is_loopback
from agent_core.roles import ROLES
from agent_core.store import Store, now, sessions

if TYPE_CHECKING:  # pragma: no cover - imports for annotations only
    from agent_core.auth.signing import Signing
    from agent_core.registrations import Route

log = logging.getLogger("pgwarden.auth")

SESSION_RE = re.compile(r"^[0-9a-f]{64}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: Longest user name a login may carry (``USERNAME_RE``'s bound); longer: 400, before any hash.
MAX_USERNAME = 64
#: Failures of one throttle key answered 401 before the back-off starts.
FREE_FAILURES = 2
#: Longest back-off of one throttle key, in seconds.
MAX_BACKOFF = 300
#: Throttle keys (user, or user at a known-good address) and known-good
#: (user, address) pairs kept, each; least recently used forgotten first.
THROTTLE_ENTRIES = 10000
#: Seconds a login waits for a hashing slot before 503.
LOGIN_WAIT = 2.0
#: Logins waiting for a hashing slot at most (each holds a server thread); more: 503 at once.
LOGIN_QUEUE = 4
#: Seconds between two writes of a session's ``last_seen`` (at most).
SESSION_REFRESH = 60.0
#: Seconds a session read from the store is trusted before it is read again.
SESSION_RECHECK = 1.0


def _return_large_buffers() -> None:
    """Make glibc give scrypt's 16 MiB buffers back to the system when freed.

    glibc serves large allocations with mmap, but raises that threshold to the
    size of the first such block freed: later 16 MiB scrypt buffers then come
    from per-thread heaps and stay resident (the agent grew from 55 to 270 MB
    after logins on its 16 threads). A fixed threshold (128 KiB, glibc's
    default) keeps them mmapped. No-op where ``mallopt`` does not exist."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


_return_large_buffers()


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=256 * 1024 * 1024,
            dklen=len(digest) // 2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


# A hash of a random password, checked for unknown users so that a wrong
# username costs the same time as a wrong password.
_DUMMY = hash_password(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    role: str
    hash: str


class UsersFile:
    """The users file: re-read whenever it changes (so ``pgwarden user``
    applies at once, to logins and to existing sessions), written atomically
    with mode 0600."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], dict[str, User]] | None = None

    def load(self) -> dict[str, User]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        except OSError as e:  # deny by default: no user can log in, and it is in the log
            log.error("cannot read the users file %s: %s", self.path, e.strerror or e)
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._cache is not None and self._cache[0] == stamp:
                return dict(self._cache[1])
        users: dict[str, User] = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#") and ":" in line:
                        name, rest = line.split(":", 1)
                        role, sep, encoded = rest.partition(":")
                        if not sep:  # 0.1 format: no role, an admin
                            role, encoded = "admin", rest
                        if role in ROLES:
                            users[name] = User(role, encoded)
                        else:
                            log.error("users file %s: user %r has an unknown role %r: ignored", self.path, name, role)
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.error("cannot read the users file %s: %s", self.path, e.strerror or e)
            return {}
        with self._lock:
            self._cache = (stamp, users)
        return dict(users)

    def save(self, users: dict[str, User]) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        private_dirs(directory)  # 0700 when created; the file itself is 0600 (mkstemp)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".users.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("# pgwarden users: managed by 'pgwarden user'\n")
                for name in sorted(users):
                    f.write(f"{name}:{users[name].role}:{users[name].hash}\n")
            os.chmod(tmp, 0o600)
            if os.geteuid() == 0:
                # root editing the file of an agent that runs as another user
                # (postgres under systemd): keep the file readable by that user
                owner = os.stat(self.path if os.path.exists(self.path) else directory)
                os.chown(tmp, owner.st_uid, owner.st_gid)
            os.replace(tmp, self.path)
        except BaseException:
            os.unlink(tmp)
            raise

    def set(self, username: str, password: str | None, role: str | None = None) -> None:
        """Add or update a user: ``password`` None keeps the hash, ``role`` None
        keeps the role (``admin`` for a new user)."""
        if not USERNAME_RE.match(username):
            raise ValueError("username must be 1 to 64 letters, digits or _ . @ -")
        if password is not None and not password:
            raise ValueError("password must not be empty")
        if role is not None and role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        users = self.load()
        old = users.get(username)
        if old is None and password is None:
            raise ValueError(f"no user {username!r}")
        users[username] = User(
            role or (old.role if old else "admin"),
            hash_password(password) if password is not None else old.hash,  # type: ignore[union-attr]
        )
        self.save(users)

    def delete(self, username: str) -> bool:
        users = self.load()
        if users.pop(username, None) is None:
            return False
        self.save(users)
        return True

    def check(self, username: str, password: str) -> bool:
        user = self.load().get(username)
        ok = verify_password(password, user.hash if user else _DUMMY)
        return ok and user is not None


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


@dataclass
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


class Throttle:
    """Failed-login back-off per user (per user and address at a known-good
    address), a global failure budget, bounded tables; see the module's
    docstring. ``clock`` is injectable (tests)."""

    def __init__(
        self, failures_per_minute: int = 60, entries: int = THROTTLE_ENTRIES, clock: Any = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._entries = entries
        # key: (username, address) at a known-good address, else (username, "")
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._capacity = float(failures_per_minute)
        self._rate = failures_per_minute / 60.0  # tokens per second
        self._tokens = self._capacity
        self._refilled = clock()

    def _key(self, username: str, address: str) -> tuple[tuple[str, str], bool]:
        """(the counter's key, whether the address is known-good for the user). Under the lock."""
        if (username, address) in self._known:
            self._known.move_to_end((username, address))
            return (username, address), True
        return (username, ""), False

    def _refill(self, now: float) -> None:
        self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now

    def retry_after(self, username: str, address: str) -> int:
        """Seconds to wait before this login may be tried (0: now)."""
        with self._lock:
            now = self._clock()
            key, known = self._key(username, address)
            f = self._failures.get(key)
            wait = f.blocked_until - now if f is not None else 0.0
            if not known:
                self._refill(now)
                if self._tokens < 1:
                    wait = max(wait, (1 - self._tokens) / self._rate)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            now = self._clock()
            key, known = self._key(username, address)
            if not known:
                self._refill(now)
                self._tokens -= 1  # may go below 0 by the logins hashed at once: they wait longer
            f = self._failures.get(key)
            if f is None:
                f = self._failures[key] = _Failures()
                while len(self._failures) > self._entries:
                    self._failures.popitem(last=False)
            else:
                self._failures.move_to_end(key)
            f.count += 1
            if f.count > FREE_FAILURES:
                delay = min(MAX_BACKOFF, 2 ** min(f.count - FREE_FAILURES - 1, 20))
                f.blocked_until = now + delay

    def succeeded(self, username: str, address: str) -> None:
        """Clear the counter this login was counted on; the address becomes known-good for the user."""
        with self._lock:
            key, _known = self._key(username, address)
            self._failures.pop(key, None)
            self._known[(username, address)] = None
            self._known.move_to_end((username, address))
            while len(self._known) > self._entries:
                self._known.popitem(last=False)

    def size(self) -> tuple[int, int]:
        """(failure counters, known-good pairs) kept."""
        with self._lock:
            return len(self._failures), len(self._known)


class LoginSlots:
    """At most ``concurrency`` password hashes at a time; at most ``queue``
    more logins waiting (up to ``wait`` seconds) for a slot; 503 otherwise."""

    def __init__(self, concurrency: int, wait: float = LOGIN_WAIT, queue: int = LOGIN_QUEUE):
        self._slots = threading.BoundedSemaphore(concurrency)
        self._waiting = threading.BoundedSemaphore(concurrency + queue)  # hashing + waiting
        self._wait = wait

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        busy = Unavailable("Too many logins at once: retry later.", retry_after=1)
        if not self._waiting.acquire(blocking=False):
            raise busy
        try:
            if not self._slots.acquire(timeout=self._wait):
                raise busy
            try:
                yield
            finally:
                self._slots.release()
        finally:
            self._waiting.release()


class Auth:
    """Users, sessions and the key: what :func:`authenticate` asks."""

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


# -- the authentication decision of a request --------------------------------------

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
