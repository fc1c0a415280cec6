"""The state store on a real SQLite file and a real PostgreSQL server: connection settings, constraints,
records, secrets."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from tests import pgserver
from upgrader import errors
from upgrader.state import orm, records, schema, store


@pytest.fixture
def state(db_url: str) -> store.Store:
    opened = store.Store.open(db_url)
    yield opened
    opened.close()


def test_new_database_is_created_at_head_in_a_private_directory(sqlite_url: str, tmp_path: Path) -> None:
    opened = store.Store.open(sqlite_url)
    opened.close()
    directory = tmp_path / "state"
    assert (directory / "state.db").is_file()
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    # The file holds plans, facts and events: private from its first byte, whatever the umask, and
    # SQLite gives its -wal and -shm files the same mode.
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (directory / name).exists():
            assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600, name


def test_a_new_database_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0o000)
    try:
        store.Store.open(f"sqlite:///{tmp_path / 'open.db'}").close()
        schema.upgrade_url(f"sqlite:///{tmp_path / 'upgraded.db'}")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "open.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "upgraded.db").st_mode) == 0o600


def test_commits_are_durable_before_they_return(sqlite_url: str) -> None:
    state = store.Store.open(sqlite_url)
    # FULL, not NORMAL: in WAL mode NORMAL can lose the last commits (a "known-good" row) on power loss.
    with state.engine.connect() as connection:
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
    state.close()


def test_sqlite_connections_have_wal_foreign_keys_and_busy_timeout(sqlite_url: str) -> None:
    state = store.Store.open(sqlite_url)
    with state.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
    state.close()


def test_foreign_keys_are_enforced(state: store.Store) -> None:
    with (
        pytest.raises(errors.StateError, match=r"FOREIGN KEY constraint failed|violates foreign key constraint"),
        state.session() as session,
    ):
        session.add(orm.Step(run_id="no-such-run", position=0, kind="nodes", status=records.StepStatus.PENDING))


def test_cluster_rows_are_created_once(state: store.Store) -> None:
    first = state.ensure_cluster("prod-eu1")
    assert state.ensure_cluster("prod-eu1") == first
    assert state.ensure_cluster("staging") != first


def test_an_event_costs_one_transaction_once_its_cluster_is_known(state: store.Store) -> None:
    """A run writes events many times a second: each is one commit, not a cluster lookup and an insert."""
    commits: list[int] = []
    sqlalchemy.event.listen(state.engine, "commit", lambda connection: commits.append(1))
    state.record_event(kind="first", message="m", cluster="prod-eu1")
    before = len(commits)
    for index in range(5):
        state.record_event(kind="step-progress", message=f"m{index}", cluster="prod-eu1")
    assert len(commits) - before == 5
    assert [e.cluster for e in state.events(cluster="prod-eu1", limit=10)] == ["prod-eu1"] * 6


def test_a_run_with_steps_round_trips_with_aware_utc_times(state: store.Store) -> None:
    cluster = state.ensure_cluster("prod-eu1")
    started = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
    with state.session() as session:
        session.add(
            orm.Run(
                id="run-1",
                cluster_id=cluster,
                kind=records.RunKind.UPGRADE,
                status=records.RunStatus.RUNNING,
                host="ops-1",
                pid=42,
                started_at=started,
            )
        )
        session.flush()
        session.add(orm.Step(run_id="run-1", position=0, kind="snapshot", status=records.StepStatus.SUCCEEDED))
    with state.session() as session:
        run = session.get(orm.Run, "run-1")
        assert run is not None
        assert run.started_at == started and run.started_at.tzinfo is UTC
        assert run.status is records.RunStatus.RUNNING
    with state.engine.connect() as connection:
        stored = connection.execute(text("SELECT status, kind FROM runs")).one()
    assert tuple(stored) == ("running", "upgrade")  # enums are stored by value


def test_unknown_enum_values_are_rejected(state: store.Store) -> None:
    cluster = state.ensure_cluster("prod-eu1")
    with pytest.raises((StatementError, LookupError, errors.StateError)), state.session() as session:
        session.add(orm.Run(id="r", cluster_id=cluster, kind="sideways", status="running", host="h", pid=1))


def test_naive_datetimes_are_refused(state: store.Store) -> None:
    cluster = state.ensure_cluster("prod-eu1")
    with (
        pytest.raises((StatementError, errors.StateError), match="naive datetime"),
        state.session() as session,
    ):
        session.add(orm.Event(cluster_id=cluster, at=datetime(2026, 1, 1), level="info", kind="k", message="m"))


def test_step_positions_are_unique_per_run(state: store.Store) -> None:
    cluster = state.ensure_cluster("c")
    with state.session() as session:
        session.add(
            orm.Run(
                id="r",
                cluster_id=cluster,
                kind=records.RunKind.UPGRADE,
                status=records.RunStatus.RUNNING,
                host="h",
                pid=1,
            )
        )
    with (
        pytest.raises(errors.StateError, match=r"UNIQUE|duplicate key value violates unique constraint"),
        state.session() as session,
    ):
        for _ in range(2):
            session.add(orm.Step(run_id="r", position=0, kind="nodes", status=records.StepStatus.PENDING))


def test_events_are_recorded_newest_first_and_secrets_are_scrubbed(state: store.Store) -> None:
    state.record_event(kind="first", message="one", cluster="prod-eu1")
    state.record_event(
        kind="second",
        message="two",
        cluster="prod-eu1",
        level=records.EventLevel.WARNING,
        data={
            "node": "w-1",
            "password": "hunter2",
            "tls": {"private_key": "-----BEGIN", "ca": "ca.crt"},
            "hosts": [{"token": "abc", "name": "cp-1"}],
        },
    )
    state.record_event(kind="other", message="elsewhere", cluster="staging")
    events = state.events(cluster="prod-eu1")
    assert [e.kind for e in events] == ["second", "first"]
    assert events[0].level is records.EventLevel.WARNING
    assert events[0].data == {
        "node": "w-1",
        "password": "<redacted>",
        "tls": {"private_key": "<redacted>", "ca": "ca.crt"},
        "hosts": [{"token": "<redacted>", "name": "cp-1"}],
    }
    with state.engine.connect() as connection:  # what is stored, read back raw
        stored = " ".join(str(row[0]) for row in connection.execute(text("SELECT data FROM events")))
    assert "hunter2" not in stored
    raw = state.engine.url.database
    if state.engine.url.get_backend_name() == "sqlite" and raw:  # and not in the file's free pages
        assert b"hunter2" not in Path(raw).read_bytes() + Path(raw + "-wal").read_bytes()


def test_two_stores_on_one_file_both_write(db_url: str) -> None:
    first, second = store.Store.open(db_url), store.Store.open(db_url)
    try:
        for i in range(20):
            (first if i % 2 else second).record_event(kind="k", message=str(i), cluster="c")
        assert len(first.events(cluster="c")) == 20
    finally:
        first.close()
        second.close()


def test_integrity_error_is_not_leaked_raw(state: store.Store) -> None:
    with pytest.raises(errors.StateError) as caught, state.session() as session:
        session.add(orm.Cluster(name="dup"))
        session.add(orm.Cluster(name="dup"))
    assert isinstance(caught.value.__cause__, IntegrityError)
    assert "INSERT" not in str(caught.value)  # no SQL statement in the operator's message


def test_a_postgresql_password_comes_from_pgpassfile_and_is_never_shown(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_url.replace(f"//{pgserver.SUPERUSER}@", f"//{pgserver.PASSWORD_ROLE}@")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{pgserver.PASSWORD_ROLE}:{pgserver.PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with store.Store.open(url) as state:  # no password in the URL: libpq's PGPASSFILE gives it
        state.record_event(kind="k", message="written with a password from PGPASSFILE", cluster="c")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    wrong = url.replace(f"//{pgserver.PASSWORD_ROLE}@", f"//{pgserver.PASSWORD_ROLE}:not-it-0815@")
    with pytest.raises(errors.StateError) as refused:
        store.Store.open(wrong)
    assert "password authentication failed" in refused.value.message
    assert "not-it-0815" not in refused.value.message and pgserver.PASSWORD not in refused.value.message


def test_a_terminated_postgresql_backend_does_not_fail_the_next_journal_write(pg_url: str) -> None:
    """Issue 17: one terminated backend failed the running step (cp-1 was upgraded while the step said
    failed). The pool now checks a connection before it uses it."""
    with store.Store.open(pg_url) as state:
        run = state.create_run(
            run_id=records.RunId("c-run-1"),
            cluster="c",
            plan_id=None,
            kind=records.RunKind.UPGRADE,
            steps=[{"kind": "snapshot", "version": None, "nodes": []}],
            host="h",
            pid=1,
            options={},
        )
        with state.engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with store.Store.open(pg_url) as admin, admin.engine.connect() as other:  # as a failover or a DBA would
            assert other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one() is True
        state.start_step(run.id, 0, at=datetime.now(UTC))  # on the pool's next connection: a fresh one
        state.step_progress(run.id, 0, {"snapshot": "c-20261201T000000Z-abcd"})
        state.finish_step(run.id, 0, records.StepStatus.SUCCEEDED, at=datetime.now(UTC))
        assert state.run(run.id).steps[0].status is records.StepStatus.SUCCEEDED
