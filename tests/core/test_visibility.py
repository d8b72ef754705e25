"""What a read user learns from the core's routes: GET /discover's data
directory and other users' names in GET /notifications only with ``[agent]
read_role_sees_details``; GET /openapi.json is the same for everyone. Real
PostgreSQL, real HTTP; a read user, an admin and the agent key."""

from __future__ import annotations

import json
import os
from typing import Any

from agent_core.testing import KEY, PASSWORD, Client

USERS = {"alice": PASSWORD, "dash": (PASSWORD, "read")}


class KeyClient(Client):
    """A client that authenticates with the agent key only (X-Pgwarden-Key)."""

    def request(self, method: str, path: str, json: Any = None, body: Any = None, headers: Any = None) -> Any:
        return super().request(method, path, json=json, body=body, headers={"X-Pgwarden-Key": KEY, **(headers or {})})


def body(client: Client, path: str) -> Any:
    res = client.get(path)
    assert res.status == 200, (path, res)
    return res.json()


def authors(client: Client) -> list[str]:
    return [entry["username"] for entry in body(client, "/notifications")]


def test_read_user_learns_no_data_directory_nor_other_users(make_agent, pg_cluster):
    running = make_agent(users=USERS)
    alice = running.login("alice")
    dash = running.login("dash")
    key = KeyClient(running.url)
    data = os.path.realpath(pg_cluster.datadir)

    assert os.path.realpath(body(alice, "/discover")["pg_data"]) == data
    assert os.path.realpath(body(key, "/discover")["pg_data"]) == data, "temboard registers with the key alone"
    as_read = body(dash, "/discover")
    assert "pg_data" in as_read and as_read["pg_data"] is None, "the field stays, null"
    assert as_read["pg_port"] == pg_cluster.port and as_read["plugins"] == []

    # newest first: dash's login, alice's login
    assert authors(alice) == ["dash", "alice"]
    assert authors(key) == ["dash", "alice"]
    assert authors(dash) == ["dash", "(hidden)"], "a read user sees its own name only"
    assert [e["message"] for e in body(dash, "/notifications")] == ["Login", "Login"]

    # the OpenAPI document is the same for everyone and holds no instance data
    document = body(dash, "/openapi.json")
    assert document == body(alice, "/openapi.json") == body(key, "/openapi.json")
    text = json.dumps(document)
    for secret in (data, pg_cluster.datadir, "alice", KEY):
        assert secret not in text, secret


def test_read_role_sees_details_when_configured(make_agent, pg_cluster):
    running = make_agent(users=USERS, config={"agent": {"read_role_sees_details": True}})
    alice = running.login("alice")
    dash = running.login("dash")
    assert os.path.realpath(body(dash, "/discover")["pg_data"]) == os.path.realpath(pg_cluster.datadir)
    assert authors(dash) == authors(alice) == ["dash", "alice"]
