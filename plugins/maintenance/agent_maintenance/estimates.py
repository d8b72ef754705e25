"""The statements of the sizes and bloat estimates: :data:`RELATIONS` (one
of two forms, by the statistics the role may read) computes sizes, counts
and bloat estimates of every table of a database, a schema or one table in
one statement (with the indexes of each table as a JSON array when details
are asked for); :data:`LISTING` orders a schema's for its streamed listing.
SQL text only: :mod:`agent_maintenance.queries` runs them.

Bloat estimates follow the statistics-based method popularised by the
"ioguix" queries (pgsql-bloat-estimation), in their current form (index
tuple header of 8 bytes). They are written here from the on-disk layout
PostgreSQL documents:

* heap tuple: 4-byte line pointer + header of 23 bytes (+ null bitmap of
  ``(relnatts + 7) / 8`` bytes when a column has nulls) aligned on MAXALIGN +
  the average data width (sum over columns of ``(1 - null_frac) *
  avg_width``) aligned on MAXALIGN; a page holds ``(block_size - 24) *
  fillfactor / 100`` bytes of tuples; TOAST rows are counted 4 per page.
* btree tuple: 4-byte line pointer + IndexTupleData of 8 bytes (+ 4 bytes of
  null bitmap when a column has nulls) aligned + average data width aligned;
  a page holds ``(block_size - 24 - 16) * fillfactor / 100`` bytes (16: btree
  special space), default fillfactor 90, plus one metapage.

The bloat is the real size (``relpages``) minus the estimated size, never
below 0. It is NULL where no honest estimate exists: never analysed
(``reltuples < 0``, for an index: its table's), a column without statistics (not analysed yet, or not
readable by the agent's role in ``pg_stats``), a column of type ``name``,
an index that is not btree, invalid, or not yet sized.
"""

from __future__ import annotations

# Operating systems' MAXALIGN: 8 on 64-bit builds (and mingw), 4 elsewhere.
_MAXALIGN = (
    "CASE WHEN pg_catalog.version() ~ '64-bit|x86_64|aarch64|arm64|ppc64|s390x|amd64|ia64|mingw32' THEN 8 ELSE 4 END"
)

#: Per-column statistics as (relid, attnum). ``pg_statistic`` when the role
#: may read it (superuser: fast); otherwise ``pg_stats``, which shows only the
#: columns the role may select, turned back into OIDs through schema, table
#: and column names.
STATS_FAST = """
  stats AS (
    SELECT s.starelid AS relid, s.staattnum AS attnum, s.stanullfrac::float8 AS null_frac, s.stawidth AS avg_width
    FROM pg_catalog.pg_statistic s
    WHERE NOT s.stainherit
  )"""
STATS_VIEW = """
  stats AS (
    SELECT c.oid AS relid, a.attnum, s.null_frac::float8 AS null_frac, s.avg_width
    FROM pg_catalog.pg_stats s
    JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
    JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = s.tablename
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = s.attname
    WHERE NOT s.inherited
  )"""
CAN_READ_STATISTIC = "SELECT pg_catalog.has_table_privilege('pg_catalog.pg_statistic', 'SELECT') AS ok"

