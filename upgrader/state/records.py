"""Frozen records and closed sets that the state store speaks to the rest of the tool.

They carry no SQLAlchemy types, so services and the CLI can use them without the ORM.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NewType

from upgrader import errors
from upgrader.core.tier import Tier

ClusterId = NewType("ClusterId", int)
RunId = NewType("RunId", str)
PlanId = NewType("PlanId", str)
SnapshotId = NewType("SnapshotId", str)


class RunKind(enum.StrEnum):
    UPGRADE = "upgrade"
    ROLLBACK = "rollback"


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"  # or its process died: `status` tells them apart by the lock
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PAUSED = "paused"  # stopped at a safe point on purpose (window, --pause-after): resumable
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM, SIGHUP: resumable
    ROLLED_BACK = "rolled-back"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK, RunStatus.CANCELED)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"


class EventLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    id: int
    at: datetime
    cluster: str | None
    run_id: RunId | None
    level: EventLevel
    kind: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True)
class LeaseInfo:
    """Who holds a cluster's lock, from where, and until when."""

    cluster: str
    holder: str
    host: str
    pid: int
    command: str
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    process: str | None = None  # pids.identity() of the holder; None for a lease taken before it was kept

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def describe(self) -> str:
        return f"`{self.command}` (pid {self.pid} on {self.host})"


@dataclass(frozen=True)
class StoredPlan:
    id: PlanId
    cluster: str | None
    created_at: datetime
    target: str
    executable: bool
    facts: dict[str, Any]
    body: dict[str, Any]


@dataclass(frozen=True)
class StepRecord:
    """One step of a run as the journal has it: written before and after the step acts."""

    run_id: RunId
    position: int
    kind: str
    status: StepStatus
    attempts: int
    spec: dict[str, Any]  # the plan step (``Step.as_dict``)
    detail: dict[str, Any]  # progress within the step (nodes done, snapshot taken, ...)
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class RunRecord:
    id: RunId
    cluster: str
    plan_id: PlanId | None
    kind: RunKind
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    host: str
    pid: int
    error: str | None
    options: dict[str, Any]
    stopped_reason: str | None
    steps: tuple[StepRecord, ...] = ()

    def next_step(self) -> StepRecord | None:
        """The first step not done: where a resume starts."""
        return next((s for s in self.steps if s.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)), None)


@dataclass(frozen=True)
class SnapshotRecord:
    id: SnapshotId
    cluster: str
    created_at: datetime
    label: str | None
    etcd_revision: int | None
    key_count: int | None
    members: list[Any]
    etcd_path: str
    etcd_size: int
    etcd_sha256: str  # of the database, as its trailer says
    archive_path: str | None
    archive_sha256: str | None
    facts: dict[str, Any]
    healthy: bool
    known_good: bool
    verified_at: datetime | None
    etcd_file_sha256: str | None = None  # of the whole file, trailer too: what a copy elsewhere must match
    copies: tuple[CopyRecord, ...] = ()

    def copy(self, tier: Tier, place: str = "") -> CopyRecord | None:
        return next((c for c in self.copies if c.tier is tier and c.place == place), None)

    def file_sha256s(self) -> dict[str, str]:
        """Each file's name in every tier (``ID.db``, ``ID.tar.gz``) -> the whole-file sha256 a copy must match."""
        if not self.etcd_file_sha256 or not self.archive_sha256:
            raise errors.OperationFailed(f"snapshot {self.id} has no recorded file sha256: verify its local copy first")
        return {f"{self.id}.db": self.etcd_file_sha256, f"{self.id}.tar.gz": self.archive_sha256}

    def local_files(self) -> dict[str, Path]:
        """The same names -> where the local copy's files are (or belong)."""
        archive = self.archive_path or self.etcd_path[: -len(".db")] + ".tar.gz"
        return {f"{self.id}.db": Path(self.etcd_path), f"{self.id}.tar.gz": Path(archive)}

    def summary(self) -> dict[str, Any]:
        """Everything but the facts, for listings."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("facts", "copies")}
        out["copies"] = [c.summary() for c in self.copies]
        return out


class CopyState(enum.StrEnum):
    OK = "ok"  # verified against the recorded sha256 when last checked
    BAD = "bad"  # there, but not the recorded bytes: never used
    MISSING = "missing"
    UNCHECKED = "unchecked"  # recorded before copies were tracked


@dataclass(frozen=True)
class CopyRecord:
    """One copy of a snapshot's files in one tier (``place`` is the node for a peer copy)."""

    snapshot: SnapshotId
    tier: Tier
    place: str
    location: str
    state: CopyState
    detail: str | None
    checked_at: datetime

    @classmethod
    def now(
        cls, snapshot: str, tier: Tier, location: str, state: CopyState, *, place: str = "", detail: str | None = None
    ) -> CopyRecord:
        """A copy as checked just now."""
        return cls(SnapshotId(snapshot), tier, place, location, state, detail, datetime.now(UTC))

    @property
    def name(self) -> str:
        return f"{self.tier.value}:{self.place}" if self.place else self.tier.value

    def summary(self) -> dict[str, Any]:
        return {
            "tier": self.tier.value,
            "place": self.place or None,
            "location": self.location,
            "state": self.state.value,
            "detail": self.detail,
            "checked_at": self.checked_at,
        }
