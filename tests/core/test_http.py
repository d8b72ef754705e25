"""Every response is JSON; errors never leak HTML or tracebacks."""

import logging
import socket

from agent_core import __version__
from agent_core.testing import KEY


def assert_json_error(res, status, contains=""):
    assert res.status == status, res
    assert res.headers["Content-Type"].startswith("application/json"), res.headers
    body = res.json()
    assert set(body) == {"error"}, body
    assert contains in body["error"]
    assert "<html" not in res.text.lower()
    return body["error"]


def test_unknown_route_is_json_404(probe_agent):
    assert_json_error(probe_agent.client().get("/nope"), 404, "/nope")
    assert_json_error(probe_agent.client().get("/probe/nope"), 404)


def test_wrong_method_is_json_405_with_allow(probe_agent):
    res = probe_agent.client().delete("/status")
    assert_json_error(res, 405)
    assert "GET" in res.headers["Allow"]


def test_body_too_large_is_413(probe_agent, client):
    c = probe_agent.login()
    res = c.request(
        "POST", "/probe/echo", body=b'{"a": "' + b"x" * 200_000 + b'"}', headers={"Content-Type": "application/json"}
    )
    assert_json_error(res, 413)


def test_non_json_body_is_400(probe_agent):
    c = probe_agent.login()
    assert_json_error(c.request("POST", "/probe/echo", body="not json", headers={"Content-Type": "text/plain"}), 400)
    assert_json_error(c.request("POST", "/login", body="{bad", headers={"Content-Type": "application/json"}), 400)


def test_json_body_accepted_whatever_the_content_type(probe_agent):
    c = probe_agent.login()
    res = c.request(
        "POST", "/probe/echo", body='{"a": 1}', headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert res.status == 200, res
    assert res.json() == {"body": {"a": 1}}


def test_unexpected_exception_is_generic_500_and_logged(probe_agent, caplog):
    with caplog.at_level(logging.ERROR, logger="pgwarden.http"):
        res = probe_agent.client().get(f"/probe/boom?key={KEY}")
    message = assert_json_error(res, 500)
    assert "secret internal detail" not in res.text
    assert "Traceback" not in res.text
    assert "see the agent's log" in message
    assert any(
        "secret internal detail" in r.getMessage()
        or (r.exc_text and "secret" in r.exc_text)
        or (r.exc_info and "secret" in str(r.exc_info[1]))
        for r in caplog.records
    )


def test_http_error_from_view_keeps_status(probe_agent):
    assert_json_error(probe_agent.client().get(f"/probe/teapot?key={KEY}"), 418, "teapot")


def test_list_results_are_json_arrays(probe_agent):
    res = probe_agent.client().get(f"/probe/items?key={KEY}")
    assert res.status == 200
    assert res.headers["Content-Type"].startswith("application/json")
    assert res.json() == [1, 2, 3]


def test_server_and_cors_headers_on_every_response(make_agent):
    running = make_agent(config={"agent": {"cors_origin": "https://ui.example"}})
    for res in (running.client().get("/status"), running.client().get("/nope"), running.client().get("/profile")):
        assert res.headers["Server"] == f"pgwarden/{__version__}"
        assert res.headers["Access-Control-Allow-Origin"] == "https://ui.example"


def test_options_preflight(probe_agent):
    res = probe_agent.client().request(
        "OPTIONS",
        "/probe/echo",
        headers={
            "Origin": "https://ui.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "X-Session, Content-Type",
        },
    )
    assert res.status == 204
    assert "POST" in res.headers["Access-Control-Allow-Methods"]
    assert "X-Session" in res.headers["Access-Control-Allow-Headers"]
    assert "Content-Type" in res.headers["Access-Control-Allow-Headers"]
    assert res.headers["Access-Control-Allow-Origin"] == "*"


def test_access_log_redacts_key(probe_agent, caplog):
    with caplog.at_level(logging.INFO, logger="pgwarden.access"):
        res = probe_agent.client().get(f"/probe/hello?key={KEY}&x=1")
    assert res.status == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "pgwarden.access"]
    line = next(line for line in lines if "/probe/hello" in line)
    assert KEY not in line
    assert "key=REDACTED" in line
    assert " 200 " in line and "ms" in line and "GET" in line


