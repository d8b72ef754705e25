"""The core's own config sections: ``[agent]``, ``[postgresql]`` and ``[signing]``.

Each is a :class:`~agent_core.config.options.SectionSchema` built by a
function (``agent_schema()``...), with the validators of its values; each
enabled plugin declares its own section through ``agent_add_config``.
"""

from __future__ import annotations

import re
from typing import Any

from agent_core.config.options import Option, SectionSchema


def _positive(value: Any) -> Any:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _port(value: int) -> int:
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")
    return value


def _addresses(value: list[str]) -> list[str]:
    """Listen addresses: brackets of ``[::1]`` dropped, duplicates removed, at least one."""
    out = list(dict.fromkeys(a[1:-1] if a.startswith("[") and a.endswith("]") else a for a in value))
    if not out:
        raise ValueError("at least one address is required")
    return out


#: libpq parameters that have their own ``[postgresql]`` key or that the agent sets itself.
_OWN_CONNINFO = {
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
    "dbname": "dbname",
    "sslmode": "sslmode",
    "connect_timeout": "connect_timeout",
    "application_name": None,
    "options": "statement_timeout and lock_timeout",
    "client_encoding": None,
}


def _conninfo(value: str) -> str:
    """Other libpq parameters as ``key=value`` pairs; the keys handled elsewhere are refused.

    The reason never repeats the text: it may hold a secret."""
    from psycopg2.extensions import parse_dsn

    try:
        params = parse_dsn(value)
    except Exception as e:
        unknown = re.search(r'invalid connection option "(\w+)"', str(e))
        reason = f"unknown libpq parameter {unknown.group(1)!r}" if unknown else "bad syntax"
        raise ValueError(f"not a libpq connection string of key=value pairs: {reason}") from None
    for key in params:
        if key in _OWN_CONNINFO:
            instead = _OWN_CONNINFO[key]
            hint = f"use [postgresql] {instead} instead" if instead else "the agent sets it itself"
            raise ValueError(f"{key!r} cannot be set here: {hint}")
    return value


def agent_schema() -> SectionSchema:
    s = SectionSchema("agent")
    for opt in (
        Option(
            "address",
            list,
            ["127.0.0.1"],
            "Addresses to listen on, comma separated (IPv4 or IPv6, e.g. 127.0.0.1, ::1).",
            validator=_addresses,
        ),
        Option("port", int, 2345, "TCP port to listen on (0 picks a free one).", validator=_port),
        Option("tls_cert", str, None, "PEM certificate file; TLS is on when set."),
        Option("tls_key", str, None, "PEM private key of the certificate."),
        Option("tls_ca", str, None, "CA file used to verify client certificates."),
        Option("tls_client_verify", str, "none", "Client certificate check.", choices=("none", "optional", "required")),
        Option("threads", int, 16, "HTTP worker threads.", validator=_positive),
        Option(
            "max_connections",
            int,
            4096,
            "Client connections open at once (all addresses of one listening address); at the limit the oldest "
            "idle one is closed to make room.",
            minimum=16,
        ),
        Option(
            "max_connections_per_address",
            int,
            256,
            "Client connections open at once from one client address; more are closed as they arrive.",
            validator=_positive,
        ),
        Option(
            "handshake_timeout", float, 5.0, "Seconds a client has to complete its TLS handshake.", validator=_positive
        ),
        Option(
            "header_timeout",
            float,
            10.0,
            "Seconds a client has to send a whole request line and headers (a total, not per read).",
            validator=_positive,
        ),
        Option(
            "body_min_rate",
            int,
            1024,
            "Slowest accepted request body, in bytes per second (after header_timeout of grace).",
            validator=_positive,
        ),
        Option("keepalive_timeout", float, 30.0, "Seconds an idle keep-alive connection is kept.", validator=_positive),
        Option(
            "send_timeout",
            float,
            30.0,
            "Seconds a client has to take each response write (plus one per 64 KiB).",
            validator=_positive,
        ),
        Option("home", str, "/var/lib/pgwarden", "State directory (operations store, users file)."),
        Option("store", str, None, "SQLAlchemy URL of the operations store (default: SQLite file in home)."),
        Option("key", str, None, "Agent key accepted where the API allows it (unset: key disabled).", secret=True),
        Option(
            "key_writes",
            bool,
            False,
            "Let the agent key call write routes (kill, schedule, cancel) that accept it; off: the key is read-only.",
        ),
        Option(
            "read_role_sees_details",
            bool,
            False,
            "Show users of the read role the data directory (GET /discover pg_data) and other users' names"
            " (GET /notifications); off: null and (hidden).",
        ),
        Option(
            "metrics_loopback_open",
            bool,
            False,
            "Answer GET /metrics without credentials to clients on loopback (127.0.0.0/8, ::1): a Prometheus on"
            " the same host; off: a session, the agent key or Authorization: Bearer <key>, like other reads.",
        ),
        Option(
            "metrics_max_age",
            float,
            5.0,
            "Seconds the live figures of GET /metrics read from PostgreSQL (reachability, backends) are reused:"
            " at most one probe and one cheap query per plugin per interval, however often scrapes come.",
            minimum=0,
        ),
        Option("users", str, None, "Users file (default: <home>/users)."),
        Option("session_idle", int, 3600, "Seconds of inactivity after which a session ends.", validator=_positive),
        Option("session_lifetime", int, 86400, "Seconds after login after which a session ends.", validator=_positive),
        Option(
            "login_concurrency",
            int,
            1,
            "Password hashes computed at once (each takes 16 MiB and a core for about 65 ms); up to 4 more logins"
            " wait up to 2 s, others get 503.",
            validator=_positive,
        ),
        Option(
            "login_failures",
            int,
            60,
            "Failed logins per minute for the whole agent; beyond, logins from addresses a user never logged in"
            " from get 429 until the budget refills.",
            validator=_positive,
        ),
        Option("plugins", list, [], "Enabled plugins, by entry-point name."),
        Option("cors_origin", str, "*", "Access-Control-Allow-Origin sent on every response."),
        Option("max_body", int, 102400, "Largest accepted request body, in bytes.", validator=_positive),
        Option("log_level", str, "INFO", "Log level.", choices=("DEBUG", "INFO", "WARNING", "ERROR")),
        Option("log_file", str, "stderr", "Log destination: stderr, syslog or a file path."),
        Option("scheduler_workers", int, 2, "Operations run at the same time.", validator=_positive),
        Option(
            "scheduler_grace", int, 300, "Seconds after its time an operation missed while down still runs.", minimum=0
        ),
        Option("scheduler_retention", int, 7 * 86400, "Seconds finished operations are kept.", validator=_positive),
        Option(
            "scheduler_retention_count",
            int,
            1000,
            "Finished operations kept at most; the oldest are deleted as others finish.",
            validator=_positive,
        ),
        Option(
            "scheduler_pending_max",
            int,
            1000,
            "Operations waiting to run (todo) at most; scheduling more is answered 429.",
            validator=_positive,
        ),
        Option(
            "notifications_max",
            int,
            1000,
            "Entries of the audit log (GET /notifications) kept; the oldest are deleted.",
            validator=_positive,
        ),
        Option(
            "notifications_max_age",
            int,
            90 * 86400,
            "Seconds an entry of the audit log is kept.",
            validator=_positive,
        ),
        Option(
            "listing_limit_default",
            int,
            1000,
            "Entries of a listing page when the request gives no ?limit= (operations, notifications).",
            validator=_positive,
        ),
        Option(
            "listing_limit_max",
            int,
            10000,
            "Largest ?limit= a listing accepts (400 above).",
            validator=_positive,
        ),
    ):
        s.add(opt)
    return s


