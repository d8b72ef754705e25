"""The sample config and the docs match the options the code declares."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from agent_core.config import SectionSchema, agent_schema, postgresql_schema, signing_schema

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "conf" / "pgwarden.conf"


def plugin_schemas():
    out = []
    for name in ("activity", "maintenance", "dashboard"):
        module = pytest.importorskip(
            f"agent_{name}.plugin", reason=f"plugin {name} not installed (pip install -e plugins/{name})"
        )
        schema = SectionSchema(name)
        module.agent_add_config(schema=schema)
        out.append(schema)
    return out


def sample_keys():
    keys, section = {}, None
    for line in SAMPLE.read_text().splitlines():
        if m := re.match(r"^\[(\w+)\]", line):
            section = m.group(1)
            keys.setdefault(section, set())
        elif m := re.match(r"^#?(\w+) =", line):
            keys[section].add(m.group(1))
    return keys


def test_every_option_is_in_the_sample_config():
    keys = sample_keys()
    for schema in (agent_schema(), postgresql_schema(), signing_schema(), *plugin_schemas()):
        missing = set(schema.options) - keys.get(schema.name, set())
        assert not missing, f"conf/pgwarden.conf [{schema.name}] lacks {sorted(missing)}"
        unknown = keys.get(schema.name, set()) - set(schema.options)
        assert not unknown, f"conf/pgwarden.conf [{schema.name}] has keys the code does not know: {sorted(unknown)}"


def test_every_core_option_is_in_the_operator_guide():
    guide = (ROOT / "docs" / "operator-guide.md").read_text()
    for schema in (agent_schema(), postgresql_schema(), signing_schema()):
        for key in schema.options:
            assert f"`{key}`" in guide, f"docs/operator-guide.md lacks [{schema.name}] {key}"


@pytest.mark.process
def test_sample_config_passes_check_config(tmp_path):
    plugin_schemas()  # the plugins installed
    # the sample's home is /var/lib/pgwarden: the test points it at a scratch directory
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}
    env["PGWARDEN_AGENT_HOME"] = str(home)
    res = subprocess.run(
        [sys.executable, "-m", "agent_core.cli", "-c", str(SAMPLE), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "plugins: activity, maintenance, dashboard" in res.stdout
    assert not home.exists(), "check-config created the state directory: it only checks"


def test_docs_stand_alone():
    """The docs never send readers outside the repository (../shared was a
    development directory, absent from a clone)."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and "shared/api" not in text, f"{path} points outside the repository"
