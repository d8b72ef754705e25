"""The temboard web UI 9.0.1 drives pgwarden too, beside the 7.11 UI.

The client below sends what the 9.0.1 UI's agent client sends, as recorded in
``api/temboard-9-ui.md``: HTTPS without certificate check, one new TLS
connection per request, ``HTTP/1.1`` without ``Connection: close``,
``Accept-Encoding: identity``, JSON POST bodies labelled
``application/json``, DELETE without a body, and every request but ``GET
/status`` signed with the UI's RSA key (:class:`TemboardSigner`, real
RSA-PSS signatures): ``Host`` as registered, ``X-TemBoard-Date``,
``X-TemBoard-Request-Id``, ``X-TemBoard-User``, ``X-TemBoard-Signature``.
Each test replays the requests behind one page, in the UI's order, and checks
what the page reads from the answers.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from test_temboard_ui import UI, Recorder, certificate  # noqa: F401 (the 7.11 UI's client and fixture)

import agent_activity.plugin as activity_plugin
import agent_maintenance.plugin as maintenance_plugin
from agent_core.testing import PASSWORD, TemboardSigner, wait_for

TIMEOUT = 30  # the UI's own timeout


class UI9:
    """The 9.0.1 UI's client for one registered agent, acting for one UI user."""

    def __init__(self, agent: Any, signer: TemboardSigner, user: str = "alice"):
        self.agent = agent
        self.signer = signer
        self.user = user
        self.recorded: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return self.agent.url

    def request(self, method: str, target: str, data: Any = None, signed: bool = True) -> tuple[int, Any, Any]:
        body = None
        if data is not None:
            import json

            body = json.dumps(data).encode("utf-8")
        host = f"127.0.0.1:{self.agent.agent.server.port}"
        if signed:
            headers = self.signer.headers(method, target, host, body=body, user=self.user)
        else:
            headers = {"Host": host}
        self.recorded.append(headers)
        res = self.signer.request(self.url, method, target, body=body, headers=headers, timeout=TIMEOUT)
        return res.status, res.json(), res.headers

    def send_again(self, method: str, target: str, headers: dict[str, str], data: Any = None) -> tuple[int, Any]:
        """A recorded request sent again byte for byte (what an attacker on the path could do)."""
        import json

        body = json.dumps(data).encode("utf-8") if data is not None else None
        res = self.signer.request(self.url, method, target, body=body, headers=headers, timeout=TIMEOUT)
        return res.status, res.json()

    def get(self, target: str) -> Any:
        status, body, _ = self.request("GET", target)
        assert status == 200, (target, status, body)
        return body

    def post(self, target: str, data: Any) -> Any:
        status, body, _ = self.request("POST", target, data)
        assert status == 200, (target, status, body)
        return body

    def delete(self, target: str) -> Any:
        status, body, _ = self.request("DELETE", target)
        assert status == 200, (target, status, body)
        return body

    def status(self) -> dict[str, Any]:
        """GET /status, unsigned, on every page render; the page reads postgres.pending_restart."""
        status, body, headers = self.request("GET", "/status", signed=False)
        assert status == 200, body
        assert isinstance(body["postgres"]["pending_restart"], bool)
        assert headers["X-TemBoard-Discover-ETag"]
        return body


@pytest.fixture(scope="module")
def ui_key():
    return TemboardSigner(bits=4096)  # the UI's key size


@pytest.fixture
def ui9_agent(make_agent, databases, certificate, ui_key, tmp_path):  # noqa: F811
    """An agent set up as docs/temboard-ui.md says for both UIs: TLS, the key and
    users for 7.11, the UI's public key and a role mapping for 9.x (signed
    requests read-only, alice admin).

    Depends on ``databases`` first so that the agent stops before its databases are dropped."""
    cert, key = certificate
    running = make_agent(
        plugins={"activity": activity_plugin, "maintenance": maintenance_plugin},
        config={
            "agent": {"tls_cert": cert, "tls_key": key, "log_level": "INFO"},
            "signing": {"public_key": ui_key.write_public(tmp_path / "ui.pem"), "user_roles": "alice:admin"},
        },
        users={"alice": PASSWORD},
    )
    running.recorder = Recorder(running)
    return running


@pytest.fixture
def ui9(ui9_agent, ui_key):
    return UI9(ui9_agent, ui_key)


def notifications(ui: UI9) -> list[tuple[str, str]]:
    return [(e["username"], e["message"]) for e in ui.get("/notifications")]


