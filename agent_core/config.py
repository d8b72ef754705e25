"""Configuration: an INI file, overridden by environment variables.

Every section is described by a :class:`SectionSchema` of
:class:`~agent_core.hookspecs.Option` s: the core declares ``[agent]`` and
``[postgresql]`` here; each enabled plugin declares its own section through
``agent_add_config``. :func:`validate` checks everything in one pass and raises
:class:`~agent_core.errors.ConfigError` listing every problem as
``section.key: reason``.

Environment override rule: ``PGWARDEN_<SECTION>_<KEY>`` in upper case, for
example ``PGWARDEN_AGENT_PORT=2346`` or ``PGWARDEN_POSTGRESQL_PASSWORD=...``.
An environment value wins over the file. ``PGWARDEN_CONFIG`` names the file
itself.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_core.errors import ConfigError

ENV_PREFIX = "PGWARDEN_"
#: Environment variables of pgwarden that are not config keys.
ENV_NOT_KEYS = ("PGWARDEN_CONFIG", "PGWARDEN_TRACE_HOOKS")
DEFAULT_CONFIG = "/etc/pgwarden/pgwarden.conf"


@dataclass(frozen=True)
class Option:
    """One option of a config section.

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or ``list`` (comma
    separated strings). ``default`` is used when the key is absent (``None``
    with ``required=False`` means "unset"). ``choices`` restricts the value.
    ``validator(value)`` may raise ``ValueError`` whose text becomes the
    reason in ``section.key: reason``. ``minimum`` bounds numbers.
    """

    name: str
    type: type = str
    default: Any = None
    help: str = ""
    required: bool = False
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    validator: Callable[[Any], Any] | None = field(default=None, compare=False)
    secret: bool = False


class SectionSchema:
    """The options of one config section, in declaration order."""

    def __init__(self, name: str):
        self.name = name
        self.options: dict[str, Option] = {}

    def add(self, option: Option) -> None:
        if not isinstance(option, Option):
            raise TypeError(f"[{self.name}] add() takes an Option, not {type(option).__name__}")
        if option.name in self.options:
            raise ValueError(f"[{self.name}] option {option.name!r} declared twice")
        self.options[option.name] = option


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


def _convert(option: Option, raw: str) -> Any:
    """Turn the text of a value into the option's type (ValueError: reason)."""
    raw = raw.strip()
    if option.type is bool:
        low = raw.lower()
        if low in ("1", "yes", "true", "on"):
            return True
        if low in ("0", "no", "false", "off"):
            return False
        raise ValueError(f"expected a boolean (yes/no), got {raw!r}")
    if option.type is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
    if option.type is float:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"expected a number, got {raw!r}") from None
    if option.type is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    return raw


def _check(option: Option, value: Any) -> Any:
    if option.choices and value not in option.choices:
        raise ValueError(f"must be one of {', '.join(map(str, option.choices))}, got {value!r}")
    if option.minimum is not None and value < option.minimum:
        raise ValueError(f"must be at least {option.minimum}")
    if option.validator is not None:
        result = option.validator(value)
        if result is not None:
            value = result
    return value


@dataclass
class RawConfig:
    """The file as read: section -> key -> text, plus where it came from."""

    sections: dict[str, dict[str, str]] = field(default_factory=dict)
    path: str | None = None

    @classmethod
    def read(cls, path: str | None) -> RawConfig:
        if path is None:
            return cls()
        parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            with open(path, encoding="utf-8") as f:
                parser.read_file(f)
        except OSError as e:
            raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
        except configparser.Error as e:
            raise ConfigError([f"{path}: not a valid INI file: {e.message}"]) from None
        return cls({s: dict(parser.items(s)) for s in parser.sections()}, path)

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> RawConfig:
        out: dict[str, dict[str, str]] = {}
        for section, values in data.items():
            out[section] = {}
            for key, value in values.items():
                if isinstance(value, (list, tuple)):
                    value = ", ".join(map(str, value))
                elif isinstance(value, bool):
                    value = "yes" if value else "no"
                out[section][key] = "" if value is None else str(value)
        return cls(out)

    def get(self, section: str, key: str, environ: Mapping[str, str]) -> str | None:
        env = env_name(section, key)
        if env in environ:
            return environ[env]
        return self.sections.get(section, {}).get(key)


def env_name(section: str, key: str) -> str:
    """The environment variable overriding ``section.key``."""
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


class Config:
    """Validated configuration: ``config.agent``, ``config.postgresql`` and
    ``config.section(name)`` are plain dicts of typed values."""

    def __init__(self, values: dict[str, dict[str, Any]], schemas: dict[str, SectionSchema], path: str | None):
        self._values = values
        self.schemas = schemas
        self.path = path

    @property
    def agent(self) -> dict[str, Any]:
        return self._values["agent"]

    @property
    def postgresql(self) -> dict[str, Any]:
        return self._values["postgresql"]

    def section(self, name: str) -> dict[str, Any]:
        return self._values.get(name, {})

    @property
    def tls(self) -> bool:
        return bool(self.agent["tls_cert"])

    def store_url(self) -> str:
        return self.agent["store"] or "sqlite:///" + os.path.join(self.agent["home"], "pgwarden.db")

    def users_path(self) -> str:
        return self.agent["users"] or os.path.join(self.agent["home"], "users")


