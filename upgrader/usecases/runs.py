"""A run's life, the same for an upgrade and a rollback: created in the journal, driven by the one
engine, resumed, abandoned, and stopped through one path.

``drive`` builds the engine for a run (journal, gate, lease, this cluster's estimates, every event
into the journal and then to the caller's observer), waits for a playbook a killed upgrader left
running, and lets the caller's handlers run. Whatever stops the run becomes ``RunStopped`` with the
exit code it deserves and the command that continues it; a run that fails before any step was
journaled is marked failed, so nothing is left claiming to run.
"""

from __future__ import annotations

import os
import secrets
import statistics
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from upgrader import errors
from upgrader.cluster import session
from upgrader.engine import driver, ports
from upgrader.engine.ports import Gate
from upgrader.executor import runner
from upgrader.state import records, store
from upgrader.support import environment

# Until a cluster has history: a snapshot, one control-plane node, one commit node, one batch of nodes.
DEFAULT_SECONDS = {"snapshot": 60.0, "control-plane": 180.0, "emulation-commit": 150.0, "nodes": 240.0}
_PER_NODE = ("control-plane", "emulation-commit")  # one node at a time: the step scales with its nodes
LEFTOVER_TIMEOUT = 1800.0  # the longest a playbook of a run may take


class RunStopped(errors.UpgraderError):
    """The run stopped before its end: paused at a safe point (exit 6), a step failed (1), or it was
    interrupted or lost its lock (5). ``run`` is the journal's record of it; all three are resumable."""

    def __init__(self, message: str, run: records.RunRecord, exit_code: errors.ExitCode) -> None:
        super().__init__(message)
        self.run = run
        self.exit_code = exit_code


_COMMAND = {records.RunKind.UPGRADE: "apply", records.RunKind.ROLLBACK: "rollback"}


def resume_hint(run: records.RunRecord) -> str:
    return f"`upgrader {_COMMAND[run.kind]} --resume {run.id} -c CLUSTER.yaml`"


def new_run_id(cluster: str) -> records.RunId:
    return records.RunId(f"{cluster[:40]}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}")


def reopen(state: store.Store, run_id: str, cluster: str, kind: records.RunKind) -> records.RunRecord:
    """An unfinished run of ``cluster`` and of ``kind``, marked running again by this process."""
    run = state.run(run_id)
    if run.kind is not kind:
        raise errors.Refused(f"run {run.id} is an {run.kind.value} run: resume it with {resume_hint(run)}")
    if run.cluster != cluster:
        raise errors.Refused(f"run {run.id} belongs to cluster {run.cluster}, not {cluster}")
    if run.status.finished:
        raise errors.Refused(f"run {run.id} is {run.status.value}: there is nothing to resume")
    state.set_run(run.id, records.RunStatus.RUNNING, host=environment.host(), pid=os.getpid())
    return state.run(run.id)


def create(
    state: store.Store,
    cluster: str,
    kind: records.RunKind,
    steps: list[dict[str, object]],
    *,
    options: Mapping[str, object],
    plan_id: records.PlanId | None = None,
) -> records.RunRecord:
    return state.create_run(
        run_id=new_run_id(cluster),
        cluster=cluster,
        plan_id=plan_id,
        kind=kind,
        steps=steps,
        host=environment.host(),
        pid=os.getpid(),
        options=dict(options),
    )


@dataclass(frozen=True)
class Estimator:
    """A step's expected duration: the median of this cluster's past steps of the same kind (per node for
    the control-plane kinds, whose nodes go one at a time; per batch otherwise), else defaults; ``source``
    says which, for the progress board."""

    history: Mapping[str, list[float]]
    runs: int

    def __call__(self, step: records.StepRecord) -> float:
        nodes = max(1, len(step.spec.get("nodes", ()))) if step.kind in _PER_NODE else 1
        seen = self.history.get(step.kind)
        return (statistics.median(seen) if seen else DEFAULT_SECONDS.get(step.kind, 120.0)) * nodes

    @property
    def source(self) -> str:
        if not self.history:
            return "estimates: defaults (no finished step of this cluster's yet)"
        return f"estimates: this cluster's journal ({self.runs} past runs; defaults for kinds not seen)"


def estimator(state: store.Store, cluster: str) -> Estimator:
    history: dict[str, list[float]] = {}
    runs = 0
    for past in state.runs(cluster, limit=20):
        finished = [s for s in past.steps if s.status is records.StepStatus.SUCCEEDED and s.seconds is not None]
        runs += bool(finished)
        for step in finished:
            assert step.seconds is not None
            nodes = max(1, len(step.spec.get("nodes", ()))) if step.kind in _PER_NODE else 1
            history.setdefault(step.kind, []).append(step.seconds / nodes)
    return Estimator(history, runs)


@dataclass
class Journaling:
    """Every engine event goes to the journal's events, then to the caller's observer."""

    state: store.Store
    cluster: str
    run_id: records.RunId
    observe: Callable[[ports.Event], None] = field(default=lambda event: None)

    _serial: threading.Lock = field(default_factory=threading.Lock)  # batch drains report from threads

    def __call__(self, event: ports.Event) -> None:
        level = event.level or (records.EventLevel.ERROR if event.kind.endswith("failed") else records.EventLevel.INFO)
        data = {"position": event.position, "node": event.node, **event.data}
        with self._serial:
            self.state.record_event(
                kind=event.kind, message=event.message, cluster=self.cluster, run_id=self.run_id, level=level, data=data
            )
            self.observe(event)


