"""Calling plugins: a typed facade over pluggy.

No code outside this package touches ``pm.hook``: callers use the typed
methods of :class:`Plugins`, which call each hook once through pluggy (so
every hookimpl option pluggy documents, ``tryfirst``, ``trylast``,
``wrapper``, ``hookwrapper``, ``optionalhook`` and ``specname``, behaves as
pluggy documents) and validate what comes back in one place.

Attribution: each plugin is registered as a proxy whose hookimpls wrap the
plugin's functions (:func:`functools.wraps`, same hookimpl options, same
arguments). The wrapper names the plugin in any exception and records which
plugin returned each result, so that what comes back is still validated for
(and errors name) the plugin that returned it. Wrapper hookimpls are wrapped
by a delegating generator that attributes what the wrapper *adds* to the
result (an item no hookimpl returned) to the wrapper's plugin.

Tracing: ``PGWARDEN_TRACE_HOOKS=1`` logs every hook call and its results.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import re
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy
import sqlalchemy as sa

from agent_core import hookspecs
from agent_core.config import SectionSchema
from agent_core.errors import StartupError
from agent_core.plugins.problems import NAME_RE, RESERVED, hook_problems, hookimpls
from agent_core.registrations import Route, TaskType

if TYPE_CHECKING:
    from agent_core.interfaces import Agent

log = logging.getLogger("pgwarden.plugins")
trace_log = logging.getLogger("pgwarden.hooks")

TRACE_ENV = "PGWARDEN_TRACE_HOOKS"


def _positional(fn: Any) -> list[str]:
    """The arguments pluggy passes to ``fn``, in order (as pluggy reads them:
    through ``__wrapped__``, without a bound ``self``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in params if p.kind in kinds and p.default is p.empty]


#: A stand-in passed to pluggy for an argument each plugin receives its own
#: value of (``schema`` of ``agent_add_config``); the attributing wrappers
#: replace it with the plugin's own value.
class _PerPlugin:
    def __repr__(self) -> str:
        return "<each plugin's own>"


PER_PLUGIN: Any = _PerPlugin()


@dataclass
class _Call:
    """What one hook call returned, plugin by plugin (set while it runs)."""

    hook: str
    per_plugin: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    origin: dict[int, str] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)  # keeps ids of ``origin`` valid
    results: list[tuple[str, Any]] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    inner: set[int] = field(default_factory=set)  # items inside the lists hookimpls returned
    wrapped_by: str | None = None  # the plugin of the last wrapper that returned

    def arguments(self, plugin: str, argnames: list[str], args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            self.per_plugin[n][plugin] if a is PER_PLUGIN and n in self.per_plugin else a
            for n, a in zip(argnames, args, strict=False)
        )

    def claim(self, plugin: str, obj: Any, *, new_only: bool = False) -> None:
        """Record ``plugin`` as the origin of ``obj`` and of its items."""
        for item in [obj, *(obj if isinstance(obj, (list, tuple)) else ())]:
            if new_only and id(item) in self.origin:
                continue
            if not new_only and item is not obj:
                self.inner.add(id(item))
            self.origin[id(item)] = plugin
            self.keep.append(item)

    def of(self, obj: Any) -> str | None:
        return self.origin.get(id(obj))

    @property
    def done(self) -> set[str]:
        """The plugins whose hookimpl returned (``None`` included)."""
        return {plugin for plugin, _ in self.results}


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("pgwarden_hook_call", default=None)


def _failure(plugin: str, hook: str, e: Exception) -> StartupError:
    if isinstance(e, StartupError):
        return StartupError(f"plugin {plugin!r}: {e}")
    log.error("plugin %r failed in %s", plugin, hook, exc_info=e)
    return StartupError(f"plugin {plugin!r} failed in {hook}: {type(e).__name__}: {e}")


