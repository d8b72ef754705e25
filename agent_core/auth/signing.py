"""Signed requests: how the temboard web UI 8.0 and later (9.0.1 today) authenticates.

The UI signs every request with its RSA private key; the agent verifies it
with the UI's public key (``[signing] public_key``, fetched by ``pgwarden
fetch-key``). This module holds the whole of it, called from the one place
that authenticates (:func:`agent_core.auth.authenticate`):

- :func:`canonical_string`: what is signed (``docs/api-core.md``, Signed
  requests): ``<METHOD> <quoted target>``, an empty line, the signed headers
  ``name: value`` sorted by name, and for POST an empty line and the
  hex SHA-256 of the exact body bytes; lines joined by ``\\n`` with a final
  ``\\n``.
- :class:`Signing`: the checks, in order: headers present and well formed
  (400), the date parsed and within ``[-max_age, +clock_skew]`` of the
  agent's clock (400), the RSA-PSS/SHA-256 signature (403), the signed
  ``Host`` one of the agent's (403), the request id never seen in the window
  (403), and the role the UI user maps to (``[signing] role``,
  ``user_roles``).
- :class:`ReplayCache`: request ids remembered until their date leaves the
  window, bounded by ``[signing] replay_cache_size`` entries.
- the key: loaded at start, reloaded on ``SIGHUP`` (:meth:`Signing.reload`)
  and whenever the file changes (checked on each signed request by its
  ``stat``), so ``pgwarden fetch-key --force`` takes effect at once.

Unlike temboard's own agent, the date is parsed (never compared as text), a
future date is refused beyond a small skew, a request id is accepted once, the
signed Host must be the agent's, a new key needs no restart and a signed
request only gets the role configured for it.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import heapq
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

from agent_core.errors import DomainError, Forbidden, InvalidInput, Unavailable

log = logging.getLogger("pgwarden.signing")

#: Headers whose presence marks a request as signed (the UI 8+ sends them all).
SIGNATURE_HEADER = "X-TemBoard-Signature"
SIGNED_HEADERS = ("host", "x-temboard-date", "x-temboard-request-id", "x-temboard-user")
POST_HEADERS = ("content-length", "content-type")
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_DATE = re.compile(r"^[0-9]{8}T[0-9]{6}Z$")
#: A request id: what a uuid4 looks like, and a little more (any client may sign); bounded in size.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._~-]{8,128}$")
MAX_USER = 256
WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 the addresses that mean every interface
NO_ROLE = "none"


class SignatureRefused(DomainError):
    """A signed request refused: :class:`SignatureMalformed` (400),
    :class:`SignatureInvalid` (403) or :class:`SignatureUnverifiable` (503)."""


class SignatureMalformed(SignatureRefused, InvalidInput):
    """The signature headers are missing, malformed or out of date."""


class SignatureInvalid(SignatureRefused, Forbidden):
    """A well-formed signature that is not valid here (wrong key, host, replayed)."""


class SignatureUnverifiable(SignatureRefused, Unavailable):
    """The agent cannot verify signatures now (no usable public key)."""


def canonical_target(target: str) -> str:
    """The raw request-target quoted once more, keeping only ``/`` (as the UI does)."""
    return quote_plus(target, safe="/")


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_string(method: str, target: str, headers: Mapping[str, str], body: bytes | None = None) -> str:
    """What the UI signs for one request.

    ``target`` is the raw request-target as sent (still percent-encoded, with
    ``?query``); ``headers`` maps lower-case names to values and must hold
    :data:`SIGNED_HEADERS` (and :data:`POST_HEADERS` for POST); ``body`` the
    exact body bytes of a POST."""
    names = list(SIGNED_HEADERS)
    if method == "POST":
        names += POST_HEADERS
    lines = [f"{method} {canonical_target(target)}", ""]
    lines += [f"{name}: {headers[name]}" for name in sorted(names)]
    if method == "POST":
        lines += ["", body_digest(body or b"")]
    return "\n".join(lines) + "\n"


def parse_date(text: str) -> float:
    """``YYYYMMDDTHHMMSSZ`` (UTC) as a POSIX time; ValueError when not exactly that."""
    if not _DATE.match(text):
        raise ValueError(text)
    return float(calendar.timegm(time.strptime(text, DATE_FORMAT)))


def format_date(when: float) -> str:
    return time.strftime(DATE_FORMAT, time.gmtime(when))


# -- the key ------------------------------------------------------------------------


def load_public_key(data: bytes) -> Any:
    """An RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1); ValueError naming why not."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a PEM public key ({e})") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"not an RSA public key ({type(key).__name__})")
    if key.key_size < 2048:
        raise ValueError(f"RSA key of {key.key_size} bits: at least 2048 are required")
    return key


