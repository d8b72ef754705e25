"""Finding, loading and calling plugins: a typed facade over pluggy.

Plugins are entry points of the ``pgwarden`` group; the entry-point name is the
plugin's name. Only enabled plugins are imported
(:mod:`agent_core.plugins.discovery`). Their hooks are checked before they are
registered (:func:`hook_problems`, :mod:`agent_core.plugins.problems`). No code
outside this package touches ``pm.hook``: callers use the typed methods of
:class:`Plugins` (:mod:`agent_core.plugins.facade`), which call each hook once
through pluggy, attribute each result and failure to the plugin it comes from,
and validate what comes back in one place.
"""

from agent_core.plugins.discovery import GROUP, Installed, installed, load, load_enabled
from agent_core.plugins.facade import PER_PLUGIN, TRACE_ENV, Plugins
from agent_core.plugins.problems import (
    NAME_RE,
    RESERVED,
    hook_arguments,
    hook_problems,
    hookimpls,
    implemented_hooks,
)

__all__ = [
    "GROUP",
    "NAME_RE",
    "PER_PLUGIN",
    "RESERVED",
    "TRACE_ENV",
    "Installed",
    "Plugins",
    "hook_arguments",
    "hook_problems",
    "hookimpls",
    "implemented_hooks",
    "installed",
    "load",
    "load_enabled",
]
