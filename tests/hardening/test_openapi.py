"""GET /openapi.json describes exactly the routes the agent serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from agent_core.testing import KEY, RunningAgent

REFERENCE_FIELDS = Path(__file__).with_name("reference_fields.json")


@pytest.fixture(scope="module")
def full_agent(shared_agent: RunningAgent) -> RunningAgent:
    """One agent for the module: these tests only read."""
    return shared_agent


def served_routes(running: RunningAgent) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route of the running bottle app."""
    app = running.agent.app.app  # the Middleware wraps the bottle app
    return {(r.method.lower(), re.sub(r"<([A-Za-z_]\w*)(:[^>]*)?>", r"{\1}", r.rule)) for r in app.routes}


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method, path) for path, item in doc["paths"].items() for method in item}


def test_document_lists_exactly_the_served_routes(full_agent):
    res = full_agent.login().get("/openapi.json")
    assert res.status == 200, res
    doc = res.json()
    assert doc["openapi"].startswith("3.")
    served = served_routes(full_agent)
    assert len(served) > 30  # core + activity + maintenance
    assert documented(doc) == served


def test_a_disabled_plugin_is_absent_and_the_core_alone_is_described(agent):
    doc = agent.client().get(f"/openapi.json?key={KEY}").json()
    assert documented(doc) == served_routes(agent)
    assert not any(path.startswith(("/activity", "/maintenance")) for path in doc["paths"])


def test_openapi_needs_credentials(full_agent):
    anon = full_agent.client()
    assert anon.get("/openapi.json").status == 406
    assert anon.get("/openapi.json?key=wrong").status == 401
    assert anon.get("/openapi.json", headers={"X-Pgwarden-Key": KEY}).status == 200


def test_every_operation_has_errors_security_and_parameters(full_agent):
    doc = full_agent.login().get("/openapi.json").json()
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert "200" in op["responses"], where
            for status, response in op["responses"].items():
                if status[0] in "45":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, where
            assert "500" in op["responses"], where
            names = re.findall(r"{(\w+)}", path)
            assert [p["name"] for p in op.get("parameters", []) if p["in"] == "path"] == names, where
            if path in ("/login", "/status"):
                assert op["security"] == [], where
            else:
                assert {"session": []} in op["security"], where
                assert {"401", "406"} <= set(op["responses"]), where
            if method != "get" and path != "/login":
                assert "403" in op["responses"], where  # write routes: read role / read-only key


def test_key_only_where_the_route_accepts_it(full_agent):
    doc = full_agent.login().get("/openapi.json").json()
    assert {"key": []} not in doc["paths"]["/activity/kill"]["post"]["security"]
    assert {"key": []} in doc["paths"]["/activity"]["get"]["security"]
    assert {"key": []} in doc["paths"]["/maintenance/{dbname}/vacuum"]["post"]["security"]


def _reference_fields() -> dict[str, list[str]]:
    """The JSON keys of the temboard agent's API examples, by route ("GET /path")."""
    return json.loads(REFERENCE_FIELDS.read_text())["routes"]


def _schema_keys(schema: dict[str, Any], doc: dict[str, Any]) -> set[str]:
    """Every property name anywhere in a schema."""
    if "$ref" in schema:
        return set()
    keys = set(schema.get("properties", {}))
    for sub in [*schema.get("properties", {}).values(), *([schema["items"]] if "items" in schema else [])]:
        keys |= _schema_keys(sub, doc)
    return keys


def test_response_fields_are_the_references(full_agent):
    """Every key of the reference's example bodies is in the documented request or 200 schema."""
    doc = full_agent.login().get("/openapi.json").json()
    checked = 0
    for title, fields in _reference_fields().items():
        method, path = title.split(" ", 1)
        op = doc["paths"][path][method.lower()]
        keys = _schema_keys(op["responses"]["200"]["content"]["application/json"]["schema"], doc)
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
        keys |= _schema_keys(body or {}, doc)
        assert set(fields) <= keys, (title, set(fields) - keys)
        checked += 1
    assert checked >= 28
