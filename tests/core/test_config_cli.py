"""Configuration validation, plugin loading and the command line, run as an operator would."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent_core.config import RawConfig, agent_schema, postgresql_schema, validate
from agent_core.errors import ConfigError, StartupError
from agent_core.testing import serve


def run_cli(*args, env=None, input=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PGWARDEN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent_core.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=input,
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture
def fake_plugins(tmp_path):
    """A directory with real installed-distribution metadata for three plugins:
    ``good`` (works), ``broken`` (raises on import) and ``tracker`` (records its import)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "good_plugin.py").write_text(
        textwrap.dedent("""
        from agent_core.hookspecs import hookimpl, Option
        @hookimpl
        def agent_add_config(schema):
            schema.add(Option("color", str, "blue", "A color.", choices=("blue", "red")))
    """)
    )
    (site / "broken_plugin.py").write_text("import no_such_module_xyz\n")
    (site / "tracker_plugin.py").write_text("import os\nopen(os.environ['TRACKER_FILE'], 'w').write('imported')\n")
    for dist, name, module in (
        ("good-dist", "good", "good_plugin"),
        ("broken-dist", "broken", "broken_plugin"),
        ("tracker-dist", "tracker", "tracker_plugin"),
    ):
        info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[pgwarden]\n{name} = {module}\n")
    return site


def write_conf(tmp_path, text):
    path = tmp_path / "pgwarden.conf"
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_every_problem_reported_in_one_pass():
    raw = RawConfig.from_dict(
        {
            "agent": {"port": "eighty", "threads": "0", "bogus": "1", "log_level": "LOUD"},
            "postgresql": {"connect_timeout": "-1"},
            "nosuch": {"a": "b"},
        }
    )
    with pytest.raises(ConfigError) as e:
        validate(raw, [agent_schema(), postgresql_schema()], environ={})
    problems = e.value.problems
    assert "agent.port: expected an integer, got 'eighty'" in problems
    assert "agent.threads: must be greater than 0" in problems
    assert "agent.bogus: unknown key" in problems
    assert any(p.startswith("agent.log_level: must be one of") for p in problems)
    assert "postgresql.connect_timeout: must be greater than 0" in problems
    assert any(p.startswith("nosuch: unknown section") for p in problems)


def test_environment_overrides_file():
    raw = RawConfig.from_dict({"agent": {"port": "1000"}})
    config = validate(
        raw,
        [agent_schema(), postgresql_schema()],
        environ={"PGWARDEN_AGENT_PORT": "2000", "PGWARDEN_POSTGRESQL_USER": "monitor"},
    )
    assert config.agent["port"] == 2000
    assert config.postgresql["user"] == "monitor"
    with pytest.raises(ConfigError) as e:
        validate(raw, [agent_schema(), postgresql_schema()], environ={"PGWARDEN_AGENT_PORT": "x"})
    assert e.value.problems == ["agent.port (from PGWARDEN_AGENT_PORT): expected an integer, got 'x'"]


def test_plain_http_refused_off_loopback(tmp_path):
    raw = RawConfig.from_dict({"agent": {"address": "0.0.0.0"}})
    with pytest.raises(ConfigError) as e:
        validate(raw, [agent_schema(), postgresql_schema()], environ={})
    assert any("refusing plain HTTP on 0.0.0.0" in p for p in e.value.problems)
    for address in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        validate(
            RawConfig.from_dict({"agent": {"address": address}}), [agent_schema(), postgresql_schema()], environ={}
        )


@pytest.mark.process
def test_check_config_ok_and_errors_without_traceback(tmp_path):
    ok = write_conf(
        tmp_path,
        f"""
        [agent]
        home = {tmp_path}
        [postgresql]
        port = 5432
    """,
    )
    res = run_cli("-c", ok, "check-config")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout
    bad = write_conf(
        tmp_path,
        """
        [agent]
        port = x
        colour = red
        [postgresql]
        statement_timeout = 0
    """,
    )
    res = run_cli("-c", bad, "check-config")
    assert res.returncode == 2
    assert "agent.port: expected an integer, got 'x'" in res.stderr
    assert "agent.colour: unknown key" in res.stderr
    assert "postgresql.statement_timeout: must be greater than 0" in res.stderr
    assert "Traceback" not in res.stderr
    res = run_cli("-c", str(tmp_path / "missing.conf"), "check-config")
    assert res.returncode == 2 and "cannot read" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.process
