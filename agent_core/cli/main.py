"""The ``pgwarden`` command line."""

from __future__ import annotations

import argparse
import getpass
import logging
import logging.handlers
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from agent_core import __version__
from agent_core.config import DEFAULT_CONFIG, RawConfig
from agent_core.errors import ConfigError, PgwardenError, StartupError
from agent_core.files import private_opener
from agent_core.roles import ROLES

log = logging.getLogger("pgwarden")

DESCRIPTION = """\
pgwarden: remote-control agent for one PostgreSQL instance.

It serves an authenticated REST API (bottle on cheroot, TLS) and runs a
persistent scheduler; features are plugins enabled in the config file
([agent] plugins = activity, maintenance).

The config file is --config, else $PGWARDEN_CONFIG, else
/etc/pgwarden/pgwarden.conf. Any key can be overridden by the environment
variable PGWARDEN_<SECTION>_<KEY> (e.g. PGWARDEN_AGENT_PORT=2346).
"""


def _config_path(args: argparse.Namespace) -> str:
    return args.config or os.environ.get("PGWARDEN_CONFIG") or DEFAULT_CONFIG


class PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """A log file created 0600 whatever the umask, also when it is created
    again after a rotation (an existing file keeps its mode)."""

    def _open(self) -> Any:
        return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors, opener=private_opener)


def _setup_logging(level: str, destination: str) -> None:
    handler: logging.Handler
    if destination == "stderr":
        handler = logging.StreamHandler(sys.stderr)
    elif destination == "syslog":
        handler = logging.handlers.SysLogHandler(address="/dev/log")
    else:
        handler = PrivateFileHandler(destination)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("cheroot").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Any:
    from agent_core.agent import load

    return load(RawConfig.read(_config_path(args)))


def _load_raw(args: argparse.Namespace) -> Any:
    """(config, plugins, raw): :func:`_load` and the file as read."""
    from agent_core.agent import load

    raw = RawConfig.read(_config_path(args))
    config, plugins = load(raw)
    return config, plugins, raw


def cmd_serve(args: argparse.Namespace) -> int:
    from agent_core.agent import Agent
    from agent_core.files import exposed_files

    config, plugins, raw = _load_raw(args)
    _setup_logging(config.agent["log_level"], config.agent["log_file"])
    for warning in exposed_files(config, raw):
        log.warning("%s", warning)
    agent = Agent(config, plugins)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    def on_hangup(signum: int, _frame: Any) -> None:
        log.info("received SIGHUP: reloading the signing key")
        agent.signing.reload()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_hangup)
    agent.start()
    assert agent.server is not None
    print(f"pgwarden {__version__} listening on {agent.server.url}", flush=True)
    try:
        stop.wait()
    finally:
        agent.stop()
    log.info("stopped")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from agent_core.agent import open_store
    from agent_core.files import exposed_files

    config, plugins, raw = _load_raw(args)
    url = config.store_url()
    if url.startswith("sqlite:///"):
        # never opened here: opening creates the file (and its -wal, -shm) as
        # whoever checks, often root, and the agent's user then cannot write it
        note = _sqlite_store_state(url[len("sqlite:///") :], config)
        if note:
            print(note, file=sys.stderr)
    else:
        open_store(config, connect=True).dispose()
    for warning in exposed_files(config, raw):  # printed; the exit status stays 0
        print(f"warning: {warning}", file=sys.stderr)
    from agent_core.postgres import check

    unreachable = check(config.postgresql)  # ConfigError when the server refuses the settings
    if unreachable:
        print(
            f"warning: postgresql: cannot connect now (the agent answers 503 until it can): {unreachable}",
            file=sys.stderr,
        )
    print(f"{_config_path(args)}: OK (plugins: {', '.join(plugins.names) or 'none'})")
    return 0


#: Largest signing key document accepted from the UI (an RSA 4096 PEM is about 800 bytes).
MAX_KEY_BYTES = 65536


