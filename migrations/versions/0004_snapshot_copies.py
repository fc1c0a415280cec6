"""snapshot copies in tiers (local, peer, s3) and the whole-file sha256 a copy must match

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("etcd_file_sha256", sa.String(length=64), nullable=True))
    copies = op.create_table(
        "snapshot_copies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("snapshot_id", sa.String(length=64), nullable=False),
        sa.Column("tier", sa.Enum("local", "peer", "s3", name="tier", native_enum=False, length=32), nullable=False),
        sa.Column("place", sa.String(length=253), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("ok", "bad", "missing", "unchecked", name="copystate", native_enum=False, length=32),
            nullable=False,
        ),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name=op.f("fk_snapshot_copies_snapshot_id_snapshots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot_copies")),
        sa.UniqueConstraint("snapshot_id", "tier", "place", name="uq_snapshot_copies_place"),
    )
    with op.batch_alter_table("snapshot_copies") as batch:
        batch.create_index(batch.f("ix_snapshot_copies_snapshot_id"), ["snapshot_id"], unique=False)
    # Every snapshot recorded so far has its local copy; whether it is still good is for `snapshot verify`.
    rows = op.get_bind().execute(sa.text("SELECT id, etcd_path FROM snapshots")).all()
    now = datetime.now(UTC).replace(tzinfo=None)
    if rows:
        op.bulk_insert(
            copies,
            [
                {
                    "snapshot_id": row.id,
                    "tier": "local",
                    "place": "",
                    "location": row.etcd_path,
                    "state": "unchecked",
                    "detail": "recorded before copies were tracked",
                    "checked_at": now,
                }
                for row in rows
            ],
        )


def downgrade() -> None:
    with op.batch_alter_table("snapshot_copies") as batch:
        batch.drop_index(batch.f("ix_snapshot_copies_snapshot_id"))
    op.drop_table("snapshot_copies")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("etcd_file_sha256")