def test_plugin_not_installed_names_installed_ones(tmp_path, fake_plugins):
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = nosuch\n")
    res = run_cli("-c", conf, "check-config", env={"PYTHONPATH": str(fake_plugins)})
    assert res.returncode == 2
    assert "plugin 'nosuch' is not installed" in res.stderr
    assert "broken" in res.stderr and "good" in res.stderr


@pytest.mark.process
def test_plugin_import_failure_names_plugin_and_distribution(tmp_path, fake_plugins):
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = broken\n")
    res = run_cli("-c", conf, "check-config", env={"PYTHONPATH": str(fake_plugins)})
    assert res.returncode == 2
    assert "plugin 'broken' (distribution broken-dist 1.2.3) failed to import" in res.stderr
    assert "no_such_module_xyz" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.process
def test_disabled_plugins_are_never_imported_and_their_sections_ignored(tmp_path, fake_plugins):
    marker = tmp_path / "imported"
    conf = write_conf(
        tmp_path,
        f"""
        [agent]
        home = {tmp_path}
        plugins = good
        [good]
        color = red
        [tracker]
        anything = goes
    """,
    )
    res = run_cli("-c", conf, "check-config", env={"PYTHONPATH": str(fake_plugins), "TRACKER_FILE": str(marker)})
    assert res.returncode == 0, res.stderr
    assert "plugins: good" in res.stdout
    assert not marker.exists()
    bad = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = good\n[good]\ncolor = green\nshade = x\n")
    res = run_cli("-c", bad, "check-config", env={"PYTHONPATH": str(fake_plugins)})
    assert res.returncode == 2
    assert "good.color: must be one of blue, red, got 'green'" in res.stderr
    assert "good.shade: unknown key" in res.stderr


@pytest.mark.process
def test_plugins_command_lists_versions_and_state(tmp_path, fake_plugins):
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = good\n")
    res = run_cli("-c", conf, "plugins", env={"PYTHONPATH": str(fake_plugins), "TRACKER_FILE": "/nonexistent/x"})
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    lines = {line.split()[0]: i for i, line in enumerate(out) if not line.startswith(" ")}
    assert out[lines["good"]].split() == ["good", "good-dist", "1.2.3", "enabled"]
    assert out[lines["good"] + 1].split() == ["hooks:", "agent_add_config"]
    assert out[lines["broken"]].split() == ["broken", "broken-dist", "1.2.3", "disabled"]
    broken = out[lines["broken"] + 1]
    assert "cannot import broken_plugin: ModuleNotFoundError" in broken and "no_such_module_xyz" in broken
    assert out[lines["tracker"]].split()[-1] == "disabled"
    assert "Traceback" not in res.stdout + res.stderr


@pytest.mark.process
def test_plugins_command_flags_unknown_hooks(tmp_path, fake_plugins):
    (fake_plugins / "good_plugin.py").write_text(
        "from agent_core.hookspecs import hookimpl\n"
        "@hookimpl\ndef agent_register_route(agent):\n    return []\n"
        "@hookimpl\ndef agent_startup(agent):\n    pass\n"
    )
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = nosuch\n")
    res = run_cli("-c", conf, "plugins", env={"PYTHONPATH": str(fake_plugins), "TRACKER_FILE": "/nonexistent/x"})
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    good = next(i for i, line in enumerate(out) if line.startswith("good "))
    assert out[good + 1].strip() == "hooks: agent_startup, agent_register_route (unknown hook)"
    assert out[good + 2].startswith("    error: plugin 'good': unknown hook agent_register_route (did you mean")
    assert "nosuch" in res.stderr and "not installed" in res.stderr


