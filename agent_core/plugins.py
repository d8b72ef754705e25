"""Finding, loading and calling plugins: a typed facade over pluggy.

Plugins are entry points of the ``pgwarden`` group; the entry-point name is the
plugin's name. Only enabled plugins are imported. No code outside this module
touches ``pm.hook``: callers use the typed methods of :class:`Plugins`, which
call each plugin's hook separately (so results are attributed to a plugin)
and validate what comes back in one place.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy
import sqlalchemy as sa

from . import hookspecs
from .config import SectionSchema
from .errors import StartupError
from .hookspecs import Route, TaskType

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("pgwarden.plugins")
trace_log = logging.getLogger("pgwarden.hooks")

GROUP = "pgwarden"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED = (
    "agent",
    "postgresql",
    "signing",
    "login",
    "logout",
    "profile",
    "status",
    "discover",
    "notifications",
    "core",
    "metrics",
)
TRACE_ENV = "PGWARDEN_TRACE_HOOKS"


@dataclass(frozen=True)
class Installed:
    """An installed plugin, as its entry point says (not imported)."""

    name: str
    distribution: str
    version: str
    value: str


def installed() -> dict[str, Installed]:
    """Installed plugins by name, without importing any of them."""
    out: dict[str, Installed] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        out[ep.name] = Installed(
            ep.name,
            dist.metadata["Name"] if dist is not None else "?",
            dist.version if dist is not None else "?",
            ep.value,
        )
    return out


def load(name: str) -> Any:
    """Import the installed plugin ``name`` (its entry point's object)."""
    ep = next(e for e in metadata.entry_points(group=GROUP) if e.name == name)
    return ep.load()


def hook_arguments() -> dict[str, list[str]]:
    """Every hook of :class:`~agent_core.hookspecs.AgentSpec`, in the order
    they are declared (the order the core calls them), with its arguments."""
    out = {}
    for name, fn in vars(hookspecs.AgentSpec).items():
        if hasattr(fn, f"{hookspecs.PROJECT}_spec"):
            out[name] = [p for p in inspect.signature(fn).parameters if p != "self"]
    return out


def implemented_hooks(module: Any) -> dict[str, Any]:
    """The ``@hookimpl`` functions of ``module`` by hook name (known hooks or
    not): known hooks first in their calling order, then unknown ones."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    found = {}
    for attr in dir(module):
        opts = pm.parse_hookimpl_opts(module, attr)
        if opts is not None:
            found[opts.get("specname") or attr] = getattr(module, attr)
    order = list(hook_arguments())
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def hook_problems(name: str, module: Any) -> list[str]:
    """Misspelled hooks and hook arguments of plugin ``name``, as start-up errors."""
    specs = hook_arguments()
    problems = []
    for hook, fn in implemented_hooks(module).items():
        if hook not in specs:
            close = difflib.get_close_matches(hook, specs, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"plugin {name!r}: unknown hook {hook}{hint}; the hooks are {', '.join(specs)}")
            continue
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue  # not introspectable: pluggy will say
        args = list(params)
        unknown = [a for a in args if a not in specs[hook]]
        defaults = [a for a, p in params.items() if p.default is not p.empty]
        if unknown:
            problems.append(
                f"plugin {name!r}: {hook}({', '.join(args)}): unknown argument(s) {', '.join(unknown)}; "
                f"the hook is {hook}({', '.join(specs[hook])})"
            )
        elif defaults:  # pluggy would never pass them: the default would always be used
            problems.append(
                f"plugin {name!r}: {hook}: argument(s) {', '.join(defaults)} must not have a default value "
                "(the core would never pass them)"
            )
    return problems


def load_enabled(enabled: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Import exactly the enabled plugins.

    Returns the modules that loaded and, as ``agent.plugins: ...`` problems,
    the plugins that are not installed (naming the installed ones) or failed
    to import (naming the plugin and its distribution), so that they are
    reported together with every other configuration problem.
    """
    available = installed()
    problems = []
    modules: dict[str, Any] = {}
    for name in enabled:
        if name not in available:
            names = ", ".join(sorted(available)) or "none"
            problems.append(f"agent.plugins: plugin {name!r} is not installed (installed: {names})")
            continue
        info = available[name]
        try:
            modules[name] = load(name)
        except Exception as e:
            problems.append(
                f"agent.plugins: plugin {name!r} (distribution {info.distribution} {info.version}) "
                f"failed to import: {type(e).__name__}: {e}"
            )
    return modules, problems


class Plugins:
    """The plugin manager of one agent, with typed hook calls."""

    def __init__(self, modules: Mapping[str, Any]):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.AgentSpec)
        self.names: list[str] = []
        for name, module in modules.items():
            if not NAME_RE.match(name) or name in RESERVED:
                raise StartupError(f"plugin name {name!r} is not allowed (lowercase letters, digits, _; not reserved)")
            problems = hook_problems(name, module)
            if problems:
                raise StartupError("\n".join(problems))
            try:
                self.pm.register(module, name=name)
            except pluggy.PluginValidationError as e:
                raise StartupError(f"plugin {name!r}: {e}") from None
            self.names.append(name)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise StartupError(f"plugin {getattr(e.plugin, '__name__', '?')!r}: {e}") from None
        self.trace = bool(os.environ.get(TRACE_ENV))

    def _call(self, plugin: str, hook: str, **kwargs: Any) -> list[Any]:
        """Call ``hook`` of one plugin only; wrap failures with its name.

        The core calls each plugin separately so that what comes back is
        attributed to (and validated for) the plugin that returned it.
        """
        impls = [i for i in getattr(self.pm.hook, hook).get_hookimpls() if i.plugin_name == plugin]
        results = []
        for impl in impls:
            args = {name: kwargs[name] for name in impl.argnames}
            if self.trace:
                trace_log.info("hook %s.%s(%s)", plugin, hook, ", ".join(args))
            try:
                result = impl.function(**args)
            except StartupError as e:
                raise StartupError(f"plugin {plugin!r}: {e}") from None
            except Exception as e:
                log.exception("plugin %r failed in %s", plugin, hook)
                raise StartupError(f"plugin {plugin!r} failed in {hook}: {type(e).__name__}: {e}") from None
            if self.trace:
                trace_log.info("hook %s.%s returned %r", plugin, hook, result)
            if result is not None:
                results.append(result)
        return results

    # -- typed hooks ---------------------------------------------------

    def config_schemas(self) -> list[SectionSchema]:
        out = []
        for name in self.names:
            schema = SectionSchema(name)
            self._call(name, "agent_add_config", schema=schema)
            out.append(schema)
        return out

    def db_metadata(self) -> list[sa.MetaData]:
        out, problems = [], []
        for name in self.names:
            for md in self._call(name, "agent_db_metadata"):
                if md is None:
                    continue
                if not isinstance(md, sa.MetaData):
                    problems.append(f"plugin {name!r}: agent_db_metadata must return a sqlalchemy.MetaData")
                    continue
                for table in md.tables:
                    if not table.startswith(f"{name}_"):
                        problems.append(f"plugin {name!r}: table {table!r} must start with '{name}_'")
                out.append(md)
        if problems:
            raise StartupError("\n".join(problems))
        return out

    def _registered(self, hook: str, kind: type[Route] | type[TaskType], agent: Agent) -> list[tuple[str, Any]]:
        out, problems = [], []
        for name in self.names:
            for result in self._call(name, hook, agent=agent):
                for item in result or []:
                    if not isinstance(item, kind):
                        problems.append(f"plugin {name!r}: {hook} must return a list of {kind.__name__}")
                        continue
                    problems.extend(f"plugin {name!r}: {p}" for p in item.problems(name))
                    out.append((name, item))
        if problems:
            raise StartupError("\n".join(problems))
        return out

    def routes(self, agent: Agent) -> list[Route]:
        seen: dict[tuple[str, str], str] = {}
        problems = []
        routes = []
        for name, route in self._registered("agent_register_routes", Route, agent):
            sig = (route.method, re.sub(r"<[^>]*>", "<>", route.path))
            if sig in seen:
                problems.append(
                    f"plugin {name!r}: route {route.method} {route.path} is already registered by {seen[sig]!r}"
                )
                continue
            seen[sig] = name
            routes.append(route)
        if problems:
            raise StartupError("\n".join(problems))
        return routes

    def tasks(self, agent: Agent) -> list[TaskType]:
        seen: set[str] = set()
        tasks = []
        for name, task in self._registered("agent_register_tasks", TaskType, agent):
            if task.name in seen:
                raise StartupError(f"plugin {name!r}: task {task.name!r} registered twice")
            seen.add(task.name)
            tasks.append(task)
        return tasks

    def metrics(self, agent: Agent) -> list[tuple[str, Any]]:
        """(plugin, collector) pairs of every plugin's ``agent_metrics``; a
        collector without a ``collect()`` method refuses start-up."""
        out, problems = [], []
        for name in self.names:
            for result in self._call(name, "agent_metrics", agent=agent):
                if not isinstance(result, (list, tuple)):
                    problems.append(f"plugin {name!r}: agent_metrics must return a list of collectors")
                    continue
                for item in result:
                    if not callable(getattr(item, "collect", None)):
                        problems.append(f"plugin {name!r}: agent_metrics returned {item!r}, which has no collect()")
                        continue
                    out.append((name, item))
        if problems:
            raise StartupError("\n".join(problems))
        return out

    def startup(self, agent: Agent) -> None:
        """Run every plugin's start-up; if one refuses, shut down (in reverse
        order) those already started, then raise."""
        started: list[str] = []
        for name in self.names:
            try:
                self._call(name, "agent_startup", agent=agent)
            except StartupError:
                for done in reversed(started):
                    self._shutdown_one(agent, done)
                raise
            started.append(name)

    def shutdown(self, agent: Agent) -> None:
        for name in reversed(self.names):
            self._shutdown_one(agent, name)

    def _shutdown_one(self, agent: Agent, name: str) -> None:
        try:
            self._call(name, "agent_shutdown", agent=agent)
        except StartupError as e:
            log.error("%s", e)
