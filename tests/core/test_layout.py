"""The package layout is the architecture: these checks keep it so.

* no import cycle in ``agent_core``, type-only imports (``if TYPE_CHECKING:``)
  included (``scripts/import_graph.py`` prints the graph);
* the web layer (``agent_core.web``) is the only one that knows bottle and
  cheroot, and nothing below it imports it;
* the wiring (``agent_core.agent``) is imported only by what stands above it: the
  command line and the test support;
* the test support (``agent_core.testing``) is imported by no runtime module, and
  only it imports pytest (``pgwarden demo``'s throwaway cluster is
  ``agent_core.cluster``, pytest-free);
* no module of the core or of the project's plugins is longer than :data:`MAX_LINES`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from install_helpers import script_module

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent_core"


GRAPH = script_module(ROOT / "scripts" / "import_graph.py")
#: The longest module allowed, in lines. Beyond it a module holds more than one concern: split it
#: along its seams (the longest today: auth/signing.py, about 430 lines, one concern).
MAX_LINES = 450
MODULES: dict[str, Path] = GRAPH.modules(PACKAGE)


def _all_imports(path: Path) -> set[str]:
    """Every module name ``path`` imports, third-party and standard ones included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_the_graph_tool_sees_the_package():
    graph = GRAPH.imports(PACKAGE)
    assert {"agent_core.agent", "agent_core.web.app", "agent_core.operations.scheduler"} <= set(graph)
    # an edge it must see: the wiring imports the scheduler
    assert "agent_core.operations.scheduler" in graph["agent_core.agent"]


def test_the_graph_tool_finds_a_cycle(tmp_path):
    """The cycle check can fail: two modules importing each other (one under TYPE_CHECKING) are found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import A\nB = 1\n")
    assert GRAPH.cycles(GRAPH.imports(pkg)) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle():
    assert GRAPH.cycles(GRAPH.imports(PACKAGE)) == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_web_layer_knows_the_web_framework(module):
    if _in(module, "agent_core.web", "agent_core.testing"):
        return
    imported = {name.split(".")[0] for name in _all_imports(MODULES[module])}
    assert not imported & {"bottle", "cheroot"}, f"{module} imports the web framework"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_below_the_web_layer_imports_it(module):
    above = ("agent_core.web", "agent_core.agent", "agent_core.cli", "agent_core.testing")
    if _in(module, *above):
        return
    web = sorted(name for name in _all_imports(MODULES[module]) if _in(name, "agent_core.web"))
    assert web == [], f"{module} (below the web layer) imports {web}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_only_the_command_line_and_tests_import_the_wiring(module):
    if _in(module, "agent_core.agent", "agent_core.cli", "agent_core.testing"):
        return
    assert "agent_core.agent" not in _all_imports(MODULES[module]), f"{module} imports agent_core.agent"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_runtime_does_not_import_the_test_support(module):
    if _in(module, "agent_core.testing"):
        return
    imported = _all_imports(MODULES[module])
    assert "pytest" not in {name.split(".")[0] for name in imported}, f"{module} imports pytest"
    support = sorted(name for name in imported if _in(name, "agent_core.testing"))
    assert support == [], f"{module} imports {support}"


def test_pgwarden_demo_runs_without_pytest():
    """pytest is a test dependency only (not in the package): pgwarden demo, which starts a
    throwaway cluster (agent_core.cluster), must import without it. Importing any module of
    agent_core.testing runs its __init__, the pytest plugin: the cluster lives outside it."""
    code = "import sys; sys.modules['pytest'] = None; import agent_core.cli.demo, agent_core.cli.main"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


SOURCES = sorted(
    [
        *PACKAGE.rglob("*.py"),
        *(ROOT / "plugins").glob("*/agent_*/*.py"),
        *(ROOT / "examples").glob("*/agent_*.py"),
        *(ROOT / "examples").glob("*/agent_*/*.py"),
    ]
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_too_long(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines (at most {MAX_LINES}): split it by concern"


def test_the_architecture_doc_names_every_package_and_top_module():
    """docs/architecture.md describes the layers: a package or top-level module it does not name is a layer
    nobody was told about."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    top = sorted(
        f"{path.name}/" if path.is_dir() else path.name
        for path in PACKAGE.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.suffix == ".py" and path.name != "__init__.py")
    )
    missing = [name for name in top if f"`{name}`" not in text]
    assert missing == []
