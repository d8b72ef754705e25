"""The import graph of a package: its modules, lines, and import cycles.

Type-only imports (under ``if TYPE_CHECKING:``) count: a cycle through them
is still a cycle a reader has to hold in mind.

Usage::

    .venv/bin/python scripts/import_graph.py agent_core
"""

from __future__ import annotations

import ast
import pathlib
import sys


def module_name(root: pathlib.Path, path: pathlib.Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts).removesuffix(".__init__")


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Each module of the package under ``root`` and its file."""
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def imports(root: pathlib.Path) -> dict[str, set[str]]:
    """Each module of the package under ``root`` and the package modules it imports."""
    paths = modules(root)
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for mod, path in paths.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[mod].update(a.name for a in node.names if a.name in paths)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    for candidate in (f"{base}.{alias.name}", base):
                        if candidate in paths and candidate != mod:
                            graph[mod].add(candidate)
                            break
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(argv: list[str]) -> int:
    root = pathlib.Path(argv[1] if len(argv) > 1 else "agent_core")
    graph = imports(root)
    lines = {m: len(p.read_text().splitlines()) for m, p in modules(root).items()}
    print(f"{len(graph)} modules, {sum(lines.values())} lines")
    for mod in sorted(graph, key=lambda m: -lines[m]):
        print(f"  {lines[mod]:5d}  {mod}")
    found = cycles(graph)
    print(f"import cycles: {len(found)}")
    for component in found:
        print(f"  {len(component)} modules: {', '.join(component)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
