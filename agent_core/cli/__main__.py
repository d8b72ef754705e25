"""``python -m agent_core.cli``: the ``pgwarden`` command."""

import sys

from agent_core.cli.main import main

sys.exit(main())
