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
    :class:`~agent_core.scheduler.Scheduler`.
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

from . import __version__, discovery, openapi, paging, redaction
from .auth import INVALID_SIGNATURE, Auth, UsersFile
from .config import Config, RawConfig, agent_schema, enabled_plugins, postgresql_schema, signing_schema, validate
from .errors import ConfigError, InvalidInput, MalformedParameter, StartupError, first_line
from .hookspecs import Route
from .http import Middleware, Request, build_app
from .metrics import Metrics
from .plugins import Plugins, installed, load_enabled
from .postgres import Postgres
from .responses import Response
from .scheduler import Scheduler
from .server import Server
from .signing import Signing
from .stash import Stash
from .store import Store, add_notifications, list_notifications

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
        self.app = Middleware(
            build_app(self, core_routes(), routes), self.config.agent["cors_origin"], tops, self.metrics
        )
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


# -- core routes --------------------------------------------------------------


def login(request: Request) -> dict[str, Any]:
    """POST /login {"username", "password"} -> {"session": "<64 hex>"}.

    200 session created; 400 body not JSON, or user name longer than 64
    characters (refused before any hash); 406 parameter missing or not a
    string; 401 wrong credentials; 429 too many failures (Retry-After); 503
    too many logins at once (Retry-After). See :mod:`agent_core.auth`.
    """
    body = request.json()
    if not isinstance(body, dict):
        raise InvalidInput("Request body must be a JSON object.")
    for name in ("username", "password"):
        if not isinstance(body.get(name), str):
            raise MalformedParameter(name)
    token = request.agent.auth.login(body["username"], body["password"], request.remote_addr)
    request.agent.notify(body["username"], "Login")
    return {"session": token}


def logout(request: Request) -> dict[str, Any]:
    """GET /logout -> {"logout": true}: ends the current session. 200; 401; 406."""
    request.agent.auth.logout(request.header("X-Session") or "")
    request.agent.notify(request.requester, "Logout")
    return {"logout": True}


def profile(request: Request) -> dict[str, Any]:
    """GET /profile -> {"username": ..., "role": "admin"|"read"}. 200; 401; 406."""
    return {"username": request.username, "role": request.role}


#: The user name a read user sees in place of another user's (never a valid user name).
HIDDEN_USER = "(hidden)"


def sees_details(request: Request) -> bool:
    """Whether the client is shown the instance's details: the data directory
    in GET /discover, other users' names in GET /notifications. Users of the
    ``admin`` role, the agent key and signed requests (temboard registers an
    agent with GET /discover and the key or its signature alone, and keeps
    ``pg_data``) always; users of
    the ``read`` role only with ``[agent] read_role_sees_details``."""
    return (
        request.role == "admin"
        or request.auth in ("key", "signature")
        or request.agent.config.agent["read_role_sees_details"]
    )


def notifications(request: Request) -> Any:
    """GET /notifications[?limit=N&cursor=C] -> [{"date": "YYYY-MM-DDTHH:MM:SS", "username", "message"}, ...]

    The audit log, newest first (dates in UTC): logins, logouts and what
    plugins record with :meth:`Agent.notify` (backends terminated,
    operations scheduled and canceled). Session or agent key (the temboard
    UI sends both), ``read`` permission. A user of the ``read`` role sees
    other requesters as ``(hidden)`` unless ``[agent] read_role_sees_details``.
    Paginated (see :mod:`agent_core.paging`): at most ``limit`` entries
    (default ``[agent] listing_limit_default``); ``X-Next-Cursor`` and
    ``Link: <...>; rel="next"`` when there are more. 200; 400 ``limit`` or
    ``cursor`` malformed; 401 invalid session or key; 406 ``X-Session`` malformed.
    """
    page = paging.page(request)
    before = None
    if page.cursor is not None:
        if not page.cursor.isdigit() or len(page.cursor) > 18:
            raise paging.bad_cursor()
        before = int(page.cursor)
    entries, next_id = visible_notifications(request, page.limit, before)
    return paging.answer(request, entries, page.limit, None if next_id is None else str(next_id))


def visible_notifications(
    request: Request, limit: int, before: int | None = None
) -> tuple[list[dict[str, str]], int | None]:
    """The audit log as the client of ``request`` may see it (other users
    ``(hidden)`` for a read user unless ``[agent] read_role_sees_details``):
    at most ``limit`` entries, newest first, older than entry ``before``;
    with the id to pass as ``before`` for the next ones (None: no more).
    For plugins that show the audit log in their own answers (the dashboard)."""
    entries, next_id = list_notifications(request.agent.store, limit, before)
    if not sees_details(request):
        for entry in entries:
            if entry["username"] != request.requester:
                entry["username"] = HIDDEN_USER
    return entries, next_id


