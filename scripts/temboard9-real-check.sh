#!/bin/bash
# The real check of docs/temboard-ui.md: temboard 9.0.1 (the UI, from PyPI)
# drives this pgwarden. Not part of `make test` (it installs temboard into a
# throwaway venv and needs PostgreSQL's server binaries and openssl).
#
#   scripts/temboard9-real-check.sh [WORKDIR]     # default: a new directory under /tmp
#
# It makes one throwaway PostgreSQL cluster (the UI's repository and the
# monitored instance), generates the UI's signing key, serves the UI with TLS,
# runs `pgwarden fetch-key` against it, starts pgwarden (TLS, both plugins,
# [signing] with admin:admin), registers the agent with the UI's own
# `temboard register-instance` (which requires signature_status "valid"),
# then, logged in to the UI's web server as admin/admin, walks what the
# Activity and Maintenance pages do through the UI's proxy routes: list,
# terminate, schedule, cancel, run now. Exit status 0 when every step answered
# as expected; everything is stopped and removed at the end.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$HERE/.venv/bin/python}
PGWARDEN=${PGWARDEN:-$HERE/.venv/bin/pgwarden}
W=${1:-$(mktemp -d /tmp/tb9check.XXXXXX)}
rm -rf "$W/home" "$W/agenthome" "$W/cluster.json" "$W/victim" "$W/cookies" "$W/ui-signing.pem"  # a venv left there is reused
mkdir -p "$W/home" "$W/agenthome"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }

[ -x "$W/venv/bin/temboard" ] || { python3 -m venv "$W/venv" && "$W/venv/bin/pip" install -q temboard==9.0.1 psycopg2-binary; }

cat > "$W/cluster.py" <<'EOF'
import json, signal, sys, threading
from agent_core.cluster import Cluster, find_bindir
c = Cluster(find_bindir()); c.init(); c.start()
c.execute("CREATE ROLE temboard LOGIN SUPERUSER PASSWORD 'temboard'")
c.execute("CREATE DATABASE temboard OWNER temboard")
c.execute("CREATE TABLE t9 (id int PRIMARY KEY); INSERT INTO t9 SELECT generate_series(1, 100)")
json.dump({"port": c.port}, open(sys.argv[1], "w"))
stop = threading.Event(); signal.signal(signal.SIGTERM, lambda *a: stop.set())
try:
    stop.wait()
finally:
    c.destroy()
EOF
"$PY" "$W/cluster.py" "$W/cluster.json" & pids+=($!)
for _ in $(seq 60); do [ -s "$W/cluster.json" ] && break; sleep 1; done
PGPORT=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['port'])" "$W/cluster.json")
UIPORT=$("$PY" -c "from agent_core.cluster import free_port; print(free_port())")
AGPORT=$("$PY" -c "from agent_core.cluster import free_port; print(free_port())")
for name in ui agent; do
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/$name.key" -out "$W/$name.pem" -days 2 -subj /CN=localhost 2>/dev/null
done
cat > "$W/temboard.conf" <<EOF
[temboard]
address = 127.0.0.1
port = $UIPORT
ssl_cert_file = $W/ui.pem
ssl_key_file = $W/ui.key
cookie_secret = $(od -vN 16 -An -tx1 /dev/urandom | tr -d ' \n')
home = $W/home
signing_private_key = $W/home/signing-private.pem
signing_public_key = $W/home/signing-public.pem
[repository]
host = 127.0.0.1
port = $PGPORT
user = temboard
password = temboard
dbname = temboard
[logging]
method = stderr
EOF
export TEMBOARD_CONFIGFILE=$W/temboard.conf
TB=("$W/venv/bin/temboard" -c "$W/temboard.conf")
"${TB[@]}" migratedb upgrade 2>>"$W/ui.log"
"${TB[@]}" generate-key 2>>"$W/ui.log"
"${TB[@]}" serve 2>>"$W/ui.log" & pids+=($!)
UI=https://127.0.0.1:$UIPORT
for _ in $(seq 60); do curl -sk "$UI/signing.key" >/dev/null && break; sleep 1; done