def task_recorder(
    state: store.Store, cluster: str, run_id: records.RunId | None
) -> Callable[[str, runner.TaskResult], None]:
    def record(playbook: str, task: runner.TaskResult) -> None:
        """Every Ansible task of the run in the journal: host, task, outcome, duration (never its output)."""
        outcome = "failed" if not task.ok else ("changed" if task.changed else "ok")
        state.record_event(
            kind="ansible-task",
            message=f"{task.host}: {task.task}: {outcome}",
            cluster=cluster,
            run_id=run_id,
            level=records.EventLevel.INFO if task.ok else records.EventLevel.ERROR,
            data={
                "playbook": playbook,
                "host": task.host,
                "task": task.task,
                "outcome": outcome,
                "seconds": task.duration,
            },
        )

    return record


def wait_for_leftovers(cluster: session.ClusterSession, observe: Callable[[ports.Event], None]) -> None:
    """A playbook a killed upgrader left running (its kubeadm may still be at work) ends before this
    run looks at the cluster: the state it re-derives is then the state that stays."""
    left = runner.leftovers()
    if left:
        observe(ports.Event("waiting", f"waiting for {left[0].describe()} to finish", data={"pids": left[0].pids}))
        runner.wait_for_leftovers(
            LEFTOVER_TIMEOUT, cluster.cancel, report=lambda line: observe(ports.Event("waiting", line))
        )


def drive(
    cluster: session.ClusterSession,
    state: store.Store,
    run: records.RunRecord,
    *,
    gate: Gate,
    lease: ports.Lease,
    observe: Callable[[ports.Event], None],
    wait_timeout: float,
    insecure: tuple[str, ...],
    go: Callable[[driver.Driver], driver.Outcome],
) -> records.RunRecord:
    """Runs ``go`` with the engine for ``run``; returns the finished run, or raises ``RunStopped``."""
    journaling = Journaling(state, cluster.name, run.id, observe)
    engine = driver.Driver(
        state,
        gate=gate,
        lease=lease,
        settings=driver.Settings(wait_timeout=wait_timeout),
        estimate=estimator(state, cluster.name),
        observe=journaling,
        cancel=cluster.cancel,
    )
    if insecure:  # a run that goes on over connections only --insecure allowed says so in its journal
        state.record_event(
            kind="insecure-transport",
            cluster=cluster.name,
            run_id=run.id,
            level=records.EventLevel.WARNING,
            message=f"run {run.id} went on over connections allowed only by --insecure",
            data={"allowed": list(insecure)},
        )
    noun = "rollback" if run.kind is records.RunKind.ROLLBACK else "run"
    hint = resume_hint(run)
    try:
        wait_for_leftovers(cluster, journaling)
        outcome = go(engine)
    except KeyboardInterrupt:
        raise RunStopped(
            f"{noun} {run.id} interrupted; continue with {hint}", state.run(run.id), errors.ExitCode.NEEDS_HUMAN
        ) from None
    except errors.UpgraderError as exc:
        lost = isinstance(exc, errors.LockLost)
        if not lost and state.run(run.id).status is records.RunStatus.RUNNING:
            # It failed before any step was journaled (waiting for a leftover playbook, a snapshot that
            # fails verification now): the run is marked failed, not left claiming to run.
            state.set_run(run.id, records.RunStatus.FAILED, error=exc.message, at=datetime.now(UTC))
        code = errors.ExitCode.NEEDS_HUMAN if lost else errors.ExitCode.FAILURE
        raise RunStopped(
            f"{noun} {run.id} stopped: {exc.message}; after fixing it, {hint}", state.run(run.id), code
        ) from exc
    done = state.run(run.id)
    if outcome is driver.Outcome.PAUSED:
        raise RunStopped(
            f"{noun} {run.id} paused: {done.stopped_reason}; continue with {hint}", done, errors.ExitCode.PAUSED
        )
    return done


@dataclass(frozen=True)
class Abandoned:
    run: records.RunRecord
    cordoned: tuple[str, ...]  # nodes the run cordoned and left cordoned: the next apply uncordons them

    def left_behind(self) -> str:
        if not self.cordoned:
            return "nothing left behind"
        return f"left cordoned by it: {', '.join(self.cordoned)} (the next apply uncordons them once upgraded)"


def abandon(state: store.Store, cluster: str, run_id: str) -> Abandoned:
    """Marks a stopped run of ``cluster`` abandoned. The caller holds the cluster lock, so the run's
    process is not running. A rollback that has begun is never abandoned: it may hold the control plane
    stopped, and only resuming it brings it back."""
    run = state.run(run_id)
    if run.cluster != cluster:
        raise errors.Refused(f"run {run.id} is of cluster {run.cluster}, not {cluster}: nothing was changed")
    if run.status.finished:
        raise errors.Refused(f"run {run.id} is {run.status.value} already")
    if run.kind is records.RunKind.ROLLBACK and any(s.status is not records.StepStatus.PENDING for s in run.steps):
        raise errors.Refused(
            f"run {run.id} is a rollback that has begun (it may have stopped the control plane and held its "
            f"manifests): finish it with `upgrader rollback --resume {run.id}`; nothing was changed"
        )
    state.set_run(
        run.id,
        records.RunStatus.CANCELED,
        error=run.error,
        stopped_reason="abandoned by the operator",
        at=datetime.now(UTC),
    )
    return Abandoned(state.run(run.id), tuple(ports.cordoned_by_us(run)))
