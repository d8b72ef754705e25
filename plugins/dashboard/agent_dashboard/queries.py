"""The one statement the sampler runs per interval (PostgreSQL 10 or later).

Everything a sample needs from PostgreSQL comes back in one row, so a sample
costs one round trip. Cumulative counters (commits, rollbacks, blocks) are
summed over the databases that are not templates, as temboard does; rates
are computed by the sampler from two consecutive samples.
"""

from __future__ import annotations

_SAMPLE = """
SELECT
  extract(epoch FROM clock_timestamp())::float8 AS at,
  (SELECT buffers_alloc FROM pg_catalog.pg_stat_bgwriter) AS buffers_alloc,
  (SELECT count(*) FROM pg_catalog.pg_stat_activity
    WHERE backend_type = 'client backend' AND state IS NOT NULL AND state <> 'idle'
      AND pid <> pg_catalog.pg_backend_pid()) AS active_backends,
  current_setting('max_connections')::int AS max_connections,
  d.databases, d.total_size_bytes, pg_catalog.pg_size_pretty(d.total_size_bytes) AS total_size,
  d.total_commit, d.total_rollback, d.blks_hit, d.blks_read,
  extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8 AS start_time,
  pg_catalog.pg_is_in_recovery() AS is_standby,
  EXISTS (SELECT 1 FROM pg_catalog.pg_settings WHERE pending_restart) AS pending_restart,
  {primary} AS primary_host
FROM (
  SELECT
    count(*)::int AS databases,
    -- pg_database_size() raises for a database the role may not connect to: leave those out
    sum(CASE WHEN has_database_privilege(db.oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE')
             THEN pg_catalog.pg_database_size(db.oid) END)::bigint AS total_size_bytes,
    sum(s.xact_commit)::bigint AS total_commit,
    sum(s.xact_rollback)::bigint AS total_rollback,
    sum(s.blks_hit)::bigint AS blks_hit,
    sum(s.blks_read)::bigint AS blks_read
  FROM pg_catalog.pg_database db
  LEFT JOIN pg_catalog.pg_stat_database s ON s.datid = db.oid
  WHERE NOT db.datistemplate
) d
"""

#: The primary's address on a standby (pg_stat_wal_receiver.sender_host, PostgreSQL 11+).
_PRIMARY_11 = (
    "(SELECT sender_host || ':' || sender_port FROM pg_catalog.pg_stat_wal_receiver WHERE sender_host IS NOT NULL)"
)


def sample_statement(server_version: int | None) -> str:
    """The sampler's statement for a server (``server_version_num``)."""
    primary = _PRIMARY_11 if server_version is None or server_version >= 110000 else "NULL::text"
    return _SAMPLE.format(primary=primary)
