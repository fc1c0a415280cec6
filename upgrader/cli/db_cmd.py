"""``upgrader db``: the state database's schema. Migrations run only when asked, after a backup."""

from typing import TYPE_CHECKING

from upgrader import errors
from upgrader.cli import _errors, _options, _render

if TYPE_CHECKING:
    from upgrader.state import schema

app = _options.group("Manage the state database schema.")


@app.command("upgrade")
@_errors.handle
def upgrade(db: _options.DbOption = None, output: _options.OutputOption = _render.OutputFormat.TABLE) -> None:
    """Migrate the state database to this release's schema (a SQLite file is copied aside first; back a
    PostgreSQL database up with pg_dump before). Two upgrades of one PostgreSQL database never race."""
    from upgrader.state import db as db_mod
    from upgrader.state import schema

    result = schema.upgrade_url(db)
    advice = schema.backup_advice(db_mod.resolve_url(db))
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {
                "previous": result.previous,
                "current": result.current,
                "applied": list(result.applied),
                "backup": str(result.backup) if result.backup else None,
                "backup_advice": advice,
            }
        )
        return
    if not result.applied:
        _render.echo(f"schema already at {result.current}; nothing to do")
        return
    _render.echo(f"schema {result.previous or 'none'} -> {result.current} ({', '.join(result.applied)})")
    if result.backup:
        _render.echo(f"the database before the upgrade is saved at {result.backup}")
    elif db_mod.sqlite_path(db_mod.resolve_url(db)) is None:
        _render.note(advice)


def _status(db: str | None) -> "schema.SchemaStatus":
    from upgrader.state import schema as schema_mod

    return schema_mod.status_url(db)


def _as_json(status: "schema.SchemaStatus") -> dict[str, object]:
    return {
        "database": status.database,
        "exists": status.exists,
        "current": status.current,
        "head": status.head,
        "pending": list(status.pending),
        "up_to_date": status.up_to_date,
    }


@app.command("current")
@_errors.handle
def current(db: _options.DbOption = None, output: _options.OutputOption = _render.OutputFormat.TABLE) -> None:
    """Show the schema revision of the state database and this release's head."""
    status = _status(db)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(_as_json(status))
        return
    _render.echo(f"database: {status.database}" + ("" if status.exists else " (does not exist yet)"))
    _render.echo(f"current:  {status.current or 'none'}")
    _render.echo(f"head:     {status.head}")


@app.command("check")
@_errors.handle
def check(db: _options.DbOption = None, output: _options.OutputOption = _render.OutputFormat.TABLE) -> None:
    """Exit 0 if the schema is current; exit 1 and name `upgrader db upgrade` if not."""
    status = _status(db)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(_as_json(status))
    elif status.up_to_date:
        _render.echo(f"schema is current ({status.head})")
    if not status.up_to_date:
        raise errors.OperationFailed(
            f"schema is at {status.current or 'none'}, head is {status.head} "
            f"(pending: {', '.join(status.pending)}): run `upgrader db upgrade`"
        )