cat > "$W/pgwarden.conf" <<EOF
[agent]
port = $AGPORT
home = $W/agenthome
tls_cert = $W/agent.pem
tls_key = $W/agent.key
plugins = activity, maintenance
[postgresql]
host = 127.0.0.1
port = $PGPORT
[signing]
public_key = $W/ui-signing.pem
user_roles = admin:admin, temboard:admin
EOF
chmod 600 "$W/pgwarden.conf"
"$PGWARDEN" -c "$W/pgwarden.conf" fetch-key "$UI" --insecure
"$PGWARDEN" -c "$W/pgwarden.conf" check-config
"$PGWARDEN" -c "$W/pgwarden.conf" serve 2>"$W/agent.log" >/dev/null & pids+=($!)
for _ in $(seq 30); do curl -sk "https://127.0.0.1:$AGPORT/status" >/dev/null && break; sleep 1; done

"${TB[@]}" register-instance -e default 127.0.0.1 "$AGPORT" 2>>"$W/ui.log" | grep -q '"signature_status": "valid"' \
    || fail "register-instance: signature_status is not valid"
echo "registered: signature_status valid"

C=(curl -sk -c "$W/cookies" -b "$W/cookies")
"${C[@]}" -o /dev/null -X POST -H "Content-Type: application/json" -d '{"username": "admin", "password": "admin"}' "$UI/json/login"
P=$UI/proxy/127.0.0.1/$AGPORT
check() { # check NAME EXPECTED-SUBSTRING CURL-ARGS...
    local name=$1 want=$2; shift 2
    local got; got=$("${C[@]}" "$@")
    [[ $got == *"$want"* ]] || fail "$name: $got"
    echo "ok: $name"
}
"$PY" -c "
import psycopg2, time, sys
c = psycopg2.connect(host='127.0.0.1', port=$PGPORT, user='postgres', dbname='postgres', application_name='victim')
print(c.info.backend_pid, flush=True); time.sleep(120)" > "$W/victim" & pids+=($!)
for _ in $(seq 20); do [ -s "$W/victim" ] && break; sleep 0.5; done
VICTIM=$(cat "$W/victim")
check "activity page lists the victim with its application_name" '"application_name":"victim"' "$P/activity"
check "terminate" "{\"backends\":[{\"killed\":true,\"pid\":$VICTIM}]}" -X POST -H "Content-Type: application/json" -d "{\"pids\": [$VICTIM]}" "$P/activity/kill"
check "maintenance index page" '"datname":"postgres"' "$P/maintenance"
check "table page" '"name":"t9_pkey"' "$P/maintenance/postgres/schema/public/table/t9"
OP=$("${C[@]}" -X POST -H "Content-Type: application/json" -d '{"datetime": "2030-01-01T00:00:00Z"}' "$P/maintenance/postgres/schema/public/table/t9/vacuum" | "$PY" -c "import json,sys; print(json.load(sys.stdin)['id'])")
check "schedule a VACUUM" "\"id\":\"$OP\"" "$P/maintenance/postgres/schema/public/table/t9/vacuum/scheduled"
check "cancel it" '{"response":"ok"}' -X DELETE "$P/maintenance/vacuum/$OP"
check "ANALYZE now" '"id"' -X POST -H "Content-Type: application/json" -d '{}' "$P/maintenance/postgres/schema/public/table/t9/analyze"
check "schedule an index REINDEX" '"id"' -X POST -H "Content-Type: application/json" -d '{"datetime": "2030-01-01T00:00:00Z"}' "$P/maintenance/postgres/schema/public/index/t9_pkey/reindex"
check "the schema's REINDEX listing gives the index's table" '"table":"t9"' "$P/maintenance/postgres/schema/public/reindex/scheduled"
for page in activity maintenance notifications; do
    check "UI page $page renders" 200 -o /dev/null -w '%{http_code}' "$UI/server/127.0.0.1/$AGPORT/$page"
done
grep -q '"POST /activity/kill" 200' "$W/agent.log" || fail "the agent's log lacks the signed kill"
! grep -q '" 500 ' "$W/agent.log" || fail "a 500 in the agent's log"
echo "temboard 9.0.1 drives pgwarden: every step passed ($W)"
