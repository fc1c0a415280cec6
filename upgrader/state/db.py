"""Opens the state database: URL handling, SQLite pragmas, and the gate on the schema version.

Every SQLite connection gets foreign keys on, WAL journaling and a busy timeout, so two upgrader
processes on one file wait for each other instead of failing. ``open_engine`` refuses to hand out
an engine whose schema is not at this release's head: schema changes only happen through
``upgrader db upgrade``. A database with no tables at all is new, not old, and is initialised.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from upgrader import errors
from upgrader.support import environment

BUSY_TIMEOUT_MS = 30_000


def resolve_url(url: str | None) -> URL:
    """Parses a SQLAlchemy URL (``None`` means the default SQLite file)."""
    text = url or environment.default_db_url()
    if text.startswith("@"):
        text = _url_from_file(Path(text[1:]).expanduser())
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, e.g. an unquoted '@' or ':'
        raise errors.InputError(
            f"not a database URL: {_unparsed(text)} (expected e.g. sqlite:////var/lib/upgrader/state.db or "
            "postgresql://USER@HOST/DB; quote '@', ':' and '/' in a password as %40, %3A and %2F)"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):  # SQLAlchemy's default would be psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _url_from_file(path: Path) -> str:
    """``--db @PATH``: the URL kept in a private file, so that a password stays out of the command line,
    the environment and shell history. (Without a password in the URL, psycopg reads PGPASSFILE or
    ~/.pgpass as libpq does.)"""
    try:
        mode = path.stat().st_mode
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.InputError(f"cannot read the database URL from {path}: {getattr(exc, 'strerror', exc)}") from None
    if mode & 0o077:
        raise errors.InputError(f"{path} may hold a database password and is readable by others: chmod 600 it")
    if len(lines) != 1:
        raise errors.InputError(f"{path} must hold one database URL on one line")
    return lines[0]


def shown(url: URL) -> str:
    """The URL as it may be printed: never its password."""
    return url.render_as_string(hide_password=True)


def _unparsed(text: str) -> str:
    """What may be said of a text that did not parse as a URL: its scheme, never the rest, which may
    hold a password (an unquoted one is what made it unparseable; a pgpass line is host:port:db:user:password)."""
    scheme, found, _ = text.partition("://")
    if found and scheme.replace("+", "").isalnum():
        return f"a {scheme} URL that cannot be parsed (not shown: it may hold a password)"
    return "the text given (not shown: it may hold a password)"


def sqlite_path(url: URL) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).expanduser()


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk before it returns, so a row that says "known-good" or "succeeded"
        # survives a power loss once upgrader has said so (NORMAL in WAL mode may lose the last commits).
        cursor.execute("PRAGMA synchronous = FULL")
    finally:
        cursor.close()


def _create_private_file(path: Path) -> None:
    """Creates a SQLite file 0600 (and its directory 0700) before SQLite does it with the umask's mode.

    SQLite gives the -wal and -shm files the mode of the database file, so they are private too.
    """
    if path.is_symlink() and not path.exists():
        raise errors.StateError(
            f"the state database {path} is a link to a missing file ({os.readlink(path)}): SQLite would create "
            "it with the umask's mode; remove the link or create the file (0600) first"
        )
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise errors.StateError(
                f"the state database {path} is readable by others (mode {mode:o}); it holds the journal and "
                f"the snapshot records: chmod 600 {path}"
            ) from None
    except OSError as exc:
        raise errors.StateError(f"cannot create the state database {path}: {exc.strerror}") from exc


def foreign_database_error(url: URL) -> errors.Refused:
    return errors.Refused(
        f"{url.render_as_string(hide_password=True)} holds tables but no upgrader schema: it is not an "
        "upgrader state database, and upgrader will not change it; give another --db"
    )


def _refuse_foreign_sqlite(url: URL, path: Path) -> None:
    """Refuses an existing SQLite file of another application before any connection would set WAL on it."""
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise errors.StateError(f"cannot read the state database {path}: {exc}") from exc
    if names - {"alembic_version"} and "alembic_version" not in names:
        raise foreign_database_error(url)


def create(url: URL) -> Engine:
    """An engine for ``url`` with upgrader's connection settings; a new SQLite file is created private."""
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise errors.InputError(
            f"unsupported database URL {shown(url)!r}: upgrader keeps its state in SQLite (sqlite:///PATH) "
            "or PostgreSQL (postgresql://USER@HOST/DB)"
        )
    path = sqlite_path(url)
    if path is not None:
        if path.exists():
            _refuse_foreign_sqlite(url, path)
        _create_private_file(path)
    try:
        # pre_ping: a pooled connection whose server backend was terminated (a failover, an idle timeout,
        # pg_terminate_backend) is replaced before a statement is sent on it, instead of failing the step.
        engine = create_engine(url, pool_pre_ping=True)
    except ImportError as exc:
        if url.get_backend_name() == "postgresql":
            raise errors.InputError(
                f"{shown(url)} needs the PostgreSQL driver psycopg: pip install 'upgrader[postgres]'"
            ) from None
        raise errors.InputError(f"{shown(url)} needs a database driver that is not installed ({exc.name})") from None
    except (NoSuchModuleError, ArgumentError) as exc:
        raise errors.InputError(f"unsupported database URL {shown(url)!r}: {exc}") from exc
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _on_sqlite_connect)
    return engine


def tables(engine: Engine) -> set[str]:
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        raise errors.StateError(f"cannot read the state database: {_describe(exc)}") from exc


def is_empty(engine: Engine) -> bool:
    """True when the database holds no tables at all (a new database)."""
    return not tables(engine)


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).splitlines()[0]


def describe_error(exc: BaseException) -> str:
    """One line for a database exception, without the SQL statement or its parameters."""
    return _describe(exc)


def open_engine(url: str | None) -> Engine:
    """An engine on a database whose schema is current; initialises a new, empty database."""
    from upgrader.state import schema  # alembic is imported only here, after the cheap checks

    parsed = resolve_url(url)
    path = sqlite_path(parsed)
    if path is not None and path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise errors.StateError(f"the state database {path} is not readable and writable by this user")
    engine = create(parsed)
    try:
        if is_empty(engine):
            schema.upgrade(engine, backup=False)
            return engine
        status = schema.status(engine)
    except BaseException:
        engine.dispose()  # no connection is left open behind an error
        raise
    if status.current != status.head:
        engine.dispose()
        where = f" ({path})" if path else ""
        how = "it copies the file aside first" if path else "back the database up first: pg_dump -Fc"
        raise errors.SchemaOutOfDate(
            f"the state database{where} is at schema {status.current or 'none'}, this upgrader needs "
            f"{status.head}: run `upgrader db upgrade` ({how})"
        )
    return engine
