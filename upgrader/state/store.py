"""The state store facade: domain calls in, frozen records out.

A ``Store`` wraps one engine. Each method is one short transaction, so a crash between two calls
leaves the database consistent and a resumed run reads what was really done. Credentials never
reach it: callers pass names, versions and paths, and every JSON column written here goes through
``redaction.scrub`` as a last line of defence.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upgrader import errors, redaction
from upgrader.state import db, lease, orm, records


class Store:
    """Upgrader's state: clusters, snapshots, plans, runs, steps and events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None) -> Store:
        """Opens the store at ``url`` (default: the user's SQLite file); refuses an outdated schema."""
        return cls(db.open_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction; database errors become ``StateError`` with the statement left out."""
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError as exc:
            raise errors.StateError(f"state database refused the write: {db.describe_error(exc)}") from exc
        except SQLAlchemyError as exc:
            raise errors.StateError(f"state database error: {db.describe_error(exc)}") from exc

    # -- the cluster lock ----------------------------------------------------------------------------

    def lock(self, cluster: str, command: str, *, ttl: timedelta = lease.DEFAULT_TTL) -> lease.Lease:
        """Takes the cluster's lock (``LockHeld`` if another process has it); use it as a context manager."""
        return lease.acquire(self.engine, cluster=cluster, command=command, ttl=ttl)

    def locks(self, cluster: str | None = None) -> list[records.LeaseInfo]:
        return lease.status(self.engine, cluster)

    def break_lock(self, cluster: str) -> records.LeaseInfo | None:
        return lease.break_lease(self.engine, cluster)

    def ensure_cluster(self, name: str) -> records.ClusterId:
        """The id of cluster ``name``, creating its row on first use."""
        with self.session() as session:
            found = session.scalar(select(orm.Cluster.id).where(orm.Cluster.name == name))
            if found is not None:
                return records.ClusterId(found)
        try:
            with self.session() as session:
                row = orm.Cluster(name=name)
                session.add(row)
                session.flush()
                return records.ClusterId(row.id)
        except errors.StateError:
            # Another process created it between our read and our insert.
            with self.session() as session:
                found = session.scalar(select(orm.Cluster.id).where(orm.Cluster.name == name))
                if found is None:
                    raise
                return records.ClusterId(found)

    def record_event(
        self,
        *,
        kind: str,
        message: str,
        cluster: str | None = None,
        run_id: records.RunId | None = None,
        level: records.EventLevel = records.EventLevel.INFO,
        data: Mapping[str, Any] | None = None,
    ) -> int:
        cluster_id = self.ensure_cluster(cluster) if cluster is not None else None
        with self.session() as session:
            row = orm.Event(
                cluster_id=cluster_id,
                run_id=run_id,
                level=level,
                kind=kind,
                message=message,
                data=redaction.scrub(data or {}),
            )
            session.add(row)
            session.flush()
            return row.id

    def events(self, *, cluster: str | None = None, limit: int = 100) -> list[records.Event]:
        """The newest events, newest first, optionally for one cluster."""
        with self.session() as session:
            query = (
                select(orm.Event, orm.Cluster.name)
                .outerjoin(orm.Cluster, orm.Event.cluster_id == orm.Cluster.id)
                .order_by(orm.Event.id.desc())
                .limit(limit)
            )
            if cluster is not None:
                query = query.where(orm.Cluster.name == cluster)
            return [
                records.Event(
                    id=row.id,
                    at=row.at,
                    cluster=name,
                    run_id=records.RunId(row.run_id) if row.run_id else None,
                    level=row.level,
                    kind=row.kind,
                    message=row.message,
                    data=dict(row.data),
                )
                for row, name in session.execute(query)
            ]

    # -- plans ---------------------------------------------------------------------------------

    def save_plan(
        self,
        *,
        plan_id: records.PlanId,
        body: Mapping[str, Any],
        facts: Mapping[str, Any],
        target: str,
        executable: bool,
        cluster: str | None,
    ) -> bool:
        """Stores a plan under its content-hash id; returns False when it was already stored."""
        cluster_id = self.ensure_cluster(cluster) if cluster is not None else None
        with self.session() as session:
            if session.get(orm.Plan, plan_id) is not None:
                return False
            session.add(
                orm.Plan(
                    id=plan_id,
                    cluster_id=cluster_id,
                    target=target,
                    executable=executable,
                    facts=redaction.scrub(facts),
                    body=redaction.scrub(body),
                )
            )
            return True

    def plan(self, plan_id: str) -> records.StoredPlan:
        """A stored plan by id or by an unambiguous id prefix (at least 6 characters)."""
        with self.session() as session:
            if len(plan_id) < 6:
                raise errors.UsageError(f"plan id {plan_id!r} is too short: give at least 6 characters")
            rows = session.execute(
                select(orm.Plan, orm.Cluster.name)
                .outerjoin(orm.Cluster, orm.Plan.cluster_id == orm.Cluster.id)
                .where(orm.Plan.id.startswith(plan_id, autoescape=True))
                .limit(2)
            ).all()
            if not rows:
                raise errors.NotFound(f"no saved plan {plan_id!r} in this state database")
            if len(rows) > 1:
                raise errors.UsageError(f"plan id {plan_id!r} is ambiguous: give more characters")
            row, cluster = rows[0]
            return records.StoredPlan(
                id=records.PlanId(row.id),
                cluster=cluster,
                created_at=row.created_at,
                target=row.target,
                executable=row.executable,
                facts=dict(row.facts),
                body=dict(row.body),
            )

    # -- snapshots -----------------------------------------------------------------------------

    def add_snapshot(self, record: records.SnapshotRecord) -> None:
        cluster_id = self.ensure_cluster(record.cluster)
        fields = {k: v for k, v in record.__dict__.items() if k not in ("cluster",)}
        with self.session() as session:
            session.add(orm.Snapshot(cluster_id=cluster_id, **{**fields, "facts": redaction.scrub(record.facts)}))

    def _snapshot_record(self, row: orm.Snapshot, cluster: str) -> records.SnapshotRecord:
        return records.SnapshotRecord(
            id=records.SnapshotId(row.id),
            cluster=cluster,
            created_at=row.created_at,
            label=row.label,
            etcd_revision=row.etcd_revision,
            key_count=row.key_count,
            members=list(row.members),
            etcd_path=row.etcd_path,
            etcd_size=row.etcd_size,
            etcd_sha256=row.etcd_sha256,
            archive_path=row.archive_path,
            archive_sha256=row.archive_sha256,
            facts=dict(row.facts),
            healthy=row.healthy,
            known_good=row.known_good,
            verified_at=row.verified_at,
        )

    @staticmethod
    def _snapshot_query() -> Select[orm.Snapshot, str]:
        return select(orm.Snapshot, orm.Cluster.name).join(orm.Cluster, orm.Snapshot.cluster_id == orm.Cluster.id)

    def snapshots(self, cluster: str | None = None) -> list[records.SnapshotRecord]:
        """Snapshots, newest first, optionally of one cluster."""
        with self.session() as session:
            query = self._snapshot_query().order_by(orm.Snapshot.created_at.desc(), orm.Snapshot.id.desc())
            if cluster is not None:
                query = query.where(orm.Cluster.name == cluster)
            return [self._snapshot_record(row, name) for row, name in session.execute(query)]

    def snapshot(self, snapshot_id: str) -> records.SnapshotRecord:
        with self.session() as session:
            found = session.execute(self._snapshot_query().where(orm.Snapshot.id == snapshot_id)).first()
            if found is None:
                raise errors.NotFound(f"no snapshot {snapshot_id!r} in this state database")
            return self._snapshot_record(found[0], found[1])

    def record_verification(self, snapshot_id: str, *, ok: bool, at: datetime) -> None:
        """A failed verification takes known-good away for good; a passed one only dates the check."""
        with self.session() as session:
            row = session.get(orm.Snapshot, snapshot_id)
            if row is None:
                raise errors.NotFound(f"no snapshot {snapshot_id!r} in this state database")
            row.verified_at = at
            if not ok:
                row.known_good = False

    def delete_snapshot(self, snapshot_id: str) -> None:
        with self.session() as session:
            row = session.get(orm.Snapshot, snapshot_id)
            if row is not None:
                session.delete(row)
