"""Login, sessions, the agent key and throttling, over real HTTP."""

import re
import threading

import pytest

from agent_core.auth import LoginSlots, Throttle, UsersFile, hash_password, verify_password
from agent_core.errors import Unavailable
from agent_core.hookspecs import hookimpl
from agent_core.testing import KEY, PASSWORD, Client, Clock


def test_password_hash_roundtrip_and_parameters_stored():
    encoded = hash_password("s3cret")
    scheme, n, r, p, _salt, _digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert hash_password("s3cret") != encoded  # salted
    assert not verify_password("x", "garbage")


def test_login_returns_64_hex_session(agent):
    res = agent.client().post("/login", {"username": "alice", "password": PASSWORD})
    assert res.status == 200, res
    assert re.fullmatch(r"[0-9a-f]{64}", res.json()["session"])


@pytest.mark.parametrize("username,password", [("alice", "wrong"), ("nobody", PASSWORD)])
def test_wrong_credentials_401_same_message(agent, username, password):
    res = agent.client().post("/login", {"username": username, "password": password})
    assert res.status == 401
    assert res.json() == {"error": "Invalid username/password."}


@pytest.mark.parametrize("body", [{}, {"username": "alice"}, {"username": 1, "password": "x"}])
def test_login_malformed_parameters(agent, body):
    res = agent.client().post("/login", body)
    assert res.status == 406
    assert res.json()["error"].startswith("Parameter '")


def test_session_header_rules(agent):
    c = agent.client()
    for value in (None, "abc", "A" * 64, "g" * 64):
        headers = {} if value is None else {"X-Session": value}
        res = c.get("/profile", headers=headers)
        assert res.status == 406, (value, res)
        assert res.json() == {"error": "Parameter 'X-Session' is malformed."}
    res = c.get("/profile", headers={"X-Session": "0" * 64})
    assert res.status == 401
    assert res.json() == {"error": "Invalid session."}


def test_profile_logout_and_several_sessions(agent):
    first, second = agent.login(), agent.login()
    assert first.session != second.session
    assert first.get("/profile").json() == {"username": "alice", "role": "admin"}
    assert first.get("/logout").json() == {"logout": True}
    assert first.get("/profile").status == 401
    assert second.get("/profile").json() == {"username": "alice", "role": "admin"}


def test_sessions_are_stored_hashed_and_survive_restart(agent):
    c = agent.login()
    with agent.agent.store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM core_sessions")]
    assert c.session not in stored and len(stored) == 1
    agent.restart()
    c2 = Client(agent.url, session=c.session)
    assert c2.get("/profile").json() == {"username": "alice", "role": "admin"}


def test_idle_expiry_slides_and_absolute_limit(make_agent):
    running = make_agent(config={"agent": {"session_idle": 2, "session_lifetime": 4}})
    clock = Clock()  # the agent's time, moved forward instead of slept through
    running.agent.auth.clock = clock.now
    c = running.login()
    for _ in range(3):  # keeps sliding: used every second, alive for 3 s > idle
        clock.advance(1)
        assert c.get("/profile").status == 200
    clock.advance(1.5)  # 4.5 s after login: past the absolute limit
    assert c.get("/profile").status == 401
    idle = running.login()
    clock.advance(2.5)  # unused for longer than the idle limit, within the lifetime
    assert idle.get("/profile").json() == {"error": "Invalid session."}


def test_deleted_user_loses_sessions(agent):
    c = agent.login()
    UsersFile(agent.agent.config.users_path()).delete("alice")
    assert c.get("/profile").status == 401


def test_throttling_grows_with_retry_after(agent):
    clock = Clock()
    agent.agent.auth.throttle = Throttle(agent.agent.config.agent["login_failures"], clock=clock.monotonic)
    c = agent.client()
    statuses = [c.post("/login", {"username": "alice", "password": "bad"}).status for _ in range(3)]
    assert statuses == [401, 401, 401]
    res = c.post("/login", {"username": "alice", "password": PASSWORD})
    assert res.status == 429, res
    assert int(res.headers["Retry-After"]) >= 1
    assert "error" in res.json()
    clock.advance(int(res.headers["Retry-After"]) + 0.1)  # instead of sleeping
    assert c.post("/login", {"username": "alice", "password": "bad"}).status == 401
    res = c.post("/login", {"username": "alice", "password": PASSWORD})
    assert res.status == 429
    assert int(res.headers["Retry-After"]) >= 2  # grows
    # another user from the same address is not throttled
    agent.agent.auth.users.set("bob", PASSWORD)
    assert c.post("/login", {"username": "bob", "password": PASSWORD}).status == 200


