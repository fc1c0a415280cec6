"""Alembic environment for upgrader's state database.

upgrader runs migrations in-process and hands its own engine over in ``config.attributes``;
the ``alembic`` command line (``alembic -c migrations/alembic.ini ...``) works too, with the URL
from ``-x db=URL`` or ``UPGRADER_DB``. Batch mode is on because SQLite cannot ALTER most things,
and each migration runs in its own transaction.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Engine

from upgrader.state import db, orm

config = context.config
target_metadata = orm.Base.metadata


def _engine() -> Engine:
    given = config.attributes.get("engine")
    if isinstance(given, Engine):
        return given
    url = context.get_x_argument(as_dictionary=True).get("db")
    return db.create(db.resolve_url(url))


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    # Migrations are frozen history: render our TypeDecorators as their plain SQL types.
    if kind == "type" and isinstance(obj, orm.UTCDateTime):
        return "sa.DateTime()"
    return False


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or db.resolve_url(None).render_as_string(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with _engine().connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            transaction_per_migration=True,
            compare_type=True,
            render_item=_render_item,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
