"""The operations store's schema under Alembic, on a SQLite and a PostgreSQL store.

A store written by the release before migrations (its tables made by
``create_all``, no ``alembic_version``) keeps its operations, sessions and
audit log when the agent starts on it, and is recorded at the baseline; a
later revision upgrades it with its rows kept; a store at a revision this
release does not know is refused at start, untouched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import agent_core.migrations
import agent_core.store
from agent_core.errors import StartupError
from agent_core.migrations import BASELINE, StoreSchemaError
from agent_core.store import metadata, notifications, operations, sessions

OP_ID = "0badc0de"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, pg_cluster, tmp_path):
    """An empty operations store: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
        return
    name = f"store_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def baseline_metadata() -> sa.MetaData:
    """The tables as the release before migrations made them (the baseline revision's frozen copy)."""
    path = os.path.join(agent_core.migrations.HERE, "versions", "r0001_baseline.py")
    spec = importlib.util.spec_from_file_location("pgwarden_baseline", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.baseline()


def write_previous_release_store(url: str) -> str:
    """A store as the previous release left it: ``create_all`` of its tables, an
    operation waiting to run, a session, two audit log entries. Returns the session token."""
    engine = sa.create_engine(url)
    try:
        baseline_metadata().create_all(engine)
        stamp = datetime.now(timezone.utc)
        token = secrets.token_hex(32)
        with engine.begin() as conn:
            conn.execute(
                operations.insert(),
                {
                    "id": OP_ID,
                    "task": "probe.quick",
                    "params": {"kept": True},
                    "dbname": "db1",
                    "scheduled_at": stamp + timedelta(hours=1),
                    "status": "todo",
                    "created_at": stamp,
                    "requested_by": "alice",
                    "cancel_requested": False,
                    "notices": [],
                    "info": {},
                },
            )
            conn.execute(
                sessions.insert(),
                {
                    "token_hash": hashlib.sha256(token.encode()).hexdigest(),
                    "username": "alice",
                    "created_at": stamp,
                    "last_seen": stamp,
                    "address": "127.0.0.1",
                },
            )
            conn.execute(
                notifications.insert(),
                [
                    {"at": stamp, "username": "alice", "message": "before the upgrade, first"},
                    {"at": stamp, "username": "alice", "message": "before the upgrade, second"},
                ],
            )
        assert "alembic_version" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    return token


def revision_of(running) -> str | None:
    with running.agent.store.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def assert_rows_kept(running, token: str) -> None:
    op = running.agent.scheduler.get(OP_ID)
    assert op is not None and op.status == "todo" and op.params == {"kept": True} and op.dbname == "db1"
    client = running.client(session=token)  # the session of before the upgrade still authenticates
    res = client.get("/profile")
    assert res.status == 200 and res.json()["username"] == "alice", res
    res = client.get("/notifications")
    assert res.status == 200, res
    messages = [entry["message"] for entry in res.json()]
    assert {"before the upgrade, first", "before the upgrade, second"} <= set(messages)


def test_a_store_of_the_previous_release_is_recorded_at_the_baseline_with_its_rows(make_agent, probe, store_url):
    token = write_previous_release_store(store_url)
    running = make_agent(plugins={"probe": probe}, config={"agent": {"store": store_url}})
    assert revision_of(running) == BASELINE
    assert_rows_kept(running, token)
    op_id = running.agent.scheduler.submit("probe.quick", {}, run_at=datetime.now(timezone.utc) + timedelta(hours=2))
    running.restart()  # at head: a start changes nothing
    assert revision_of(running) == BASELINE
    assert running.agent.scheduler.get(op_id).status == "todo"
    assert_rows_kept(running, token)


def test_an_empty_store_is_made_at_head_as_the_tables_describe(make_agent, probe, store_url):
    """The revisions make exactly the tables ``agent_core.store`` declares (a change there without a revision fails)."""
    running = make_agent(plugins={"probe": probe}, config={"agent": {"store": store_url}})
    assert revision_of(running) == BASELINE
    with running.agent.store.engine.connect() as conn:
        core_only = {"include_name": lambda name, kind, _parent: kind != "table" or name in metadata.tables}
        diff = compare_metadata(MigrationContext.configure(conn, opts=core_only), metadata)
    assert diff == []


NOTE_REVISION = '''"""a note on each operation (test only)"""
import sqlalchemy as sa
from alembic import op

revision = "test0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("core_operations") as batch:
        batch.add_column(sa.Column("note", sa.Text, nullable=True))
    op.execute("UPDATE core_operations SET note = 'migrated'")


def downgrade():
    with op.batch_alter_table("core_operations") as batch:
        batch.drop_column("note")
'''


def test_a_later_revision_upgrades_with_rows_kept_and_an_unknown_one_is_refused(
    make_agent, probe, store_url, tmp_path, monkeypatch
):
    token = write_previous_release_store(store_url)
    running = make_agent(plugins={"probe": probe}, config={"agent": {"store": store_url}})
    assert revision_of(running) == BASELINE

    revisions = tmp_path / "revisions"
    revisions.mkdir()
    (revisions / "test0002_note.py").write_text(NOTE_REVISION)
    monkeypatch.setattr(agent_core.store, "migration_locations", [str(revisions)])
    running.restart()  # a release that ships test0002
    assert revision_of(running) == "test0002"
    assert_rows_kept(running, token)
    with running.agent.store.engine.connect() as conn:
        notes = conn.execute(sa.text("SELECT id, note FROM core_operations")).all()
    assert notes == [(OP_ID, "migrated")]
    new = running.agent.scheduler.submit("probe.quick", {}, run_at=datetime.now(timezone.utc) + timedelta(hours=2))
    assert running.agent.scheduler.get(new).status == "todo"  # read by column name, the new column beside

    running.stop()
    monkeypatch.setattr(agent_core.store, "migration_locations", [])  # back to a release without test0002
    with pytest.raises(StartupError) as refused:
        running.start()
    assert isinstance(refused.value, StoreSchemaError)
    message = str(refused.value)
    assert "'test0002'" in message and "newer pgwarden" in message and "the operations store" in message
    running.agent.stop()

    engine = sa.create_engine(store_url)  # untouched by the refused start
    try:
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "test0002"
            assert conn.execute(sa.text("SELECT count(*) FROM core_operations")).scalar() == 2
    finally:
        engine.dispose()
