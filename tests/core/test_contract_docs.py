"""Meta-tests: the plugin authors' docs (docs/plugins/) say what the code does.

Every hook is documented in hooks.md with its exact signature and the in-repo
plugins that use it; the fields of Route, TaskType and Option, the attributes
of Request, TaskContext and Operation and the fixtures of agent_core.testing
are all documented (and nothing that does not exist); the one-module plugin
shown first in writing.md is examples/pgwarden-tiny's file, within its line
budget; the tests in testing.md are the example plugins' own test code; every
"count tables" statement of the docs and examples is the same; links between
the pages resolve. That every
hook is exercised, in the documented order, is tested in test_plugins.py; that
the documented start-up errors are the real ones too.
"""

import ast
import dataclasses
import inspect
import pathlib
import re
import types

import pytest
import sqlalchemy as sa

import agent_core.testing
from agent_core.hookspecs import AgentSpec, Option, Route, TaskType
from agent_core.operations.context import TaskContext
from agent_core.operations.model import Operation
from agent_core.operations.scheduler import Scheduler
from agent_core.plugins import RESERVED, hook_arguments, implemented_hooks
from agent_core.postgres import Postgres
from agent_core.store import Store
from agent_core.testing import KEY, wait_for
from agent_core.web.request import Request

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "plugins"
#: The in-repo plugins as "Used by" names them: plugin name -> module of its hooks.
IN_REPO = {
    "activity": "agent_activity.plugin",
    "maintenance": "agent_maintenance.plugin",
    "dashboard": "agent_dashboard.plugin",
    "tiny": "agent_tiny",
    "hello": "agent_hello.plugin",
}
EXAMPLES = ROOT / "examples"
TINY = EXAMPLES / "pgwarden-tiny"
#: Lines of code (blank lines left out) the one-module plugin may take for an
#: option, a route, a recurring task and a table.
TINY_BUDGET = 60


def signatures():
    """``{hook: "name(args) -> return"}`` from hookspecs.py, quotes of postponed annotations removed."""
    out = {}
    for name in hook_arguments():
        sig = inspect.signature(getattr(AgentSpec, name))
        params = [p for p in sig.parameters.values() if p.name != "self"]
        out[name] = name + str(sig.replace(parameters=params)).replace("'", "")
    return out


