"""The ``pgwarden`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from agent_core import __version__
from agent_core.cli.commands import (
    PrivateFileHandler,
    cmd_check_config,
    cmd_demo,
    cmd_plugins,
    cmd_serve,
    cmd_setup,
)
from agent_core.cli.signing_key import MAX_KEY_BYTES, cmd_fetch_key, fetch_key, write_key
from agent_core.cli.users import cmd_user
from agent_core.config import DEFAULT_CONFIG
from agent_core.errors import ConfigError, PgwardenError, StartupError
from agent_core.roles import ROLES

# the handlers moved to commands, signing_key and users stay importable from here
__all__ = [
    "DESCRIPTION",
    "MAX_KEY_BYTES",
    "PrivateFileHandler",
    "cmd_check_config",
    "cmd_demo",
    "cmd_fetch_key",
    "cmd_plugins",
    "cmd_serve",
    "cmd_setup",
    "cmd_user",
    "fetch_key",
    "main",
    "parser",
    "write_key",
]

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
