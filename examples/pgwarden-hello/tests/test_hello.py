"""How a third-party plugin tests itself with the fixtures pgwarden ships."""

import agent_hello.plugin
from agent_core.testing import KEY, wait_for


def test_hello_with_session_and_key(make_agent):
    running = make_agent(plugins={"hello": agent_hello.plugin}, config={"hello": {"greeting": "Hi"}})
    assert running.login().get("/hello").json() == {"greeting": "Hi, alice"}
    assert running.client().get(f"/hello?key={KEY}").json() == {"greeting": "Hi, key"}


def test_count_runs_as_an_operation(make_agent, databases):
    db = databases.create("hello_example", setup="CREATE TABLE a (id int); CREATE TABLE b (id int)")
    client = make_agent(plugins={"hello": agent_hello.plugin}).login()
    op_id = client.post(f"/hello/count/{db}").json()["id"]
    op = wait_for(lambda: (o := client.get(f"/hello/count/{op_id}").json())["status"] == "done" and o)
    assert op["result"] == {"tables": 2}
    assert client.post("/hello/count/no_such_db").status == 404
