"""The persistent scheduler, on the default SQLite store and on a PostgreSQL store."""

import re
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from agent_core.errors import Conflict, NotFound
from agent_core.operations.scheduler import Scheduler, TooManyPending
from agent_core.store import Store, operations
from agent_core.testing import Clock, run_now, wait_for


@pytest.fixture(params=["sqlite", "postgresql"])
def store_config(request, pg_cluster, tmp_path):
    """[agent] settings selecting the operations store."""
    if request.param == "sqlite":
        yield {}
        return
    name = f"store_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f'CREATE DATABASE "{name}"')
    yield {"store": pg_cluster.url(name)}
    pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def sched_agent(make_agent, probe, store_config):
    return make_agent(plugins={"probe": probe}, config={"agent": {**store_config, "scheduler_grace": 60}})


def scheduler(running):
    return running.agent.scheduler


def test_submit_runs_now_and_keeps_result_and_notices(sched_agent, probe):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.quick", {"a": 1}, dbname="db1", requested_by="alice")
    assert re.fullmatch("[0-9a-f]{8}", op_id), op_id
    op = wait_for(lambda: (o := s.get(op_id)) and o.status == "done" and o, timeout=10)
    assert op.result == {"params": {"a": 1}}
    assert op.notices == ["NOTICE: quick ran"]
    assert op.requested_by == "alice" and op.dbname == "db1"
    assert op.started_at >= op.created_at and op.finished_at >= op.started_at


def test_run_now_runs_an_operation_due_later_at_once(sched_agent):
    s = scheduler(sched_agent)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    op_id = s.submit("probe.quick", {"a": 1}, run_at=later)
    op = run_now(sched_agent, "probe.quick")
    assert op.id == op_id and op.status == "done" and op.result == {"params": {"a": 1}}
    assert op.finished_at < later  # the hour was not waited
    with pytest.raises(AssertionError, match=r"no operation of 'probe\.quick' waits to run"):
        run_now(sched_agent, "probe.quick")


def test_identical_submissions_get_distinct_ids(sched_agent):
    s = scheduler(sched_agent)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = {s.submit("probe.quick", {}, run_at=later) for _ in range(50)}
    assert len(ids) == 50


def test_future_operation_starts_within_a_second_of_its_time(sched_agent, probe):
    s = scheduler(sched_agent)
    when = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    op_id = s.submit("probe.quick", {}, run_at=when)
    assert s.get(op_id).status == "todo"
    wait_for(lambda: s.get(op_id).status == "done", timeout=10)
    started = dict(probe.state.ran)[op_id]
    assert when.timestamp() - 0.01 <= started <= when.timestamp() + 1.0


def test_failed_operation_keeps_its_error(sched_agent):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.fail")
    op = wait_for(lambda: (o := s.get(op_id)).finished and o, timeout=10)
    assert op.status == "failed"
    assert op.error == "it went wrong"