def read_public_key(path: str) -> Any:
    """The key of the file ``path``; ValueError naming why it cannot be used."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
    except OSError as e:
        raise ValueError(f"cannot read {path!r}: {e.strerror or e}") from None
    return load_public_key(data)


def verify_signature(key: Any, signature: bytes, message: bytes) -> bool:
    """RSA-PSS, SHA-256, MGF1-SHA-256, salt length detected (the UI uses the maximum)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    try:
        key.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
            hashes.SHA256(),
        )
    except InvalidSignature:
        return False
    return True


# -- replay cache -------------------------------------------------------------------


class ReplayCache:
    """Request ids seen, each kept until its date leaves the window.

    Bounded by ``size`` entries. When full of ids still in the window, the
    entry expiring first is dropped and its date becomes a *floor*: requests
    dated at or before it are refused from then on (its id could otherwise be
    replayed). So the bound never reopens a replay; at worst, under more than
    ``size`` signed requests per window, requests must be newer than the
    oldest one remembered.
    """

    def __init__(self, size: int):
        self.size = size
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self.floor = float("-inf")
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, request_id: str, date: float, expires: float, now: float) -> str | None:
        """Remember ``request_id`` (dated ``date``, forgettable at ``expires``);
        the reason it is refused, or None when new."""
        with self._lock:
            while self._expiry and self._expiry[0][0] <= now:
                _, old = heapq.heappop(self._expiry)
                self._seen.pop(old, None)
            if request_id in self._seen:
                return "this request id was already used (a replayed request)"
            if date <= self.floor:
                return (
                    "the agent remembers too many signed requests to accept one this old"
                    " ([signing] replay_cache_size); send it again"
                )
            while len(self._seen) >= self.size:
                dropped_expiry, dropped = heapq.heappop(self._expiry)
                self._seen.pop(dropped, None)
                self.floor = max(self.floor, dropped_expiry - (expires - date))
            self._seen[request_id] = expires
            heapq.heappush(self._expiry, (expires, request_id))
            return None


# -- the checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """Who a valid signed request is: the UI user it names and the role it maps to."""

    user: str
    role: str


def _host_port(value: str, default_port: int | None) -> tuple[str, int | None]:
    """``host[:port]`` split, brackets of IPv6 dropped, host lower-cased."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if port:
        if not port.isdigit():
            raise ValueError(f"bad port in {value!r}")
        return host, int(port)
    return host, default_port


def _normal_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.rstrip(".")


def local_addresses() -> list[str]:
    """Every address of this host's interfaces (what a wildcard listen address serves)."""
    import socket

    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                out.append(addr.address.split("%", 1)[0])
    return out


def parse_user_roles(entries: Iterable[str], roles: Iterable[str]) -> dict[str, str]:
    """``name:role`` entries as a dict; ValueError naming the bad one."""
    allowed = [*roles, NO_ROLE]
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, role = entry.rpartition(":")
        name, role = name.strip(), role.strip()
        if not sep or not name:
            raise ValueError(f"{entry!r} is not user:role")
        if role not in allowed:
            raise ValueError(f"{entry!r}: role must be one of {', '.join(allowed)}")
        out[name] = role
    return out