#: One row per table (relkind r, p, m) of the database, of one schema
#: (``schema_oid``) or one table (``table_oid``). A partitioned table's
#: figures are the sums over its leaf partitions. With ``details``, each row
#: also carries its ``indexes`` (JSON array) and its usage counters.
#: ``{stats}`` is :data:`STATS_FAST` or :data:`STATS_VIEW`.
_RELATIONS = f"""
WITH RECURSIVE
  consts AS (
    SELECT pg_catalog.current_setting('block_size')::numeric AS bs, {_MAXALIGN} AS ma
  ),
  -- relations another session (or a prepared transaction: pid NULL) holds or
  -- waits for in ACCESS EXCLUSIVE mode (VACUUM FULL, REINDEX, LOCK TABLE...):
  -- measuring them would wait for the lock, so their sizes come from the
  -- catalog (relpages) instead
  locked AS (
    SELECT DISTINCT k.relation AS relid
    FROM pg_catalog.pg_locks k
    WHERE k.locktype = 'relation' AND k.mode = 'AccessExclusiveLock'
      AND k.pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
      AND k.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())
  ),
  listed AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.reloptions
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't'
      AND (%(schema_oid)s::oid IS NULL OR c.relnamespace = %(schema_oid)s::oid)
      AND (%(table_oid)s::oid IS NULL OR c.oid = %(table_oid)s::oid)
  ),
  -- partitions of the listed partitioned tables, at any depth (from
  -- pg_inherits: pg_partition_tree would lock them)
  tree (tableid, relid) AS (
    SELECT l.oid, h.inhrelid FROM listed l JOIN pg_catalog.pg_inherits h ON h.inhparent = l.oid
    WHERE l.relkind = 'p'
    UNION ALL
    SELECT t.tableid, h.inhrelid FROM tree t JOIN pg_catalog.pg_inherits h ON h.inhparent = t.relid
  ),
  -- the relations with storage each listed table is made of
  parts AS (
    SELECT l.oid AS tableid, l.oid AS relid FROM listed l WHERE l.relkind <> 'p'
    UNION ALL
    SELECT t.tableid, t.relid FROM tree t JOIN pg_catalog.pg_class pc ON pc.oid = t.relid
    WHERE pc.relkind IN ('r', 'm')
  ),
  rels AS (SELECT DISTINCT relid FROM parts),
  {{stats}},
  idx AS (
    SELECT i.indexrelid AS idxid, i.indrelid AS relid, i.indnatts, i.indkey, i.indisvalid,
           ci.relpages, ci.reltuples::float8 AS reltuples, ct.reltuples::float8 AS table_reltuples, am.amname,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(ci.reloptions) o
                     WHERE o.option_name = 'fillfactor'), 90) AS ff
    FROM rels r
    JOIN pg_catalog.pg_index i ON i.indrelid = r.relid
    JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_catalog.pg_class ct ON ct.oid = i.indrelid
    JOIN pg_catalog.pg_am am ON am.oid = ci.relam
  ),
  -- the columns whose widths make a tuple, and where their statistics are:
  -- a table's own columns; a btree index's key columns, the table's column
  -- or, for an expression, the index's own
  colrefs AS (
    SELECT a.attrelid AS relid, a.attrelid AS srelid, a.attnum AS sattnum, a.atttypid
    FROM rels r
    JOIN pg_catalog.pg_attribute a ON a.attrelid = r.relid AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT c.idxid, c.srelid, c.sattnum, a.atttypid
    FROM (
      SELECT x.idxid,
             CASE WHEN x.indkey[k.k - 1] <> 0 THEN x.relid ELSE x.idxid END AS srelid,
             CASE WHEN x.indkey[k.k - 1] <> 0 THEN x.indkey[k.k - 1] ELSE k.k END AS sattnum
      FROM idx x
      CROSS JOIN LATERAL pg_catalog.generate_series(1, x.indnatts) AS k(k)
      WHERE x.amname = 'btree'
    ) c
    LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.srelid AND a.attnum = c.sattnum
  ),
  widths AS (
    SELECT c.relid, count(*) AS ncols, count(s.attnum) AS nstats,
           coalesce(bool_or(c.atttypid = 'pg_catalog.name'::pg_catalog.regtype), false) AS has_name,
           coalesce(bool_or(s.null_frac > 0), false) AS has_nulls,
           coalesce(sum((1 - s.null_frac) * s.avg_width), 0) AS datawidth
    FROM colrefs c
    LEFT JOIN stats s ON s.relid = c.srelid AND s.attnum = c.sattnum
    GROUP BY c.relid
  ),
  -- every index with storage: its size (all forks) and, for btree, its bloat
  ileaf AS (
    SELECT x.idxid, x.relid, lk.relid IS NOT NULL AS locked,
           CASE WHEN lk.relid IS NULL THEN pg_catalog.pg_total_relation_size(x.idxid) ELSE x.relpages * k.bs END
             AS bytes,
           CASE WHEN x.amname = 'btree' AND x.indisvalid AND x.reltuples >= 0 AND x.table_reltuples >= 0
                     AND x.relpages > 0 AND NOT w.has_name AND (w.nstats = w.ncols OR x.reltuples = 0)
           THEN greatest(
                  x.relpages - 1
                  - ceil(x.reltuples / nullif(floor((k.bs - 24 - 16) * x.ff / 100 / (
                      4 + ceil((CASE WHEN w.has_nulls THEN 12 ELSE 8 END)::numeric / k.ma) * k.ma
                      + ceil(w.datawidth::numeric / k.ma) * k.ma)), 0)),
                  0) * k.bs
           END AS bloat
    FROM idx x
    CROSS JOIN consts k
    LEFT JOIN widths w ON w.relid = x.idxid
    LEFT JOIN locked lk ON lk.relid = x.idxid
  ),
  isize AS (
    SELECT lf.relid, sum(lf.bytes) AS bytes, sum(lf.bloat) AS bloat, bool_or(lf.locked) AS locked
    FROM ileaf lf GROUP BY lf.relid
  ),
  heap AS (
    SELECT c.oid AS relid, c.relpages, c.reltuples::float8 AS reltuples,
           coalesce(t.relpages, 0) AS toastpages, greatest(coalesce(t.reltuples, 0), 0)::float8 AS toasttuples,
           CASE WHEN lk.relid IS NULL THEN
             pg_catalog.pg_relation_size(c.oid, 'main') + pg_catalog.pg_relation_size(c.oid, 'fsm')
             + pg_catalog.pg_relation_size(c.oid, 'vm') + pg_catalog.pg_relation_size(c.oid, 'init')
           ELSE c.relpages * k.bs END AS table_size,
           CASE WHEN t.oid IS NULL THEN 0
           WHEN NOT tl.blocked THEN pg_catalog.pg_total_relation_size(t.oid)
           ELSE (t.relpages + (SELECT coalesce(sum(ti.relpages), 0) FROM pg_catalog.pg_index i
                               JOIN pg_catalog.pg_class ti ON ti.oid = i.indexrelid WHERE i.indrelid = t.oid)) * k.bs
           END AS toast_size,
           lk.relid IS NOT NULL OR coalesce(tl.blocked, false) OR coalesce(z.locked, false) AS locked,
           coalesce(z.bytes, 0) AS indexes_size, z.bloat AS index_bloat,
           coalesce((SELECT o.option_value::numeric FROM pg_catalog.pg_options_to_table(c.reloptions) o
                     WHERE o.option_name = 'fillfactor'), 100) AS ff,
           4 + ceil((23 + CASE WHEN w.has_nulls THEN (c.relnatts + 7) / 8 ELSE 0 END)::numeric / k.ma) * k.ma
             + ceil(coalesce(w.datawidth, 0)::numeric / k.ma) * k.ma AS tuple,
           coalesce(w.ncols, 0) AS ncols, coalesce(w.nstats, 0) AS nstats, coalesce(w.has_name, false) AS has_name,
           k.bs
    FROM rels r
    CROSS JOIN consts k
    JOIN pg_catalog.pg_class c ON c.oid = r.relid
    LEFT JOIN pg_catalog.pg_class t ON t.oid = c.reltoastrelid
    LEFT JOIN widths w ON w.relid = c.oid
    LEFT JOIN isize z ON z.relid = c.oid
    LEFT JOIN locked lk ON lk.relid = c.oid
    LEFT JOIN LATERAL (
      SELECT EXISTS (SELECT 1 FROM locked k2 WHERE k2.relid = t.oid OR k2.relid IN (
               SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid = t.oid)) AS blocked
    ) tl ON t.oid IS NOT NULL
  ),
  heap_est AS (
    SELECT h.*,
           CASE WHEN h.reltuples < 0 OR h.has_name OR (h.reltuples > 0 AND h.nstats < h.ncols) THEN NULL
           ELSE greatest(
                  h.relpages + h.toastpages
                  - ceil(h.reltuples * h.tuple / ((h.bs - 24) * h.ff / 100))
                  - ceil(h.toasttuples / 4),
                  0) * h.bs
           END AS bloat
    FROM heap h
    WHERE h.table_size IS NOT NULL
  ),
  tsum AS (
    SELECT p.tableid,
           sum(h.table_size) AS table_bytes, sum(h.toast_size) AS toast_bytes,
           sum(h.indexes_size) AS index_bytes, sum(h.bloat) AS bloat_bytes, sum(h.index_bloat) AS index_bloat_bytes,
           sum(h.reltuples) FILTER (WHERE h.reltuples >= 0) AS row_estimate, bool_or(h.locked) AS locked
    FROM parts p JOIN heap_est h ON h.relid = p.relid
    GROUP BY p.tableid
  ),
  nidx AS (
    SELECT i.indrelid AS tableid, count(*) AS n FROM listed l JOIN pg_catalog.pg_index i ON i.indrelid = l.oid
    GROUP BY i.indrelid
  ),
  nparts AS (
    SELECT h.inhparent AS tableid, count(*) AS n FROM listed l JOIN pg_catalog.pg_inherits h ON h.inhparent = l.oid
    WHERE l.relkind = 'p'
    GROUP BY h.inhparent
  ),
  ilisted AS (
    SELECT i.indrelid AS tableid, l.relname AS tablename, l.nspname AS schemaname, i.indexrelid AS idxid,
           ci.relname, ci.relkind, am.amname, i.indisunique, i.indisprimary, i.indisvalid, i.indnatts, sp.spcname,
           EXISTS (SELECT 1 FROM locked k WHERE k.relid IN (i.indexrelid, i.indrelid)) AS locked
    FROM listed l
    JOIN pg_catalog.pg_index i ON i.indrelid = l.oid
    JOIN pg_catalog.pg_class ci ON ci.oid = i.indexrelid
    JOIN pg_catalog.pg_am am ON am.oid = ci.relam
    LEFT JOIN pg_catalog.pg_tablespace sp ON sp.oid = ci.reltablespace
    WHERE %(details)s
  ),
  itree (idxid, leaf) AS (
    SELECT il.idxid, h.inhrelid FROM ilisted il JOIN pg_catalog.pg_inherits h ON h.inhparent = il.idxid
    WHERE il.relkind = 'I'
    UNION ALL
    SELECT t.idxid, h.inhrelid FROM itree t JOIN pg_catalog.pg_inherits h ON h.inhparent = t.leaf
  ),
  -- the indexes with storage each listed index is made of
  imembers AS (
    SELECT il.idxid, il.idxid AS leaf FROM ilisted il WHERE il.relkind <> 'I'
    UNION ALL
    SELECT t.idxid, t.leaf FROM itree t JOIN pg_catalog.pg_class c ON c.oid = t.leaf WHERE c.relkind = 'i'
  ),
  ifig AS (
    SELECT m.idxid, sum(lf.bytes) AS bytes, sum(lf.bloat) AS bloat,
           sum(pg_catalog.pg_stat_get_numscans(m.leaf)) AS scans,
           sum(pg_catalog.pg_stat_get_tuples_returned(m.leaf)) AS tup_read,
           sum(pg_catalog.pg_stat_get_tuples_fetched(m.leaf)) AS tup_fetch
    FROM imembers m LEFT JOIN ileaf lf ON lf.idxid = m.leaf
    GROUP BY m.idxid
  ),
  ijson AS (
    SELECT il.tableid,
           pg_catalog.json_agg(pg_catalog.json_build_object(
             'name', il.relname, 'indexrelname', il.relname, 'tablename', il.tablename,
             'schemaname', il.schemaname, 'locked', il.locked,
             'def', CASE WHEN NOT il.locked THEN pg_catalog.pg_get_indexdef(il.idxid) END,
             'type', il.amname, 'indisunique', il.indisunique, 'indisprimary', il.indisprimary,
             'indisvalid', il.indisvalid, 'number_of_columns', il.indnatts, 'tablespace', il.spcname,
             'total_bytes', coalesce(f.bytes, 0)::bigint, 'bloat_bytes', f.bloat::bigint,
             'scans', f.scans, 'idx_tup_read', f.tup_read, 'idx_tup_fetch', f.tup_fetch)
           ORDER BY il.relname) AS indexes
    FROM ilisted il LEFT JOIN ifig f ON f.idxid = il.idxid
    GROUP BY il.tableid
  ),
  -- the columns of pg_stat_all_tables, from its functions (the view would
  -- compute every table of the database)
  tstat AS (
    SELECT p.tableid,
           sum(pg_catalog.pg_stat_get_numscans(p.relid)) AS seq_scan,
           sum(pg_catalog.pg_stat_get_tuples_returned(p.relid)) AS seq_tup_read,
           sum(ix.scans) AS idx_scan,
           sum(ix.fetched + pg_catalog.pg_stat_get_tuples_fetched(p.relid)) AS idx_tup_fetch,
           sum(pg_catalog.pg_stat_get_tuples_inserted(p.relid)) AS n_tup_ins,
           sum(pg_catalog.pg_stat_get_tuples_updated(p.relid)) AS n_tup_upd,
           sum(pg_catalog.pg_stat_get_tuples_deleted(p.relid)) AS n_tup_del,
           sum(pg_catalog.pg_stat_get_tuples_hot_updated(p.relid)) AS n_tup_hot_upd,
           sum(pg_catalog.pg_stat_get_live_tuples(p.relid)) AS n_live_tup,
           sum(pg_catalog.pg_stat_get_dead_tuples(p.relid)) AS n_dead_tup,
           sum(pg_catalog.pg_stat_get_mod_since_analyze(p.relid)) AS n_mod_since_analyze,
           CASE WHEN bool_and(pg_catalog.pg_stat_get_last_vacuum_time(p.relid) IS NOT NULL)
             THEN min(pg_catalog.pg_stat_get_last_vacuum_time(p.relid)) END AS last_vacuum,
           CASE WHEN bool_and(pg_catalog.pg_stat_get_last_autovacuum_time(p.relid) IS NOT NULL)
             THEN min(pg_catalog.pg_stat_get_last_autovacuum_time(p.relid)) END AS last_autovacuum,
           CASE WHEN bool_and(pg_catalog.pg_stat_get_last_analyze_time(p.relid) IS NOT NULL)
             THEN min(pg_catalog.pg_stat_get_last_analyze_time(p.relid)) END AS last_analyze,
           CASE WHEN bool_and(pg_catalog.pg_stat_get_last_autoanalyze_time(p.relid) IS NOT NULL)
             THEN min(pg_catalog.pg_stat_get_last_autoanalyze_time(p.relid)) END AS last_autoanalyze,
           sum(pg_catalog.pg_stat_get_vacuum_count(p.relid)) AS vacuum_count,
           sum(pg_catalog.pg_stat_get_autovacuum_count(p.relid)) AS autovacuum_count,
           sum(pg_catalog.pg_stat_get_analyze_count(p.relid)) AS analyze_count,
           sum(pg_catalog.pg_stat_get_autoanalyze_count(p.relid)) AS autoanalyze_count
    FROM parts p
    LEFT JOIN LATERAL (
      SELECT sum(pg_catalog.pg_stat_get_numscans(i.indexrelid)) AS scans,
             sum(pg_catalog.pg_stat_get_tuples_fetched(i.indexrelid)) AS fetched
      FROM pg_catalog.pg_index i WHERE i.indrelid = p.relid
    ) ix ON true
    WHERE %(details)s
    GROUP BY p.tableid
  )
SELECT l.oid AS relid, l.nspname AS schemaname, l.relname, l.relkind,
       CASE WHEN l.relkind <> 'p' THEN
         coalesce((SELECT o.option_value::int FROM pg_catalog.pg_options_to_table(l.reloptions) o
                   WHERE o.option_name = 'fillfactor'), 100)
       END AS fillfactor,
       coalesce(np.n, 0) AS n_partitions,
       coalesce(ni.n, 0) AS n_indexes,
       coalesce(ts.table_bytes, 0)::bigint AS table_bytes,
       coalesce(ts.toast_bytes, 0)::bigint AS toast_bytes,
       coalesce(ts.index_bytes, 0)::bigint AS index_bytes,
       ts.bloat_bytes::bigint AS bloat_bytes,
       ts.index_bloat_bytes::bigint AS index_bloat_bytes,
       ts.row_estimate,
       coalesce(ts.locked, false) AS locked,
       ij.indexes,
       st.seq_scan, st.seq_tup_read, st.idx_scan, st.idx_tup_fetch, st.n_tup_ins, st.n_tup_upd, st.n_tup_del,
       st.n_tup_hot_upd, st.n_live_tup, st.n_dead_tup, st.n_mod_since_analyze, st.last_vacuum, st.last_autovacuum,
       st.last_analyze, st.last_autoanalyze, st.vacuum_count, st.autovacuum_count, st.analyze_count,
       st.autoanalyze_count
FROM listed l
LEFT JOIN tsum ts ON ts.tableid = l.oid
LEFT JOIN nidx ni ON ni.tableid = l.oid
LEFT JOIN nparts np ON np.tableid = l.oid
LEFT JOIN ijson ij ON ij.tableid = l.oid
LEFT JOIN tstat st ON st.tableid = l.oid
WHERE ts.tableid IS NOT NULL OR l.relkind = 'p'  -- not dropped while measured
"""
RELATIONS = {fast: _RELATIONS.replace("{stats}", STATS_FAST if fast else STATS_VIEW) for fast in (True, False)}

