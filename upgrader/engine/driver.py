"""The one step engine: runs a journaled run's steps, in order, from the first that is not done.

A run is a list of steps, each of a kind; a handler registered for that kind describes the step, acts,
and says what the cluster must look like afterwards (checked by the gate) or that the step has no gate.
An upgrade and a rollback are two sets of handlers on this one loop (``engine.upgrade``,
``rollback.steps``), with two policies.

For every step: the cluster lock is checked; the policy's maintenance window must have room for the
step's estimated duration, else the run pauses at this safe point; the journal records the step as
running (one more attempt) before it acts; the handler acts through its ports, skipping whatever the
live cluster shows is already done; the gate compares the live cluster with what the handler expects;
the journal records the outcome after it. The policy may pause the run after a step (``--pause-after``).
Ctrl-C, SIGTERM and SIGHUP cancel what is running, record the step as interrupted, and re-raise.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from upgrader import errors
from upgrader.engine.ports import Event, Gate, Journal, Lease, Observer, StepHandler
from upgrader.state import records


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PAUSED = "paused"


class StepFailed(errors.OperationFailed):
    """A step or the gate after it failed; the run stops there, resumable."""


class GateFailed(StepFailed):
    """The live cluster does not match what the step's handler expects after it."""


@dataclass(frozen=True)
class Settings:
    wait_timeout: float = 300.0  # for a node's apiserver or kubelet to come back at its new version
    poll: float = 1.0


@dataclass(frozen=True)
class Policy:
    """When a run stops at a safe point on purpose: before a step the window has no room for, and
    after a step ``pause_after`` names (with why). An upgrade has both; a rollback neither."""

    window_end: datetime | None = None
    pause_after: Callable[[records.StepRecord], bool] | None = None


Estimate = Callable[[records.StepRecord], float]
Handlers = Mapping[str, StepHandler]


def _now() -> datetime:
    return datetime.now(UTC)


