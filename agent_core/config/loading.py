"""Reading the configuration: an INI file, overridden by environment variables.

:class:`RawConfig` holds the text of the file; :func:`validate` checks it
against the section schemas in one pass and raises
:class:`~agent_core.errors.ConfigError` listing every problem as
``section.key: reason``, or returns the :class:`Config` of typed values.

Environment override rule: ``PGWARDEN_<SECTION>_<KEY>`` in upper case, for
example ``PGWARDEN_AGENT_PORT=2346`` or ``PGWARDEN_POSTGRESQL_PASSWORD=...``.
An environment value wins over the file. ``PGWARDEN_CONFIG`` names the file
itself.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent_core.config.options import Option, SectionSchema, _check, _convert
from agent_core.errors import ConfigError

ENV_PREFIX = "PGWARDEN_"
#: Environment variables of pgwarden that are not config keys.
ENV_NOT_KEYS = ("PGWARDEN_CONFIG", "PGWARDEN_TRACE_HOOKS")
DEFAULT_CONFIG = "/etc/pgwarden/pgwarden.conf"


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
