"""Who sees the query text of sessions: ``admin`` clients always, ``read``
clients (read users, the read-only agent key) only with ``[activity]
read_role_sees_queries``. Real sessions, real HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from activity_helpers import FIELDS, rows_by_pid

from agent_core.testing import KEY, PASSWORD, Client

USERS = {"alice": PASSWORD, "dash": (PASSWORD, "read")}


class KeyClient(Client):
    """A client that authenticates with the agent key only (X-Pgwarden-Key)."""

    def request(self, method: str, path: str, json: Any = None, body: Any = None, headers: Any = None) -> Any:
        return super().request(method, path, json=json, body=body, headers={"X-Pgwarden-Key": KEY, **(headers or {})})


@pytest.fixture
def sessions(pg_cluster, backends, unique):
    """A DBA's idle session whose last statement holds a secret, and a lock
    conflict: (idle pid, its statement, holder pid, holder's statement,
    waiter pid, waiter's statement)."""
    table = f"pgw_vis_{unique}"
    pg_cluster.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    pg_cluster.execute(f"INSERT INTO {table} VALUES (1)")
    secret = f"SELECT 'secret {unique}'"
    dba = backends.idle(secret)
    holder = backends.open(autocommit=False)
    held = f"UPDATE {table} SET id = 1 WHERE id = 1 -- holder {unique}"
    with holder.cursor() as cur:
        cur.execute(held)
    wanted = f"UPDATE {table} SET id = 1 WHERE id = 1 -- waiter {unique}"
    waiter = backends.run(wanted)
    backends.wait_state(waiter.pid, "active", "Lock")
    yield (
        {dba.info.backend_pid: secret, holder.info.backend_pid: held, waiter.pid: wanted},
        (
            holder.info.backend_pid,
            waiter.pid,
        ),
    )
    holder.rollback()
    waiter.join()
    pg_cluster.execute(f"DROP TABLE {table}")


def seen(client: Client, queries: dict[int, str], pids: tuple[int, int]) -> dict[str, dict[int, Any]]:
    """The ``query`` each listing shows for the test's sessions (every row
    keeps every field, whoever asks)."""
    holder, waiter = pids
    out: dict[str, dict[int, Any]] = {}
    for path, wanted in (
        ("/activity", set(queries)),
        ("/activity/waiting", {waiter}),
        ("/activity/blocking", {holder}),
    ):
        rows = rows_by_pid(client, path)
        assert wanted <= set(rows), (path, rows)
        for row in rows.values():
            assert FIELDS <= set(row), row
        out[path] = {pid: rows[pid]["query"] for pid in wanted}
    return out


def shown(queries: dict[int, str], pids: tuple[int, int]) -> dict[str, dict[int, Any]]:
    holder, waiter = pids
    return {
        "/activity": dict(queries),
        "/activity/waiting": {waiter: queries[waiter]},
        "/activity/blocking": {holder: queries[holder]},
    }


def hidden(queries: dict[int, str], pids: tuple[int, int]) -> dict[str, dict[int, Any]]:
    return {path: dict.fromkeys(rows) for path, rows in shown(queries, pids).items()}


def test_read_clients_get_null_queries_by_default(make_agent, plugin, sessions):
    queries, pids = sessions
    running = make_agent(plugins={"activity": plugin}, users=USERS)
    assert seen(running.login("alice"), queries, pids) == shown(queries, pids), "admin sees queries"
    assert seen(running.login("dash"), queries, pids) == hidden(queries, pids), "read user: null"
    key = KeyClient(running.url)
    assert seen(key, queries, pids) == hidden(queries, pids), "read-only key: null"
    # the rest of the row is there for a read user: state, user, wait
    row = rows_by_pid(running.login("dash"))[pids[1]]
    assert (row["state"], row["user"], row["wait"]) == ("active", "postgres", "Y")


def test_key_that_writes_is_an_admin_client(make_agent, plugin, sessions):
    queries, pids = sessions
    running = make_agent(plugins={"activity": plugin}, users=USERS, config={"agent": {"key_writes": True}})
    key = KeyClient(running.url)
    assert seen(key, queries, pids) == shown(queries, pids)
    assert seen(running.login("dash"), queries, pids) == hidden(queries, pids)


def test_read_role_sees_queries_when_configured(make_agent, plugin, sessions):
    queries, pids = sessions
    running = make_agent(
        plugins={"activity": plugin}, users=USERS, config={"activity": {"read_role_sees_queries": True}}
    )
    assert seen(running.login("dash"), queries, pids) == shown(queries, pids)
    key = KeyClient(running.url)
    assert seen(key, queries, pids) == shown(queries, pids)
