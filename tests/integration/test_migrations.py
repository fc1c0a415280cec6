"""Alembic migrations: one head, models match migrations, up/down/up keeps data, no silent migration."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from upgrader import errors
from upgrader.state import db, orm, schema, store


def engine_for(url: str):  # type: ignore[no-untyped-def]
    return db.create(db.resolve_url(url))


def test_single_head() -> None:
    assert len(schema.heads()) == 1


def test_models_match_the_migrations(db_url: str) -> None:
    engine = engine_for(db_url)
    schema.upgrade(engine, backup=False)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, orm.Base.metadata) == []
    engine.dispose()


def test_upgrade_downgrade_upgrade_with_data_present(db_url: str) -> None:
    engine = engine_for(db_url)
    schema.upgrade(engine, backup=False)
    state = store.Store(engine)
    state.record_event(kind="before", message="kept across migrations", cluster="prod-eu1")
    schema.downgrade(engine, "0001")
    assert schema.status(engine).current == "0001"
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
    assert "locks" not in tables and "events" in tables
    schema.upgrade(engine, backup=False)
    assert schema.status(engine).up_to_date
    assert [e.message for e in state.events(cluster="prod-eu1")] == ["kept across migrations"]
    schema.downgrade(engine, "base")
    assert schema.status(engine).current is None
    schema.upgrade(engine, backup=False)
    assert schema.status(engine).up_to_date
    engine.dispose()


def test_outdated_schema_is_refused_and_names_db_upgrade(db_url: str) -> None:
    engine = engine_for(db_url)
    schema.upgrade(engine, backup=False)
    schema.downgrade(engine, "0001")
    engine.dispose()
    with pytest.raises(errors.SchemaOutOfDate, match=r"at schema 0001.*run `upgrader db upgrade`") as caught:
        store.Store.open(db_url)
    assert caught.value.exit_code == errors.ExitCode.REFUSED
    # Refusing did not migrate anything.
    assert schema.status_url(db_url).current == "0001"


def test_schema_from_a_newer_upgrader_is_refused(db_url: str) -> None:
    engine = engine_for(db_url)
    schema.upgrade(engine, backup=False)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(errors.Refused, match=r"9999.*newer upgrader"):
        store.Store.open(db_url)


def test_db_upgrade_copies_the_sqlite_file_aside_first(sqlite_url: str, tmp_path: Path) -> None:
    engine = engine_for(sqlite_url)
    schema.upgrade(engine, backup=False)
    schema.downgrade(engine, "0001")
    store.Store(engine).record_event(kind="k", message="history worth keeping", cluster="c")
    result = schema.upgrade(engine)
    engine.dispose()
    assert (
        result.previous == "0001"
        and result.current == schema.head()
        and result.applied == ("0002", "0003", "0004", "0005")
    )
    assert result.backup is not None and result.backup.parent == tmp_path / "state"
    assert stat.S_IMODE(os.stat(result.backup).st_mode) == 0o600
    with sqlite3.connect(result.backup) as copy:
        assert copy.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
        assert copy.execute("SELECT message FROM events").fetchall() == [("history worth keeping",)]


def test_db_upgrade_at_head_does_nothing_and_copies_nothing(db_url: str, tmp_path: Path) -> None:
    schema.upgrade_url(db_url)
    result = schema.upgrade_url(db_url)
    assert result.applied == () and result.backup is None
    if db_url.startswith("sqlite"):
        assert sorted(p.name for p in (tmp_path / "state").iterdir() if p.suffix == ".bak") == []


def test_status_of_a_missing_file_does_not_create_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    status = schema.status_url(url)
    assert not status.exists and status.current is None and status.pending[-1] == status.head
    assert not (tmp_path / "absent.db").exists()


def test_snapshots_recorded_before_tiers_get_their_local_copy_unchecked(db_url: str) -> None:
    engine = engine_for(db_url)
    schema.upgrade(engine, backup=False)
    schema.downgrade(engine, "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO clusters (id, name, created_at) VALUES (1, 'c', '2026-12-01 00:00:00')"))
        connection.execute(
            text(
                "INSERT INTO snapshots (id, cluster_id, created_at, members, etcd_path, etcd_size, etcd_sha256, "
                "facts, healthy, known_good) VALUES ('c-1', 1, '2026-12-01 00:00:00', '[]', '/s/c-1.db', 1, 'x', "
                "'{}', TRUE, TRUE)"
            )
        )
    schema.upgrade(engine, backup=False)
    record = store.Store(engine).snapshot("c-1")
    engine.dispose()
    assert record.known_good and record.etcd_file_sha256 is None
    assert [(c.tier.value, c.place, c.location, c.state.value) for c in record.copies] == [
        ("local", "", "/s/c-1.db", "unchecked")
    ]


def test_concurrent_db_upgrades_of_one_postgresql_database_never_race(pg_url: str) -> None:
    """Four runners upgrade one new database at once: one applies the migrations, the others wait on
    the advisory lock and find it at head; none fails half-way."""
    command = [sys.executable, "-m", "upgrader", "db", "upgrade", "--db", pg_url, "-o", "json"]
    started = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = []
    for process in started:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(len(r["applied"]) for r in results) == [
        0,
        0,
        0,
        len(schema._pending(schema._script(), schema.head(), None)),
    ]
    assert all("pg_dump" in r["backup_advice"] for r in results)
    assert schema.status_url(pg_url).up_to_date