#: The columns of a :data:`RELATIONS` row, ``indexes`` apart.
_ROW_COLUMNS = (
    "relid", "schemaname", "relname", "relkind", "fillfactor", "n_partitions", "n_indexes", "table_bytes",
    "toast_bytes", "index_bytes", "bloat_bytes", "index_bloat_bytes", "row_estimate", "locked",
    "seq_scan", "seq_tup_read", "idx_scan", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del",
    "n_tup_hot_upd", "n_live_tup", "n_dead_tup", "n_mod_since_analyze", "last_vacuum", "last_autovacuum",
    "last_analyze", "last_autoanalyze", "vacuum_count", "autovacuum_count", "analyze_count", "autoanalyze_count",
)  # fmt: skip
#: The schema's totals, carried by every table row of :data:`LISTING` (the
#: document starts with them): the sums ``reports.totals`` makes.
_TOTALS = """
    SELECT count(*) AS t_tables, coalesce(sum(r.n_indexes), 0) AS t_indexes,
           coalesce(sum(r.table_bytes) FILTER (WHERE r.relkind <> 'p'), 0) AS t_table_bytes,
           coalesce(sum(r.toast_bytes) FILTER (WHERE r.relkind <> 'p'), 0) AS t_toast_bytes,
           coalesce(sum(r.index_bytes) FILTER (WHERE r.relkind <> 'p'), 0) AS t_index_bytes,
           sum(r.bloat_bytes) FILTER (WHERE r.relkind <> 'p') AS t_bloat_bytes,
           sum(r.index_bloat_bytes) FILTER (WHERE r.relkind <> 'p') AS t_index_bloat_bytes
    FROM result r"""
