"""Users, passwords, sessions, the agent key, login throttling, and the one
authentication decision; each concern in its own module:

* :mod:`agent_core.auth.passwords`: scrypt hashing (:func:`hash_password`,
  :func:`verify_password`, the cost parameters) and the users file
  (:class:`User`, :class:`UsersFile`; its format is documented there);
* :mod:`agent_core.auth.throttle`: login rate limiting, the failed-login
  :class:`Throttle` (429) and the hashing :class:`LoginSlots` (503), bounded
  tables (the whole policy is documented there);
* :mod:`agent_core.auth.sessions`: :class:`Auth`, logins, sessions in the
  store (expiry, refresh and recheck documented there) and the key check;
* :mod:`agent_core.auth.gate`: :func:`authenticate`, the ONE place that
  decides authentication and authorisation, deny by default
  (:class:`Credentials`, :class:`Identity`, :class:`Gate`,
  :data:`SIGNED_MARKERS`, :data:`KEY_HEADERS`, ...);
* :mod:`agent_core.auth.signing`: signed requests of the temboard UI.

Roles: :data:`ROLES` maps a role (``admin``, ``read``) to the permissions it
holds. The agent key holds ``read``, or both with ``[agent] key_writes = true``.

Logins are the one public route that costs real resources: an scrypt hash
takes about 65 ms of a core and 16 MiB of memory. What a login costs, in
order, cheapest check first (nothing sleeps in a server thread): a user name
longer than :data:`MAX_USERNAME` characters is refused with 400 before
anything else; the throttle may answer 429 with ``Retry-After``; at most
``[agent] login_concurrency`` hashes run at a time, a few more logins wait
briefly, the others get 503; then the password is checked (401). A wrong
user name costs the same as a wrong password (a dummy hash), and an unknown
name is throttled like a known one, so neither timing nor 429s tell which
users exist.

Every name is importable from here, as before the split.
"""

from __future__ import annotations

from agent_core.auth.gate import (
    INVALID_SIGNATURE,
    KEY_HEADERS,
    METRICS_PATH,
    PUBLIC,
    SIGNATURE_TOLERANT,
    SIGNED_MARKERS,
    Credentials,
    Gate,
    Identity,
    authenticate,
)
from agent_core.auth.passwords import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    USERNAME_RE,
    User,
    UsersFile,
    hash_password,
    verify_password,
)
from agent_core.auth.sessions import MAX_USERNAME, SESSION_RE, SESSION_RECHECK, SESSION_REFRESH, Auth
from agent_core.auth.throttle import (
    FREE_FAILURES,
    LOGIN_QUEUE,
    LOGIN_WAIT,
    MAX_BACKOFF,
    THROTTLE_ENTRIES,
    LoginSlots,
    Throttle,
)
from agent_core.roles import ROLES

__all__ = [
    "FREE_FAILURES",
    "INVALID_SIGNATURE",
    "KEY_HEADERS",
    "LOGIN_QUEUE",
    "LOGIN_WAIT",
    "MAX_BACKOFF",
    "MAX_USERNAME",
    "METRICS_PATH",
    "PUBLIC",
    "ROLES",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "SESSION_RE",
    "SESSION_RECHECK",
    "SESSION_REFRESH",
    "SIGNATURE_TOLERANT",
    "SIGNED_MARKERS",
    "THROTTLE_ENTRIES",
    "USERNAME_RE",
    "Auth",
    "Credentials",
    "Gate",
    "Identity",
    "LoginSlots",
    "Throttle",
    "User",
    "UsersFile",
    "authenticate",
    "hash_password",
    "verify_password",
]
