"""GET /notifications: the audit log in the operations store, and Agent.notify."""

import logging
import re
import types

import pytest

from agent_core.config import RawConfig, agent_schema, postgresql_schema, validate
from agent_core.errors import ConfigError
from agent_core.hookspecs import Route, hookimpl
from agent_core.testing import KEY, PASSWORD, Client

DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


def make_audited():
    """A plugin named ``audited`` whose write route records what it did with ``agent.notify``."""

    def act(request):
        """POST /audited/act {"what": ...}: 200."""
        request.agent.notify(request.requester, f"Did {request.json().get('what')}")
        return {"done": True}

    @hookimpl
    def agent_register_routes(agent):
        return [Route("POST", "/audited/act", act, key=True)]

    return types.SimpleNamespace(agent_register_routes=agent_register_routes)


def messages(client):
    res = client.get("/notifications")
    assert res.status == 200, res
    return [(e["username"], e["message"]) for e in res.json()]


def test_logins_and_logouts_newest_first_with_temboard_fields(make_agent):
    running = make_agent(users={"alice": PASSWORD, "bob": PASSWORD})
    alice = running.login("alice")
    bob = running.login("bob")
    assert bob.get("/logout").status == 200
    res = alice.get("/notifications")
    assert res.status == 200
    assert res.headers["Content-Type"] == "application/json"
    entries = res.json()
    assert [(e["username"], e["message"]) for e in entries] == [("bob", "Logout"), ("bob", "Login"), ("alice", "Login")]
    for entry in entries:
        assert set(entry) == {"date", "username", "message"}
        assert DATE.match(entry["date"]), entry


def test_failed_logins_are_not_recorded(agent):
    assert agent.client().post("/login", {"username": "alice", "password": "wrong"}).status == 401
    assert agent.client().post("/login", {"username": "nobody", "password": "x"}).status == 401
    assert messages(agent.login()) == [("alice", "Login")]


def test_bounded_to_notifications_max_keeping_the_newest(make_agent):
    running = make_agent(plugins={"audited": make_audited()}, config={"agent": {"notifications_max": 3}})
    c = running.login()
    for n in range(5):
        assert c.post("/audited/act", {"what": n}).status == 200
    assert messages(c) == [("alice", "Did 4"), ("alice", "Did 3"), ("alice", "Did 2")]
    with running.agent.store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM core_notifications").scalar() == 3


def test_kept_across_restarts(agent):
    agent.login()
    agent.restart()
    assert messages(agent.login()) == [("alice", "Login"), ("alice", "Login")]


def test_postgresql_store(make_agent, pg_cluster, databases):
    store = pg_cluster.url(databases.create("store"))
    running = make_agent(
        plugins={"audited": make_audited()}, config={"agent": {"store": store, "notifications_max": 2}}
    )
    c = running.login()
    c.post("/audited/act", {"what": "x"})
    c.post("/audited/act", {"what": "y"})
    assert messages(c) == [("alice", "Did y"), ("alice", "Did x")]
    running.stop()  # before the database is dropped


def test_plugin_notify_records_the_requester(make_agent):
    running = make_agent(plugins={"audited": make_audited()}, config={"agent": {"key_writes": True}})
    assert running.client().post("/audited/act", {"what": "it"}, headers={"X-Pgwarden-Key": KEY}).status == 200
    c = running.login()
    c.post("/audited/act", {"what": "that"})
    assert messages(c) == [("alice", "Did that"), ("alice", "Login"), ("key", "Did it")]


def test_notify_never_raises_when_the_store_fails(make_agent, caplog):
    running = make_agent(plugins={"audited": make_audited()})
    c = running.login()
    with running.agent.store.begin() as conn:
        conn.exec_driver_sql("DROP TABLE core_notifications")
    with caplog.at_level(logging.ERROR, logger="pgwarden"):
        res = c.post("/audited/act", {"what": "it"})
    assert res.status == 200 and res.json() == {"done": True}
    assert "could not record the notification 'Did it'" in caplog.text