TOTAL_COLUMNS = ("t_tables", "t_indexes", "t_table_bytes", "t_toast_bytes", "t_index_bytes", "t_bloat_bytes",
                 "t_index_bloat_bytes")  # fmt: skip
#: A schema's listing in the order of its JSON document, for a server-side
#: cursor: the :data:`RELATIONS` rows of the schema (with details) computed
#: once, then ``part`` 1, the tables by name, each row with the totals; then
#: ``part`` 2, the tables' index arrays (by table name; each array by index
#: name), the other columns null. Names sort as ``name`` values do (collation
#: "C", code point order): as Python sorts them.
_LISTING = f"""
WITH result AS MATERIALIZED ({{relations}}),
  tot AS MATERIALIZED ({_TOTALS})
SELECT u.* FROM (
  SELECT 1 AS part, {", ".join(f"r.{c}" for c in _ROW_COLUMNS)}, NULL::json AS indexes, t.*
  FROM result r CROSS JOIN tot t
  UNION ALL
  SELECT 2, {", ".join("r.relname" if c == "relname" else "NULL" for c in _ROW_COLUMNS)}, r.indexes,
         {", ".join("NULL" for _ in TOTAL_COLUMNS)}
  FROM result r WHERE r.indexes IS NOT NULL
) u
ORDER BY u.part, u.relname COLLATE "C"
"""
LISTING = {fast: _LISTING.replace("{relations}", RELATIONS[fast]) for fast in (True, False)}
