def test_login_and_status(agent, client):
    res = agent.client().get("/status")
    assert res.status == 200, res
    assert res.json()["alive"] is True
    res = client.get("/profile")
    assert res.json() == {"username": "alice"}
    res = client.get("/discover")
    assert res.status == 200, res
    assert res.json()["pg_version_num"] >= 100000
