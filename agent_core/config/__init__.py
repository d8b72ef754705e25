"""Configuration: an INI file, overridden by environment variables.

Every section is described by a :class:`SectionSchema` of
:class:`~agent_core.hookspecs.Option` s (:mod:`agent_core.config.options`,
which also converts and checks values): the core declares ``[agent]``,
``[postgresql]`` and ``[signing]`` (:mod:`agent_core.config.sections`); each
enabled plugin declares its own section through ``agent_add_config``.
:func:`validate` (:mod:`agent_core.config.loading`, with :class:`RawConfig`,
the file and ``PGWARDEN_<SECTION>_<KEY>`` environment variables, and
:class:`Config`) checks everything in one pass and raises
:class:`~agent_core.errors.ConfigError` listing every problem as
``section.key: reason``.
"""

from agent_core.config.loading import (
    DEFAULT_CONFIG,
    ENV_NOT_KEYS,
    ENV_PREFIX,
    Config,
    RawConfig,
    enabled_plugins,
    env_name,
    validate,
)
from agent_core.config.options import Option, SectionSchema
from agent_core.config.sections import agent_schema, postgresql_schema, signing_schema

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_NOT_KEYS",
    "ENV_PREFIX",
    "Config",
    "Option",
    "RawConfig",
    "SectionSchema",
    "agent_schema",
    "enabled_plugins",
    "env_name",
    "postgresql_schema",
    "signing_schema",
    "validate",
]