@pytest.mark.process
def test_plugins_command_marks_an_optional_unknown_hook_without_error(tmp_path, fake_plugins):
    (fake_plugins / "good_plugin.py").write_text(
        "from agent_core.hookspecs import hookimpl\n"
        "@hookimpl(optionalhook=True)\ndef agent_from_a_later_version(agent):\n    pass\n"
    )
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\n")
    res = run_cli("-c", conf, "plugins", env={"PYTHONPATH": str(fake_plugins), "TRACKER_FILE": "/nonexistent/x"})
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    good = next(i for i, line in enumerate(out) if line.startswith("good "))
    assert out[good + 1].strip() == "hooks: agent_from_a_later_version (optional, not called)"
    assert good + 2 == len(out) or not out[good + 2].startswith("    error:")


@pytest.mark.process
def test_help_is_useful():
    res = run_cli("--help")
    assert res.returncode == 0
    for word in ("serve", "check-config", "plugins", "user", "demo", "PGWARDEN_"):
        assert word in res.stdout
    for sub in ("serve", "check-config", "plugins", "user", "demo"):
        res = run_cli(sub, "--help")
        assert res.returncode == 0 and len(res.stdout) > 200, sub
    res = run_cli("user", "add", "--help")
    assert res.returncode == 0 and "username" in res.stdout


@pytest.mark.process
def test_user_commands_read_password_from_stdin_never_argv(tmp_path):
    users = str(tmp_path / "users")
    res = run_cli("user", "--users-file", users, "add", "carol", input="pa55word\n")
    assert res.returncode == 0, res.stderr
    content = open(users).read()
    assert "carol:admin:scrypt$" in content and "pa55word" not in content
    assert oct(os.stat(users).st_mode & 0o777) == "0o600"
    assert run_cli("user", "--users-file", users, "add", "carol", input="x\n").returncode == 1
    assert run_cli("user", "--users-file", users, "passwd", "carol", input="new\n").returncode == 0
    assert run_cli("user", "--users-file", users, "list").stdout.split() == ["carol", "admin"]
    assert run_cli("user", "--users-file", users, "delete", "carol").returncode == 0
    assert run_cli("user", "--users-file", users, "list").stdout.split() == []
    res = run_cli("user", "--users-file", users, "add", "bad name", input="x\n")
    assert res.returncode == 1 and "username" in res.stderr
    res = run_cli("user", "--users-file", users, "add", "dave", input="\n")
    assert res.returncode == 1 and "empty password" in res.stderr


@pytest.mark.process
def test_user_roles_from_the_command_line(tmp_path):
    users = str(tmp_path / "users")
    assert run_cli("user", "add", "--role", "read", "dash", "--users-file", users, input="pw\n").returncode == 0
    assert run_cli("user", "add", "root2", "--users-file", users, input="pw\n").returncode == 0
    assert run_cli("user", "list", "--users-file", users).stdout.split() == ["dash", "read", "root2", "admin"]
    assert run_cli("user", "passwd", "dash", "--users-file", users, input="pw2\n").returncode == 0  # keeps the role
    assert "dash:read:scrypt$" in open(users).read()
    assert run_cli("user", "role", "dash", "admin", "--users-file", users).returncode == 0
    assert run_cli("user", "list", "--users-file", users).stdout.split() == ["dash", "admin", "root2", "admin"]
    res = run_cli("user", "role", "dash", "superuser", "--users-file", users)
    assert res.returncode == 2 and "invalid choice" in res.stderr
    res = run_cli("user", "role", "nobody", "read", "--users-file", users)
    assert res.returncode == 1 and "no user 'nobody'" in res.stderr


@pytest.mark.process
def test_serve_stops_gracefully_on_sigterm(tmp_path, pg_cluster):
    import urllib.request

    from agent_core.cluster import free_port

    port = free_port()
    conf = write_conf(
        tmp_path,
        f"""
        [agent]
        home = {tmp_path}
        port = {port}
        [postgresql]
        host = {pg_cluster.host}
        port = {pg_cluster.port}
    """,
    )
    with serve(conf) as served:
        assert served.url == f"http://127.0.0.1:{port}", served.stdout
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as res:
            assert res.status == 200
        done = served.stop(timeout=30)  # SIGTERM
        assert done.returncode == 0
    assert "stopped" in done.stderr


