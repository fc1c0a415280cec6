"""Runs a journaled run's steps, in order, from the first that is not done.

For every step: the cluster lock is checked; a maintenance window must have room for the step's
estimated duration, else the run pauses at this safe point; the journal records the step as running
(one more attempt) before it acts; the step acts through the ports, skipping whatever the live cluster
shows is already done (a node at its target is not drained again); the gate compares the live cluster
with what the plan expects after the step; the journal records the outcome after it. ``--pause-after``
stops the run at the chosen kind of safe point. Ctrl-C, SIGTERM and SIGHUP cancel what is running,
record the step as interrupted, and re-raise.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from upgrader import errors
from upgrader.engine import expectations
from upgrader.engine.ports import Expected, Ports
from upgrader.planner.model import Step, StepKind
from upgrader.state import records, store
from upgrader.versions import Minor, Version


class PauseAfter(enum.StrEnum):
    EMULATION = "emulation"  # after a control-plane step that leaves a rollback-safe window open
    HOP = "hop"  # after every control-plane or emulation-commit step
    STEP = "step"  # after every step


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    PAUSED = "paused"


class StepFailed(errors.OperationFailed):
    """A step or the gate after it failed; the run stops there, resumable."""


class GateFailed(StepFailed):
    """The live cluster does not match what the plan expects after a step."""


class Lease(Protocol):
    def check(self) -> None: ...

    def confirm(self) -> bool: ...


# A step's detail key, written before upgrader cordons a schedulable node and removed once it uncordons
# it: the nodes upgrader itself left cordoned, and so may uncordon.
CORDONED = "cordoned:"


def cordoned_by_us(run: records.RunRecord) -> list[str]:
    """The nodes this run cordoned and has not uncordoned, from the journal."""
    return sorted(key.removeprefix(CORDONED) for step in run.steps for key in step.detail if key.startswith(CORDONED))


@dataclass(frozen=True)
class Event:
    kind: str  # run-started, step-started, node-done, step-succeeded, step-failed, run-paused, ...
    message: str
    position: int | None = None
    node: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    wait_timeout: float = 300.0  # for a node's apiserver or kubelet to come back at its new version
    poll: float = 1.0
    window_end: datetime | None = None
    pause_after: PauseAfter | None = None


Estimate = Callable[[records.StepRecord], float]
Observer = Callable[[Event], None]


def _now() -> datetime:
    return datetime.now(UTC)


class Driver:
    def __init__(
        self,
        journal: store.Store,
        ports: Ports,
        *,
        lease: Lease,
        settings: Settings,
        estimate: Estimate,
        observe: Observer,
        cancel: threading.Event,
        facts: Mapping[str, Any],
    ) -> None:
        self.journal = journal
        self.ports = ports
        self.lease = lease
        self.settings = settings
        self.estimate = estimate
        self.observe = observe
        self.cancel = cancel
        self.facts = facts

    # -- the loop ------------------------------------------------------------------------------

    def run(self, run: records.RunRecord) -> Outcome:
        steps = [Step.from_dict(s.spec) for s in run.steps]
        expected = expectations.each(self.facts, steps)
        self.start(run, [_describe(step) for step in steps])
        for record, step, after in zip(run.steps, steps, expected, strict=True):
            if record.status in (records.StepStatus.SUCCEEDED, records.StepStatus.SKIPPED):
                continue
            self.lease.check()
            if self._no_room(record):
                return self._pause(run.id, self._window_message(record))
            self._step(run.id, record, step, after)
            if self._pause_here(step):
                return self._pause(run.id, f"paused after step {record.position + 1} (--pause-after)")
        self.succeed(run.id)
        return Outcome.SUCCEEDED

    def start(self, run: records.RunRecord, descriptions: list[str]) -> None:
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

    def succeed(self, run_id: str) -> None:
        self.journal.set_run(run_id, records.RunStatus.SUCCEEDED, at=_now())
        self.observe(Event("run-succeeded", f"run {run_id} succeeded"))

    def _no_room(self, record: records.StepRecord) -> bool:
        end = self.settings.window_end
        return end is not None and (end - _now()).total_seconds() < self.estimate(record)

    def _window_message(self, record: records.StepRecord) -> str:
        assert self.settings.window_end is not None
        left = max(0, int((self.settings.window_end - _now()).total_seconds()))
        return (
            f"stopped before step {record.position + 1} ({record.kind}): it takes about "
            f"{int(self.estimate(record))}s and the window has {left}s left"
        )

    def _pause_here(self, step: Step) -> bool:
        wanted = self.settings.pause_after
        if wanted is PauseAfter.STEP:
            return True
        if wanted is PauseAfter.HOP:
            return step.kind in (StepKind.CONTROL_PLANE, StepKind.EMULATION_COMMIT)
        if wanted is PauseAfter.EMULATION:
            return step.kind is StepKind.CONTROL_PLANE and step.emulated is not None
        return False

    def _pause(self, run_id: str, reason: str) -> Outcome:
        self.journal.set_run(run_id, records.RunStatus.PAUSED, stopped_reason=reason, at=_now())
        self.observe(Event("run-paused", reason))
        return Outcome.PAUSED

    def _step(self, run_id: str, record: records.StepRecord, step: Step, after: Expected) -> None:
        position = record.position
        handler = {
            StepKind.SNAPSHOT: self._snapshot,
            StepKind.CONTROL_PLANE: self._control_plane,
            StepKind.EMULATION_COMMIT: self._commit,
            StepKind.NODES: self._nodes,
        }[step.kind]

        def act() -> None:
            handler(run_id, position, step, after)
            problems = self.ports.gate.check(after)
            if problems:
                raise GateFailed(f"gate after step {position + 1}: {problems[0]}" + _more(problems))

        self.journaled(run_id, position, _describe(step), act)

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

    # -- step kinds ----------------------------------------------------------------------------

    def _snapshot(self, run_id: str, position: int, step: Step, after: Expected) -> None:
        snapshot_id = self.ports.snapshotter.take(f"run {run_id} step {position + 1}: {step.reason}"[:200])
        self.journal.step_progress(run_id, position, {"snapshot": snapshot_id})

    def _control_plane(self, run_id: str, position: int, step: Step, after: Expected) -> None:
        assert step.version is not None
        self.ports.executor.set_emulation(step.emulated)
        self._control_plane_nodes(run_id, position, step, after)

    def _commit(self, run_id: str, position: int, step: Step, after: Expected) -> None:
        assert step.version is not None
        self.ports.executor.set_emulation(None)
        self._control_plane_nodes(run_id, position, step, after)

    def _control_plane_nodes(self, run_id: str, position: int, step: Step, after: Expected) -> None:
        """One node at a time; a node whose apiserver already serves the expected version and emulation is
        done (a resumed run does not repeat it)."""
        assert step.version is not None
        for index, node in enumerate(step.nodes):
            wanted = after.apiservers[node]
            if self.ports.probe.apiserver(node) == wanted:
                self.node_done(run_id, position, node, "already there")
                continue
            self.lease.check()
            self.observe(Event("node-playbook", f"{node}: control-plane playbook", position=position, node=node))
            self.ports.executor.control_plane(node, step.version, first=index == 0)
            self.observe(Event("node-waiting", f"{node}: waiting for its apiserver", position=position, node=node))
            self._wait_apiserver(node, wanted)
            self.node_done(run_id, position, node, "upgraded")

    def _wait_apiserver(self, node: str, wanted: tuple[Version, Minor]) -> None:
        self.wait(
            lambda: self.ports.probe.apiserver(node) == wanted, f"the apiserver on {node} to serve {_version(wanted)}"
        )

    def _nodes(self, run_id: str, position: int, step: Step, after: Expected) -> None:
        assert step.version is not None
        self.batch(run_id, position, step.nodes, step.version)

    def batch(self, run_id: str, position: int, nodes: tuple[str, ...], version: Version) -> None:
        """A batch: every node cordoned and drained in parallel, then one playbook run for the nodes whose
        kubelet is not at the version yet (one Ansible process for the batch, not one per node), then
        each Ready at the version and uncordoned. Also a rollback's way to put kubelets back."""
        earlier = self.journal.step(run_id, position).detail  # what an interrupted attempt cordoned
        state = {node: self.ports.probe.kubelet(node) for node in nodes}
        ours = {node: bool(earlier.get(f"{CORDONED}{node}")) for node in nodes}
        todo = []
        for node in nodes:
            running, ready = state[node]
            if running == version and ready and (not ours[node] or not self.ports.drainer.cordoned(node)):
                if ours[node]:
                    self.journal.step_progress(run_id, position, {f"{CORDONED}{node}": None})
                self.node_done(run_id, position, node, "already there")
            else:
                todo.append(node)
        if not todo:
            return
        self.lease.check()
        stale = tuple(node for node in todo if state[node][0] != version)
        # A node whose kubelet is at the version already was drained before (the kubelet is replaced only
        # after the drain) and has stayed cordoned since: it is not drained again.
        evicted = self._in_parallel(
            todo, lambda node: self._drain(run_id, position, node, ours) if node in stale else 0
        )
        if stale:
            self.lease.check()
            for node in stale:
                self.observe(Event("node-playbook", f"{node}: kubelet playbook", position=position, node=node))
            self.ports.executor.kubelet(stale, version)
        for node in todo:
            self.observe(Event("node-waiting", f"{node}: waiting for Ready", position=position, node=node))
            self.wait(
                lambda node=node: self.ports.probe.kubelet(node) == (version, True),  # type: ignore[misc]
                f"{node} to be Ready with kubelet v{version}",
            )
            if ours[node]:
                self.ports.drainer.uncordon(node)
                self.journal.step_progress(run_id, position, {f"{CORDONED}{node}": None})
            self.node_done(run_id, position, node, f"upgraded ({evicted[node]} pods evicted)")

    def _drain(self, run_id: str, position: int, node: str, ours: dict[str, bool]) -> int:
        """Cordons and drains one node. upgrader uncordons only what it cordoned: it journals that it is
        about to cordon a schedulable node *before* the cordon, so a run killed in between still knows
        the node is its own to uncordon on resume. A node someone else cordoned stays cordoned."""
        drainer = self.ports.drainer
        if not ours[node] and not drainer.cordoned(node):
            self.journal.step_progress(run_id, position, {f"{CORDONED}{node}": "by upgrader, to drain it"})
            ours[node] = True
        drainer.cordon(node)
        self.observe(Event("node-draining", f"{node}: cordoned, draining", position=position, node=node))
        evicted = drainer.drain(node)
        self.observe(Event("node-drained", f"{node}: drained ({evicted} pods evicted)", position=position, node=node))
        return evicted

    def _in_parallel(self, nodes: list[str], work: Callable[[str], int]) -> dict[str, int]:
        """``work`` on every node at once; the first failure cancels the others and is raised."""
        results: dict[str, int] = {}
        with ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="node") as pool:
            futures: dict[Future[int], str] = {pool.submit(work, node): node for node in nodes}
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_EXCEPTION)
                    for future in done:
                        results[futures[future]] = future.result()
            except BaseException:
                self.cancel.set()  # stop the other nodes' drains
                raise
        return results

    # -- helpers -------------------------------------------------------------------------------

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


def _version(wanted: tuple[Version, Minor]) -> str:
    version, emulated = wanted
    return f"v{version}" + (f" emulating {emulated}" if emulated != version.minor_version else "")


def _describe(step: Step) -> str:
    nodes = ", ".join(step.nodes)
    if step.kind is StepKind.SNAPSHOT:
        return "snapshot"
    emulation = f" emulating {step.emulated}" if step.kind is StepKind.CONTROL_PLANE and step.emulated else ""
    return f"{step.kind.value} v{step.version}{emulation}: {nodes}"


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
