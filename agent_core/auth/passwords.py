"""Password hashing (scrypt) and the users file.

Users file: one ``username:role:scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>``
line per user, written by ``pgwarden user``; ``role`` is ``admin`` (every
route) or ``read`` (routes needing the ``read`` permission only; the roles
and their permissions are :data:`agent_core.roles.ROLES`). A line without a
role (``username:scrypt$...``, written by pgwarden 0.1) is an ``admin``.
Cost parameters live beside each hash so they can be raised later without
breaking old entries.

An scrypt hash with :data:`SCRYPT_N`, :data:`SCRYPT_R`, :data:`SCRYPT_P`
takes about 65 ms of a core and 16 MiB of memory (how many run at once is
:class:`agent_core.auth.throttle.LoginSlots`'s). A wrong user name costs the
same as a wrong password: :meth:`UsersFile.check` verifies a dummy hash for
an unknown user, so timing does not tell which users exist.
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
from dataclasses import dataclass

from agent_core.files import private_dirs
from agent_core.roles import ROLES

log = logging.getLogger("pgwarden.auth")

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


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
