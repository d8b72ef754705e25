"""pgwarden: a remote-control agent for one PostgreSQL instance.

The core (this package) serves an authenticated REST API and runs a
persistent scheduler; features ship as plugins found through the
``pgwarden`` entry-point group. The plugin contract is
:mod:`agent_core.hookspecs`.

Each subpackage is a layer (docs/architecture.md): :mod:`agent_core.config`,
:mod:`agent_core.operations`, :mod:`agent_core.auth`, :mod:`agent_core.plugins`,
:mod:`agent_core.web` (the only one that knows HTTP), :mod:`agent_core.cli` and
:mod:`agent_core.testing` (the pytest plugin for plugin authors), with
:mod:`agent_core.agent` wiring them together.
"""

__version__ = "0.1.0"
