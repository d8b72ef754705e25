"""Every registered route (enumerated from the running app) against every way
of not being allowed: no credentials, an expired session, a session of a
deleted user, a wrong key, the key where only a session is allowed, a
``read`` user or the read-only key on write routes. Each answer is the
documented status (listed for that operation in GET /openapi.json) with only
``{"error": ...}``, and nothing was done. Then brute force on /login, and the
secrets kept out of the log.
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from agent_core.auth import UsersFile
from agent_core.store import sessions
from agent_core.testing import KEY, PASSWORD, Client, RunningAgent, wait_for

PUBLIC = {("POST", "/login"), ("GET", "/status")}
SETUP = "CREATE SCHEMA s; CREATE TABLE s.t (id int PRIMARY KEY); INSERT INTO s.t VALUES (1);"


def routes(running: RunningAgent) -> list[tuple[str, str]]:
    """(method, rule) of every route of the running app."""
    return sorted({(r.method, r.rule) for r in running.agent.app.app.routes})


def concrete(rule: str, dbname: str) -> str:
    """A URL for ``rule`` naming real objects, so a request let through would find data."""
    values = {"dbname": dbname, "schema": "s", "table": "t", "index": "t_pkey", "op_id": "0badc0de"}
    return re.sub(r"<(\w+)(:[^>]*)?>", lambda m: values[m.group(1)], rule)


def body_for(rule: str) -> Any:
    if rule.endswith("/kill"):
        return {"pids": [2147483647]}
    if rule == "/login":
        return {"username": "alice", "password": PASSWORD}
    return {"datetime": "2999-01-01T00:00:00Z"}


def call(client: Client, method: str, url: str, rule: str, headers: dict[str, str] | None = None) -> Any:
    return client.request(method, url, json=body_for(rule) if method == "POST" else None, headers=headers)


@pytest.fixture
def matrix_agent(start_full: Any, databases: Any) -> tuple[RunningAgent, str]:
    return start_full(), databases.create("authz", setup=SETUP)


def expire(running: RunningAgent, client: Client) -> None:
    """Age ``client``'s session past ``session_lifetime`` in the store, and wait until the agent sees it."""
    past = datetime.now(timezone.utc) - timedelta(days=30)
    with running.agent.store.begin() as conn:
        digest = hashlib.sha256(client.session.encode()).hexdigest()  # the store keeps only this
        conn.execute(sessions.update().where(sessions.c.token_hash == digest).values(created_at=past, last_seen=past))
    wait_for(lambda: client.get("/profile").status == 401, timeout=10)


def test_every_route_refuses_every_kind_of_missing_or_wrong_credentials(matrix_agent):
    running, dbname = matrix_agent
    doc = running.login().get("/openapi.json").json()
    users = UsersFile(running.agent.config.users_path())
    users.set("carol", PASSWORD, "admin")
    deleted = running.login("carol")
    users.delete("carol")
    expired = running.login()
    expire(running, expired)
    kinds = {
        "no credentials": (Client(running.url), {}),
        "expired session": (expired, {}),
        "deleted user": (deleted, {}),
        "wrong key": (Client(running.url), {"X-Pgwarden-Key": "wrong-" + KEY}),
        "wrong key in the query": (Client(running.url), {"_query": "key=wrong"}),
    }
    checked = 0
    for method, rule in routes(running):
        if (method, rule) in PUBLIC:
            continue
        spec = doc["paths"][re.sub(r"<(\w+)(:[^>]*)?>", r"{\1}", rule)][method.lower()]
        key_route = any("key" in s for s in spec["security"])
        for kind, (client, headers) in kinds.items():
            headers = dict(headers)
            url = concrete(rule, dbname)
            if "_query" in headers:
                url += "?" + headers.pop("_query")
            res = call(client, method, url, rule, headers)
            if kind.startswith("wrong key") and key_route:
                expected = 401
            elif kind in ("no credentials",) or kind.startswith("wrong key"):
                expected = 406  # the key is ignored where it is not accepted: no session
            else:
                expected = 401
            assert res.status == expected, (kind, method, rule, res)
            assert set(res.json()) == {"error"}, (kind, method, rule, res)
            assert str(res.status) in spec["responses"], (kind, method, rule, "status not documented")
            checked += 1
    assert checked == len(kinds) * len([r for r in routes(running) if r not in PUBLIC]) > 5 * 30
    # nothing was scheduled or killed through all of this
    alice = running.login()
    for verb in ("vacuum", "analyze", "reindex"):
        assert alice.get(f"/maintenance/{verb}/scheduled").json() == []