def fetch_key(url: str, insecure: bool = False, ca_file: str | None = None, timeout: float = 30) -> bytes:
    """``<url>/signing.key`` of a temboard UI, validated as an RSA public key."""
    import ssl
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    from agent_core.auth.signing import load_public_key

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise PgwardenError(f"{url!r}: give the UI's https:// URL (the key is only fetched over HTTPS)")
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    target = url.rstrip("/") + "/signing.key"
    try:
        with urllib.request.urlopen(target, timeout=timeout, context=context) as response:  # noqa: S310 https checked
            data = response.read(MAX_KEY_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise PgwardenError(f"{target}: the UI answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        hint = ""
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = " (a self-signed UI certificate: --ca-file with its CA, or --insecure)"
        raise PgwardenError(f"{target}: {reason}{hint}") from None
    if len(data) > MAX_KEY_BYTES:
        raise PgwardenError(f"{target}: more than {MAX_KEY_BYTES} bytes: not a public key")
    try:
        load_public_key(data)
    except ValueError as e:
        raise PgwardenError(f"{target}: {e}") from None
    return data


def write_key(path: str, data: bytes, force: bool) -> bool:
    """Write ``data`` to ``path`` atomically, mode 0644 (a public key: readable,
    writable by its owner only); False when the file already held it."""
    import tempfile

    if os.path.lexists(path):
        try:
            with open(path, "rb") as f:
                if f.read(MAX_KEY_BYTES + 1) == data:
                    return False
        except OSError:
            pass
        if not force:
            raise PgwardenError(f"{path} exists and holds another key: --force replaces it")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".signing-key-", dir=directory)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def cmd_fetch_key(args: argparse.Namespace) -> int:
    import hashlib

    from agent_core.auth.signing import load_public_key

    raw = RawConfig.read(_config_path(args)) if (args.config or os.path.exists(_config_path(args))) else RawConfig()
    configured = raw.get("signing", "public_key", os.environ)
    path = args.output or configured
    if not path:
        raise PgwardenError("no [signing] public_key in the config: give the file to write with --output")
    data = fetch_key(args.url, insecure=args.insecure, ca_file=args.ca_file)
    key = load_public_key(data)
    from cryptography.hazmat.primitives import serialization

    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    fingerprint = hashlib.sha256(der).hexdigest()
    written = write_key(path, data, args.force)
    state = "written to" if written else "unchanged in"
    print(f"signing key of {args.url} (RSA {key.key_size} bits, SHA-256 {fingerprint}) {state} {path}")
    if configured and os.path.abspath(configured) == os.path.abspath(path):
        print("a running agent uses it from its next signed request")
    else:
        print(f"set [signing] public_key = {os.path.abspath(path)} in the config, then restart the agent")
    return 0


def _sqlite_store_state(path: str, config: Any) -> str | None:
    """A note when the SQLite store does not exist yet (``serve`` creates it);
    ConfigError when it exists but this user cannot read and write it."""
    key = "agent.store" if config.agent["store"] else "agent.home"
    if not os.path.exists(path):
        return f"note: {path} does not exist yet: 'pgwarden serve' creates it (as the user it runs as)"
    if os.path.isdir(path):
        raise ConfigError([f"{key}: the operations store {path!r} is a directory"])
    if not os.access(path, os.R_OK | os.W_OK):
        raise ConfigError([f"{key}: the operations store {path!r} is not readable and writable by this user"])
    return None


def cmd_plugins(args: argparse.Namespace) -> int:
    from agent_core.config import enabled_plugins
    from agent_core.plugins import hook_arguments, hook_problems, hookimpls, implemented_hooks, installed, load

    try:
        enabled = enabled_plugins(RawConfig.read(_config_path(args)), os.environ)
    except ConfigError:
        if args.config:
            raise
        enabled = []
    found = installed()
    if not found:
        print("no plugin installed (entry-point group 'pgwarden')")
    width = max([len(n) for n in found] + [6]) + 2
    dist_width = max([len(f"{i.distribution} {i.version}") for i in found.values()] + [12]) + 2
    known = hook_arguments()
    for name, info in sorted(found.items()):
        state = "enabled" if name in enabled else "disabled"
        print(f"{name:<{width}}{info.distribution + ' ' + info.version:<{dist_width}}{state}")
        try:
            module = load(name)
        except Exception as e:  # the plugin's own import error, shown on its line
            print(f"    cannot import {info.value}: {type(e).__name__}: {e}")
            continue
        optional = {hook for _, hook, _, opts in hookimpls(module) if opts.get("optionalhook")}
        names = [
            hook if hook in known else f"{hook} ({'optional, not called' if hook in optional else 'unknown hook'})"
            for hook in implemented_hooks(module)
        ]
        print(f"    hooks: {', '.join(names) or 'none'}")
        for problem in hook_problems(name, module):  # what would refuse start-up
            print(f"    error: {problem}")
    for name in enabled:
        if name not in found:
            print(f"{name:<16} (not installed)  enabled in the config", file=sys.stderr)
    return 0


def _users(args: argparse.Namespace) -> Any:
    from agent_core.auth import UsersFile

    if args.users_file:
        return UsersFile(args.users_file)
    config, _ = _load(args)
    return UsersFile(config.users_path())


def _read_password(args: argparse.Namespace) -> str:
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Password again: "):
            raise PgwardenError("passwords do not match")
    if not password:
        raise PgwardenError("empty password")
    return password


def cmd_user(args: argparse.Namespace) -> int:
    args.users_file = args.action_users_file or args.users_file
    args.stdin = args.action_stdin or args.stdin
    users = _users(args)
    if args.action == "list":
        entries = users.load()
        width = max([len(n) for n in entries] + [4]) + 2
        for name in sorted(entries):
            print(f"{name:<{width}}{entries[name].role}")
        return 0
    if args.action == "delete":
        if not users.delete(args.username):
            raise PgwardenError(f"no user {args.username!r} in {users.path}")
        print(f"user {args.username!r} deleted")
        return 0
    exists = args.username in users.load()
    if args.action == "add" and exists:
        raise PgwardenError(f"user {args.username!r} exists: use 'pgwarden user passwd' or 'pgwarden user role'")
    if args.action in ("passwd", "role") and not exists:
        raise PgwardenError(f"no user {args.username!r}: use 'pgwarden user add'")
    try:
        if args.action == "role":
            users.set(args.username, None, args.role)
            print(f"user {args.username!r} now has the {args.role!r} role")
            return 0
        users.set(args.username, _read_password(args), getattr(args, "role", None))
    except ValueError as e:
        raise PgwardenError(str(e)) from None
    print(f"user {args.username!r} {'added' if args.action == 'add' else 'updated'} in {users.path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent_core.cli.demo import run_demo

    _setup_logging("INFO", "stderr")
    return run_demo(args.home, args.port, args.plugins)


def cmd_setup(args: argparse.Namespace) -> int:
    from agent_core.cli.setup import Setup

    return Setup(args).run()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgwarden", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--version", action="version", version=f"pgwarden {__version__}")
    p.add_argument(
        "-c",
        "--config",
        help="config file (default: $PGWARDEN_CONFIG or %(default)s)".replace("%(default)s", DEFAULT_CONFIG),
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser(
        "serve",
        help="run the agent in the foreground",
        description="Run the agent in the foreground. SIGTERM or SIGINT stops it gracefully: "
        "it stops accepting connections, lets running operations finish for a few seconds, "
        "cancels the rest and exits 0.",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser(
        "check-config",
        help="validate the config file and plugins, then exit",
        description="Validate the config file and the enabled plugins, check the operations store "
        "(a SQLite file is checked, never created: 'serve' creates it; another store is connected to) and "
        "PostgreSQL. Creates no file or directory. "
        "Prints every problem as section.key: reason and exits 2, or prints OK and exits 0. "
        "Also warns (on standard error, exit status unchanged) about files other OS users can read: "
        "a config file holding the key or a password, the users file, the store, the TLS key, the log file.",
    )
    s.set_defaults(func=cmd_check_config)

    s = sub.add_parser(
        "fetch-key",
        help="fetch the temboard UI's signing key (temboard 8.0 and later)",
        description="Fetch <ui-url>/signing.key (the public key the temboard UI 8.0 and later signs its "
        "requests with), check that it is an RSA public key and write it to [signing] public_key "
        "(or --output), mode 0644, atomically. An existing different key is kept unless --force. "
        "The UI's certificate is checked against the system's CAs, or --ca-file; --insecure skips "
        "the check (then compare the printed fingerprint with the UI's: temboard's own key file). "
        "A running agent reloads the key file when it changes, and on SIGHUP.",
    )
    s.add_argument("url", help="the UI's address, as https://temboard.example:8888")
    verify = s.add_mutually_exclusive_group()
    verify.add_argument("--insecure", action="store_true", help="do not verify the UI's TLS certificate")
    verify.add_argument("--ca-file", help="CA file to verify the UI's TLS certificate with")
    s.add_argument("--force", action="store_true", help="replace an existing different key")
    s.add_argument("--output", help="file to write (default: [signing] public_key of the config)")
    s.set_defaults(func=cmd_fetch_key)

    s = sub.add_parser(
        "plugins",
        help="list installed plugins: distribution, version, enabled or not, hooks",
        description="List the plugins installed in the 'pgwarden' entry-point group, with their "
        "distribution and version, whether the config enables them, and the hooks each implements. "
        "To find its hooks, every installed plugin is imported (the agent itself imports only the "
        "enabled ones); an import failure is shown on the plugin's line.",
    )
    s.set_defaults(func=cmd_plugins)

    s = sub.add_parser(
        "user",
        help="manage the users file (add, passwd, role, delete, list)",
        description="Manage API users. Passwords are read from a prompt, or from the first line "
        "of standard input when it is not a terminal (or with --stdin); never from arguments. "
        "A user has the role 'admin' (every route) or 'read' (GET routes only: no kill, no "
        "scheduling, no cancel). Changes apply at once, also to open sessions.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--users-file", dest="action_users_file", help="users file (default: [agent] users of the config)"
    )
    common.add_argument(
        "--stdin", dest="action_stdin", action="store_true", help="read the password from standard input"
    )
    s.add_argument("--users-file", help="users file (default: [agent] users of the config)")
    s.add_argument("--stdin", action="store_true", help="read the password from standard input")
    s.set_defaults(func=cmd_user)
    user_sub = s.add_subparsers(dest="action", metavar="ACTION")
    user_sub.required = True
    # the options work before or after the action (merged in cmd_user)
    for action, text in (("add", "add a user"), ("passwd", "change a user's password"), ("delete", "delete a user")):
        a = user_sub.add_parser(action, help=text, description=text.capitalize() + ".", parents=[common])
        a.add_argument("username")
        if action == "add":
            a.add_argument(
                "--role", choices=list(ROLES), default="admin", help="admin (default): every route; read: GET only"
            )
    a = user_sub.add_parser("role", help="change a user's role", description="Change a user's role.", parents=[common])
    a.add_argument("username")
    a.add_argument("role", choices=list(ROLES), help="admin: every route; read: GET routes only")
    user_sub.add_parser("list", help="list users and roles", description="List user names and roles.", parents=[common])

    s = sub.add_parser(
        "demo",
        help="start a throwaway PostgreSQL and an agent with a demo user",
        description="Create a throwaway PostgreSQL cluster, a config with the given plugins, "
        "a user and an agent on 127.0.0.1, print the URL, credentials and curl examples, "
        "and serve until interrupted (the cluster is then removed).",
    )
    s.add_argument("--home", default=".demo", help="directory for the demo's files (default: %(default)s)")
    s.add_argument("--port", type=int, default=2345, help="agent port (default: %(default)s)")
    s.add_argument(
        "--plugins", default="activity,maintenance,dashboard", help="plugins to enable (default: %(default)s)"
    )
    s.set_defaults(func=cmd_demo)

    from agent_core.cli.setup import add_arguments

    s = sub.add_parser(
        "setup",
        help="set up an agent for a local PostgreSQL cluster (run as root)",
        description="Set up an agent for a PostgreSQL cluster of this host: config file, TLS certificate, "
        "state directory owned by the cluster's OS user, admin user with a generated password (printed once), "
        "optionally a least-privilege PostgreSQL role, and the systemd unit pgwarden@<instance>. Each step is "
        "printed as it happens; what exists is left alone (a second run changes nothing; --force redoes it).",
    )
    add_arguments(s)
    s.set_defaults(func=cmd_setup)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"pgwarden: configuration is not valid ({len(e.problems)} problem(s)):", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except StartupError as e:
        print(f"pgwarden: cannot start: {e}", file=sys.stderr)
        return 2
    except PgwardenError as e:
        print(f"pgwarden: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # an operator sees one line; the traceback goes to the log at DEBUG
        log.debug("unexpected error", exc_info=True)
        print(f"pgwarden: unexpected error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

