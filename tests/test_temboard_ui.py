"""The temboard web UI 7.11 drives pgwarden as it drives the temboard agent.

The client below sends what the UI's ``temboardclient.temboard_request``
sends (urllib, as in temboard 7.x): TLS without SNI and without certificate
check, one connection per request with ``Connection: close``, the key in the
query string *and* in ``X-TemBoard-Agent-Key``, ``X-Session`` once logged
in, and JSON bodies labelled ``application/x-www-form-urlencoded`` (urllib
sets that content type before the UI's own ``Content-type:
application/json`` opener header, which is then dropped). A WSGI wrapper
records what reached the agent, so the tests check both what was sent and
what was answered. The UI has no timeout; these requests have one, so that a
stalled agent fails the test instead of hanging it.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest

import agent_activity.plugin as activity_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import KEY, PASSWORD, certificate_files, wait_for
from agent_maintenance.sizes import pretty

TIMEOUT = 60
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


# -- the UI's HTTP client ----------------------------------------------------------


def _ui_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class UnverifiedHTTPSConnection(http.client.HTTPSConnection):
    """The UI's connection: the socket wrapped without a server name (no SNI),
    the certificate not verified."""

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = _ui_context().wrap_socket(sock)


class UnverifiedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(UnverifiedHTTPSConnection, req)


class UI:
    """What the UI sends to one agent: ``key`` always, ``session`` once logged in."""

    def __init__(self, base_url: str, key: str | None = KEY, session: str | None = None):
        self.base_url = base_url
        self.key = key
        self.session = session

    def request(self, method: str, path: str, data: Any = None, query_key: bool = True) -> tuple[int, Any]:
        headers = {"Content-type": "application/json"}
        if self.key is not None:
            headers["X-TemBoard-Agent-Key"] = self.key
        if self.session is not None:
            headers["X-Session"] = self.session
        opener = urllib.request.build_opener(UnverifiedHTTPSHandler())
        opener.addheaders = list(headers.items())
        url = self.base_url + path
        if query_key and self.key is not None:
            url += ("&" if "?" in path else "?") + "key=" + quote(self.key)
        body = json.dumps(data).encode("utf-8") if data is not None else None
        req = urllib.request.Request(url, data=body, method=method)
        try:
            with opener.open(req, timeout=TIMEOUT) as handle:
                return handle.status, json.loads(handle.read())
        except urllib.error.HTTPError as e:  # the UI reads {"error": ...}
            with e:
                return e.code, json.loads(e.read())

    def get(self, path: str, **kw: Any) -> Any:
        status, body = self.request("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, data: Any) -> Any:
        status, body = self.request("POST", path, data)
        assert status == 200, (path, status, body)
        return body

    def delete(self, path: str) -> Any:
        status, body = self.request("DELETE", path)
        assert status == 200, (path, status, body)
        return body

    def login(self, username: str = "alice", password: str = PASSWORD) -> UI:
        body = self.post("/login", {"username": username, "password": password})
        return UI(self.base_url, self.key, body["session"])


# -- the agent -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    return certificate_files(tmp_path_factory.mktemp("tls"), "pgwarden.example")


class Recorder:
    """What reached the agent: the WSGI environ of each request, and the SNI names of TLS handshakes."""

    def __init__(self, running: Any):
        self.requests: list[dict[str, Any]] = []
        self.server_names: list[str | None] = []
        http = running.agent.server
        for server in getattr(http, "servers", None) or [http.server]:  # cheroot servers (one per address)
            server.wsgi_app = self._wrap(server.wsgi_app)
            server.ssl_adapter.context.sni_callback = lambda sslobj, name, ctx: self.server_names.append(name)

    def _wrap(self, app: Any) -> Any:
        def recording(environ: dict[str, Any], start_response: Any) -> Any:
            self.requests.append(dict(environ))
            return app(environ, start_response)

        return recording


@pytest.fixture
def ui_agent(make_agent, databases, certificate):
    """An agent like one the UI registers: TLS, a key, both plugins.

    Depends on ``databases`` first so that the agent stops before its databases are dropped."""
    cert, key = certificate
    running = make_agent(
        plugins={"activity": activity_plugin, "maintenance": maintenance_plugin},
        config={"agent": {"tls_cert": cert, "tls_key": key, "log_level": "INFO"}},
        users={"alice": PASSWORD, "dash": (PASSWORD, "read")},
    )
    running.recorder = Recorder(running)
    return running


@pytest.fixture
def ui(ui_agent):
    return UI(ui_agent.url)


def notifications(ui: UI) -> list[tuple[str, str]]:
    entries = ui.get("/notifications")
    for entry in entries:
        assert set(entry) == {"date", "username", "message"} and DATE.match(entry["date"]), entry
    return [(e["username"], e["message"]) for e in entries]


# -- registration, login, profile, transport ------------------------------------------


def test_registration_discover_with_the_key_header_only(ui_agent, ui):
    status, body = ui.request("GET", "/discover", query_key=False)
    assert status == 200, body
    types = {
        "hostname": str,
        "cpu": int,
        "memory_size": int,
        "pg_port": int,
        "pg_version": str,
        "pg_version_summary": str,
        "pg_data": str,
        "plugins": list,
        "pg_block_size": int,
    }
    for name, kind in types.items():
        assert type(body[name]) is kind, (name, body[name])
    assert body["plugins"] == ["activity", "maintenance"]
    assert body["pg_port"] == ui_agent.agent.config.postgresql["port"]
    assert body["pg_block_size"] == 8192
    assert body["pg_version_summary"].startswith("PostgreSQL ")
    assert body["memory_size"] > 0 and body["cpu"] > 0
    environ = ui_agent.recorder.requests[-1]
    assert "HTTP_X_SESSION" not in environ and environ["QUERY_STRING"] == ""
    assert environ["HTTP_X_TEMBOARD_AGENT_KEY"] == KEY
    # a wrong key is refused with the error the UI shows
    assert UI(ui_agent.url, key="wrong").request("GET", "/discover", query_key=False) == (
        401,
        {"error": "Invalid key."},
    )


def test_what_the_ui_sends_is_what_the_issue_recorded(ui_agent, ui):
    """Check the replica of the UI's client itself, so the other tests test the right thing."""
    alice = ui.login()
    alice.post("/activity/kill", {"pids": []})
    post = ui_agent.recorder.requests[-1]
    assert post["REQUEST_METHOD"] == "POST" and post["PATH_INFO"] == "/activity/kill"
    assert post["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert post["HTTP_CONNECTION"] == "close"
    assert post["QUERY_STRING"] == f"key={KEY}"
    assert post["HTTP_X_TEMBOARD_AGENT_KEY"] == KEY
    assert post["HTTP_X_SESSION"] == alice.session
    assert post["wsgi.url_scheme"] == "https"
    assert ui_agent.recorder.server_names and set(ui_agent.recorder.server_names) == {None}, "no SNI sent"
    login = ui_agent.recorder.requests[-2]
    assert login["PATH_INFO"] == "/login" and login["QUERY_STRING"] == f"key={KEY}"
    assert login["HTTP_X_TEMBOARD_AGENT_KEY"] == KEY


def test_connection_close_is_honoured(ui_agent):
    """One connection per request: the agent answers and closes, so a client
    reading to the end of the stream (no timeout in the UI) is not left waiting."""
    host, port = "127.0.0.1", ui_agent.agent.server.port
    with socket.create_connection((host, port), timeout=TIMEOUT) as raw:
        with _ui_context().wrap_socket(raw) as sock:
            sock.sendall(
                f"GET /discover HTTP/1.1\r\nAccept-Encoding: identity\r\nHost: {host}:{port}\r\n"
                f"User-Agent: Python-urllib/3.11\r\nX-Temboard-Agent-Key: {KEY}\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head
    assert json.loads(body)["plugins"] == ["activity", "maintenance"]


def test_login_profile_and_the_session_wins_over_the_key(ui_agent, ui):
    alice = ui.login()
    assert re.fullmatch(r"[0-9a-f]{64}", alice.session)
    assert alice.get("/profile") == {"username": "alice", "role": "admin"}
    # a stale key beside a valid session: the session decides, on key routes and session-only ones
    stale = UI(ui_agent.url, key="stale", session=alice.session)
    assert stale.get("/profile")["username"] == "alice"
    assert stale.get("/activity")["rows"] is not None
    assert stale.post("/activity/kill", {"pids": []}) == {"backends": []}
    assert stale.get("/notifications")[0]["username"] == "alice"
    # without a valid session the UI gets the errors it displays
    assert UI(ui_agent.url).request("GET", "/profile") == (406, {"error": "Parameter 'X-Session' is malformed."})
    expired = UI(ui_agent.url, session="0" * 64)
    assert expired.request("GET", "/profile") == (401, {"error": "Invalid session."})
    # POST /login is public: a stale key sent with it does not matter
    assert UI(ui_agent.url, key="stale").login().get("/profile")["username"] == "alice"
    assert ui.request("POST", "/login", {"username": "alice", "password": "nope"}) == (
        401,
        {"error": "Invalid username/password."},
    )


# -- activity ----------------------------------------------------------------------


def poll_activity(ui: UI) -> tuple[dict, dict, dict]:
    """What an activity page fetches every 2 seconds, whatever its tab."""
    return tuple(
        {row["pid"]: row for row in ui.get(path)["rows"]}
        for path in ("/activity", "/activity/waiting", "/activity/blocking")
    )


def test_activity_pages_and_terminate(ui_agent, ui, databases, backends):
    db = databases.create("ui", setup="CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    holder = backends.hold("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE", dbname=db)
    assert holder.error is None
    reader = backends.run("SELECT count(*) FROM t", dbname=db)
    backends.wait_state(reader.pid, "active", "Lock")
    alice = ui.login()
    alice.get("/profile")
    for _ in range(2):  # two rounds of polling
        activity, waiting, blocking = poll_activity(alice)
        assert {holder.pid, reader.pid} <= set(activity)
        assert activity[reader.pid]["database"] == db and activity[reader.pid]["wait"] == "Y"
        assert set(waiting) == {reader.pid} and waiting[reader.pid]["blocked_by"] == [holder.pid]
        assert set(blocking) == {holder.pid} and blocking[holder.pid]["blocks"] == [reader.pid]

    assert alice.post("/activity/kill", {"pids": [holder.pid]}) == {"backends": [{"pid": holder.pid, "killed": True}]}
    reader.join()
    assert reader.error is None, "the reader got its lock once the holder was terminated"
    wait_for(lambda: backends.gone(holder.pid))
    activity, waiting, blocking = poll_activity(alice)
    assert holder.pid not in activity and waiting == {} and blocking == {}
    assert notifications(alice)[0] == ("alice", f"Backend {holder.pid} terminated")

    # refused pids are answered, not recorded as terminated
    own = alice.post("/activity/kill", {"pids": [1]})["backends"]
    assert own == [{"pid": 1, "killed": False, "reason": "not a backend of this PostgreSQL instance"}]
    assert notifications(alice)[0] == ("alice", f"Backend {holder.pid} terminated")
    # errors as the UI reads them
    assert alice.request("POST", "/activity/kill", {"pids": "x"}) == (406, {"error": "Parameter 'pids' is malformed."})


# -- maintenance -------------------------------------------------------------------


def check_sizes(value: Any) -> int:
    """Every ``<x>_bytes`` has its ``<x>_size`` beside it, equal to
    ``pg_size_pretty`` of it (the UI computes from one and shows the other).
    Returns how many pairs were checked."""
    checked = 0
    if isinstance(value, dict):
        for name, item in value.items():
            if name.endswith("_bytes"):
                size = name[: -len("_bytes")] + "_size"
                assert size in value, (name, value)
                assert item is None or type(item) is int, (name, item)
                assert value[size] == pretty(item), (name, item, value[size])
                checked += 1
            else:
                checked += check_sizes(item)
    elif isinstance(value, list):
        checked += sum(check_sizes(item) for item in value)
    return checked


def later(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + seconds))


def test_maintenance_pages_schedule_and_cancel(ui_agent, ui, databases):
    setup = (
        "CREATE TABLE t (id int PRIMARY KEY, v text);"
        " INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(1, 1000) i"
    )
    db = databases.create("ui", setup=setup)
    alice = ui.login()
    alice.get("/profile")

    # the instance page, the database page and its three listings
    instance = alice.get("/maintenance")
    assert db in [d["datname"] for d in instance["databases"]]
    assert check_sizes(instance) > 0
    database = alice.get(f"/maintenance/{db}")
    assert "public" in [s["name"] for s in database["schemas"]]
    assert check_sizes(database) > 0
    for verb in ("vacuum", "analyze", "reindex"):
        assert alice.get(f"/maintenance/{db}/{verb}/scheduled") == []
    # the schema page and its REINDEX listing
    schema = alice.get(f"/maintenance/{db}/schema/public")
    assert "t" in [table["name"] for table in schema["tables"]]
    assert check_sizes(schema) > 0
    assert alice.get(f"/maintenance/{db}/schema/public/reindex/scheduled") == []
    # the table page and its three listings
    table_page = f"/maintenance/{db}/schema/public/table/t"
    table = alice.get(table_page)
    assert table["total_bytes"] > 0 and check_sizes(table) > 0
    assert [index["name"] for index in table["indexes"]] == ["t_pkey"]

    # the bodies the UI sends
    vacuum = alice.post(f"{table_page}/vacuum", {"mode": "analyze"})["id"]
    analyze = alice.post(f"{table_page}/analyze", {})["id"]
    when = later(3600)
    reindex = alice.post(f"{table_page}/reindex", {"datetime": when})["id"]
    listed = {verb: alice.get(f"{table_page}/{verb}/scheduled") for verb in ("vacuum", "analyze", "reindex")}
    assert [e["id"] for e in listed["vacuum"]] == [vacuum] and listed["vacuum"][0]["mode"] == "analyze"
    assert [e["id"] for e in listed["analyze"]] == [analyze]
    assert [(e["id"], e["status"], e["datetime"]) for e in listed["reindex"]] == [(reindex, "todo", when)]
    assert [e["id"] for e in alice.get(f"/maintenance/{db}/schema/public/reindex/scheduled")] == [reindex]
    assert alice.delete(f"/maintenance/reindex/{reindex}") == {"response": "ok"}
    assert alice.get(f"{table_page}/reindex/scheduled")[0]["status"] == "canceled"

    def finished() -> bool:
        ops = alice.get(f"/maintenance/{db}/vacuum/scheduled") + alice.get(f"/maintenance/{db}/analyze/scheduled")
        return all(op["status"] == "done" for op in ops)

    wait_for(finished)

    log = notifications(alice)
    target = f"of table public.t in database {db}"
    assert log[:4] == [
        ("alice", f"REINDEX {target} canceled (operation {reindex})"),
        ("alice", f"REINDEX {target} scheduled for {when} (operation {reindex})"),
        ("alice", f"ANALYZE {target} scheduled to run now (operation {analyze})"),
        ("alice", f"VACUUM (analyze) {target} scheduled to run now (operation {vacuum})"),
    ]

    # errors as the UI reads them
    assert alice.request("GET", "/maintenance/no_such_db") == (404, {"error": "Database 'no_such_db' not found."})
    assert alice.request("POST", f"{table_page}/vacuum", {"datetime": "tomorrow"}) == (
        406,
        {"error": "Parameter 'datetime' is malformed."},
    )
    assert alice.request("DELETE", f"/maintenance/reindex/{reindex}")[0] == 409


def test_notifications_page(ui_agent, ui):
    first = ui.login()
    assert first.get("/logout") == {"logout": True}
    assert first.request("GET", "/profile") == (401, {"error": "Invalid session."})  # the UI logs in again
    second = ui.login()
    assert notifications(second) == [("alice", "Login"), ("alice", "Logout"), ("alice", "Login")]
    environ = ui_agent.recorder.requests[-1]
    assert environ["PATH_INFO"] == "/notifications" and environ["QUERY_STRING"] == f"key={KEY}"


def test_a_read_only_user_sees_every_page_and_gets_the_agents_message_on_writes(ui_agent, ui):
    dash = ui.login("dash")
    assert dash.get("/profile") == {"username": "dash", "role": "read"}
    poll_activity(dash)
    dash.get("/maintenance")
    dash.get("/maintenance/postgres/vacuum/scheduled")
    status, body = dash.request("POST", "/activity/kill", {"pids": [1]})
    assert status == 403 and body["error"].startswith("Permission denied: POST /activity/kill needs the 'write'")
    status, body = dash.request("POST", "/maintenance/postgres/analyze", {})
    assert status == 403 and "user 'dash' has the 'read' role" in body["error"]
    assert dash.get("/maintenance/analyze/scheduled") == []
    assert notifications(dash) == [("dash", "Login")]