def test_the_key_and_the_read_role_never_write(matrix_agent):
    running, dbname = matrix_agent
    doc = running.login().get("/openapi.json").json()
    dash = running.login("dash")  # the read role
    keyed = Client(running.url)
    checked = 0
    for method, rule in routes(running):
        if (method, rule) in PUBLIC or rule == "/logout":  # logout: ends dash's session, checked last
            continue
        spec = doc["paths"][re.sub(r"<(\w+)(:[^>]*)?>", r"{\1}", rule)][method.lower()]
        key_route = any("key" in s for s in spec["security"])
        url = concrete(rule, dbname)
        with_key = call(keyed, method, url, rule, {"X-Pgwarden-Key": KEY})
        as_dash = call(dash, method, url, rule)
        if method == "GET" or rule == "/login":
            if not key_route:  # the key where only a session is allowed: ignored, no session
                assert with_key.status == 406 and set(with_key.json()) == {"error"}, (rule, with_key)
            else:
                assert with_key.status in (200, 404), (rule, with_key)  # 404: the op_id of a cancel...
            assert as_dash.status in (200, 404), (rule, as_dash)
        else:
            expected_key = 403 if key_route else 406
            assert with_key.status == expected_key and set(with_key.json()) == {"error"}, (rule, with_key)
            assert as_dash.status == 403 and set(as_dash.json()) == {"error"}, (rule, as_dash)
            assert "'write' permission" in as_dash.json()["error"]
            assert "403" in spec["responses"] and str(expected_key) in spec["responses"]
        checked += 1
    assert checked == len([r for r in routes(running) if r not in PUBLIC and r[1] != "/logout"]) > 30
    alice = running.login()
    for verb in ("vacuum", "analyze", "reindex"):
        assert alice.get(f"/maintenance/{verb}/scheduled").json() == []
    with running.agent.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM activity_kills").scalar() == 0
    assert dash.get("/logout").status == 200 and dash.get("/profile").status == 401


def test_brute_force_on_login_is_throttled_while_others_are_served(matrix_agent):
    running, dbname = matrix_agent
    alice = running.login()
    dash_password_attempts: list[int] = []

    def brute() -> None:
        client = Client(running.url)
        for i in range(15):
            res = client.post("/login", {"username": "dash", "password": f"guess-{i}"})
            dash_password_attempts.append(res.status)

    threads = [threading.Thread(target=brute) for _ in range(4)]
    for t in threads:
        t.start()
    others: list[int] = []
    while any(t.is_alive() for t in threads):
        others += [
            alice.get("/profile").status,
            alice.get("/activity").status,
            alice.get(f"/maintenance/{dbname}").status,
            Client(running.url).get("/maintenance", headers={"X-Pgwarden-Key": KEY}).status,
        ]
    for t in threads:
        t.join()
    assert len(dash_password_attempts) == 60
    assert set(dash_password_attempts) <= {401, 429}
    assert dash_password_attempts.count(429) >= 30  # throttled after the first failures
    assert others and set(others) == {200}, others
    # another user still logs in; the brute-forced one waits, even with the right password
    assert Client(running.url).post("/login", {"username": "alice", "password": PASSWORD}).status == 200
    res = Client(running.url).post("/login", {"username": "dash", "password": PASSWORD})
    assert res.status == 429 and int(res.headers["Retry-After"]) >= 1, res


def test_the_key_passwords_and_sessions_never_reach_the_log(matrix_agent, agent_log):
    running, dbname = matrix_agent
    wrong_password = "wrong horse battery staple 7f3a"
    anon = Client(running.url)
    assert anon.post("/login", {"username": "alice", "password": wrong_password}).status == 401
    assert anon.post("/login", {"username": "nobody-" + wrong_password, "password": PASSWORD}).status == 401
    alice = running.login()
    for res in (
        anon.get(f"/activity?key={KEY}"),
        anon.get(f"/activity?%6Bey={KEY}&limit=5"),
        anon.get("/activity", headers={"X-Pgwarden-Key": KEY}),
        anon.get("/activity", headers={"X-TemBoard-Agent-Key": KEY}),
        anon.get("/maintenance?key=wrong-" + KEY),
        alice.get(f"/maintenance/{dbname}?key={KEY}"),
        alice.post(f"/maintenance/{dbname}/analyze?key={KEY}", {}),
        alice.request("POST", "/login", body=f'{{"username": "alice", "password": "{PASSWORD}", "x": [[[1]]]}}'),
        anon.request("POST", "/login", body=f'{{"username": "alice", "password": "{PASSWORD}"'),  # broken JSON
    ):
        assert res.status < 500, res
    text = agent_log.text
    assert "pgwarden.access" in text  # the log was captured
    for secret in (KEY, PASSWORD, wrong_password, alice.session):
        assert secret not in text, f"{secret[:12]}... found in the log"
