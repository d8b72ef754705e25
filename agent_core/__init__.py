"""pgwarden: a remote-control agent for one PostgreSQL instance.

The core (this package) serves an authenticated REST API and runs a
persistent scheduler; features ship as plugins found through the
``pgwarden`` entry-point group. The plugin contract is
:mod:`agent_core.hookspecs`.
"""

__version__ = "0.1.0"