def enabled_plugins(raw: RawConfig, environ: Mapping[str, str]) -> list[str]:
    """The enable list, read before plugins are loaded (duplicates removed)."""
    text = raw.get("agent", "plugins", environ) or ""
    names = _convert(Option("plugins", list), text)
    return list(dict.fromkeys(names))


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _writable_dir(path: str) -> str | None:
    """Why ``path`` cannot be used (or created) as a writable directory, or None."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            return f"{path!r} is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"directory {path!r} is not writable"
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path!r}: {parent!r} is not a writable directory"
    try:
        pseudo = os.statvfs(parent).f_blocks == 0  # /proc, /sys: root "may write" but nothing can be created
    except OSError:
        pseudo = False
    if pseudo:
        return f"cannot create {path!r}: {parent!r} is on a filesystem that holds no files (proc, sysfs)"
    return None


def _check_paths(agent: dict[str, Any]) -> list[str]:
    """Problems with the state directory, the store URL and the log file."""
    import sqlalchemy

    problems = []
    store = agent.get("store")
    if store:
        try:
            url = sqlalchemy.engine.make_url(store)
            url.get_dialect()
        except Exception as e:
            problems.append(f"agent.store: not a usable SQLAlchemy URL {store!r}: {e}")
    uses_home = not store or not agent.get("users")
    if uses_home and agent.get("home"):
        reason = _writable_dir(agent["home"])
        if reason:
            problems.append(f"agent.home: {reason}")
    log_file = agent.get("log_file")
    if log_file and log_file not in ("stderr", "syslog"):
        if os.path.isdir(log_file):
            problems.append(f"agent.log_file: {log_file!r} is a directory")
        elif os.path.exists(log_file):
            if not os.access(log_file, os.W_OK):
                problems.append(f"agent.log_file: {log_file!r} is not writable")
        else:
            reason = _writable_dir(os.path.dirname(os.path.abspath(log_file)))
            if reason or not os.path.isdir(os.path.dirname(os.path.abspath(log_file))):
                problems.append(f"agent.log_file: directory of {log_file!r} does not exist or is not writable")
    return problems


def validate(
    raw: RawConfig,
    schemas: Iterable[SectionSchema],
    environ: Mapping[str, str] | None = None,
    ignored_sections: Iterable[str] = (),
) -> Config:
    """Check every section and key in one pass; raise ConfigError with all problems.

    ``ignored_sections`` are sections of installed but disabled plugins: their
    keys are not checked (the plugin is never imported to know them).
    """
    environ = os.environ if environ is None else environ
    by_name = {s.name: s for s in schemas}
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    ignored = set(ignored_sections)

    for section, keys in raw.sections.items():
        if section in ignored:
            continue
        if section not in by_name:
            problems.append(f"{section}: unknown section (not a core section nor an enabled plugin)")
            continue
        for key in keys:
            if key not in by_name[section].options:
                problems.append(f"{section}.{key}: unknown key")

    for name, schema in by_name.items():
        values[name] = {}
        for key, option in schema.options.items():
            text = raw.get(name, key, environ)
            if text is None or (text.strip() == "" and option.type is not list):
                if option.required:
                    problems.append(f"{name}.{key}: required")
                values[name][key] = option.default
                continue
            try:
                values[name][key] = _check(option, _convert(option, text))
            except ValueError as e:
                origin = f" (from {env_name(name, key)})" if env_name(name, key) in environ else ""
                problems.append(f"{name}.{key}{origin}: {e}")

    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in ENV_NOT_KEYS:
            continue
        for name, schema in by_name.items():
            prefix = f"{ENV_PREFIX}{name.upper()}_"
            if variable.startswith(prefix):
                key = variable[len(prefix) :].lower()
                if key not in schema.options and not any(
                    variable.startswith(f"{ENV_PREFIX}{other.upper()}_") for other in by_name if len(other) > len(name)
                ):
                    problems.append(f"{name}.{key} (from {variable}): unknown key")

    agent = values.get("agent", {})
    if agent:
        if bool(agent.get("tls_cert")) != bool(agent.get("tls_key")):
            problems.append("agent.tls_key: tls_cert and tls_key must be set together")
        for key in ("tls_cert", "tls_key", "tls_ca"):
            path = agent.get(key)
            if path and not os.path.isfile(path):
                problems.append(f"agent.{key}: no such file {path!r}")
        if agent.get("tls_client_verify") != "none" and not agent.get("tls_ca"):
            problems.append("agent.tls_client_verify: needs agent.tls_ca")
        if not agent.get("tls_cert"):
            for address in agent.get("address") or []:
                if not _is_loopback(address):
                    problems.append(
                        f"agent.address: refusing plain HTTP on {address}: "
                        "set tls_cert and tls_key, or bind to loopback addresses (127.0.0.1, ::1) only"
                    )
        problems += _check_paths(agent)
        if agent.get("session_idle") and agent.get("session_lifetime"):
            if agent["session_idle"] > agent["session_lifetime"]:
                problems.append("agent.session_idle: must not exceed agent.session_lifetime")
    signing = values.get("signing", {})
    if signing.get("public_key"):
        from agent_core.auth.signing import read_public_key

        try:
            read_public_key(signing["public_key"])
        except ValueError as e:
            problems.append(f"signing.public_key: {e} (pgwarden fetch-key <ui-url> writes a valid one)")
    if problems:
        raise ConfigError(problems)
    return Config(values, by_name, raw.path)
