"""The command line.

``pgwarden`` and its subcommands (:mod:`~agent_core.cli.main`), ``pgwarden setup``
(:mod:`~agent_core.cli.setup`) and ``pgwarden demo`` (:mod:`~agent_core.cli.demo`).
"""

from agent_core.cli.main import main

__all__ = ["main"]
