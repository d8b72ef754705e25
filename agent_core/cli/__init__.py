"""The command line.

``pgwarden`` and its parser (:mod:`~agent_core.cli.main`), the subcommands' handlers
(:mod:`~agent_core.cli.commands`, :mod:`~agent_core.cli.users`, :mod:`~agent_core.cli.signing_key`),
``pgwarden setup`` (:mod:`~agent_core.cli.setup`, with :mod:`~agent_core.cli.setup_postgres` and
:mod:`~agent_core.cli.setup_system`) and ``pgwarden demo`` (:mod:`~agent_core.cli.demo`).
"""

from agent_core.cli.main import main

__all__ = ["main"]