def test_key_rules(probe_agent):
    anon = probe_agent.client()
    res = anon.get(f"/probe/hello?key={KEY}")
    assert res.status == 200 and res.json() == {"hello": "key", "auth": "key"}
    assert anon.get("/probe/hello", headers={"X-Pgwarden-Key": KEY}).status == 200
    assert anon.get("/probe/hello", headers={"X-TemBoard-Agent-Key": KEY}).status == 200
    res = anon.get("/probe/hello?key=wrong")
    assert res.status == 401 and res.json() == {"error": "Invalid key."}
    # a route without key=True ignores the key: a session is required
    res = anon.get(f"/probe/private?key={KEY}")
    assert res.status == 406
    s = probe_agent.login()
    assert s.get("/probe/private").json() == {"hello": "alice", "auth": "session"}
    assert s.get("/probe/hello").json() == {"hello": "alice", "auth": "session"}


def test_no_key_configured_refuses_any_key(make_agent, probe):
    running = make_agent(plugins={"probe": probe}, config={"agent": {"key": ""}})
    assert running.client().get("/probe/hello?key=").status == 401
    assert running.client().get("/probe/hello?key=anything").status == 401


def test_public_routes_are_only_login_and_status(probe_agent):
    anon = probe_agent.client()
    assert anon.get("/status").status == 200
    for path in ("/profile", "/logout", "/discover", "/probe/private", "/probe/items", "/probe/pg"):
        assert anon.get(path).status == 406, path


def test_valid_session_wins_over_a_wrong_or_unconfigured_key(probe_agent, make_agent, probe):
    """The temboard UI sends its key beside X-Session on every request."""
    s = probe_agent.login()
    res = s.get("/probe/hello?key=stale")
    assert res.status == 200 and res.json() == {"hello": "alice", "auth": "session"}
    res = s.get(f"/probe/hello?key={KEY}")  # both right: the user is known, not just "key"
    assert res.json() == {"hello": "alice", "auth": "session"}
    bad = Client(probe_agent.url, session="0" * 64)
    assert bad.get(f"/probe/hello?key={KEY}").json() == {"hello": "key", "auth": "key"}
    assert bad.get("/probe/hello?key=stale").json() == {"error": "Invalid key."}


def test_unreadable_users_file_denies_logins(agent, tmp_path):
    import os

    path = agent.agent.config.users_path()
    os.rename(path, path + ".moved")
    os.mkdir(path)  # reading a directory fails: nobody can log in, no 500
    res = agent.client().post("/login", {"username": "alice", "password": PASSWORD})
    assert res.status == 401 and res.json() == {"error": "Invalid username/password."}


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="needs root to change a file's owner")
def test_root_editing_users_file_keeps_its_owner(tmp_path):
    import os
    import pwd

    pg = pwd.getpwnam("postgres")
    os.chown(tmp_path, pg.pw_uid, pg.pw_gid)
    users = UsersFile(str(tmp_path / "users"))
    users.set("alice", "x")  # new file: owned like its directory
    assert os.stat(users.path).st_uid == pg.pw_uid
    users.set("bob", "y")  # rewrite: keeps the owner
    assert os.stat(users.path).st_uid == pg.pw_uid and os.stat(users.path).st_mode & 0o777 == 0o600


def test_read_role_gets_403_on_write_routes_and_reads_everything(make_agent, tmp_path):
    """Permissions are checked with authentication: a ``read`` user may GET,
    gets 403 naming the permission on anything else; a role change applies to
    open sessions at once."""
    from agent_core.hookspecs import Route

    calls = []

    class Probe:
        @staticmethod
        @hookimpl
        def agent_register_routes(agent):
            return [
                Route("GET", "/probe/thing", lambda request: {"role": request.role}, key=True),
                Route("POST", "/probe/thing", lambda request: calls.append(request.username) or {"ok": True}, key=True),
                Route("POST", "/probe/search", lambda request: {"ok": True}, permission="read"),
            ]

    running = make_agent(plugins={"probe": Probe}, users={"alice": PASSWORD, "dash": (PASSWORD, "read")})
    dash = running.login("dash")
    assert dash.get("/profile").json() == {"username": "dash", "role": "read"}
    assert dash.get("/probe/thing").json() == {"role": "read"}
    assert dash.post("/probe/search", {}).status == 200  # a POST declared read
    res = dash.post("/probe/thing", {})
    assert res.status == 403
    assert res.json() == {
        "error": "Permission denied: POST /probe/thing needs the 'write' permission; user 'dash' has the 'read' role."
    }
    assert calls == []  # the view never ran
    # the key (read-only by default) alone, and a read session with the key: still 403
    keyed = running.client()
    assert keyed.request("POST", f"/probe/thing?key={KEY}", json={}).status == 403
    assert keyed.request("GET", f"/probe/thing?key={KEY}").json() == {"role": "read"}
    assert dash.request("POST", f"/probe/thing?key={KEY}", json={}).status == 403
    assert running.login().post("/probe/thing", {}).status == 200
    assert calls == ["alice"]
    # a role change applies at once to the open session
    UsersFile(running.agent.config.users_path()).set("dash", None, "admin")
    assert dash.post("/probe/thing", {}).status == 200
    assert calls == ["alice", "dash"]


