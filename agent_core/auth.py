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

Throttling: failures are counted per (username, client address); from the
third one the client must wait 2^(n-3) seconds (capped at 5 minutes),
answered 429 with ``Retry-After``. Nothing sleeps in a server thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from .errors import HTTPError, MalformedParameter
from .files import private_dirs
from .hookspecs import ROLES
from .store import Store, now, sessions

log = logging.getLogger("pgwarden.auth")

SESSION_RE = re.compile(r"^[0-9a-f]{64}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
FREE_FAILURES = 2
MAX_BACKOFF = 300
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
    """Growing back-off after repeated login failures per (user, address)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], _Failures] = {}

    def retry_after(self, username: str, address: str) -> int:
        with self._lock:
            f = self._failures.get((username, address))
            if f is None:
                return 0
            wait = f.blocked_until - time.monotonic()
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        with self._lock:
            if len(self._failures) > 10000:  # bound memory under a spray of names
                self._failures.clear()
            f = self._failures.setdefault((username, address), _Failures())
            f.count += 1
            if f.count > FREE_FAILURES:
                delay = min(MAX_BACKOFF, 2 ** (f.count - FREE_FAILURES - 1))
                f.blocked_until = time.monotonic() + delay

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username, address), None)


class Auth:
    """Every authentication decision of the agent is made here."""

    def __init__(self, store: Store, users: UsersFile, key: str | None, idle: int, lifetime: int):
        self.store = store
        self.users = users
        self.key = key
        self.idle = idle
        self.lifetime = lifetime
        self.refresh = min(SESSION_REFRESH, idle / 10)
        self.throttle = Throttle()
        self._sessions: dict[str, _Session] = {}  # by token digest: read from the store lately
        self._sessions_lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def login(self, username: str, password: str, address: str) -> str:
        wait = self.throttle.retry_after(username, address)
        if wait:
            raise HTTPError(429, "Too many failed logins: retry later.", {"Retry-After": str(wait)})
        if not self.users.check(username, password):
            self.throttle.failed(username, address)
            raise HTTPError(401, "Invalid username/password.")
        self.throttle.succeeded(username, address)
        token = secrets.token_hex(32)
        stamp = now()
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
        stamp = now()
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
            raise HTTPError(401, "Invalid session.")
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
                raise HTTPError(401, "Invalid session.")
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
            raise HTTPError(401, "Invalid key.")
        return True
