"""pgwarden maintenance plugin: sizes and bloat estimates of the instance, its
databases, schemas, tables and indexes; VACUUM, ANALYZE and REINDEX run now or
at a given time through the core scheduler, listed and cancelable.

The hooks are in :mod:`agent_maintenance.plugin`, the HTTP views in
:mod:`agent_maintenance.routes` (their OpenAPI descriptions in ``openapi``,
body parameters parsed in ``params``, path names checked in ``targets``,
answer bodies in ``bodies``), the SQL in :mod:`agent_maintenance.queries`
(the sizes and bloat statements in ``estimates``), the operations in
:mod:`agent_maintenance.tasks` and their progress in ``progress``; the JSON
documents in ``reports`` (sizes printed by ``sizes``), the shared estimates in
``flight``, the metrics in ``metrics``.
"""

__version__ = "0.1.0"
