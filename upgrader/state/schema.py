"""Drives Alembic programmatically: the schema head, the current revision, and upgrades.

Upgrading a SQLite file first copies it aside with SQLite's online backup API (consistent even
with WAL and a concurrent reader), 0600 next to the original, so a failed migration never costs
the run history. Migrations themselves live in the top-level ``migrations/`` directory.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from upgrader import errors
from upgrader.state import db
from upgrader.support import bundled


@dataclass(frozen=True)
class SchemaStatus:
    database: str  # the URL, password hidden
    exists: bool
    current: str | None
    head: str
    pending: tuple[str, ...]  # revisions between current and head, oldest first

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@dataclass(frozen=True)
class UpgradeResult:
    previous: str | None
    current: str
    applied: tuple[str, ...]
    backup: Path | None


def _config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(bundled.migrations_dir()))
    if engine is not None:  # handed over as an object: the URL, and any password in it, never goes into text
        config.attributes["engine"] = engine
    return config


def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def heads() -> tuple[str, ...]:
    """Every head revision; a healthy migrations directory has exactly one."""
    return tuple(_script().get_heads())


def head() -> str:
    found = _script().get_current_head()
    if found is None:
        raise errors.OperationFailed("upgrader's migrations directory has no revisions: reinstall upgrader")
    return found


def _pending(script: ScriptDirectory, target: str, current: str | None) -> tuple[str, ...]:
    return tuple(rev.revision for rev in reversed(list(script.iterate_revisions(target, current or "base"))))


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def status(engine: Engine) -> SchemaStatus:
    script = _script()
    target = head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot read the state database: {db.describe_error(exc)}") from exc
    if current is not None and not _known(script, current):
        raise errors.Refused(
            f"the state database is at schema {current}, which this upgrader does not know: "
            "it was written by a newer upgrader; use that version"
        )
    if current is None and db.tables(engine) - {"alembic_version"}:
        raise db.foreign_database_error(engine.url)
    return SchemaStatus(
        database=engine.url.render_as_string(hide_password=True),
        exists=True,
        current=current,
        head=target,
        pending=_pending(script, target, current),
    )


def status_url(url: str | None) -> SchemaStatus:
    """The schema status of the database at ``url``, without creating it when it does not exist."""
    parsed = db.resolve_url(url)
    path = db.sqlite_path(parsed)
    if path is not None and not path.exists():
        target = head()
        return SchemaStatus(
            database=parsed.render_as_string(hide_password=True),
            exists=False,
            current=None,
            head=target,
            pending=_pending(_script(), target, None),
        )
    engine = db.create(parsed)
    try:
        return status(engine)
    finally:
        engine.dispose()


def upgrade_url(url: str | None) -> UpgradeResult:
    """``upgrade`` for the database at ``url`` (created if it does not exist)."""
    engine = db.create(db.resolve_url(url))
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


def backup_sqlite(path: Path, revision: str | None) -> Path:
    """Copies a SQLite database aside (online backup API); the copy is 0600."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.{revision or 'base'}.{stamp}.bak")
    try:
        target.touch(mode=0o600, exist_ok=False)
        with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(target)) as copy:
            source.backup(copy)
    except (OSError, sqlite3.Error) as exc:
        target.unlink(missing_ok=True)
        raise errors.StateError(f"cannot copy the state database aside to {target}: {exc}") from exc
    return target


# pg_advisory_lock's key for schema changes: "upgr" in ASCII. One upgrade at a time per database.
MIGRATION_LOCK = 0x75706772


@contextmanager
def _one_at_a_time(engine: Engine) -> Iterator[None]:
    """On PostgreSQL, a session advisory lock around a schema upgrade: a second `db upgrade` started
    at the same moment (two runners of one team) waits, then finds the schema at head. SQLite's own
    file lock serialises writers on one host."""
    if engine.dialect.name != "postgresql":
        yield
        return
    try:
        with engine.connect() as connection:
            connection.execute(select(func.pg_advisory_lock(MIGRATION_LOCK)))
            connection.commit()
            try:
                yield
            finally:
                connection.execute(select(func.pg_advisory_unlock(MIGRATION_LOCK)))
                connection.commit()
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot lock the schema for an upgrade: {db.describe_error(exc)}") from exc


def upgrade(engine: Engine, *, backup: bool = True) -> UpgradeResult:
    """Migrates to head. With ``backup``, a SQLite file is copied aside first when anything is pending."""
    with _one_at_a_time(engine):
        before = status(engine)
        if before.up_to_date:
            return UpgradeResult(before.current, before.head, (), None)
        copy = None
        path = db.sqlite_path(engine.url)
        if backup and path is not None and path.exists() and before.current is not None:
            copy = backup_sqlite(path, before.current)
        try:
            command.upgrade(_config(engine), "head")
        except SQLAlchemyError as exc:
            hint = f"; the database before the upgrade is at {copy}" if copy else ""
            raise errors.StateError(f"schema upgrade failed: {db.describe_error(exc)}{hint}") from exc
        return UpgradeResult(before.current, before.head, before.pending, copy)


def backup_advice(url: URL) -> str:
    """How to keep a copy before an upgrade: upgrader copies a SQLite file itself, not a server's database."""
    if url.get_backend_name() == "postgresql":
        return (
            f"upgrader does not copy a PostgreSQL database: back it up first with "
            f"`pg_dump -Fc -d {url.database or 'DB'} -f upgrader-before-upgrade.dump` (and restore with pg_restore)"
        )
    return "the SQLite file is copied aside before anything changes"


def downgrade(engine: Engine, revision: str) -> None:
    """Migrates down to ``revision`` (``base`` for nothing). For tests and recovery, not the CLI."""
    command.downgrade(_config(engine), revision)