NOTIFICATIONS_OPENAPI = {
    "responses": openapi.ok(
        {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["date", "username", "message"],
                "properties": {
                    "date": {"type": "string", "description": "UTC, YYYY-MM-DDTHH:MM:SS"},
                    "username": {
                        "type": "string",
                        "description": "the session's user, or key; (hidden) for another requester"
                        " when a read user asks, unless [agent] read_role_sees_details",
                    },
                    "message": {"type": "string"},
                },
            },
        },
        "The audit log, newest first.",
    )
}
NOTIFICATIONS_OPENAPI = paging.openapi(NOTIFICATIONS_OPENAPI)


def status(request: Request) -> Any:
    """GET /status (public): version, uptime in seconds, liveness. 200.

    With signed requests enabled (``[signing] public_key``), also the
    temboard UI 9.x objects ``postgres``, ``temboard`` and ``system``
    (``postgres.pending_restart``: the UI's "restart needed" banner) and the
    ``X-TemBoard-Discover-ETag`` header (:mod:`agent_core.discovery`).
    """
    agent = request.agent
    body: dict[str, Any] = {"alive": True, "version": __version__, "uptime": round(time.time() - agent.started_at, 3)}
    if not agent.signing.enabled:
        return body
    facts = agent.status_facts.get()
    body.update(discovery.status_nested(agent, facts, agent.started_at))
    return Response(body, headers={"X-TemBoard-Discover-ETag": facts["etag"]} if facts and facts.get("etag") else {})


def discover(request: Request) -> Any:
    """GET /discover: host and PostgreSQL facts. 200; 401; 406; 503 PostgreSQL down.

    Signed requests (the temboard UI 8.0 and later) get the nested 9.x
    document with an ``ETag`` and ``signature_status`` (``valid``, or
    ``invalid`` with no facts when the signature is refused); every other
    client (sessions, the agent key: the temboard UI 7.11) the flat 7.x one.

    ``pg_local`` says whether PostgreSQL runs on the agent's host and
    ``pg_local_reason`` why (see :meth:`Postgres.locality`). When it does not
    (a managed database, another machine), ``cpu`` and ``memory_size`` are
    null (they would describe the agent's host, not the database's) and so are
    the per-process metrics of plugins. ``pg_data`` is null for a user of the
    ``read`` role unless ``[agent] read_role_sees_details`` (and for a role
    PostgreSQL does not show ``data_directory`` to).
    """
    agent = request.agent
    if request.auth == INVALID_SIGNATURE:
        return discovery.invalid_document()
    pg = discovery.postgres_facts(agent)
    locality = agent.postgres.locality()
    reason = locality.reason
    if not locality.local:
        reason += ": PostgreSQL's host cannot be read from here, so its CPU, memory and per-process metrics are null"
    if request.auth != "signature":
        return discovery.flat(agent, pg, locality.local, reason, sees_details(request))
    document = discovery.nested(agent, pg, locality.local, reason)
    tag = discovery.etag(document)
    if not sees_details(request):
        document["postgres"]["data_directory"] = None
        document["temboard"]["configfile"] = None
    document["signature_status"] = "valid"
    return Response(document, headers={"ETag": tag})


def metrics(request: Request) -> Response:
    """GET /metrics: the Prometheus text exposition format (OpenMetrics when
    the ``Accept`` header asks for ``application/openmetrics-text``) of the
    agent's metrics and its plugins' (docs/metrics.md). Session, agent key
    (``?key=``, key headers, or ``Authorization: Bearer <key>``), ``read``
    permission; with ``[agent] metrics_loopback_open``, no credential from
    loopback. 200; 401 invalid session or key; 406 ``X-Session`` malformed.
    """
    body, content_type = request.agent.metrics.render(request.header("Accept"))
    return Response(data=body, content_type=content_type)


def core_routes() -> list[tuple[Route, bool]]:
    """(route, public) pairs of the core. Only the core can make a route public."""
    return [
        (Route("POST", "/login", login, permission="read", openapi=openapi.LOGIN), True),
        (Route("GET", "/status", status, openapi=openapi.STATUS), True),
        (Route("GET", "/logout", logout, permission="read", openapi=openapi.LOGOUT), False),
        (Route("GET", "/profile", profile, openapi=openapi.PROFILE), False),
        (Route("GET", "/notifications", notifications, key=True, openapi=NOTIFICATIONS_OPENAPI), False),
        (Route("GET", "/discover", discover, key=True, openapi=openapi.DISCOVER), False),
        # authenticated like /discover: the document names the enabled plugins and every route
        (Route("GET", "/openapi.json", openapi.view, key=True, openapi=openapi.OPENAPI), False),
        (Route("GET", "/metrics", metrics, key=True, openapi=openapi.METRICS), False),
    ]
