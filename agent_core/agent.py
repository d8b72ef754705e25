"""The agent: configuration, plugins, store, PostgreSQL, scheduler and HTTP, put together.

Plugins receive the :class:`Agent` in their hooks and use:

``agent.config``
    :class:`~agent_core.config.Config`; ``agent.config.section("<plugin>")``
    holds the plugin's own options.
``agent.postgres``
    :class:`~agent_core.postgres.Postgres`, the connection helper.
``agent.store``
    :class:`~agent_core.store.Store` (SQLAlchemy engine of the operations store).
``agent.scheduler``
    :class:`~agent_core.operations.scheduler.Scheduler`.
``agent.stash``
    :class:`~agent_core.stash.Stash`, the plugins' per-agent state, typed
    by :class:`~agent_core.stash.StashKey` (``agent.stash[KEY] = value``).
``agent.plugin_names``, ``agent.version``, ``agent.started_at``.
``agent.notify(username, message)``
    Record an entry of the audit log that ``GET /notifications`` answers
    (the temboard UI shows it as the instance's notifications): call it
    after an action that changes the instance (a backend terminated, an
    operation scheduled or canceled), with ``request.requester`` as
    ``username`` and a short English sentence as ``message``, such as
    ``"Backend 4242 terminated"``. The core records logins and logouts
    itself. The newest ``[agent] notifications_max`` entries are kept, none
    older than ``[agent] notifications_max_age`` seconds. It never raises: a
    store failure is logged, the action stands.
``agent.notify_many(username, messages)``
    The same for several entries, in one write (a kill of many backends).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from agent_core import __version__, interfaces, redaction
from agent_core.auth import Auth, Gate, UsersFile
from agent_core.auth.signing import Signing
from agent_core.config import (
    Config,
    RawConfig,
    agent_schema,
    enabled_plugins,
    postgresql_schema,
    signing_schema,
    validate,
)
from agent_core.errors import ConfigError, StartupError, first_line
from agent_core.metrics import Metrics
from agent_core.operations.scheduler import Scheduler
from agent_core.plugins import Plugins, installed, load_enabled
from agent_core.postgres import Postgres
from agent_core.stash import Stash
from agent_core.store import Store, add_notifications
from agent_core.web import discovery
from agent_core.web.app import Middleware, build_app
from agent_core.web.server import Server
from agent_core.web.views import CoreViews, core_routes

log = logging.getLogger("pgwarden")


def load(
    raw: RawConfig,
    modules: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, Plugins]:
    """Validate the configuration and load plugins, without side effects.

    ``modules`` gives the plugins explicitly (name -> module), bypassing entry
    points (tests); otherwise the enabled ones are imported from entry points.
    """
    environ = os.environ if environ is None else environ
    enabled = enabled_plugins(raw, environ)
    problems: list[str] = []
    if modules is None:
        modules, problems = load_enabled(enabled)
        # sections of plugins not loaded (disabled, or failed above) are not checked
        ignored = [name for name in [*installed(), *enabled] if name not in modules]
    else:
        ignored = [
            name for name in raw.sections if name not in modules and name not in ("agent", "postgresql", "signing")
        ]
        ignored = [name for name in ignored if name in installed()]
    plugins = Plugins(modules)
    schemas = [agent_schema(), postgresql_schema(), signing_schema(), *plugins.config_schemas()]
    try:
        config = validate(raw, schemas, environ, ignored_sections=ignored)
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from None
    if problems:
        raise ConfigError(problems)
    return config, plugins


def open_store(config: Config, connect: bool = False) -> Store:
    """The operations store of ``config``; ConfigError naming the key when it
    cannot be created (or, with ``connect``, reached)."""
    try:
        store = Store(config.store_url())
    except OSError as e:
        raise ConfigError([f"{_store_key(config)}: cannot create the operations store: {e.strerror or e}"]) from None
    if connect:
        try:
            store.check()
        except (sa.exc.SQLAlchemyError, OSError) as e:
            store.dispose()
            raise _unreachable(config, store, e) from None
    return store


def _store_key(config: Config) -> str:
    """The key an operator fixes when the store fails: the URL, or the home holding the default one."""
    return "agent.store" if config.agent["store"] else "agent.home"


def _unreachable(config: Config, store: Store, error: BaseException) -> ConfigError:
    return ConfigError([f"{_store_key(config)}: cannot connect to {store.safe_url}: {first_line(error)}"])


class Agent:
    def __init__(self, config: Config, plugins: Plugins):
        self.config = config
        self.plugins = plugins
        self.plugin_names = list(plugins.names)
        self.version = __version__
        self.started_at = time.time()
        #: The plugins' per-agent state (see :mod:`agent_core.stash`).
        self.stash = Stash()
        settings = config.agent
        redaction.register(settings["key"])  # never in a log line, however a client spells it
        self.store = open_store(config)
        self.postgres = Postgres(config.postgresql)
        self.auth = Auth(
            self.store,
            UsersFile(config.users_path()),
            settings["key"],
            settings["session_idle"],
            settings["session_lifetime"],
            login_concurrency=settings["login_concurrency"],
            login_failures=settings["login_failures"],
        )
        self.signing = Signing(config.section("signing"), listen=self._listening)
        self.status_facts = discovery.StatusFacts(self)
        self.scheduler = Scheduler(
            self.store,
            self,
            workers=settings["scheduler_workers"],
            grace=settings["scheduler_grace"],
            retention=settings["scheduler_retention"],
            retention_count=settings["scheduler_retention_count"],
            pending_max=settings["scheduler_pending_max"],
        )
        self.metrics = Metrics(self)
        self.metrics.fronts = lambda: self.server.fronts if self.server is not None else []
        self.auth.observe_login = self.metrics.login
        self.scheduler.observe_end = self.metrics.operation_ended
        self.server: Server | None = None
        self.app: Any = None
        self._started = False

    def _listening(self) -> tuple[list[str], int]:
        """The listen addresses and port (what a signed Host must name)."""
        if self.server is None:
            return list(self.config.agent["address"]), int(self.config.agent["port"])
        return list(self.server.addresses), self.server.port

    @classmethod
    def from_config(
        cls, raw: RawConfig, modules: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> Agent:
        config, plugins = load(raw, modules, environ)
        return cls(config, plugins)

    def setup(self) -> None:
        """Create tables, register tasks and routes, run start-up hooks."""
        metadata = self.plugins.db_metadata()
        try:
            self.store.create(*metadata)
        except (sa.exc.SQLAlchemyError, OSError) as e:
            raise _unreachable(self.config, self.store, e) from None
        for task in self.plugins.tasks(self):
            self.scheduler.register(task)
        self.metrics.tasks_registered(self.scheduler.tasks)
        routes = self.plugins.routes(self)
        tops = [route.path + "/" for route in routes if route.method == "GET" and route.path.count("/") == 1]
        gate = Gate(self.auth, self.signing, self.config.agent)
        views = CoreViews(self.auth, self.signing, self.status_facts, self.metrics)
        app = build_app(self, gate, core_routes(views), routes)
        self.app = Middleware(app, self.config.agent["cors_origin"], tops, self.metrics)
        for plugin, collector in self.plugins.metrics(self):
            self.metrics.add_plugin_collectors(plugin, [collector])
        self.plugins.startup(self)

    def start(self) -> None:
        """Set up, start the scheduler, bind and serve (in background threads)."""
        self.setup()
        self._started = True
        try:
            self.scheduler.start()
            self.server = Server(self.app, self.config.agent)
            try:
                self.server.start()
            except OSError as e:
                raise StartupError(f"cannot listen on {e.strerror or e}") from None
        except BaseException:
            self.stop()
            raise
        log.info(
            "pgwarden %s listening on %s (plugins: %s)",
            __version__,
            self.server.url,
            ", ".join(self.plugin_names) or "none",
        )

    def notify(self, username: str, message: str) -> None:
        """Record an audit log entry (``GET /notifications``); never raises."""
        self.notify_many(username, [message])

    def notify_many(self, username: str, messages: list[str]) -> None:
        """Record audit log entries in one write; never raises (a failure is logged, in one short line)."""
        settings = self.config.agent
        try:
            add_notifications(
                self.store, username, messages, settings["notifications_max"], settings["notifications_max_age"]
            )
        except Exception as e:
            what = f"the notification {messages[0][:200]!r}" if len(messages) == 1 else f"{len(messages)} notifications"
            log.error("could not record %s of %r: %s", what, username, first_line(e))

    def stop(self) -> None:
        """Stop accepting requests, stop the scheduler, run shutdown hooks."""
        if self.server is not None:
            self.server.stop()
            self.server = None
        self.scheduler.stop()
        if self._started:
            self.plugins.shutdown(self)
            self._started = False
        self.postgres.close()
        self.store.dispose()


def _conforms(agent: Agent) -> interfaces.Agent:
    """Never called: mypy checks here that :class:`Agent` is what plugins are told it is."""
    return agent
