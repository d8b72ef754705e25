"""pgwarden maintenance plugin: sizes and bloat estimates of the instance, its
databases, schemas, tables and indexes; VACUUM, ANALYZE and REINDEX run now or
at a given time through the core scheduler, listed and cancelable.

The hooks are in :mod:`agent_maintenance.plugin`, the HTTP views in
:mod:`agent_maintenance.routes`, the SQL in :mod:`agent_maintenance.queries`
and the operations in :mod:`agent_maintenance.tasks`.
"""

__version__ = "0.1.0"