def hook_sections():
    """hooks.md cut at its ``## `signature``` headings: [(heading signature, section text)]."""
    text = (DOCS / "hooks.md").read_text()
    parts = re.split(r"^## `([^`]+)`\n", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def section_of(hook):
    return next(body for heading, body in hook_sections() if heading.startswith(hook + "("))


def bullets(text):
    """Names of the ``- `name`:`` bullets of a text."""
    return re.findall(r"^- `(\w+)`:", text, flags=re.M)


def test_every_hook_has_a_docstring_saying_when_and_raising():
    for name in hook_arguments():
        doc = inspect.getdoc(getattr(AgentSpec, name)) or ""
        assert name.startswith("agent_"), name
        assert "Called" in doc, name
        assert "rais" in doc.lower(), name


def test_hooks_md_has_one_section_per_hook_headed_by_its_exact_signature():
    documented = [heading for heading, _ in hook_sections()]
    assert sorted(documented) == sorted(signatures().values())


def test_every_hook_section_says_when_what_to_return_and_raising_with_an_example():
    for heading, body in hook_sections():
        for part in ("**Arguments.**", "**When.**", "**Return.**", "**Raising.**", "**Example.**", "**Used by:**"):
            assert part in body, f"{heading}: no {part}"
        assert "```python" in body, heading


def test_used_by_names_exactly_the_in_repo_plugins_implementing_each_hook():
    modules = {}
    for name, module in IN_REPO.items():
        modules[name] = pytest.importorskip(module, reason=f"{module} is installed by make test")
    for heading, body in hook_sections():
        hook = heading.split("(")[0]
        line = re.search(r"^\*\*Used by:\*\* (.*)$", body, flags=re.M).group(1)
        documented = re.findall(r"`(\w+)`", line)
        actual = [name for name, module in modules.items() if hook in implemented_hooks(module)]
        assert documented == actual, f"{hook}: docs say {documented}, the code {actual}"


@pytest.mark.parametrize(
    "cls,hook",
    [(Route, "agent_register_routes"), (TaskType, "agent_register_tasks"), (Option, "agent_add_config")],
)
def test_every_field_of_the_hook_dataclasses_is_documented(cls, hook):
    fields = [f.name for f in dataclasses.fields(cls)]
    assert bullets(section_of(hook)) == fields, f"hooks.md, {hook}: the bullets must be the fields of {cls.__name__}"


def public_names(cls):
    """Public attributes of a class: dataclass fields, ``self.x =`` in __init__, properties and methods."""
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    init = None if dataclasses.is_dataclass(cls) else ast.parse(inspect.getsource(cls.__init__).strip())
    for node in ast.walk(init) if init else ():
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and node.value.id == "self":
            names.add(node.attr)
    names.update(name for name, value in vars(cls).items() if callable(value) or isinstance(value, property))
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("cls,prefix", [(Request, "request"), (TaskContext, "ctx"), (Operation, "operation")])
def test_request_task_context_and_operation_attributes_are_documented(cls, prefix):
    text = (DOCS / "writing.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith(f"| `{prefix}.")]
    documented = {name for row in rows for name in re.findall(rf"`{prefix}\.(\w+)", row.split(" | ")[0])}
    assert documented == public_names(cls)


def test_every_fixture_and_make_agent_argument_is_documented():
    text = (DOCS / "testing.md").read_text()
    marks = ("_fixture_function_marker", "_pytestfixturefunction")  # pytest >= 8.4, older
    fixtures = [name for name, value in vars(agent_core.testing).items() if any(hasattr(value, m) for m in marks)]
    assert {"pg_cluster", "make_agent", "agent", "client", "databases", "backends"} <= set(fixtures)
    for name in fixtures:
        assert re.search(rf"^### .*`{name}`", text, flags=re.M), f"testing.md: no section for the fixture {name}"
    # the module that defines it (agent_core.testing imports its fixtures from agent_core.testing.fixtures)
    module = ast.parse(inspect.getsource(inspect.getmodule(agent_core.testing.make_agent)))
    fixture = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "make_agent")
    make = next(n for n in fixture.body if isinstance(n, ast.FunctionDef))
    args = [a.arg for a in make.args.args + make.args.kwonlyargs]
    assert args
    section = text.split("### `make_agent`")[1].split("\n### ")[0]
    for arg in args:
        assert f"    {arg}=" in section, f"testing.md: make_agent's argument {arg} is not shown"


def test_the_tests_shown_in_testing_md_are_the_example_plugins_test_code():
    text = (DOCS / "testing.md").read_text()
    tests = "".join(path.read_text() for path in sorted(EXAMPLES.glob("*/tests/test_*.py")))
    names = set()
    for code in re.findall(r"```python\n(.*?)```", text, flags=re.S):
        for node in ast.parse(code).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                assert ast.get_source_segment(code, node) in tests, f"testing.md's {node.name} is not the example's"
                names.add(node.name)
    assert {"test_the_recurring_count_runs_now_and_is_listed", "test_count_runs_as_an_operation"} <= names
    first = text.split("## Example: the one-module plugin")[1].split("## ")[0]
    body = (TINY / "tests" / "test_tiny.py").read_text()
    assert re.search(r"```python\n(.*?)```", first, flags=re.S).group(1) == body[body.index("from datetime") :]


def code_lines(text):
    return sum(1 for line in text.splitlines() if line.strip())


def test_the_one_module_plugin_is_the_first_example_verbatim_within_its_budget():
    text = (DOCS / "writing.md").read_text()
    module = (TINY / "agent_tiny.py").read_text()
    assert [p.name for p in TINY.glob("**/*.py") if "tests" not in p.parts] == ["agent_tiny.py"]
    first_heading = re.search(r"^## (.+)$", text, flags=re.M).group(1)
    assert first_heading == "A whole plugin in one module"
    assert re.search(r"```python\n(.*?)```", text, flags=re.S).group(1) == module
    assert re.search(r"```ini\n(.*?)```", text, flags=re.S).group(1) == (TINY / "setup.cfg").read_text()
    stated = int(re.search(r"in one module of (\d+) lines", text).group(1))
    assert stated == code_lines(module) <= TINY_BUDGET
    tiny = pytest.importorskip("agent_tiny", reason="installed by make venv")
    hooks = {"agent_add_config", "agent_db_metadata", "agent_register_tasks", "agent_register_routes"}
    assert hooks <= set(implemented_hooks(tiny))
    assert "interval=" in module  # a recurring task; test_tiny.py runs it


def test_every_count_tables_statement_of_the_docs_and_examples_is_the_same():
    """They once disagreed (every schema in hooks.md, schema public in the example)."""
    texts = [page.read_text() for page in DOCS.glob("*.md")]
    texts += [path.read_text() for path in EXAMPLES.glob("*/**/*.py")]
    found = set()
    for text in texts:
        for statement in re.findall(r'"(SELECT count\(\*\) AS n FROM pg_class[^"]*)"', text):
            found.add(statement.replace("%(schema)s", "'public'"))
    assert len(found) == 1 and "relkind = 'r'" in found.pop()


def slug(heading):
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def test_links_between_the_pages_resolve():
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name}: broken link {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{page.name}: no heading for #{anchor}"


def test_every_python_block_of_the_guides_parses():
    for page in sorted(DOCS.glob("*.md")):
        for code in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
            ast.parse(code, filename=str(page))


def test_the_examples_of_hooks_md_together_make_a_working_plugin(make_agent, databases):
    """Each section's example, run in one module, is a plugin ``hello``."""
    module = types.ModuleType("hooks_md_examples")
    for _, body in hook_sections():
        code = re.search(r"```python\n(.*?)```", body, flags=re.S).group(1)
        exec(compile(code, "docs/plugins/hooks.md", "exec"), module.__dict__)
    assert sorted(implemented_hooks(module)) == sorted(hook_arguments())
    running = make_agent(plugins={"hello": module}, config={"hello": {"max_rows": "5"}})
    assert running.agent.config.section("hello") == {"greeting": "Hello", "max_rows": 5}
    assert "hello_greetings" in sa.inspect(running.agent.store.engine).get_table_names()
    res = running.client().get(f"/hello/size/postgres/pg_class?key={KEY}")
    assert res.status == 200 and res.json()["bytes"] > 0
    assert running.client().get(f"/hello/size/postgres/no_such_table?key={KEY}").status == 404
    scheduler = running.agent.scheduler
    op_id = scheduler.submit("hello.count", dbname=databases.create("hooks_md", setup="CREATE TABLE a (id int)"))
    op = wait_for(lambda: (o := scheduler.get(op_id)).finished and o)
    assert op.status == "done" and op.result == {"tables": 1}
    assert [o.requested_by for o in scheduler.list(task="hello.tick")] == ["agent"]
    running.stop()
    assert module.stop.is_set()


def test_the_reserved_names_are_the_cores():
    text = (DOCS / "writing.md").read_text()
    listed = re.search(r"\(not one of the\s+core's: (.*?)\)", text, flags=re.S).group(1)
    assert re.findall(r"`(\w+)`", listed) == list(RESERVED)


@pytest.mark.parametrize("attr,cls", [("postgres", Postgres), ("scheduler", Scheduler), ("store", Store)])
def test_the_agent_methods_shown_in_writing_md_take_the_arguments_shown(attr, cls):
    text = (DOCS / "writing.md").read_text()
    calls = re.findall(rf"`agent\.{attr}\.(\w+)\(([^`]*)\)`", text)
    assert calls, f"writing.md shows no agent.{attr} method"
    for name, args in calls:
        assert callable(getattr(cls, name, None)), f"writing.md: agent.{attr}.{name} does not exist"
        params = inspect.signature(getattr(cls, name)).parameters
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
        for arg in re.findall(r"(?:^|,)\s*(\w+)\s*(?==|,|$)", args):
            assert arg in params or takes_any, f"writing.md: agent.{attr}.{name} has no argument {arg}"


def test_every_core_route_prefix_is_reserved():
    """A plugin may not be named after a core route: its prefix would clash."""
    from agent_core.plugins import NAME_RE
    from agent_core.web.views import CoreViews, core_routes

    views = CoreViews(None, None, None, None)  # type: ignore[arg-type]  # only the paths are read
    prefixes = {route.path.split("/")[1] for route, _ in core_routes(views)}
    assert {p for p in prefixes if NAME_RE.match(p)} <= set(RESERVED)


def test_what_the_guide_says_the_agent_gives_is_its_interface():
    """writing.md's "What the agent gives a plugin" lists exactly the members of
    agent_core.interfaces.Agent, the protocol hooks, views and tasks are typed with."""
    from agent_core import interfaces

    text = (DOCS / "writing.md").read_text()
    section = text.split("## What the agent gives a plugin")[1].split("\n## ")[0]
    documented = set(re.findall(r"`agent\.(\w+)", section))
    members = {name for name in vars(interfaces.Agent) if not name.startswith("_")}
    members |= set(interfaces.Agent.__annotations__)
    assert documented == members


def test_a_running_agent_has_every_member_of_its_interface(tmp_path):
    """The protocol is what the agent really gives (mypy checks the types; this, at run time, the names)."""
    from agent_core import interfaces
    from agent_core.agent import Agent
    from agent_core.config import RawConfig

    agent = Agent.from_config(RawConfig.from_dict({"agent": {"home": str(tmp_path)}}))
    try:
        members = {name for name in vars(interfaces.Agent) if not name.startswith("_")}
        members |= set(interfaces.Agent.__annotations__)
        missing = sorted(name for name in members if not hasattr(agent, name))
        assert missing == []
        assert callable(agent.metrics.live) and agent.metrics.registry is not None
    finally:
        agent.stop()


def test_every_public_name_of_the_test_support_is_in_testing_md():
    """A plugin author reads testing.md, not the package: every name agent_core.testing
    exports (fixtures and helpers) is named there."""
    text = (DOCS / "testing.md").read_text()
    missing = [name for name in agent_core.testing.__all__ if f"`{name}" not in text]
    assert missing == []