def _attributing(plugin: str, hook: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` as pluggy calls it, recording ``plugin`` as the origin of what
    it returns and naming ``plugin`` in what it raises (``agent_shutdown``:
    logged, and ``None`` returned so the other plugins still shut down)."""
    argnames = _positional(fn)

    @functools.wraps(fn)
    def attributed(*args: Any, **kwargs: Any) -> Any:
        call = _CALL.get()
        if call is not None:
            args = call.arguments(plugin, argnames, args)
        try:
            result = fn(*args, **kwargs)
        except Exception as e:
            error = _failure(plugin, hook, e)
            if call is not None:
                call.failed.append(plugin)
            if hook == "agent_shutdown":
                log.error("%s", error)
                return None
            raise error from None
        if call is not None:
            call.claim(plugin, result)
            call.results.append((plugin, result))
        return result

    return attributed


def _attributing_wrapper(plugin: str, hook: str, fn: Callable[..., Any], old_style: bool) -> Callable[..., Any]:
    """A wrapper hookimpl ``fn`` (a generator) delegated to step by step,
    naming ``plugin`` in what it raises and recording ``plugin`` as the origin
    of what it adds to the result."""
    argnames = _positional(fn)

    @functools.wraps(fn)
    def delegating(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        call = _CALL.get()
        if call is not None:
            args = call.arguments(plugin, argnames, args)
        try:
            gen = fn(*args, **kwargs)
            value = next(gen)
        except StopIteration:
            raise StartupError(f"plugin {plugin!r}: wrapper {hook} did not yield") from None
        except Exception as e:
            raise _failure(plugin, hook, e) from None
        while True:
            sent: Any = None
            thrown: BaseException | None = None
            try:
                sent = yield value
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as e:
                thrown = e
            try:
                value = gen.send(sent) if thrown is None else gen.throw(thrown)
            except StopIteration as stop:
                result = sent.get_result() if old_style and sent is not None and sent.exception is None else stop.value
                if call is not None and result is not None:
                    call.wrapped_by = plugin
                    for item in result if isinstance(result, list) else [result]:
                        call.claim(plugin, item, new_only=True)
                return stop.value
            except Exception as e:
                if e is thrown:
                    raise
                raise _failure(plugin, hook, e) from None

    return delegating


class _Proxy:
    """What is registered with pluggy for one plugin: its hookimpls wrapped."""

    def __init__(self, name: str, module: Any):
        self.__name__ = name
        for attr, hook, fn, opts in hookimpls(module):
            if opts.get("wrapper") or opts.get("hookwrapper"):
                wrapped = _attributing_wrapper(name, hook, fn, old_style=bool(opts.get("hookwrapper")))
            else:
                wrapped = _attributing(name, hook, fn)
            setattr(wrapped, f"{hookspecs.PROJECT}_impl", opts)
            setattr(self, attr, wrapped)

    def __repr__(self) -> str:
        return f"<plugin {self.__name__}>"


class Plugins:
    """The plugin manager of one agent, with typed hook calls.

    Plugins are registered in reverse order of ``[agent] plugins`` so that
    pluggy, which calls the last registered first, calls them in that order
    (``tryfirst``/``trylast`` and wrappers then reorder as pluggy documents).
    """

    def __init__(self, modules: Mapping[str, Any]):
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs.AgentSpec)
        self.names: list[str] = []
        problems = []
        for name, module in modules.items():
            if not NAME_RE.match(name) or name in RESERVED:
                raise StartupError(f"plugin name {name!r} is not allowed (lowercase letters, digits, _; not reserved)")
            problems.extend(hook_problems(name, module))
            self.names.append(name)
        if problems:
            raise StartupError("\n".join(problems))
        self.proxies = {name: _Proxy(name, modules[name]) for name in self.names}
        for name in reversed(self.names):
            try:
                self.pm.register(self.proxies[name], name=name)
            except pluggy.PluginValidationError as e:  # hook_problems should have said it
                raise StartupError(f"plugin {name!r}: {e}") from None
        self.trace = bool(os.environ.get(TRACE_ENV))
        if self.trace:
            self.pm.add_hookcall_monitoring(self._trace_before, self._trace_after)

    @staticmethod
    def _trace_before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        for impl in reversed(impls):  # the order pluggy calls them
            kind = " [wrapper]" if impl.wrapper else " [hookwrapper]" if impl.hookwrapper else ""
            trace_log.info("hook %s.%s(%s)%s", impl.plugin_name, hook, ", ".join(impl.argnames), kind)

    @staticmethod
    def _trace_after(
        outcome: pluggy.Result[Any], hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        call = _CALL.get()
        for plugin, result in call.results if call is not None else ():
            trace_log.info("hook %s.%s returned %r", plugin, hook, result)
        if outcome.exception is not None:
            trace_log.info("hook %s raised %s: %s", hook, type(outcome.exception).__name__, outcome.exception)
        elif any(i.wrapper or i.hookwrapper for i in impls):
            trace_log.info("hook %s returned %r after its wrappers", hook, outcome.get_result())

    def _run(self, call: _Call, caller: Any = None, **kwargs: Any) -> list[Any]:
        """Call ``call.hook`` once through pluggy, recording in ``call`` which
        plugin returned what."""
        token = _CALL.set(call)
        try:
            return list((caller or getattr(self.pm.hook, call.hook))(**kwargs))
        except StartupError:
            raise
        except Exception as e:  # from pluggy itself (a wrapper that yields twice...)
            log.error("hook %s failed", call.hook, exc_info=e)
            raise StartupError(f"hook {call.hook} failed: {type(e).__name__}: {e}") from None
        finally:
            _CALL.reset(token)

    def _items(self, call: _Call, results: list[Any]) -> Iterator[tuple[str | None, Any, bool]]:
        """``(plugin, item, in_a_list)`` for what a registration hook returned:
        each item of each list, or a result that is not a list (blamed on the
        last wrapper if it was an item of a plugin's list: the wrapper
        flattened the result)."""
        for result in results:
            if isinstance(result, (list, tuple)):
                for item in result:
                    yield call.of(item) or call.of(result), item, True
            elif id(result) in call.inner and call.wrapped_by is not None:
                yield call.wrapped_by, result, False
            else:
                yield call.of(result), result, False

    @staticmethod
    def _unattributed(hook: str, item: Any) -> str:
        return f"{hook}: {item!r} was returned by no plugin's hookimpl (added by a wrapper?): refused"

    # -- typed hooks ---------------------------------------------------

    def config_schemas(self) -> list[SectionSchema]:
        schemas = {name: SectionSchema(name) for name in self.names}
        self._run(_Call("agent_add_config", {"schema": schemas}), schema=PER_PLUGIN)
        return [schemas[name] for name in self.names]

    def db_metadata(self) -> list[sa.MetaData]:
        call = _Call("agent_db_metadata")
        out, problems = [], []
        for name, md, _ in self._items(call, self._run(call)):
            if name is None:
                problems.append(self._unattributed(call.hook, md))
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
        call = _Call(hook)
        out, problems = [], []
        for name, item, in_list in self._items(call, self._run(call, agent=agent)):
            if name is None:
                problems.append(self._unattributed(hook, item))
            elif not in_list or not isinstance(item, kind):
                problems.append(f"plugin {name!r}: {hook} must return a list of {kind.__name__}")
            else:
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
        call = _Call("agent_metrics")
        out, problems = [], []
        for name, item, in_list in self._items(call, self._run(call, agent=agent)):
            if name is None:
                problems.append(self._unattributed(call.hook, item))
            elif not in_list:
                problems.append(f"plugin {name!r}: agent_metrics must return a list of collectors")
            elif not callable(getattr(item, "collect", None)):
                problems.append(f"plugin {name!r}: agent_metrics returned {item!r}, which has no collect()")
            else:
                out.append((name, item))
        if problems:
            raise StartupError("\n".join(problems))
        return out

    def startup(self, agent: Agent) -> None:
        """Run every plugin's start-up; if one refuses, shut down those
        already started (those whose ``agent_startup`` returned, and those
        without one), then raise."""
        call = _Call("agent_startup")
        try:
            self._run(call, agent=agent)
        except StartupError:
            with_startup = {
                i.plugin_name for i in self.pm.hook.agent_startup.get_hookimpls() if not (i.wrapper or i.hookwrapper)
            }
            not_started = [n for n in with_startup if n not in call.done or n in call.failed]
            self._shutdown(agent, self.pm.subset_hook_caller("agent_shutdown", [self.proxies[n] for n in not_started]))
            raise

    def shutdown(self, agent: Agent) -> None:
        """Every plugin's ``agent_shutdown``, in pluggy's order (that of
        ``[agent] plugins`` unless ``tryfirst``/``trylast``); a failure is
        logged and the other plugins still shut down."""
        self._shutdown(agent, None)

    def _shutdown(self, agent: Agent, caller: Any) -> None:
        try:
            self._run(_Call("agent_shutdown"), caller, agent=agent)
        except StartupError as e:  # a wrapper failed: the plugins' own failures are logged already
            log.error("%s", e)
