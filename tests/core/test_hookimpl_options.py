"""Every hookimpl option pluggy documents behaves in pgwarden as pluggy documents
it (hooks are called through pluggy), with results and failures still
attributed to the plugin they come from. Real agents over real HTTP."""

import logging
import types

import pytest

from agent_core.errors import StartupError
from agent_core.hookspecs import Option, Route, hookimpl
from agent_core.testing import KEY


def plugin(**attrs):
    """A plugin object whose attributes are the given (decorated) functions."""
    return types.SimpleNamespace(**attrs)


def recorder(name, calls, hook="agent_startup", **opts):
    """A hookimpl of ``hook`` (with ``opts``) that records ``name`` in ``calls``."""

    def impl(agent):
        calls.append(name)

    impl.__name__ = hook
    return plugin(**{hook: hookimpl(**opts)(impl)})


def view(request):
    return {"ok": True}


def test_tryfirst_is_called_before_the_plugins_before_it(make_agent):
    calls = []
    make_agent(
        plugins={
            "one": recorder("one", calls),
            "two": recorder("two", calls),
            "three": recorder("three", calls, tryfirst=True),
        }
    )
    assert calls == ["three", "one", "two"]


def test_trylast_shuts_down_after_the_plugins_after_it(make_agent):
    calls = []
    running = make_agent(
        plugins={
            "one": recorder("one", calls, hook="agent_shutdown", trylast=True),
            "two": recorder("two", calls, hook="agent_shutdown"),
            "three": recorder("three", calls, hook="agent_shutdown"),
        }
    )
    running.stop()
    assert calls == ["two", "three", "one"]


def test_new_style_wrapper_sees_and_changes_the_result(make_agent):
    seen = []

    @hookimpl(wrapper=True)
    def agent_register_routes(agent):
        routes = yield  # every plugin's lists of routes
        seen.extend(r.path for result in routes for r in result)
        count = len(seen)
        return [*routes, [Route("GET", "/audit/count", lambda request: {"routes": count}, key=True)]]

    running = make_agent(
        plugins={
            "audit": plugin(agent_register_routes=agent_register_routes),
            "greet": plugin(agent_register_routes=hookimpl(lambda agent: [Route("GET", "/greet", view, key=True)])),
        }
    )
    assert seen == ["/greet"]
    client = running.client()
    assert client.get(f"/audit/count?key={KEY}").json() == {"routes": 1}  # added by the wrapper: audit's route
    assert client.get(f"/greet?key={KEY}").json() == {"ok": True}


def test_what_a_wrapper_adds_is_validated_as_its_plugins(make_agent):
    @hookimpl(wrapper=True)
    def agent_register_routes(agent):
        routes = yield
        return [*routes, [Route("GET", "/greet/extra", view)]]  # not under /audit

    with pytest.raises(StartupError, match=r"plugin 'audit': route '/greet/extra': path must start with '/audit'"):
        make_agent(plugins={"audit": plugin(agent_register_routes=agent_register_routes), "greet": plugin()})


def test_a_wrapper_that_breaks_the_shape_of_the_result_is_named(make_agent):
    @hookimpl(wrapper=True)
    def agent_register_routes(agent):
        routes = yield
        return [route for result in routes for route in result]  # one list per plugin expected

    greet = plugin(agent_register_routes=hookimpl(lambda agent: [Route("GET", "/greet", view, key=True)]))
    with pytest.raises(StartupError) as e:
        make_agent(plugins={"audit": plugin(agent_register_routes=agent_register_routes), "greet": greet})
    assert str(e.value) == "plugin 'audit': agent_register_routes must return a list of Route"


def test_new_style_wrapper_sees_the_failure_of_another_plugin_named(make_agent):
    seen = []

    @hookimpl(wrapper=True)
    def agent_startup(agent):
        try:
            yield
        except StartupError as e:
            seen.append(str(e))
            raise

    def fail(agent):
        raise RuntimeError("no luck")

    fail.__name__ = "agent_startup"
    with pytest.raises(StartupError, match=r"plugin 'greet' failed in agent_startup: RuntimeError: no luck"):
        make_agent(
            plugins={"audit": plugin(agent_startup=agent_startup), "greet": plugin(agent_startup=hookimpl(fail))}
        )
    assert seen == ["plugin 'greet' failed in agent_startup: RuntimeError: no luck"]