def _user_roles(value: list[str]) -> list[str]:
    from agent_core.auth.signing import parse_user_roles
    from agent_core.roles import ROLES

    parse_user_roles(value, ROLES)
    return value


def signing_schema() -> SectionSchema:
    """``[signing]``: signed requests of the temboard UI 8.0 and later (:mod:`agent_core.auth.signing`)."""
    from agent_core.roles import ROLES

    s = SectionSchema("signing")
    for opt in (
        Option(
            "public_key",
            str,
            None,
            "PEM file of the temboard UI's RSA public key (pgwarden fetch-key writes it); unset: signed requests off.",
        ),
        Option(
            "role",
            str,
            "read",
            "Role of signed requests (none refuses them); the UI enforces its own permissions on top.",
            choices=(*ROLES, "none"),
        ),
        Option(
            "user_roles",
            list,
            [],
            "Roles per UI user (X-TemBoard-User), as user:role pairs, comma separated"
            " (e.g. alice:admin, temboard:read).",
            validator=_user_roles,
        ),
        Option(
            "hosts",
            list,
            [],
            "Host names or addresses (host or host:port) the UI may sign for besides the listen addresses"
            " (DNS names, NAT).",
        ),
        Option("max_age", int, 300, "Seconds a signed request stays valid after its date.", validator=_positive),
        Option("clock_skew", int, 60, "Seconds a signed request's date may be ahead of the agent's clock.", minimum=0),
        Option(
            "replay_cache_size",
            int,
            50000,
            "Request ids remembered within max_age to refuse replays (about 210 bytes each).",
            minimum=100,
        ),
    ):
        s.add(opt)
    return s


def postgresql_schema() -> SectionSchema:
    s = SectionSchema("postgresql")
    for opt in (
        Option("host", str, "/var/run/postgresql", "Socket directory or address."),
        Option("port", int, 5432, "Port.", validator=_port),
        Option("user", str, "postgres", "Role the agent connects as."),
        Option("password", str, None, "Password (unset: none, or .pgpass).", secret=True),
        Option("dbname", str, "postgres", "Default database."),
        Option(
            "sslmode",
            str,
            None,
            "libpq sslmode (unset: libpq's default, prefer).",
            choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
        ),
        Option(
            "conninfo",
            str,
            None,
            "Other libpq parameters as key=value pairs (sslrootcert=..., keepalives_idle=60...).",
            validator=_conninfo,
            secret=True,
        ),
        Option("instance", str, "main", "Instance name shown to clients."),
        Option(
            "local",
            str,
            "auto",
            "Whether PostgreSQL runs on this host: auto (detect), yes or no.",
            choices=("auto", "yes", "no"),
        ),
        Option("connect_timeout", int, 5, "Seconds to wait for a connection.", validator=_positive),
        Option("statement_timeout", int, 30, "Seconds a monitoring query may run.", validator=_positive),
        Option("lock_timeout", int, 5, "Seconds a monitoring query may wait for a lock.", validator=_positive),
        Option(
            "pool_idle",
            float,
            5.0,
            "Seconds an idle pooled connection to the default database is kept (0: none kept); "
            "connections to other databases are closed as soon as the request that needed them ends.",
            minimum=0,
        ),
    ):
        s.add(opt)
    return s
