"""SQLAlchemy 2 table models. Only ``state`` modules import this; the facade converts rows to records.

Times are stored as naive UTC and come back timezone-aware (``UTCDateTime``); enums are stored by
value so the database reads the same words as the CLI; constraint names follow one convention so
Alembic's batch migrations on SQLite can find them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Enum, ForeignKey, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from upgrader.core.tier import Tier
from upgrader.state import records

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes as naive UTC; returns aware UTC. Rejects naive input."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the state store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _enum(cls: type[Any]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        length=32,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Snapshot(Base):
    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    label: Mapped[str | None] = mapped_column(String(200))
    etcd_revision: Mapped[int | None]
    key_count: Mapped[int | None]
    members: Mapped[list[Any]] = mapped_column(default=list)
    etcd_path: Mapped[str] = mapped_column(Text)
    etcd_size: Mapped[int]
    etcd_sha256: Mapped[str] = mapped_column(String(64))
    archive_path: Mapped[str | None] = mapped_column(Text)
    archive_sha256: Mapped[str | None] = mapped_column(String(64))
    facts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    healthy: Mapped[bool] = mapped_column(default=False)
    known_good: Mapped[bool] = mapped_column(default=False)
    verified_at: Mapped[datetime | None]
    etcd_file_sha256: Mapped[str | None] = mapped_column(String(64))


class SnapshotCopy(Base):
    __tablename__ = "snapshot_copies"
    __table_args__ = (UniqueConstraint("snapshot_id", "tier", "place", name="uq_snapshot_copies_place"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    snapshot_id: Mapped[str] = mapped_column(ForeignKey("snapshots.id", ondelete="CASCADE"), index=True)
    tier: Mapped[Tier] = mapped_column(_enum(Tier))
    place: Mapped[str] = mapped_column(String(253), default="")
    location: Mapped[str] = mapped_column(Text)
    state: Mapped[records.CopyState] = mapped_column(_enum(records.CopyState))
    detail: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow)


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    target: Mapped[str] = mapped_column(String(32))
    executable: Mapped[bool]
    facts: Mapped[dict[str, Any]]
    body: Mapped[dict[str, Any]]


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id", ondelete="RESTRICT"))
    kind: Mapped[records.RunKind] = mapped_column(_enum(records.RunKind))
    status: Mapped[records.RunStatus] = mapped_column(_enum(records.RunStatus))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    stopped_reason: Mapped[str | None] = mapped_column(Text)  # why a paused or interrupted run stopped


class Step(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("run_id", "position", name="uq_steps_run_id_position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[records.StepStatus] = mapped_column(_enum(records.StepStatus))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")  # the plan step it runs


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_id: Mapped[int | None] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[records.EventLevel] = mapped_column(_enum(records.EventLevel))
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Lock(Base):
    """The per-cluster lease that keeps two mutating commands off one cluster."""

    __tablename__ = "locks"

    cluster: Mapped[str] = mapped_column(String(63), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    process: Mapped[str | None] = mapped_column(String(200))  # pids.identity(): a reused pid cannot fake it
    command: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    expires_at: Mapped[datetime]