def test_authentication_session_or_key(make_agent):
    running = make_agent(users={"alice": PASSWORD, "dash": (PASSWORD, "read")})
    anonymous = running.client()
    res = anonymous.get("/notifications")
    assert res.status == 406 and res.json() == {"error": "Parameter 'X-Session' is malformed."}
    assert anonymous.get("/notifications", headers={"X-Session": "0" * 64}).status == 401
    res = anonymous.get("/notifications?key=wrong")
    assert res.status == 401 and res.json() == {"error": "Invalid key."}
    # the key (read-only) and a user of the read role may read the log
    assert anonymous.get(f"/notifications?key={KEY}").status == 200
    assert anonymous.get("/notifications", headers={"X-TemBoard-Agent-Key": KEY}).status == 200
    assert messages(running.login("dash")) == [("dash", "Login")]
    # a valid session with a wrong key: the session decides
    dash = running.login("dash")
    res = Client(running.url, session=dash.session).get("/notifications?key=wrong")
    assert res.status == 200 and len(res.json()) == 2


def test_notifications_max_must_be_positive():
    raw = RawConfig.from_dict({"agent": {"notifications_max": 0, "home": "/tmp"}})
    with pytest.raises(ConfigError) as e:
        validate(raw, [agent_schema(), postgresql_schema()], environ={})
    assert "agent.notifications_max: must be greater than 0" in e.value.problems
    config = validate(RawConfig.from_dict({"agent": {"home": "/tmp"}}), [agent_schema(), postgresql_schema()], {})
    assert config.agent["notifications_max"] == 1000


# -- bounded by design: age retention on write, pages ---------------------------------


def test_entries_older_than_notifications_max_age_are_deleted_on_the_next_write(make_agent):
    from datetime import datetime, timedelta, timezone

    from agent_core.store import notifications

    running = make_agent(plugins={"audited": make_audited()}, config={"agent": {"notifications_max_age": 3600}})
    c = running.login()
    with running.agent.store.begin() as conn:
        conn.execute(
            notifications.insert().values(
                at=datetime.now(timezone.utc) - timedelta(hours=2), username="old", message="Long ago"
            )
        )
    assert ("old", "Long ago") in messages(c)
    assert c.post("/audited/act", {"what": "it"}).status == 200
    assert messages(c) == [("alice", "Did it"), ("alice", "Login")]


def test_pages_with_limit_and_cursor_headers(make_agent):
    running = make_agent(plugins={"audited": make_audited()})
    c = running.login()
    for n in range(6):
        c.post("/audited/act", {"what": n})
    everything = c.get("/notifications")
    assert everything.status == 200 and len(everything.json()) == 7
    assert "X-Next-Cursor" not in everything.headers and "Link" not in everything.headers
    seen, path = [], f"/notifications?limit=3&key={KEY}"
    for _ in range(5):  # bounded: 3 pages expected
        res = c.get(path)
        assert res.status == 200 and isinstance(res.json(), list) and len(res.json()) <= 3
        seen += res.json()
        if "X-Next-Cursor" not in res.headers:
            break
        assert {"Link", "X-Next-Cursor"} <= set(
            h.strip() for h in res.headers["Access-Control-Expose-Headers"].split(",")
        )
        link = re.fullmatch(r'<(/notifications\?[^>]*)>; rel="next"', res.headers["Link"])
        assert link and f"cursor={res.headers['X-Next-Cursor']}" in link.group(1) and "key=" not in link.group(1)
        path = link.group(1)
    assert seen == everything.json()
    for bad in ("limit=0", "limit=abc", "limit=10001", "limit=-1", "cursor=abc", "cursor=" + "9" * 30, "cursor=%FF"):
        res = c.get(f"/notifications?{bad}")
        assert res.status == 400 and set(res.json()) == {"error"}, (bad, res)
