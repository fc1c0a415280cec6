"""The state store facade: domain calls in, frozen records out.

A ``Store`` wraps one engine. Each method is one short transaction, so a crash between two calls
leaves the database consistent and a resumed run reads what was really done. Credentials never
reach it: callers pass names, versions and paths, and event data, facts and snapshot records go
through ``redaction.scrub`` as a last line of defence.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Select, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from upgrader import errors
from upgrader.core.tier import Tier
from upgrader.state import db, lease, orm, records
from upgrader.support import redaction

P = ParamSpec("P")
R = TypeVar("R")

RETRIES = 3  # a journal write that lost its connection mid-way is tried this many times more
RETRY_PAUSE = 1.0


def _disconnected(exc: errors.StateError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, DBAPIError) and bool(cause.connection_invalidated)


def retried(write: Callable[P, R]) -> Callable[P, R]:
    """A journal write that is safe to repeat (it sets values, it adds nothing), tried again on a fresh
    connection when the database dropped the one it used (a terminated backend, a failover): a step
    that did its work is not reported failed because one connection died."""

    @functools.wraps(write)
    def again(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(RETRIES + 1):
            try:
                return write(*args, **kwargs)
            except errors.StateError as exc:
                if attempt == RETRIES or not _disconnected(exc):
                    raise
                time.sleep(RETRY_PAUSE)
        raise AssertionError("unreachable")

    return again


class Store:
    """Upgrader's state: clusters, snapshots, plans, runs, steps and events."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        # A step's nodes report progress from parallel threads: their read-merge-writes of one row's
        # detail must not interleave, or one node's record (say, that it was cordoned) is lost.
        self._progress = threading.Lock()
        # Cluster rows are never deleted or renamed: an id once read stays true, and an event (written
        # many times a second during a run) then costs one transaction, not two.
        self._cluster_ids: dict[str, records.ClusterId] = {}

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

    def lock(self, cluster: str, command: str, *, ttl: timedelta | None = None) -> lease.Lease:
        """Takes the cluster's lock (``LockHeld`` if another process has it); use it as a context manager.
        Taking over a dead holder's lease is an event: who took it from whom."""
        held = lease.acquire(self.engine, cluster=cluster, command=command, ttl=ttl)
        if held.took_over is not None:
            self.record_event(
                kind="lock-taken-over",
                cluster=cluster,
                level=records.EventLevel.WARNING,
                message=f"`{command}` on {held.info.host} took over the lock of {held.took_over.describe()}",
                data={"from": {"host": held.took_over.host, "pid": held.took_over.pid}, "host": held.info.host},
            )
        return held

    def locks(self, cluster: str | None = None) -> list[records.LeaseInfo]:
        return lease.status(self.engine, cluster)

    def break_lock(self, cluster: str, *, force: bool = False) -> records.LeaseInfo | None:
        return lease.break_lease(self.engine, cluster, force=force)

    def ensure_cluster(self, name: str) -> records.ClusterId:
        """The id of cluster ``name``, creating its row on first use."""
        known = self._cluster_ids.get(name)
        if known is None:
            known = self._cluster_ids[name] = self._ensure_cluster(name)
        return known

    def _ensure_cluster(self, name: str) -> records.ClusterId:
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

    def events(
        self, *, cluster: str | None = None, limit: int = 100, kinds: tuple[str, ...] = ()
    ) -> list[records.Event]:
        """The newest events, newest first, optionally for one cluster and of some kinds."""
        with self.session() as session:
            query = (
                select(orm.Event, orm.Cluster.name)
                .outerjoin(orm.Cluster, orm.Event.cluster_id == orm.Cluster.id)
                .order_by(orm.Event.id.desc())
                .limit(limit)
            )
            if cluster is not None:
                query = query.where(orm.Cluster.name == cluster)
            if kinds:
                query = query.where(orm.Event.kind.in_(kinds))
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
                    # not scrubbed: its keys include node names ("token-1" is a valid one), and a plan
                    # is built from names and versions only
                    body=dict(body),
                )
            )
            return True

    @staticmethod
    def _by_prefix(session: Session, query: Select[Any, Any], column: Any, given: str, *, what: str, named: str) -> Any:
        """The one row whose ``column`` starts with ``given`` (at least 6 characters), or a clear error."""
        if len(given) < 6:
            raise errors.UsageError(f"{what} id {given!r} is too short: give at least 6 characters")
        rows = session.execute(query.where(column.startswith(given, autoescape=True)).limit(2)).all()
        if not rows:
            raise errors.NotFound(f"no {named} {given!r} in this state database")
        if len(rows) > 1:
            raise errors.UsageError(f"{what} id {given!r} is ambiguous: give more characters")
        return rows[0]

    def plan(self, plan_id: str) -> records.StoredPlan:
        """A stored plan by id or by an unambiguous id prefix (at least 6 characters)."""
        with self.session() as session:
            query = select(orm.Plan, orm.Cluster.name).outerjoin(orm.Cluster, orm.Plan.cluster_id == orm.Cluster.id)
            row, cluster = self._by_prefix(session, query, orm.Plan.id, plan_id, what="plan", named="saved plan")
            return records.StoredPlan(
                id=records.PlanId(row.id),
                cluster=cluster,
                created_at=row.created_at,
                target=row.target,
                executable=row.executable,
                facts=dict(row.facts),
                body=dict(row.body),
            )

    # -- runs and their steps: the journal -------------------------------------------------------

    def create_run(
        self,
        *,
        run_id: records.RunId,
        cluster: str,
        plan_id: records.PlanId | None,
        kind: records.RunKind,
        steps: list[dict[str, Any]],
        host: str,
        pid: int,
        options: Mapping[str, Any],
    ) -> records.RunRecord:
        """Writes a run and every step it will take (pending), in one transaction."""
        cluster_id = self.ensure_cluster(cluster)
        with self.session() as session:
            session.add(
                orm.Run(
                    id=run_id,
                    cluster_id=cluster_id,
                    plan_id=plan_id,
                    kind=kind,
                    status=records.RunStatus.PENDING,
                    host=host,
                    pid=pid,
                    options=redaction.scrub(options),
                )
            )
            session.flush()
            for position, spec in enumerate(steps):
                session.add(
                    orm.Step(
                        run_id=run_id,
                        position=position,
                        kind=str(spec["kind"]),
                        status=records.StepStatus.PENDING,
                        spec=dict(spec),
                        detail={},
                    )
                )
        return self.run(run_id)

    @retried
    def set_run(
        self,
        run_id: str,
        status: records.RunStatus,
        *,
        error: str | None = None,
        stopped_reason: str | None = None,
        host: str | None = None,
        pid: int | None = None,
        at: datetime | None = None,
    ) -> None:
        with self.session() as session:
            row = self._run_row(session, run_id)
            row.status = status
            row.error = error
            row.stopped_reason = stopped_reason
            if host is not None and pid is not None:
                row.host, row.pid = host, pid
            if status is records.RunStatus.RUNNING and row.started_at is None:
                row.started_at = at
            if status.finished or status is records.RunStatus.FAILED:
                row.finished_at = at

    def start_step(self, run_id: str, position: int, *, at: datetime) -> None:
        """Marks a step running (one more attempt) before it acts."""
        with self.session() as session:
            row = self._step_row(session, run_id, position)
            row.status = records.StepStatus.RUNNING
            row.attempts += 1
            row.started_at = at
            row.finished_at = None
            row.error = None

    def step(self, run_id: str, position: int) -> records.StepRecord:
        with self.session() as session:
            return self._step_record(self._step_row(session, run_id, position))

    @retried
    def step_progress(self, run_id: str, position: int, detail: Mapping[str, Any]) -> None:
        """Records progress inside a running step (merged into its detail)."""
        with self._progress, self.session() as session:
            row = self._step_row(session, run_id, position)
            merged = {**row.detail, **detail}
            row.detail = redaction.scrub({k: v for k, v in merged.items() if v is not None})

    @retried
    def finish_step(
        self, run_id: str, position: int, status: records.StepStatus, *, at: datetime, error: str | None = None
    ) -> None:
        """Records how a step ended, after it acted."""
        with self.session() as session:
            row = self._step_row(session, run_id, position)
            row.status = status
            row.finished_at = at
            row.error = error

    @staticmethod
    def _run_row(session: Session, run_id: str) -> orm.Run:
        row = session.get(orm.Run, run_id)
        if row is None:
            raise errors.NotFound(f"no run {run_id!r} in this state database")
        return row

    @staticmethod
    def _step_row(session: Session, run_id: str, position: int) -> orm.Step:
        row = session.scalar(select(orm.Step).where(orm.Step.run_id == run_id, orm.Step.position == position))
        if row is None:
            raise errors.NotFound(f"run {run_id!r} has no step {position}")
        return row

    @staticmethod
    def _step_record(row: orm.Step) -> records.StepRecord:
        return records.StepRecord(
            run_id=records.RunId(row.run_id),
            position=row.position,
            kind=row.kind,
            status=row.status,
            attempts=row.attempts,
            spec=dict(row.spec),
            detail=dict(row.detail),
            started_at=row.started_at,
            finished_at=row.finished_at,
            error=row.error,
        )

    def _run_record(self, session: Session, row: orm.Run, cluster: str) -> records.RunRecord:
        steps = session.scalars(select(orm.Step).where(orm.Step.run_id == row.id).order_by(orm.Step.position))
        return records.RunRecord(
            id=records.RunId(row.id),
            cluster=cluster,
            plan_id=records.PlanId(row.plan_id) if row.plan_id else None,
            kind=row.kind,
            status=row.status,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            host=row.host,
            pid=row.pid,
            error=row.error,
            options=dict(row.options),
            stopped_reason=row.stopped_reason,
            steps=tuple(self._step_record(s) for s in steps),
        )

    def run(self, run_id: str) -> records.RunRecord:
        """A run by id or by an unambiguous prefix (at least 6 characters), with its steps."""
        with self.session() as session:
            query = select(orm.Run, orm.Cluster.name).join(orm.Cluster, orm.Run.cluster_id == orm.Cluster.id)
            row, cluster = self._by_prefix(session, query, orm.Run.id, run_id, what="run", named="run")
            return self._run_record(session, row, cluster)

    def runs(self, cluster: str, *, limit: int = 50) -> list[records.RunRecord]:
        """A cluster's runs, newest first, with their steps."""
        with self.session() as session:
            rows = session.execute(
                select(orm.Run, orm.Cluster.name)
                .join(orm.Cluster, orm.Run.cluster_id == orm.Cluster.id)
                .where(orm.Cluster.name == cluster)
                .order_by(orm.Run.created_at.desc(), orm.Run.id.desc())
                .limit(limit)
            ).all()
            return [self._run_record(session, row, name) for row, name in rows]

    def unfinished_run(self, cluster: str) -> records.RunRecord | None:
        """The cluster's newest run that is not finished: running, paused, interrupted or failed."""
        return next((r for r in self.runs(cluster, limit=20) if not r.status.finished), None)

    # -- snapshots -----------------------------------------------------------------------------

    def add_snapshot(self, record: records.SnapshotRecord) -> None:
        """The snapshot's row and its copies' rows, in one transaction."""
        cluster_id = self.ensure_cluster(record.cluster)
        fields = {k: v for k, v in record.__dict__.items() if k not in ("cluster", "copies")}
        with self.session() as session:
            session.add(orm.Snapshot(cluster_id=cluster_id, **{**fields, "facts": redaction.scrub(record.facts)}))
            session.flush()
            for copy in record.copies:
                session.add(self._copy_row(copy))

    @staticmethod
    def _copy_row(copy: records.CopyRecord) -> orm.SnapshotCopy:
        return orm.SnapshotCopy(
            snapshot_id=copy.snapshot,
            tier=copy.tier,
            place=copy.place,
            location=copy.location,
            state=copy.state,
            detail=copy.detail,
            checked_at=copy.checked_at,
        )

    def record_copy(self, copy: records.CopyRecord) -> None:
        """Adds or replaces the copy of ``copy.snapshot`` in ``copy.tier`` at ``copy.place``."""
        with self.session() as session:
            row = session.execute(
                select(orm.SnapshotCopy).where(
                    orm.SnapshotCopy.snapshot_id == copy.snapshot,
                    orm.SnapshotCopy.tier == copy.tier,
                    orm.SnapshotCopy.place == copy.place,
                )
            ).scalar_one_or_none()
            if row is None:
                if session.get(orm.Snapshot, copy.snapshot) is None:
                    raise errors.NotFound(f"no snapshot {copy.snapshot!r} in this state database")
                session.add(self._copy_row(copy))
                return
            row.location, row.state = copy.location, copy.state
            row.detail, row.checked_at = copy.detail, copy.checked_at

    def forget_copy(self, snapshot_id: str, tier: Tier, place: str = "") -> None:
        with self.session() as session:
            session.execute(
                delete(orm.SnapshotCopy).where(
                    orm.SnapshotCopy.snapshot_id == snapshot_id,
                    orm.SnapshotCopy.tier == tier,
                    orm.SnapshotCopy.place == place,
                )
            )

    @staticmethod
    def _copies(session: Session, snapshot_ids: list[str]) -> dict[str, list[records.CopyRecord]]:
        found: dict[str, list[records.CopyRecord]] = {i: [] for i in snapshot_ids}
        if not snapshot_ids:
            return found
        rows = session.execute(
            select(orm.SnapshotCopy)
            .where(orm.SnapshotCopy.snapshot_id.in_(snapshot_ids))
            .order_by(orm.SnapshotCopy.tier, orm.SnapshotCopy.place)
        ).scalars()
        for row in rows:
            found[row.snapshot_id].append(
                records.CopyRecord(
                    snapshot=records.SnapshotId(row.snapshot_id),
                    tier=row.tier,
                    place=row.place,
                    location=row.location,
                    state=row.state,
                    detail=row.detail,
                    checked_at=row.checked_at,
                )
            )
        return found

    def _snapshot_record(
        self, row: orm.Snapshot, cluster: str, copies: list[records.CopyRecord]
    ) -> records.SnapshotRecord:
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
            etcd_file_sha256=row.etcd_file_sha256,
            copies=tuple(copies),
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
            rows = session.execute(query).all()
            copies = self._copies(session, [row.id for row, _ in rows])
            return [self._snapshot_record(row, name, copies[row.id]) for row, name in rows]

    def snapshot(self, snapshot_id: str) -> records.SnapshotRecord:
        with self.session() as session:
            found = session.execute(self._snapshot_query().where(orm.Snapshot.id == snapshot_id)).first()
            if found is None:
                raise errors.NotFound(f"no snapshot {snapshot_id!r} in this state database")
            return self._snapshot_record(found[0], found[1], self._copies(session, [snapshot_id])[snapshot_id])

    def record_file_sha256(self, snapshot_id: str, sha256: str) -> None:
        """The whole etcd file's sha256, for a snapshot recorded before it was kept."""
        with self.session() as session:
            row = session.get(orm.Snapshot, snapshot_id)
            if row is not None and row.etcd_file_sha256 is None:
                row.etcd_file_sha256 = sha256

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
