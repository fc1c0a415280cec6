"""An upgrade's steps on the engine: a handler per plan step kind, and the upgrade's policy.

- ``snapshot``: a verified, known-good snapshot (no gate: nothing changes).
- ``control-plane`` and ``emulation-commit``: one node at a time, kubeadm through the control-plane
  rollout; a node whose apiserver already serves the expected version and emulation is done (a resumed
  run does not repeat it).
- ``nodes``: a batch of kubelets (``engine.batches``).

Each is gated by what the plan expects after it (``engine.expectations``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from upgrader import errors
from upgrader.core.planner.model import Plan, Step, StepKind
from upgrader.core.versions import Minor, Version
from upgrader.engine import expectations
from upgrader.engine.batches import NodeBatches
from upgrader.engine.driver import Driver, Handlers, Policy
from upgrader.engine.ports import Expected, PauseAfter, Ports, StepHandler
from upgrader.state import records


def policy(window_end: datetime | None, pause_after: PauseAfter | None, steps: Sequence[Step]) -> Policy:
    """``steps``: the plan's, in the run's order (a step record's position indexes them)."""

    def pause_here(record: records.StepRecord) -> bool:
        step = steps[record.position]
        if pause_after is PauseAfter.STEP:
            return True
        if pause_after is PauseAfter.HOP:
            return step.kind in (StepKind.CONTROL_PLANE, StepKind.EMULATION_COMMIT)
        return pause_after is PauseAfter.EMULATION and step.kind is StepKind.CONTROL_PLANE and step.emulated is not None

    return Policy(window_end=window_end, pause_after=pause_here if pause_after else None)


def describe(step: Step) -> str:
    nodes = ", ".join(step.nodes)
    if step.kind is StepKind.SNAPSHOT:
        return "snapshot"
    emulation = f" emulating {step.emulated}" if step.kind is StepKind.CONTROL_PLANE and step.emulated else ""
    return f"{step.kind.value} v{step.version}{emulation}: {nodes}"


def _version(wanted: tuple[Version, Minor]) -> str:
    version, emulated = wanted
    return f"v{version}" + (f" emulating {emulated}" if emulated != version.minor_version else "")


@dataclass(frozen=True)
class _Upgrade:
    """What every upgrade handler shares: the engine, the ports, and what is expected after each step."""

    driver: Driver
    ports: Ports
    run_id: str
    steps: tuple[Step, ...]  # the plan's steps, typed; the run's journal holds them in the same order
    after: tuple[Expected, ...]

    def describe(self, record: records.StepRecord) -> str:
        return describe(self.step(record))

    def step(self, record: records.StepRecord) -> Step:
        return self.steps[record.position]

    def expected(self, record: records.StepRecord) -> Expected | None:
        return self.after[record.position]


class _Snapshot(_Upgrade):
    def act(self, record: records.StepRecord) -> None:
        step = self.step(record)
        label = f"run {self.run_id} step {record.position + 1}: {step.reason}"[:200]
        self.driver.progress(self.run_id, record.position, {"snapshot": self.ports.snapshotter.take(label)})


class _ControlPlane(_Upgrade):
    def act(self, record: records.StepRecord) -> None:
        step = self.step(record)
        assert step.version is not None
        rollout = self.ports.control_plane
        rollout.set_emulation(step.emulated if step.kind is StepKind.CONTROL_PLANE else None)
        after = self.after[record.position]
        for index, node in enumerate(step.nodes):
            wanted = after.apiservers[node]
            if self.ports.probe.apiserver(node) == wanted:
                self.driver.node_done(self.run_id, record.position, node, "already there")
                continue
            self.driver.lease.check()
            self.driver.event("node-playbook", f"{node}: control-plane playbook", record.position, node)
            rollout.control_plane(node, step.version, first=index == 0)
            self.driver.event("node-waiting", f"{node}: waiting for its apiserver", record.position, node)
            self.driver.wait(
                lambda node=node, wanted=wanted: self.ports.probe.apiserver(node) == wanted,  # type: ignore[misc]
                f"the apiserver on {node} to serve {_version(wanted)}",
            )
            self.driver.node_done(self.run_id, record.position, node, "upgraded")


class _Nodes(_Upgrade):
    def act(self, record: records.StepRecord) -> None:
        step = self.step(record)
        assert step.version is not None
        batches = NodeBatches(self.driver, self.ports.drainer, self.ports.probe, self.ports.kubelets)
        batches.run(self.run_id, record.position, step.nodes, step.version)


def handlers(driver: Driver, ports: Ports, run: records.RunRecord, plan: Plan) -> Handlers:
    """The upgrade's handlers for ``run``, made from ``plan``: its typed steps and facts, never the JSON the
    journal keeps of them. A journal whose steps are not the plan's kinds in the plan's order (a run made
    from another plan, or rows edited since) is refused before any step. The specs themselves are not
    compared, so a run journaled by an older upgrader still resumes; the plan's id check covers its body."""
    steps = plan.steps
    journaled = [(s.kind, s.position) for s in run.steps]
    if journaled != [(step.kind.value, position) for position, step in enumerate(steps)]:
        raise errors.OperationFailed(f"run {run.id}'s steps are not those of its plan {plan.id}: make a new plan")
    after = tuple(expectations.each(plan.facts, steps))
    made: dict[str, StepHandler] = {
        StepKind.SNAPSHOT.value: _Snapshot(driver, ports, run.id, steps, after),
        StepKind.CONTROL_PLANE.value: _ControlPlane(driver, ports, run.id, steps, after),
        StepKind.EMULATION_COMMIT.value: _ControlPlane(driver, ports, run.id, steps, after),
        StepKind.NODES.value: _Nodes(driver, ports, run.id, steps, after),
    }
    return made
