"""Property-based fuzzing of every documented operation with schemathesis.

A live agent with both plugins, on the session's throwaway cluster, is
fuzzed over HTTP from its own ``GET /openapi.json``. Each operation gets
``FUZZ_EXAMPLES`` cases of each kind (``PGWARDEN_FUZZ_EXAMPLES``, default 5):

* positive: data the document allows, random path parameters (mostly 404s);
* positive on real objects: path parameters naming a throwaway database, its
  schema, table and index, so the 200 paths (VACUUM, ANALYZE, REINDEX on
  that database included) and the body validation run for real;
* negative: data the document forbids (wrong types, missing keys, bad
  patterns), with random names and, for bodies, on the real objects too -
  it must be refused with a 4xx.

Checks on every response: no 5xx, the status is documented, the content
type is JSON, the body matches the documented schema, and every error is
exactly ``{"error": string}``.

Guards so the fuzz harms nothing outside the throwaway database:

* kill: the pids of every backend of the cluster (the tests' own sessions
  included) are removed from generated bodies before the call, so only pids
  that are no backend are sent (refused by the plugin anyway);
* logout: each call ends a session made for it, never the fuzzer's own;
* login: generated names are random, never the fuzzer's user (``alice``).
"""

from __future__ import annotations

import os
from typing import Any

import hypothesis
import pytest
from hypothesis import HealthCheck, Phase, settings

schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (make venv installs it)")
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

FUZZ_EXAMPLES = int(os.environ.get("PGWARDEN_FUZZ_EXAMPLES", "5"))
SETUP = """
CREATE SCHEMA s;
CREATE TABLE s.t (id int PRIMARY KEY, v text);
INSERT INTO s.t SELECT g, md5(g::text) FROM generate_series(1, 200) g;
"""


def error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is exactly {"error": <string>}."""
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str), body
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


class Guard:
    """Makes generated cases harmless outside the throwaway database."""

    def __init__(self, pg_cluster: Any, running: Any):
        self.cluster = pg_cluster
        self.running = running
        self.spare_sessions = [running.login().session for _ in range(3)]

    def live_pids(self) -> set[int]:
        return {pid for (pid,) in self.cluster.execute("SELECT pid FROM pg_stat_activity")}

    def prepare(self, case: Any, headers: dict[str, str]) -> dict[str, str]:
        path = case.operation.path
        if path.endswith("/kill") and isinstance(case.body, dict) and isinstance(case.body.get("pids"), list):
            live = self.live_pids()
            case.body["pids"] = [p for p in case.body["pids"] if not (type(p) is int and p in live)]
        if path == "/logout":
            if not self.spare_sessions:
                self.spare_sessions = [self.running.login().session for _ in range(3)]
            return {**headers, "X-Session": self.spare_sessions.pop()}
        if path == "/login" and isinstance(case.body, dict) and case.body.get("username") == "alice":
            case.body["username"] = "alice-not"
        return headers


@pytest.mark.slow
def test_fuzz_every_operation(start_full, databases, pg_cluster):
    dbname = databases.create("fuzz", setup=SETUP)
    running = start_full(agent={"log_level": "INFO"}, maintenance={})
    alice = running.login()
    doc = alice.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    headers = {"X-Session": alice.session}
    guard = Guard(pg_cluster, running)
    real = {"dbname": dbname, "schema": "s", "table": "t", "index": "t_pkey"}
    failures: list[str] = []
    counts = {"operations": 0, "cases": 0}
    statuses: dict[int, int] = {}

    def run(operation: Any, mode: GenerationMode, fixed: dict[str, Any] | None) -> None:
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        @hypothesis.given(strategy)
        def fuzz(case: Any) -> None:
            counts["cases"] += 1
            sent = guard.prepare(case, headers)
            response = case.call_and_validate(
                base_url=running.url, headers=sent, checks=CHECKS, additional_checks=[error_shape]
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:  # negative mode with nothing left to negate
            assert mode is GenerationMode.NEGATIVE and not (operation.body or (operation.path_parameters and not fixed))
        except Exception as e:  # one report per operation and kind, then go on with the others
            failures.append(f"{operation.label} [{mode.value}{' real' if fixed else ''}]: {e}")

    for result in schema.get_all_operations():
        operation = result.ok()
        counts["operations"] += 1
        names = [p.name for p in operation.path_parameters]
        run(operation, GenerationMode.POSITIVE, None)
        if names and all(n in real for n in names):
            run(operation, GenerationMode.POSITIVE, {n: real[n] for n in names})
            if operation.body:  # bodies the document forbids, on real objects
                run(operation, GenerationMode.NEGATIVE, {n: real[n] for n in names})
        run(operation, GenerationMode.NEGATIVE, None)
    print(f"fuzz: {counts['operations']} operations, {counts['cases']} cases, statuses {sorted(statuses.items())}")
    assert counts["operations"] == len([m for item in doc["paths"].values() for m in item])
    assert not failures, "\n\n".join(failures)
    # the fuzzer's own session is still there: nothing it sent logged it out or locked it out
    assert alice.get("/profile").status == 200
