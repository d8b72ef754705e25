"""The agent killed with SIGKILL while a VACUUM FULL runs and operations wait.

``pgwarden serve`` runs as a real process, is killed with SIGKILL in the
middle of a VACUUM FULL (which holds an ACCESS EXCLUSIVE lock on its table)
and then started again on the same home and store. After the restart:

* the interrupted operation is ``aborted``, with what the clean-up did kept
  as its notices;
* its backend, which PostgreSQL kept running after the client died, was
  found and canceled: no backend of the operation, no lock left on the table,
  the table not rewritten (the VACUUM FULL was rolled back);
* the operations that were waiting are still there and run.

Run with the store on SQLite (and on PostgreSQL in ``make soak``). (REINDEX, with the drop of
what an interrupted REINDEX CONCURRENTLY leaves, is checked the same way in
``tests/plugins/maintenance/test_maintenance_operations.py``.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import agent_maintenance.plugin as maintenance_plugin
from agent_core.auth import UsersFile
from agent_core.testing import KEY, PASSWORD, Client, add_user, free_port, serve, wait_for

#: A table whose VACUUM FULL is slow inside the agent's maintenance
#: operations only (their application_name): 50 ms per row while its index
#: expression is computed again, about 20 s for the 400 rows.
SLOW = """
CREATE FUNCTION public.slow(i int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF pg_catalog.current_setting('application_name') LIKE 'pgwarden maintenance%' THEN
    PERFORM pg_catalog.pg_sleep(0.05);
  END IF;
  RETURN i;
END $$;
CREATE TABLE public.slowt (id int);
INSERT INTO public.slowt SELECT generate_series(1, 400);
CREATE INDEX slow_idx ON public.slowt (public.slow(id));
CREATE TABLE public.other (id int);
CREATE INDEX other_idx ON public.other (id);
"""


def later(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + 1 + seconds))


class Api:
    """The agent key on every request (``key_writes`` is on)."""

    def __init__(self, url: str):
        self.client = Client(url, timeout=30)
        self.headers = {"X-Pgwarden-Key": KEY}

    def submit(self, path: str, body: Any) -> str:
        res = self.client.post(path, body, headers=self.headers)
        assert res.status == 200, res
        return str(res.json()["id"])

    def entry(self, verb: str, op_id: str) -> dict[str, Any]:
        res = self.client.get(f"/maintenance/{verb}/scheduled", headers=self.headers)
        assert res.status == 200, res
        return next(e for e in res.json() if e["id"] == op_id)


def backend_of(cluster: Any, op_id: str) -> list[tuple[Any, ...]]:
    return cluster.execute(
        "SELECT pid, state FROM pg_stat_activity WHERE application_name = %s", (f"pgwarden maintenance {op_id}",)
    )


def exclusive_locks(cluster: Any, db: str) -> list[tuple[Any, ...]]:
    return cluster.execute(
        "SELECT l.pid, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " WHERE c.relname = 'slowt' AND l.mode = 'AccessExclusiveLock' AND l.granted",
        dbname=db,
    )


def filenode(cluster: Any, db: str) -> int:
    return int(cluster.execute("SELECT relfilenode FROM pg_class WHERE relname = 'slowt'", dbname=db)[0][0])


#: The PostgreSQL-store variant adds 15 s: ``make soak`` runs it (PGWARDEN_SOAK=1).
STORES = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not os.environ.get("PGWARDEN_SOAK"), reason="long run: make soak (PGWARDEN_SOAK=1)"),
    ),
]


@pytest.mark.parametrize("store_kind", STORES)
def test_sigkill_during_vacuum_full_with_operations_pending(
    make_agent, pg_cluster, databases, tmp_path: Path, store_kind: str, request: Any
):
    db = databases.create("crash", SLOW)
    store = request.getfixturevalue("pg_store") if store_kind == "postgresql" else None
    home = tmp_path / "home"
    home.mkdir()
    add_user(UsersFile(str(home / "users")), "alice", PASSWORD)
    port = free_port()
    conf = home / "pgwarden.conf"
    conf.write_text(
        f"[agent]\naddress = 127.0.0.1\nport = {port}\nhome = {home}\nkey = {KEY}\nkey_writes = true\n"
        "plugins = maintenance\nscheduler_grace = 600\n"
        + (f"store = {store}\n" if store else "")
        + f"[postgresql]\nhost = {pg_cluster.host}\nport = {pg_cluster.port}\nuser = {pg_cluster.superuser}\n"
        "dbname = postgres\n"
    )
    url = f"http://127.0.0.1:{port}"
    node = filenode(pg_cluster, db)
    with serve(conf, timeout=30) as served:  # fails unless it answers
        api = Api(url)
        table = f"/maintenance/{db}/schema/public/table"
        full = api.submit(f"{table}/slowt/vacuum", {"mode": "full"})
        pending = {
            ("analyze", api.submit(f"{table}/other/analyze", {"datetime": later(3)})),  # due while it is down
            ("vacuum", api.submit(f"{table}/other/vacuum", {"datetime": later(12)})),  # due after the restart
            ("reindex", api.submit(f"/maintenance/{db}/schema/public/index/other_idx/reindex", {"datetime": later(4)})),
        }
        wait_for(lambda: exclusive_locks(pg_cluster, db), timeout=30)  # VACUUM FULL has its table
        assert api.entry("vacuum", full)["status"] == "doing"
        os.kill(served.proc.pid, signal.SIGKILL)
        served.proc.wait(10)
        time.sleep(0.5)
        # PostgreSQL does not notice its client died: the rewrite goes on, holding the lock
        assert backend_of(pg_cluster, full) == [(backend_of(pg_cluster, full)[0][0], "active")]
        assert exclusive_locks(pg_cluster, db)
        time.sleep(4)  # some pending operations fall due while the agent is down

    config: dict[str, Any] = {"agent": {"key_writes": True, "scheduler_grace": 600, "scheduler_workers": 4}}
    if store:
        config["agent"]["store"] = store
    restarted = make_agent(plugins={"maintenance": maintenance_plugin}, config=config, home=home)
    api = Api(restarted.url)
    entry = api.entry("vacuum", full)
    assert entry["status"] == "aborted" and "agent stopped" in entry["error"], entry
    assert any("canceled its backend" in n for n in entry["notices"]), entry
    wait_for(lambda: not backend_of(pg_cluster, full), timeout=15)
    assert not exclusive_locks(pg_cluster, db)
    assert pg_cluster.execute("SET lock_timeout = '2s'; SELECT count(*) FROM public.slowt", dbname=db) == [(400,)]
    assert filenode(pg_cluster, db) == node  # the interrupted rewrite was rolled back

    for verb, op_id in pending:
        done = wait_for(lambda v=verb, o=op_id: (e := api.entry(v, o))["status"] not in ("todo", "doing") and e, 60)
        assert done["status"] == "done", done