def test_bind_error_is_a_clear_startup_error(make_agent, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            make_agent(config={"agent": {"port": port}})


@pytest.mark.process
def test_missing_plugin_reported_with_every_other_problem(tmp_path, fake_plugins):
    conf = write_conf(
        tmp_path, f"[agent]\nhome = {tmp_path}\nplugins = good, nosuch\nport = x\n[good]\ncolor = green\n"
    )
    res = run_cli("-c", conf, "check-config", env={"PYTHONPATH": str(fake_plugins)})
    assert res.returncode == 2
    assert "plugin 'nosuch' is not installed" in res.stderr
    assert "agent.port: expected an integer" in res.stderr
    assert "good.color: must be one of" in res.stderr


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"PGWARDEN_AGENT_LOG_FILE": "/nonexistent/dir/x.log"}, "agent.log_file"),
        ({"PGWARDEN_AGENT_STORE": "foo://x"}, "agent.store: not a usable SQLAlchemy URL"),
        ({"PGWARDEN_AGENT_STORE": "postgresql+psycopg2://nobody@127.0.0.1:1/x"}, "agent.store: cannot connect"),
        ({"PGWARDEN_AGENT_HOME": "/proc/nope"}, "agent.home"),
        ({"PGWARDEN_AGENT_PORT": "x"}, "agent.port (from PGWARDEN_AGENT_PORT): expected an integer"),
        ({"PGWARDEN_AGENT_PROTT": "1"}, "agent.prott (from PGWARDEN_AGENT_PROTT): unknown key"),
        (
            {"PGWARDEN_AGENT_SCHEDULER_GRACE": "-1"},
            "agent.scheduler_grace (from PGWARDEN_AGENT_SCHEDULER_GRACE): must be at least 0",
        ),
    ],
)
@pytest.mark.process
def test_unusable_paths_and_urls_are_config_errors_not_tracebacks(tmp_path, env, expected):
    conf = write_conf(tmp_path, f"[agent]\nhome = {tmp_path}\n[postgresql]\nport = 5432\n")
    for command in ("check-config", "serve"):
        res = run_cli("-c", conf, command, env=env)
        assert res.returncode == 2, (command, res.stdout, res.stderr)
        assert expected in res.stderr, (command, res.stderr)
        assert "Traceback" not in res.stderr


@pytest.mark.process
def test_user_options_before_or_after_the_action(tmp_path):
    users = str(tmp_path / "users")
    assert run_cli("user", "add", "--stdin", "erin", "--users-file", users, input="pw\n").returncode == 0
    assert run_cli("user", "list", "--users-file", users).stdout.split() == ["erin", "admin"]
    assert run_cli("user", "--users-file", users, "list").stdout.split() == ["erin", "admin"]


@pytest.mark.process
def test_check_config_creates_nothing_and_serve_creates_the_store(tmp_path, pg_cluster):
    """check-config only checks: a missing state directory is reported as to be
    created, and stays missing; serve then creates it 0700 with the store 0600."""
    home = tmp_path / "state" / "home"
    conf = write_conf(
        tmp_path,
        f"""
        [agent]
        home = {home}
        port = 0
        [postgresql]
        host = {pg_cluster.host}
        port = {pg_cluster.port}
    """,
    )
    res = run_cli("-c", conf, "check-config")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout
    assert f"{home / 'pgwarden.db'} does not exist yet" in res.stderr
    assert not (tmp_path / "state").exists(), "check-config created the state directory"
    with serve(conf, stop_timeout=60) as served:  # fails unless it answers
        pass
    if served.result.returncode == -signal.SIGKILL:
        pytest.fail(f"serve did not stop within 60 s of SIGTERM; its stderr ends:\n{served.result.stderr[-4000:]}")
    assert (home / "pgwarden.db").is_file()
    assert oct(os.stat(home).st_mode & 0o777) == "0o700"
    assert oct(os.stat(home / "pgwarden.db").st_mode & 0o777) == "0o600"
    # an existing store is checked, not changed
    before = sorted(os.listdir(home))
    res = run_cli("-c", conf, "check-config")
    assert res.returncode == 0 and "does not exist yet" not in res.stderr, res.stderr
    assert sorted(os.listdir(home)) == before