def test_a_failing_wrapper_is_named(make_agent):
    @hookimpl(wrapper=True)
    def agent_register_routes(agent):
        yield
        raise ValueError("wrapper broke")

    with pytest.raises(
        StartupError, match=r"plugin 'audit' failed in agent_register_routes: ValueError: wrapper broke"
    ):
        make_agent(plugins={"audit": plugin(agent_register_routes=agent_register_routes)})


def test_old_style_hookwrapper_gets_the_outcome_and_can_force_the_result(make_agent):
    seen = []

    @hookimpl(hookwrapper=True)
    def agent_register_routes(agent):
        outcome = yield
        routes = outcome.get_result()
        seen.extend(r.path for result in routes for r in result)
        outcome.force_result([*routes, [Route("GET", "/old", view, key=True)]])

    running = make_agent(
        plugins={
            "old": plugin(agent_register_routes=agent_register_routes),
            "greet": plugin(agent_register_routes=hookimpl(lambda agent: [Route("GET", "/greet", view, key=True)])),
        }
    )
    assert seen == ["/greet"]
    assert running.client().get(f"/old?key={KEY}").json() == {"ok": True}


def test_wrapper_of_agent_add_config_gets_its_own_section(make_agent):
    @hookimpl(wrapper=True)
    def agent_add_config(schema):
        schema.add(Option("level", int, 1))
        return (yield)

    running = make_agent(
        plugins={"wrapped": plugin(agent_add_config=agent_add_config)}, config={"wrapped": {"level": "4"}}
    )
    assert running.agent.config.section("wrapped") == {"level": 4}


def test_optionalhook_allows_a_hook_the_core_does_not_have(make_agent):
    later = hookimpl(optionalhook=True)(lambda agent: None)
    running = make_agent(plugins={"future": plugin(agent_from_a_later_version=later)})
    assert "future" in running.agent.plugin_names
    # ... and without optionalhook, the same hook is a misspelled hook
    with pytest.raises(StartupError, match=r"plugin 'strict': unknown hook agent_from_a_later_version"):
        make_agent(plugins={"strict": plugin(agent_from_a_later_version=hookimpl(lambda agent: None))})


def test_specname_implements_a_hook_under_another_name(make_agent):
    greet_routes = hookimpl(specname="agent_register_routes")(lambda agent: [Route("GET", "/greet", view, key=True)])
    more_routes = hookimpl(specname="agent_register_routes")(
        lambda agent: [Route("GET", "/greet/more", view, key=True)]
    )
    running = make_agent(plugins={"greet": plugin(greet_routes=greet_routes, more_routes=more_routes)})
    client = running.client()
    assert client.get(f"/greet?key={KEY}").json() == {"ok": True}
    assert client.get(f"/greet/more?key={KEY}").json() == {"ok": True}


def test_specname_arguments_are_checked_against_the_hook(make_agent):
    bad = hookimpl(specname="agent_startup")(lambda agnet: None)
    with pytest.raises(StartupError, match=r"plugin 'greet': hello \(specname=agent_startup\)\(agnet\): unknown"):
        make_agent(plugins={"greet": plugin(hello=bad)})


@pytest.mark.parametrize(
    "opts,message",
    [
        ({"wrapper": True}, "a wrapper must be a generator function"),
        ({"wrapper": True, "hookwrapper": True}, "wrapper=True and hookwrapper=True are mutually exclusive"),
    ],
)
def test_wrong_wrapper_refuses_startup_naming_the_plugin(make_agent, opts, message):
    impl = hookimpl(**opts)(lambda agent: None)
    with pytest.raises(StartupError, match=rf"plugin 'bad': agent_startup: {message}"):
        make_agent(plugins={"bad": plugin(agent_startup=impl)})


def test_tracing_shows_the_calling_order_and_wrappers(make_agent, caplog, monkeypatch):
    monkeypatch.setenv("PGWARDEN_TRACE_HOOKS", "1")
    wrapper = hookimpl(wrapper=True)(lambda agent: (yield))
    calls = []
    with caplog.at_level(logging.INFO, logger="pgwarden.hooks"):
        make_agent(
            plugins={
                "one": recorder("one", calls),
                "two": recorder("two", calls, tryfirst=True),
                "wrap": plugin(agent_startup=wrapper),
            }
        )
    traced = [
        r.getMessage() for r in caplog.records if r.name == "pgwarden.hooks" and "agent_startup" in r.getMessage()
    ]
    assert traced[:3] == [
        "hook wrap.agent_startup(agent) [wrapper]",
        "hook two.agent_startup(agent)",
        "hook one.agent_startup(agent)",
    ]
    assert "hook two.agent_startup returned None" in traced
