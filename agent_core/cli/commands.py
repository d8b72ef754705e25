"""The handlers of ``pgwarden serve``, ``check-config``, ``plugins``, ``demo``
and ``setup``, and what they share: the config path, loading, logging.

``user`` is in :mod:`~agent_core.cli.users`, ``fetch-key`` in
:mod:`~agent_core.cli.signing_key`; the parser in :mod:`~agent_core.cli.main`.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import sys
import threading
from typing import Any

from agent_core import __version__
from agent_core.config import DEFAULT_CONFIG, RawConfig
from agent_core.errors import ConfigError
from agent_core.files import private_opener

log = logging.getLogger("pgwarden")


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


def cmd_demo(args: argparse.Namespace) -> int:
    from agent_core.cli.demo import run_demo

    _setup_logging("INFO", "stderr")
    return run_demo(args.home, args.port, args.plugins)


def cmd_setup(args: argparse.Namespace) -> int:
    from agent_core.cli.setup import Setup

    return Setup(args).run()