class Signing:
    """Verification of signed requests for one agent (off when no key is configured)."""

    def __init__(
        self,
        settings: Mapping[str, Any],
        listen: Callable[[], tuple[list[str], int]] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        from agent_core.roles import ROLES

        self.path: str | None = settings.get("public_key") or None
        self.max_age = int(settings.get("max_age", 300))
        self.clock_skew = int(settings.get("clock_skew", 60))
        self.role: str = settings.get("role", "read")
        self.user_roles = parse_user_roles(settings.get("user_roles") or [], ROLES)
        self.host_names: list[str] = list(settings.get("hosts") or [])
        self.replay = ReplayCache(int(settings.get("replay_cache_size", 50000)))
        #: () -> (listen addresses, port): set by the agent once it listens
        self.listen = listen
        self.clock = clock
        self._lock = threading.Lock()
        self._key: Any = None
        self._key_error: str | None = None
        self._stat: tuple[int, int, int, int] | None = None
        if self.path:
            self.reload()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    # the key
    def _file_stat(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path or "")
        except OSError:
            return None
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)

    def reload(self) -> str | None:
        """Read the key file again; the problem (logged) or None. A key that
        cannot be loaded leaves signed requests refused (503) until fixed."""
        if not self.path:
            return None
        with self._lock:
            self._stat = self._file_stat()
            try:
                key = read_public_key(self.path)
            except ValueError as e:
                self._key, self._key_error = None, f"[signing] public_key: {e}"
                log.error("%s: signed requests are refused until it is fixed", self._key_error)
                return self._key_error
            changed = self._key is not None
            self._key, self._key_error = key, None
            log.info("signing key %s (RSA %d bits) %s", self.path, key.key_size, "reloaded" if changed else "loaded")
            return None

    def key(self) -> Any:
        """The current key, reloaded first when the file changed."""
        if self._file_stat() != self._stat:
            self.reload()
        if self._key is None:
            raise SignatureUnverifiable(f"Signed requests cannot be verified: {self._key_error}; see the agent's log.")
        return self._key

    # the host
    def allowed_hosts(self) -> set[tuple[str, int | None]]:
        """(host, port) pairs a signed Host may name."""
        addresses, port = self.listen() if self.listen else ([], 0)
        hosts: set[tuple[str, int | None]] = set()
        for address in addresses:
            for host in local_addresses() if address in WILDCARDS else [address]:
                hosts.add((_normal_host(host), port))
        for name in self.host_names:  # a name without a port: the agent's port
            host, name_port = _host_port(name, port)
            hosts.add((_normal_host(host), name_port))
        return hosts

    def host_ok(self, value: str) -> bool:
        try:
            host, port = _host_port(value, 443)
        except ValueError:
            return False
        allowed = self.allowed_hosts()
        host = _normal_host(host)
        return (host, port) in allowed

    # a request
    def verify(self, method: str, target: str, headers: Mapping[str, str | None], body: bytes | None) -> Signer:
        """Check one signed request; its :class:`Signer` or :class:`SignatureRefused`.

        ``headers`` maps lower-case names to values (None when absent);
        ``body`` is the exact body (POST)."""
        if not self.enabled:
            raise SignatureInvalid(
                "Signed requests are not enabled on this agent: set [signing] public_key (pgwarden fetch-key)."
            )
        signature = headers.get("x-temboard-signature")
        if not signature:
            raise SignatureMalformed("Missing X-TemBoard-Signature header.")
        version, sep, encoded = signature.partition(":")
        if not sep or version != "v1":
            raise SignatureMalformed("X-TemBoard-Signature must be v1:<base64>.")
        try:
            raw_signature = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise SignatureMalformed("X-TemBoard-Signature is not valid base64.") from None
        if not raw_signature:
            raise SignatureMalformed("X-TemBoard-Signature is empty.")
        names = list(SIGNED_HEADERS) + (list(POST_HEADERS) if method == "POST" else [])
        values: dict[str, str] = {}
        for name in names:
            value = headers.get(name)
            if value is None or value == "":
                raise SignatureMalformed(f"Missing signed header {name.title()}.")
            values[name] = value
        if method != "POST" and body:
            raise SignatureMalformed(f"A signed {method} request must not have a body.")
        user = values["x-temboard-user"]
        if len(user) > MAX_USER:
            raise SignatureMalformed(f"X-TemBoard-User is longer than {MAX_USER} characters.")
        if not _REQUEST_ID.match(values["x-temboard-request-id"]):
            raise SignatureMalformed("X-TemBoard-Request-Id is malformed (8 to 128 letters, digits, ._~-).")
        try:
            date = parse_date(values["x-temboard-date"])
        except ValueError:
            raise SignatureMalformed("X-TemBoard-Date is not a UTC date YYYYMMDDTHHMMSSZ.") from None
        now = self.clock()
        if date > now + self.clock_skew:
            raise SignatureMalformed(
                f"X-TemBoard-Date is {date - now:.0f} s in the future (more than [signing] clock_skew ="
                f" {self.clock_skew} s): check the clocks of the UI and the agent.",
            )
        if date < now - self.max_age:
            raise SignatureMalformed(
                f"X-TemBoard-Date is {now - date:.0f} s old (more than [signing] max_age = {self.max_age} s):"
                " a replayed request, or the clocks of the UI and the agent differ.",
            )
        message = canonical_string(method, target, values, body).encode("utf-8")
        if not verify_signature(self.key(), raw_signature, message):
            raise SignatureInvalid("Invalid signature.")
        if not self.host_ok(values["host"]):
            raise SignatureInvalid(
                f"The request was signed for host {values['host']!r}, which is not this agent's"
                " (its listen addresses and [signing] hosts).",
            )
        refused = self.replay.add(values["x-temboard-request-id"], date, date + self.max_age + 1, now)
        if refused:
            raise SignatureInvalid(f"Refused: {refused}.")
        role = self.user_roles.get(user, self.role)
        return Signer(user, role)
