"""Finding and loading plugins: entry points of the ``pgwarden`` group.

The entry-point name is the plugin's name. :func:`installed` lists them
without importing any; :func:`load_enabled` imports exactly the enabled ones,
reporting the missing and the broken as configuration problems.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Any

GROUP = "pgwarden"


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
