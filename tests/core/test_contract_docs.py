"""Meta-tests: every hook is documented with its exact signature and exercised by a test."""

import inspect
import pathlib

from agent_core.hookspecs import AgentSpec

ROOT = pathlib.Path(__file__).resolve().parents[2]


def hooks():
    for name, fn in inspect.getmembers(AgentSpec, inspect.isfunction):
        sig = inspect.signature(fn)
        params = [p for p in sig.parameters.values() if p.name != "self"]
        text = str(sig.replace(parameters=params)).replace("'", "")
        yield name, fn, text


def test_every_hook_has_a_docstring_saying_when_and_raising():
    for name, fn, _ in hooks():
        doc = inspect.getdoc(fn) or ""
        assert name.startswith("agent_"), name
        assert "Called" in doc, name
        assert "rais" in doc.lower(), name


def test_every_hook_is_documented_with_its_exact_signature():
    doc = (ROOT / "docs" / "plugin-contract.md").read_text()
    for name, _, signature in hooks():
        assert f"`{name}{signature}`" in doc, f"docs/plugin-contract.md lacks `{name}{signature}`"


def test_every_hook_is_exercised_by_a_core_test():
    probe = (ROOT / "tests" / "core" / "conftest.py").read_text()
    for name, _, _ in hooks():
        assert f"def {name}(" in probe, name
