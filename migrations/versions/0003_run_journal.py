"""run journal: step attempts and specs, run options and progress

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("spec", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("options", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("stopped_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stopped_reason")
        batch.drop_column("options")
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("spec")
        batch.drop_column("attempts")
