"""agent.stash: the plugins' typed per-agent state (agent_core/stash.py)."""

import re
import textwrap
import types

import pytest

from agent_core.hookspecs import Route, hookimpl
from agent_core.stash import Stash, StashKey

# -- the Stash alone ---------------------------------------------------------------


def test_a_value_set_is_read_back_under_its_key_only():
    stash = Stash()
    sampler, other = StashKey[list[int]](), StashKey[list[int]]()
    stash[sampler] = [1]
    assert stash[sampler] == [1] and sampler in stash and other not in stash
    assert stash.get(other, None) is None and stash.get(sampler, None) == [1]
    assert len(stash) == 1


def test_a_missing_key_raises_key_error_naming_it():
    stash = Stash()
    key = StashKey[int]("activity")
    with pytest.raises(KeyError, match="<StashKey activity>"):
        stash[key]
    with pytest.raises(KeyError):
        del stash[key]


def test_keys_of_the_same_name_are_distinct():
    """Keys compare by identity: two plugins using the same name never collide."""
    stash = Stash()
    mine, theirs = StashKey[str]("state"), StashKey[str]("state")
    stash[mine] = "mine"
    stash[theirs] = "theirs"
    assert (stash[mine], stash[theirs]) == ("mine", "theirs")


def test_setdefault_sets_once_and_pop_and_del_remove():
    stash = Stash()
    key = StashKey[dict[str, int]]()
    first = stash.setdefault(key, {})
    first["n"] = 1
    assert stash.setdefault(key, {}) is first
    assert stash.pop(key, None) is first and key not in stash and stash.pop(key, "gone") == "gone"
    stash[key] = {}
    del stash[key]
    assert key not in stash and len(stash) == 0


def test_mypy_checks_the_values_against_their_key(tmp_path):
    """A value of the wrong type is a mypy error; what is read has the key's type."""
    api = pytest.importorskip("mypy.api", reason="mypy is not installed (make venv installs it)")
    source = textwrap.dedent(
        """\
        from agent_core.stash import Stash, StashKey

        COUNT = StashKey[int]("count")
        stash = Stash()
        stash[COUNT] = 1
        stash[COUNT] = "one"  # wrong
        stash.setdefault(COUNT, "zero")  # wrong
        reveal_type(stash[COUNT])
        reveal_type(stash.get(COUNT, None))
        reveal_type(stash.setdefault(COUNT, 0))
        """
    )
    module = tmp_path / "uses_stash.py"
    module.write_text(source)
    out, err, status = api.run(["--no-incremental", "--no-error-summary", "--cache-dir=/dev/null", str(module)])
    found = [line.split(":", 2)[1:] for line in out.splitlines()]  # [lineno, message]
    errors = sorted(int(n) for n, message in found if message.startswith(" error:"))
    revealed = [re.search(r'Revealed type is "(.*)"', m).group(1) for _, m in found if "Revealed" in m]
    assert status == 1, out + err
    assert errors == [n for n, line in enumerate(source.splitlines(), 1) if line.endswith("# wrong")], out
    assert [t.removeprefix("builtins.") for t in revealed] == ["int", "int | None", "int"], out


# -- agent.stash in running agents ---------------------------------------------------

HITS = StashKey[list[str]]("test hits")


def counting_plugin():
    """A plugin counting its requests in ``agent.stash`` (made at startup, removed at shutdown)."""

    def hit(request):
        hits = request.agent.stash[HITS]
        hits.append(request.requester)
        return {"hits": len(hits)}

    def agent_register_routes(agent):
        return [Route("GET", "/counting/hit", hit)]

    def agent_startup(agent):
        agent.stash[HITS] = []

    def agent_shutdown(agent):
        del agent.stash[HITS]

    return types.SimpleNamespace(
        agent_register_routes=hookimpl(agent_register_routes),
        agent_startup=hookimpl(agent_startup),
        agent_shutdown=hookimpl(agent_shutdown),
    )


def test_each_agent_of_a_process_has_its_own_stash(make_agent):
    plugin = counting_plugin()  # one plugin module, two agents: as with installed plugins
    first, second = make_agent(plugins={"counting": plugin}), make_agent(plugins={"counting": plugin})
    a, b = first.login(), second.login()
    assert [a.get("/counting/hit").json()["hits"] for _ in range(3)] == [1, 2, 3]
    assert b.get("/counting/hit").json() == {"hits": 1}
    assert first.agent.stash[HITS] == ["alice"] * 3 and second.agent.stash[HITS] == ["alice"]
    second.stop()
    assert HITS not in second.agent.stash
    assert a.get("/counting/hit").json() == {"hits": 4}  # the other agent's state is untouched
