pytest_plugins = ["agent_core.testing"]