class Driver:
    def __init__(
        self,
        journal: Journal,
        *,
        gate: Gate,
        lease: Lease,
        settings: Settings,
        estimate: Estimate,
        observe: Observer,
        cancel: threading.Event,
    ) -> None:
        self.journal = journal
        self.gate = gate
        self.lease = lease
        self.settings = settings
        self.estimate = estimate
        self.observe = observe
        self.cancel = cancel

    # -- the loop ------------------------------------------------------------------------------

    def run(
        self,
        run: records.RunRecord,
        handlers: Handlers,
        policy: Policy = Policy(),
        *,
        before_success: Callable[[], None] | None = None,
    ) -> Outcome:
        """Every step not done yet, in order; ``before_success`` runs after the last step and before the
        run is marked succeeded (a kill in between leaves the run to resume, which runs it again)."""
        unknown = sorted({s.kind for s in run.steps} - set(handlers))
        if unknown:
            raise errors.OperationFailed(f"run {run.id} has steps of a kind this engine has no handler for: {unknown}")
        self._start(run, [handlers[s.kind].describe(s) for s in run.steps])
        for record in run.steps:
            if record.status in (records.StepStatus.SUCCEEDED, records.StepStatus.SKIPPED):
                continue
            self.lease.check()
            if self._no_room(policy, record):
                return self._pause(run.id, self._window_message(policy, record))
            handler = handlers[record.kind]

            def act(handler: StepHandler = handler, record: records.StepRecord = record) -> None:
                handler.act(record)
                after = handler.expected(record)
                problems = self.gate.check(after) if after is not None else []
                if problems:
                    raise GateFailed(f"gate after step {record.position + 1}: {problems[0]}" + _more(problems))

            self.journaled(run.id, record.position, handler.describe(record), act)
            if policy.pause_after is not None and policy.pause_after(record):
                return self._pause(run.id, f"paused after step {record.position + 1} (--pause-after)")
        if before_success is not None:
            before_success()
        self.journal.set_run(run.id, records.RunStatus.SUCCEEDED, at=_now())
        self.observe(Event("run-succeeded", f"run {run.id} succeeded"))
        return Outcome.SUCCEEDED

    def _start(self, run: records.RunRecord, descriptions: list[str]) -> None:
        """The run is running; observers get its outline (each step's description, status and estimate)."""
        self.journal.set_run(run.id, records.RunStatus.RUNNING, at=_now())
        outline = [
            {
                "position": record.position,
                "description": description,
                "status": record.status.value,
                "seconds": record.seconds,
                "estimate": self.estimate(record),
            }
            for record, description in zip(run.steps, descriptions, strict=True)
        ]
        # Where the estimates come from (an estimator may say: this cluster's journal, or the defaults).
        source = str(getattr(self.estimate, "source", ""))
        data = {"run": run.id, "steps": outline, "estimates": source}
        self.observe(Event("run-started", f"run {run.id}: {len(outline)} steps", data=data))

    def _no_room(self, policy: Policy, record: records.StepRecord) -> bool:
        end = policy.window_end
        return end is not None and (end - _now()).total_seconds() < self.estimate(record)

    def _window_message(self, policy: Policy, record: records.StepRecord) -> str:
        assert policy.window_end is not None
        left = max(0, int((policy.window_end - _now()).total_seconds()))
        return (
            f"stopped before step {record.position + 1} ({record.kind}): it takes about "
            f"{int(self.estimate(record))}s and the window has {left}s left"
        )

    def _pause(self, run_id: str, reason: str) -> Outcome:
        self.journal.set_run(run_id, records.RunStatus.PAUSED, stopped_reason=reason, at=_now())
        self.observe(Event("run-paused", reason))
        return Outcome.PAUSED

    def journaled(self, run_id: str, position: int, description: str, act: Callable[[], None]) -> None:
        """One step: journaled as running before ``act``, and as succeeded, failed or interrupted after."""
        self.journal.start_step(run_id, position, at=_now())
        self.observe(Event("step-started", description, position=position))
        try:
            act()
        except KeyboardInterrupt:
            self.cancel.set()
            self.journal.finish_step(run_id, position, records.StepStatus.INTERRUPTED, at=_now(), error="interrupted")
            self.journal.set_run(run_id, records.RunStatus.INTERRUPTED, stopped_reason="interrupted", at=_now())
            self.observe(Event("step-interrupted", f"step {position + 1} interrupted", position=position))
            raise
        except errors.UpgraderError as exc:
            if not isinstance(exc, errors.LockLost) and not self.lease.confirm():
                # The lock was broken or taken under this step: whatever failed is the other process's
                # doing, and this run must stop and say so, not report the symptom.
                lost = errors.LockLost(
                    f"step {position + 1} stopped: the lock on this cluster was lost while it ran (broken or "
                    f"taken by another command); its error was: {exc.message}; check `upgrader lock status`"
                )
                # The step is marked; the run's own status is left to whoever holds the lock now (a
                # rollback marks the run it ends as rolled back, and that must stand).
                self.journal.finish_step(
                    run_id, position, records.StepStatus.INTERRUPTED, at=_now(), error=lost.message
                )
                self.observe(Event("step-interrupted", lost.message, position=position))
                raise lost from exc
            self.journal.finish_step(run_id, position, records.StepStatus.FAILED, at=_now(), error=exc.message)
            self.journal.set_run(run_id, records.RunStatus.FAILED, error=exc.message, at=_now())
            self.observe(Event("step-failed", exc.message, position=position))
            raise
        self.journal.finish_step(run_id, position, records.StepStatus.SUCCEEDED, at=_now())
        self.observe(Event("step-succeeded", f"step {position + 1} done: {description}", position=position))

    # -- for handlers --------------------------------------------------------------------------

    def progress(self, run_id: str, position: int, detail: Mapping[str, Any]) -> None:
        """Merges ``detail`` into the running step's journal entry (None removes a key)."""
        self.journal.step_progress(run_id, position, detail)

    def event(self, kind: str, message: str, position: int, node: str | None = None, **data: Any) -> None:
        self.observe(Event(kind, message, position=position, node=node, data=data))

    def node_done(self, run_id: str, position: int, node: str, how: str) -> None:
        self.journal.step_progress(run_id, position, {f"node:{node}": how})
        self.observe(Event("node-done", f"{node}: {how}", position=position, node=node))

    def wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.settings.wait_timeout
        while not condition():
            if self.cancel.is_set():
                raise KeyboardInterrupt("canceled")
            if time.monotonic() > deadline:
                raise StepFailed(f"timed out after {self.settings.wait_timeout:.0f}s waiting for {what}")
            time.sleep(self.settings.poll)


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
