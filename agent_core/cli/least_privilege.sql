-- The SQL blocks of docs/least-privilege.md, for `pgwarden setup --pg-role`
-- (tests/core/test_setup.py checks they are the same).

-- level: monitor
CREATE ROLE pgwarden LOGIN PASSWORD 'change me';
GRANT pg_monitor TO pgwarden;

-- level: kill
CREATE ROLE pgwarden LOGIN PASSWORD 'change me';
GRANT pg_monitor, pg_signal_backend TO pgwarden;

-- level: maintain
CREATE ROLE pgwarden LOGIN PASSWORD 'change me';
GRANT pg_monitor, pg_signal_backend TO pgwarden;
-- VACUUM, ANALYZE and REINDEX of every table (and index) app_owner owns:
-- a member of app_owner has its owner's rights
GRANT app_owner TO pgwarden;

-- level: maintain, PostgreSQL 17
CREATE ROLE pgwarden LOGIN PASSWORD 'change me';
GRANT pg_monitor, pg_signal_backend TO pgwarden;
GRANT pg_maintain TO pgwarden;