def test_cancel_todo_then_conflict_and_not_found(sched_agent):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.quick", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    assert s.cancel(op_id).status == "canceled"
    with pytest.raises(Conflict):
        s.cancel(op_id)
    with pytest.raises(NotFound):
        s.cancel("deadbeef")
    other = s.submit("probe.quick", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    with pytest.raises(NotFound):
        s.cancel(other, task="probe.fail")


def test_cancel_running_operation(sched_agent, probe):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.blocking")
    assert probe.state.started.wait(10)
    running = s.get(op_id)
    assert running.info == {"marker": "running"}
    assert running.notices == ["NOTICE: waiting for release"]  # visible while it runs
    op = s.cancel(op_id)
    assert op.status == "canceled"
    assert "stopped on request" in op.error


def test_running_operation_without_cancel_is_conflict(sched_agent, probe):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.uncancelable")
    assert probe.state.started.wait(10)
    with pytest.raises(Conflict):
        s.cancel(op_id)
    probe.state.release.set()
    wait_for(lambda: s.get(op_id).status == "done", timeout=10)


def test_cancel_and_start_race_has_one_winner(sched_agent):
    s = scheduler(sched_agent)
    results = []
    for _ in range(20):
        op_id = s.submit("probe.quick")  # due now: the dispatcher races the cancel
        try:
            results.append(s.cancel(op_id).status)
        except Conflict:
            results.append("done-first")
        final = wait_for(lambda op_id=op_id: (o := s.get(op_id)).finished and o, timeout=10)
        assert final.status in ("canceled", "done")
        assert (final.status == "canceled") == (results[-1] == "canceled")
        assert (final.started_at is None) == (final.status == "canceled")


def test_list_filters(sched_agent):
    s = scheduler(sched_agent)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    a = s.submit("probe.quick", run_at=later, dbname="d", schema="s", table="t")
    b = s.submit("probe.quick", run_at=later, dbname="d", schema="s", table="u")
    c = s.submit("probe.fail", run_at=later, dbname="d", schema="s2", index="i")
    d = s.submit("probe.quick", run_at=later, dbname="e")
    ids = lambda ops: {o.id for o in ops}  # noqa: E731
    assert ids(s.list(dbname="d")) == {a, b, c}
    assert ids(s.list(dbname="d", schema="s", table="t")) == {a}
    assert ids(s.list(task="probe.quick", dbname="d")) == {a, b}
    assert ids(s.list(dbname="e", schema=None)) == {d}
    assert ids(s.list(index="i")) == {c}
    assert ids(s.list(status="todo", task="probe.fail")) == {c}


def test_restart_keeps_todo_runs_missed_within_grace_aborts_late_and_doing(sched_agent, probe):
    s = scheduler(sched_agent)
    future = s.submit("probe.quick", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    running = s.submit("probe.blocking")
    assert probe.state.started.wait(10)
    sched_agent.stop()
    # what a crash leaves behind, written while the agent is down: rows it never finished
    store = sched_agent.agent.store
    stamp = datetime.now(timezone.utc)
    with store.begin() as conn:
        for op_id, status, when in (
            ("0000000a", "todo", stamp - timedelta(seconds=10)),
            ("0000000b", "todo", stamp - timedelta(seconds=600)),
            ("0000000c", "doing", stamp - timedelta(seconds=5)),
        ):
            conn.execute(
                operations.insert().values(
                    id=op_id,
                    task="probe.quick" if op_id != "0000000c" else "probe.blocking",
                    params={},
                    scheduled_at=when,
                    status=status,
                    created_at=when,
                    cancel_requested=False,
                    notices=[],
                    info={},
                )
            )
    sched_agent.start()
    s = scheduler(sched_agent)
    assert s.get(future).status == "todo"
    assert s.get(running).status == "aborted"  # stopped with the agent
    assert s.get("0000000c").status == "aborted"
    assert "running" in s.get("0000000c").error
    assert "0000000c" in probe.state.aborted
    assert s.get("0000000c").notices == ["cleaned up after 0000000c"]
    late = s.get("0000000b")
    assert late.status == "aborted" and "grace" in late.error
    assert wait_for(lambda: s.get("0000000a").status == "done", timeout=10)


def test_retention_purges_finished_operations(make_agent, probe, store_config):
    running = make_agent(plugins={"probe": probe}, config={"agent": {**store_config, "scheduler_retention": 1}})
    s = scheduler(running)
    op_id = s.submit("probe.quick")
    wait_for(lambda: s.get(op_id).status == "done", timeout=10)
    clock = Clock()
    s.clock = clock.now
    s._purge()
    assert s.get(op_id) is not None, "not yet a second old"
    clock.advance(1.5)
    s._purge()
    assert s.get(op_id) is None


def test_concurrency_is_bounded(make_agent, probe):
    """With 2 workers, a third due operation waits for a free worker."""
    running = make_agent(plugins={"probe": probe}, config={"agent": {"scheduler_workers": 2}})
    s = scheduler(running)
    ids = [s.submit("probe.blocking") for _ in range(3)]
    wait_for(lambda: sum(s.get(i).status == "doing" for i in ids) == 2, timeout=10)
    time.sleep(0.3)
    assert sorted(s.get(i).status for i in ids) == ["doing", "doing", "todo"]
    probe.state.release.set()
    wait_for(lambda: all(s.get(i).status == "done" for i in ids), timeout=10)


def test_scheduler_unit_wakes_on_submit_without_polling(tmp_path):
    """The dispatcher sleeps on a condition: a submit wakes it at once."""
    from agent_core.hookspecs import TaskType

    store = Store(f"sqlite:///{tmp_path}/ops.db")
    store.create()
    ran = threading.Event()
    s = Scheduler(store, None, workers=1)
    s.register(TaskType("unit.noop", lambda ctx: ran.set()))
    passes: list[float] = []  # one per dispatch pass begun
    waits: list[float] = []  # what each dispatch pass decided to sleep, in seconds
    dispatch_once = s._dispatch_once

    def recorded() -> float:
        passes.append(time.monotonic())
        waits.append(dispatch_once())
        return waits[-1]

    s._dispatch_once = recorded  # type: ignore[method-assign]
    s.start()
    try:
        wait_for(lambda: waits, timeout=10)
        # asleep with nothing to do for far longer than the wait below: only a wake-up can start the operation
        assert waits == [60.0] and len(passes) == 1
        s.submit("unit.noop")
        assert ran.wait(5)
        assert len(passes) >= 2, "the submit woke the dispatcher"
    finally:
        s.stop()
        store.dispose()


def test_operation_rows_use_utc(sched_agent):
    s = scheduler(sched_agent)
    op_id = s.submit("probe.quick", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    op = s.get(op_id)
    assert op.scheduled_at.tzinfo is not None
    assert op.to_dict()["datetime"].endswith("Z")
    with sched_agent.agent.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(operations)).scalar() >= 1


# -- bounded by design: pending cap, retention as operations finish, keyset pages ----


def count(running, *statuses):
    query = sa.select(sa.func.count()).select_from(operations)
    if statuses:
        query = query.where(operations.c.status.in_(statuses))
    with running.agent.store.engine.connect() as conn:
        return conn.execute(query).scalar()


def test_pending_operations_are_capped_and_nothing_is_written_over_the_cap(make_agent, probe, store_config):
    running = make_agent(plugins={"probe": probe}, config={"agent": {**store_config, "scheduler_pending_max": 3}})
    s = scheduler(running)
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = [s.submit("probe.quick", run_at=later) for _ in range(3)]
    for _ in range(3):  # bounded: every attempt over the cap is refused the same way
        with pytest.raises(TooManyPending) as refused:
            s.submit("probe.quick", run_at=later)
        assert refused.value.retry_after == 60 and "scheduler_pending_max" in refused.value.message
    assert count(running, "todo") == 3 and count(running) == 3
    s.cancel(ids[0])  # one place freed
    s.submit("probe.quick", run_at=later)
    assert count(running, "todo") == 3


def test_finished_operations_beyond_the_count_are_deleted_as_others_finish(make_agent, probe, store_config):
    """No periodic job involved: the first purge runs at start, the next one a minute later."""
    config = {"agent": {**store_config, "scheduler_retention_count": 3}}
    running = make_agent(plugins={"probe": probe}, config=config)
    s = scheduler(running)
    ids = []
    for _ in range(6):
        ids.append(s.submit("probe.quick"))
        wait_for(lambda: (o := s.get(ids[-1])) is not None and o.finished, timeout=10)
    assert [s.get(i) is not None for i in ids] == [False, False, False, True, True, True]
    assert count(running) == 3


def test_finished_operations_past_the_retention_age_are_deleted_when_another_finishes(make_agent, probe, store_config):
    running = make_agent(plugins={"probe": probe}, config={"agent": {**store_config, "scheduler_retention": 3600}})
    s = scheduler(running)
    old = s.submit("probe.quick")
    wait_for(lambda: s.get(old).status == "done", timeout=10)
    with running.agent.store.begin() as conn:  # as if it had ended two hours ago
        two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
        conn.execute(operations.update().where(operations.c.id == old).values(finished_at=two_hours_ago))
    assert s.get(old) is not None
    new = s.submit("probe.quick")
    wait_for(lambda: s.get(new).status == "done", timeout=10)
    assert s.get(old) is None and s.get(new) is not None


def test_pages_follow_the_listing_order_without_gaps_or_repeats(sched_agent):
    """Ties on the scheduled time included; a row deleted between two pages does not break the cursor."""
    s = scheduler(sched_agent)
    same = datetime.now(timezone.utc) + timedelta(hours=1)
    for n in range(7):
        s.submit("probe.quick", run_at=same if n % 2 else same + timedelta(minutes=n))
    everything = [op.id for op in s.list(task="probe.quick")]
    seen, cursor, pages = [], None, 0
    while True:
        page, cursor = s.page(3, cursor, task="probe.quick")
        seen += [op.id for op in page]
        pages += 1
        if pages == 1:  # the last entry of the first page goes away meanwhile
            with sched_agent.agent.store.begin() as conn:
                conn.execute(operations.delete().where(operations.c.id == page[-1].id))
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3 and seen == everything
    assert s.page(10, task="probe.quick")[1] is None
    for bad in ("x", "1.2", "1.2.3", "a.b.0000000z", "1.2.0000000a.4"):
        with pytest.raises(ValueError):
            s.page(3, bad, task="probe.quick")


def test_a_store_of_the_previous_release_gets_the_new_indexes_at_start(make_agent, probe, store_config):
    """An earlier release made core_operations without the listing and retention indexes, and
    its store has no schema revision: the agent adds them when it starts, rows kept."""
    running = make_agent(plugins={"probe": probe}, config={"agent": store_config})
    op_id = scheduler(running).submit("probe.quick", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    new = {"core_operations_listing", "core_operations_finished_at"}
    engine = running.agent.store.engine
    for name in new:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP INDEX {name}")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
    assert not new & {i["name"] for i in sa.inspect(engine).get_indexes("core_operations")}
    running.restart()
    engine = running.agent.store.engine
    assert new <= {i["name"] for i in sa.inspect(engine).get_indexes("core_operations")}
    assert scheduler(running).get(op_id).status == "todo"
    running.restart()  # and once they exist, starting again is fine
    assert scheduler(running).page(10, task="probe.quick")[0][0].id == op_id
