"""What a plugin implements, and what is wrong with it before it is registered.

The hooks of :class:`~agent_core.hookspecs.AgentSpec` and their arguments,
the ``@hookimpl`` s of a plugin module, and :func:`hook_problems`: the only
validation of a plugin's hooks (misspelled hooks, arguments and hookimpl
options), with the rules for plugin names (:data:`NAME_RE`, :data:`RESERVED`).
What registration hooks return is validated where they are called
(:class:`agent_core.plugins.facade.Plugins`).
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterator
from typing import Any

import pluggy

from agent_core import hookspecs

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


def hook_arguments() -> dict[str, list[str]]:
    """Every hook of :class:`~agent_core.hookspecs.AgentSpec`, in the order
    they are declared (the order the core calls them), with its arguments."""
    out = {}
    for name, fn in vars(hookspecs.AgentSpec).items():
        if hasattr(fn, f"{hookspecs.PROJECT}_spec"):
            out[name] = [p for p in inspect.signature(fn).parameters if p != "self"]
    return out


def hookimpls(module: Any) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    """``(attribute, hook name, function, hookimpl options)`` of every
    ``@hookimpl`` of ``module``, the hook name being ``specname`` if given."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    for attr in dir(module):
        opts = pm.parse_hookimpl_opts(module, attr)
        if opts is not None:
            yield attr, opts.get("specname") or attr, getattr(module, attr), dict(opts)


def implemented_hooks(module: Any) -> dict[str, Any]:
    """The ``@hookimpl`` functions of ``module`` by hook name (known hooks or
    not): known hooks first in their calling order, then unknown ones."""
    found = {hook: fn for _, hook, fn, _ in hookimpls(module)}
    order = list(hook_arguments())
    return dict(sorted(found.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))


def hook_problems(name: str, module: Any) -> list[str]:
    """Misspelled hooks, hook arguments and hookimpl options of plugin
    ``name``, as start-up errors: the only validation of a plugin's hooks
    (pluggy's own checks at registration then have nothing left to refuse)."""
    specs = hook_arguments()
    problems = []
    for attr, hook, fn, opts in hookimpls(module):
        label = hook if attr == hook else f"{attr} (specname={hook})"
        if hook not in specs:
            if opts.get("optionalhook"):
                continue  # pluggy's documented meaning: no error, never called
            close = difflib.get_close_matches(hook, specs, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"plugin {name!r}: unknown hook {label}{hint}; the hooks are {', '.join(specs)}")
            continue
        if opts.get("wrapper") and opts.get("hookwrapper"):
            problems.append(f"plugin {name!r}: {label}: wrapper=True and hookwrapper=True are mutually exclusive")
        elif (opts.get("wrapper") or opts.get("hookwrapper")) and not inspect.isgeneratorfunction(fn):
            problems.append(f"plugin {name!r}: {label}: a wrapper must be a generator function (with one yield)")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue  # not introspectable: pluggy will say
        args = list(params)
        unknown = [a for a in args if a not in specs[hook]]
        defaults = [a for a, p in params.items() if p.default is not p.empty]
        if unknown:
            problems.append(
                f"plugin {name!r}: {label}({', '.join(args)}): unknown argument(s) {', '.join(unknown)}; "
                f"the hook is {hook}({', '.join(specs[hook])})"
            )
        elif defaults:  # pluggy would never pass them: the default would always be used
            problems.append(
                f"plugin {name!r}: {label}: argument(s) {', '.join(defaults)} must not have a default value "
                "(the core would never pass them)"
            )
    return problems