def test_key_writes_lets_the_key_call_write_routes(make_agent):
    from agent_core.hookspecs import Route

    class Probe:
        @staticmethod
        @hookimpl
        def agent_register_routes(agent):
            return [Route("POST", "/probe/thing", lambda request: {"role": request.role}, key=True)]

    running = make_agent(plugins={"probe": Probe}, config={"agent": {"key_writes": True}})
    res = running.client().request("POST", f"/probe/thing?key={KEY}", json={})
    assert res.status == 200 and res.json() == {"role": "admin"}


def test_users_file_of_version_0_1_without_roles_still_works(tmp_path):
    path = tmp_path / "users"
    path.write_text(f"alice:{hash_password('pw')}\n")
    users = UsersFile(str(path))
    assert users.load()["alice"].role == "admin" and users.check("alice", "pw")
    path.write_text(f"alice:root:{hash_password('pw')}\n")  # unknown role: refused, not guessed
    assert users.load() == {} and not users.check("alice", "pw")


class FakeClock:
    """An injected monotonic clock: time moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_counts_per_user_whatever_the_address():
    clock = FakeClock()
    throttle = Throttle(failures_per_minute=1000, clock=clock)
    for i in range(3):
        assert throttle.retry_after("admin", f"10.0.0.{i}") == 0
        throttle.failed("admin", f"10.0.0.{i}")
    assert throttle.retry_after("admin", "10.0.0.99") >= 1  # a new address does not help
    assert throttle.retry_after("bob", "10.0.0.1") == 0  # another user is not held
    clock.now += 1.5
    assert throttle.retry_after("admin", "10.0.0.99") == 0
    throttle.failed("admin", "10.0.0.99")
    assert throttle.retry_after("admin", "10.0.0.1") >= 2  # grows


def test_throttle_counts_known_good_addresses_apart():
    clock = FakeClock()
    throttle = Throttle(failures_per_minute=1000, clock=clock)
    throttle.succeeded("admin", "192.0.2.7")  # where the real admin logs in
    for i in range(20):
        throttle.failed("admin", f"10.0.1.{i}")
    assert throttle.retry_after("admin", "10.0.1.200") >= 60
    assert throttle.retry_after("admin", "192.0.2.7") == 0  # not locked out
    for _ in range(3):  # guessing from the known-good address has its own back-off
        throttle.failed("admin", "192.0.2.7")
    assert throttle.retry_after("admin", "192.0.2.7") >= 1


def test_global_failure_budget_slows_strangers_not_known_users():
    clock = FakeClock()
    throttle = Throttle(failures_per_minute=6, clock=clock)  # one every 10 s
    throttle.succeeded("alice", "192.0.2.7")
    for i in range(6):
        assert throttle.retry_after(f"spray{i}", f"10.0.2.{i}") == 0
        throttle.failed(f"spray{i}", f"10.0.2.{i}")
    wait = throttle.retry_after("newcomer", "10.0.3.1")
    assert 1 <= wait <= 10  # spent: a stranger waits for the next token, not minutes
    assert throttle.retry_after("alice", "10.0.3.2") >= 1  # alice from a new address too (the trade-off)
    assert throttle.retry_after("alice", "192.0.2.7") == 0  # alice from her address is never held
    clock.now += 10
    assert throttle.retry_after("newcomer", "10.0.3.1") == 0  # refilled: slowed, not locked


def test_throttle_table_is_bounded_and_evicts_least_recent_never_everyone():
    clock = FakeClock()
    throttle = Throttle(failures_per_minute=10**6, entries=5, clock=clock)
    for i in range(10):
        for _ in range(3):
            throttle.failed(f"user{i}", "10.0.4.1")
        throttle.succeeded(f"other{i}", f"10.0.5.{i}")
    assert throttle.size() == (5, 5)
    for i in range(5, 10):  # the most recent ones are all still held (0.x cleared the whole table)
        assert throttle.retry_after(f"user{i}", "10.0.4.1") >= 1, i
    assert throttle.retry_after("user0", "10.0.4.1") == 0  # the least recently used was forgotten


def test_login_slots_bound_hashes_and_waiters():
    """One hashing at a time: a second login waits (here up to 0.2 s), then 503;
    beyond the waiters allowed, 503 at once (it does not wait for the slot)."""
    slots = LoginSlots(1, wait=0.2, queue=1)
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with slots.slot():
            inside.set()
            release.wait(30)

    def attempt() -> object:
        try:
            with slots.slot():
                return "hashed"
        except Unavailable as e:  # 503
            assert e.retry_after == 1
            return 503

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    assert attempt() == 503  # waited its 0.2 s for the held slot
    release.set()
    holder.join(30)
    assert attempt() == "hashed"

    slots = LoginSlots(1, wait=30, queue=0)
    inside.clear()
    release.clear()
    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    timer = threading.Timer(0.5, release.set)  # a login that waited would get the slot then
    timer.start()
    assert attempt() == 503  # no room to wait: refused at once
    holder.join(30)
    timer.join(30)