# -- registration -------------------------------------------------------------------


def test_registration_and_the_transport(ui9_agent, ui9, pg_cluster):
    status, doc, headers = ui9.request("GET", "/discover")
    assert status == 200, doc
    assert doc["signature_status"] == "valid"  # the form stops on "invalid"
    # stored: system.fqdn and postgres.port (required); shown: cpu_count, memory, version_summary, data_directory
    assert doc["system"]["fqdn"] and doc["postgres"]["port"] == pg_cluster.port
    assert doc["system"]["cpu_count"] > 0 and doc["system"]["memory"] > 0
    assert re.fullmatch(r"PostgreSQL \d+\.\d+", doc["postgres"]["version_summary"])
    assert doc["postgres"]["data_directory"] == str(pg_cluster.datadir)
    assert doc["temboard"]["plugins"] == ["activity", "maintenance"]  # pre-ticked; no dashboard
    etag = headers["ETag"]
    assert ui9.status()["postgres"]["pending_restart"] is False
    assert ui9.signer.request(ui9.url, "GET", "/status").headers["X-TemBoard-Discover-ETag"] == etag

    # what reached the agent is what the 9.0.1 UI sends
    environ = ui9_agent.recorder.requests[-3]
    assert environ["PATH_INFO"] == "/discover" and environ["wsgi.url_scheme"] == "https"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and "HTTP_CONNECTION" not in environ
    assert environ["HTTP_ACCEPT_ENCODING"] == "identity"
    assert environ["HTTP_X_TEMBOARD_USER"] == "alice" and environ["HTTP_X_TEMBOARD_SIGNATURE"].startswith("v1:")
    assert "HTTP_X_SESSION" not in environ and "HTTP_X_TEMBOARD_AGENT_KEY" not in environ

    # a UI with another key (or a key fetched from another UI) is told at registration
    status, doc, _ = UI9(ui9_agent, TemboardSigner()).request("GET", "/discover")
    assert status == 200 and doc["signature_status"] == "invalid"


def test_both_ui_generations_side_by_side(ui9_agent, ui9):
    """The 7.11 UI (key and login) and the 9.x UI (signatures) on one agent."""
    old = UI(ui9_agent.url)
    flat = old.get("/discover", query_key=False)
    assert "postgres" not in flat and flat["pg_version_summary"].startswith("PostgreSQL ")
    assert flat["pg_version"].startswith("PostgreSQL ") and len(flat["pg_version"]) > len(flat["pg_version_summary"])
    alice7 = old.login()
    assert alice7.get("/profile") == {"username": "alice", "role": "admin"}
    assert ui9.get("/discover")["signature_status"] == "valid"
    alice7.post("/activity/kill", {"pids": []})
    ui9.post("/activity/kill", {"pids": []})
    assert set(alice7.get("/activity")) == set(ui9.get("/activity")) == {"rows"}
    assert notifications(ui9)[0] == ("alice", "Login")


# -- activity -------------------------------------------------------------------------


def poll_activity(ui: UI9) -> tuple[dict, dict, dict]:
    """One poll of the activity page (every 2 s): three signed requests in a row."""
    blocking, activity, waiting = (
        {row["pid"]: row for row in ui.get(path)["rows"]}
        for path in ("/activity/blocking", "/activity", "/activity/waiting")
    )
    return activity, waiting, blocking


def test_activity_page_and_terminate(ui9, databases, backends):
    db = databases.create("ui9", setup="CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    holder_conn = backends.open(db, application_name="billing batch")
    holder = backends.run("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE", conn=holder_conn)
    holder.done.wait(10)
    reader = backends.run("SELECT count(*) FROM t", dbname=db)
    backends.wait_state(reader.pid, "active", "Lock")
    ui9.status()
    for _ in range(2):
        activity, waiting, blocking = poll_activity(ui9)
        assert activity[holder.pid]["application_name"] == "billing batch"
        assert set(waiting) == {reader.pid} and waiting[reader.pid]["blocked_by"] == [holder.pid]
        assert set(blocking) == {holder.pid} and blocking[holder.pid]["application_name"] == "billing batch"

    assert ui9.post("/activity/kill", {"pids": [holder.pid]}) == {"backends": [{"pid": holder.pid, "killed": True}]}
    reader.join()
    wait_for(lambda: backends.gone(holder.pid))
    activity, waiting, blocking = poll_activity(ui9)
    assert holder.pid not in activity and waiting == {} and blocking == {}
    # the audit log names the UI user who did it
    assert notifications(ui9)[0] == ("alice", f"Backend {holder.pid} terminated")

    # a UI user mapped to nothing but the default role (read): the agent's message, which the UI shows
    bob = UI9(ui9.agent, ui9.signer, user="bob")
    poll_activity(bob)
    status, body, _ = bob.request("POST", "/activity/kill", {"pids": [reader.pid]})
    assert status == 403 and "signed requests of UI user 'bob' have the 'read' role" in body["error"]


# -- maintenance ----------------------------------------------------------------------------


def later(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + seconds))