def test_keep_alive_and_content_length(probe_agent):
    """Two requests on one HTTP/1.1 connection, each with Content-Length."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(probe_agent.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        for _ in range(2):
            conn.request("GET", "/status")
            res = conn.getresponse()
            body = res.read()
            assert res.status == 200
            assert int(res.getheader("Content-Length")) == len(body)
            assert res.version == 11
    finally:
        conn.close()


def test_many_simultaneous_clients(probe_agent):
    """A few dozen clients connecting at once are all answered."""
    from concurrent.futures import ThreadPoolExecutor

    def call(_):
        return probe_agent.client().get("/status").status

    with ThreadPoolExecutor(48) as pool:
        statuses = list(pool.map(call, range(96)))
    assert statuses == [200] * 96


def test_postgres_down_is_503_quickly_then_recovers(make_agent, pg_cluster):
    from agent_core.cluster import Cluster, find_bindir

    second = Cluster(find_bindir())
    second.init()
    second.start()
    try:
        running = make_agent(config={"postgresql": second.settings(connect_timeout=2)})
        c = running.login()
        assert c.get("/discover").json()["pg_port"] == second.port
        second.stop()
        res = c.get("/discover")
        error = assert_json_error(res, 503, "PostgreSQL is unavailable")
        assert "connect" in error.lower() or "refused" in error.lower() or "terminat" in error.lower(), error
        second.start()
        res = c.get("/discover")
        assert res.status == 200, res
    finally:
        second.destroy()


def test_postgres_unreachable_address_is_bounded_by_connect_timeout(make_agent):
    # a port with nothing listening: refused at once, still a clean 503
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = make_agent(config={"postgresql": {"host": "127.0.0.1", "port": port, "connect_timeout": 2}})
    assert_json_error(running.login().get("/discover"), 503, "PostgreSQL is unavailable")


def test_wildcards_decoded_exactly_once(make_agent):
    """%2F is a slash inside a value, %25 a percent sign; never a separator."""
    import types

    from agent_core.hookspecs import Route, hookimpl

    @hookimpl
    def agent_register_routes(agent):
        return [Route("GET", "/names/<a>/x/<b>", lambda request, a, b: {"a": a, "b": b}, key=True)]

    names = types.SimpleNamespace(agent_register_routes=agent_register_routes)
    c = make_agent(plugins={"names": names}).login()
    assert c.get("/names/a%2Fb/x/c%252Fd").json() == {"a": "a/b", "b": "c%2Fd"}
    assert c.get("/names/%C3%A9t%C3%A9%20%22q%22/x/.").json() == {"a": 'été "q"', "b": "."}
    res = c.get("/names/%FF/x/y")  # not UTF-8: a JSON client error, never a 500
    assert res.status in (400, 404) and "error" in res.json()


def test_statement_timeout_is_504(make_agent):
    import types

    from agent_core.hookspecs import Route, hookimpl

    @hookimpl
    def agent_register_routes(agent):
        return [Route("GET", "/slow", lambda request: request.agent.postgres.query("SELECT pg_sleep(5)"), key=True)]

    slow = types.SimpleNamespace(agent_register_routes=agent_register_routes)
    c = make_agent(plugins={"slow": slow}, config={"postgresql": {"statement_timeout": 1}}).login()
    assert_json_error(c.get("/slow"), 504, "statement_timeout (1 s)")
    assert c.get("/discover").status == 200  # the pooled connection is still usable


def test_key_redacted_whatever_its_encoding_and_log_lines_cannot_be_forged(probe_agent, caplog):
    with caplog.at_level(logging.INFO, logger="pgwarden.access"):
        assert probe_agent.client().get(f"/probe/hello?%6Bey={KEY}").status == 200
        probe_agent.client().get("/nope%0D%0A2026-01-01%20INFO%20pgwarden.access:%20forged")
    lines = [r.getMessage() for r in caplog.records if r.name == "pgwarden.access"]
    assert not any(KEY in line for line in lines), lines
    assert not any("\n" in line or "\r" in line for line in lines)


def test_nul_in_a_name_is_404_not_500(make_agent):
    import types

    from agent_core.hookspecs import Route, hookimpl

    @hookimpl
    def agent_register_routes(agent):
        return [Route("GET", "/names/<a>", lambda request, a: {"a": a}, key=True)]

    c = make_agent(plugins={"names": types.SimpleNamespace(agent_register_routes=agent_register_routes)}).login()
    assert_json_error(c.get("/names/a%00b"), 404, "NUL")


def test_views_answer_data_a_response_or_a_domain_error(make_agent):
    """A plugin needs no web framework: a Response carries status and headers,
    a domain error its status from the web layer's table."""
    import types

    from agent_core.errors import DatabaseNotFound, TooMany
    from agent_core.hookspecs import Route, hookimpl
    from agent_core.web.responses import Response

    def refuse(request):
        raise TooMany("Slow down.", retry_after=7)

    def missing(request, dbname):
        raise DatabaseNotFound(dbname)

    @hookimpl
    def agent_register_routes(agent):
        return [
            Route("GET", "/shaped/made", lambda request: Response({"made": 1}, status=201, headers={"X-Thing": "a"})),
            Route("GET", "/shaped/raw", lambda request: Response(data=b"plain\n", content_type="text/plain")),
            Route("GET", "/shaped/busy", refuse),
            Route("GET", "/shaped/db/<dbname>", missing),
        ]

    shaped = types.SimpleNamespace(agent_register_routes=agent_register_routes)
    c = make_agent(plugins={"shaped": shaped}).login()
    made = c.get("/shaped/made")
    assert (made.status, made.json(), made.headers["X-Thing"]) == (201, {"made": 1}, "a")
    raw = c.get("/shaped/raw")
    assert (raw.status, raw.text, raw.headers["Content-Type"]) == (200, "plain\n", "text/plain")
    busy = c.get("/shaped/busy")
    assert (busy.status, busy.body, busy.headers["Retry-After"]) == (429, b'{"error": "Slow down."}', "7")
    gone = c.get("/shaped/db/nowhere")
    assert (gone.status, gone.body) == (404, b'{"error": "Database \'nowhere\' not found."}')