def test_maintenance_pages_schedule_cancel_and_run_now(ui9, databases):
    setup = "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'x' FROM generate_series(1, 500) i"
    db = databases.create("ui9+plus", setup=setup)  # "+" arrives as a literal "+"
    # the index page (the UI asks both ways), the database and schema pages
    ui9.status()
    assert db in [d["datname"] for d in ui9.get("/maintenance")["databases"]]
    assert ui9.get("/maintenance/") == ui9.get("/maintenance")
    assert "public" in [s["name"] for s in ui9.get(f"/maintenance/{db}")["schemas"]]
    assert "t" in [t["name"] for t in ui9.get(f"/maintenance/{db}/schema/public")["tables"]]
    # the table page and what it polls every 5 s
    table = f"/maintenance/{db}/schema/public/table/t"
    assert ui9.get(table)["indexes"][0]["name"] == "t_pkey"

    def poll_table() -> dict[str, list]:
        return {
            "vacuum": ui9.get(f"{table}/vacuum/scheduled"),
            "analyze": ui9.get(f"{table}/analyze/scheduled"),
            # schema-level, filtered by the page on the items' table
            "reindex": [e for e in ui9.get(f"/maintenance/{db}/schema/public/reindex/scheduled") if e["table"] == "t"],
        }

    assert poll_table() == {"vacuum": [], "analyze": [], "reindex": []}
    when = later(3600)
    vacuum = ui9.post(f"{table}/vacuum", {"datetime": when, "mode": "analyze"})["id"]
    reindex = ui9.post(f"/maintenance/{db}/schema/public/index/t_pkey/reindex", {"datetime": when})["id"]
    listed = poll_table()
    assert [(e["id"], e["status"]) for e in listed["vacuum"]] == [(vacuum, "todo")]
    assert [e["id"] for e in listed["reindex"]] == [reindex], "an index's REINDEX shows on its table's page"
    assert ui9.delete(f"/maintenance/vacuum/{vacuum}") == {"response": "ok"}
    assert poll_table()["vacuum"][0]["status"] == "canceled"
    # run now
    analyze = ui9.post(f"{table}/analyze", {})["id"]
    wait_for(lambda: poll_table()["analyze"][0]["status"] == "done")
    log = notifications(ui9)
    assert log[0] == ("alice", f"ANALYZE of table public.t in database {db} scheduled to run now (operation {analyze})")
    assert ("alice", f"VACUUM (analyze) of table public.t in database {db} canceled (operation {vacuum})") in log


def test_a_recorded_vacuum_replayed_does_not_start_a_second_one(ui9, databases):
    db = databases.create("ui9%pct", setup="CREATE TABLE t (id int)")  # "%" travels as %25, signed as %2525
    target = f"/maintenance/{db.replace('%', '%25')}/schema/public/table/t/vacuum"
    status, first, _ = ui9.request("POST", target, {})
    assert status == 200, first
    recorded = ui9.recorded[-1]
    assert ui9.send_again("POST", target, recorded, {}) == (
        403,
        {"error": "Refused: this request id was already used (a replayed request)."},
    )
    ops = ui9.get(f"/maintenance/{db.replace('%', '%25')}/schema/public/table/t/vacuum/scheduled")
    assert [op["id"] for op in ops] == [first["id"]]


def test_notifications_page(ui9):
    when = later(3600)
    op = ui9.post("/maintenance/postgres/analyze", {"datetime": when})["id"]
    entries = ui9.get("/notifications")
    assert (entries[0]["username"], entries[0]["message"]) == (
        "alice",
        f"ANALYZE of database postgres scheduled for {when} (operation {op})",
    )
    # the UI's background jobs sign as "temboard" (read role here): same page
    assert UI9(ui9.agent, ui9.signer, user="temboard").get("/notifications") == entries
