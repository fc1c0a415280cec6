"""An upgrade's steps on the engine: a handler per plan step kind, and the upgrade's policy.

- ``snapshot``: a verified, known-good snapshot (no gate: nothing changes).
- ``control-plane`` and ``emulation-commit``: one node at a time, kubeadm through the control-plane
  rollout; a node whose apiserver already serves the expected version and emulation is done (a resumed
  run does not repeat it).
- ``nodes``: a batch of kubelets (``engine.batches``).
- ``etcd``: every etcd member to the step's version (a stacked member by its manifest, an external one by
  its binary and service on its host), one at a time, the leader last; each member
  is seen back (answering at the new version, following a leader, its revision past the one before it
  restarted) and the cluster gated (every apiserver ready, etcd quorate) before the next. A member that
  does not come back is put back at its old version and the step stops with the cluster quorate.

Each is gated by what the plan expects after it (``engine.expectations``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from upgrader import errors
from upgrader.core.planner.model import Plan, Step, StepKind
from upgrader.core.versions import Minor, Version
from upgrader.engine import expectations
from upgrader.engine.batches import NodeBatches
from upgrader.engine.driver import Driver, Handlers, Policy, StepFailed
from upgrader.engine.ports import EtcdMember, Expected, PauseAfter, Ports, StepHandler
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


# A step's detail key, written before upgrader rewrites a member's manifest and removed once the member is
# back: the member a killed run left changing, with the version to put back if it does not come back.
CHANGING = "etcd-changing:"


@dataclass(frozen=True)
class _Etcd(_Upgrade):
    """Stacked members by their manifests, or, with ``hosts`` (external etcd: host -> member name), the
    members' services on the etcd hosts; the same order, gate and put-back either way."""

    hosts: Mapping[str, str] | None = None

    def _name(self, node: str) -> str:
        """The etcd member's name on ``node`` (a stacked one is named after its node)."""
        return self.hosts.get(node, node) if self.hosts is not None else node

    def _member(self, node: str) -> EtcdMember | None:
        return self.ports.probe.etcd(self._name(node))

    def _move(self, node: str, version: Version, *, again: bool = False) -> None:
        if self.hosts is not None:
            self.ports.etcd.etcd_service(node, version, restart=again)
        else:
            self.ports.etcd.etcd_member(node, version)

    def act(self, record: records.StepRecord) -> None:
        step = self.step(record)
        assert step.version is not None
        wanted, expected = step.version, self.after[record.position]
        moved: set[str] = {k.removeprefix("node:") for k in record.detail if k.startswith("node:")}
        for key, old in sorted(record.detail.items()):
            if key.startswith(CHANGING) and old:
                # A run stopped while this member changed: its manifest may or may not have been written.
                # Write it again (the playbook is idempotent) and see the member back before any other.
                node = key.removeprefix(CHANGING)
                self._move(node, wanted, again=True)
                self._settle(record, node, (Version.parse(str(old)), wanted), None, expected)
                moved.add(node)
        remaining = list(step.nodes)
        while remaining:
            seen = {node: self._member(node) for node in step.nodes}
            down = sorted(node for node, member in seen.items() if member is None)
            if down:
                raise StepFailed(
                    f"etcd on {', '.join(down)} does not answer: no member is restarted while another is down "
                    "(quorum); bring it back, then resume"
                )
            members = {node: member for node, member in seen.items() if member is not None}
            for node in [n for n in remaining if members[n].version == wanted]:
                remaining.remove(node)
                if node not in moved:
                    self.driver.node_done(self.run_id, record.position, node, f"etcd already at {wanted}")
            if not remaining:
                return
            newer = sorted(n for n in remaining if members[n].version > wanted)
            if newer:
                raise StepFailed(
                    f"etcd on {', '.join(newer)} runs {members[newer[0]].version}, newer than {wanted}: upgrader "
                    "never downgrades etcd; make a new plan"
                )
            leader = next((m.leader for m in members.values() if m.leader), None)
            if leader is None:
                raise StepFailed("etcd has no leader (no quorum): no member is restarted until it has one; then resume")
            node = next((n for n in remaining if self._name(n) != leader), remaining[0])  # the leader last
            old = members[node].version
            if old.major != wanted.major or wanted.minor - old.minor > 1:
                raise StepFailed(f"etcd on {node} runs {old}: moving it to {wanted} would skip an etcd minor")
            self.driver.lease.check()
            revision = max(m.revision for m in members.values())
            self.driver.progress(self.run_id, record.position, {CHANGING + node: str(old)})
            self.driver.event("etcd-member", f"{node}: etcd {old} -> {wanted}", record.position, node)
            self._move(node, wanted)
            self._settle(record, node, (old, wanted), revision, expected)
            moved.add(node)

    def _settle(
        self,
        record: records.StepRecord,
        node: str,
        versions: tuple[Version, Version],
        revision: int | None,
        expected: Expected,
    ) -> None:
        """``node``'s member back at the new of its ``versions`` (old, new), else put back at the old one;
        then the cluster gated."""
        old, wanted = versions

        def back() -> bool:
            member = self._member(node)
            return (
                member is not None
                and member.version == wanted
                and member.leader is not None
                and (revision is None or member.revision > revision)
            )

        past = f", its revision past {revision}" if revision is not None else ""
        try:
            self.driver.wait(back, f"etcd on {node} to answer at {wanted} with a leader{past}")
        except StepFailed as exc:
            self.driver.event("etcd-member", f"{node}: putting etcd {old} back", record.position, node)
            self._move(node, old)
            try:
                self.driver.wait(
                    lambda: (m := self._member(node)) is not None and m.version == old and m.leader is not None,
                    f"etcd on {node} to answer again at {old}",
                )
            except StepFailed as again:
                raise StepFailed(f"{exc.message}; putting {old} back on {node} failed too: {again.message}") from exc
            self.driver.progress(self.run_id, record.position, {CHANGING + node: None})
            raise StepFailed(f"{exc.message}; {node} is back at {old} and the cluster kept quorum") from exc
        problems: list[str] = []

        def gated() -> bool:
            problems[:] = self.ports.gate.check(expected)
            return not problems

        try:
            self.driver.wait(gated, f"the cluster to settle after etcd on {node} moved to {wanted}")
        except StepFailed as exc:
            raise StepFailed(f"{exc.message}: {problems[0] if problems else 'no detail'}") from exc
        self.driver.progress(self.run_id, record.position, {CHANGING + node: None})
        self.driver.node_done(self.run_id, record.position, node, f"etcd {old} -> {wanted}")


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
    setup = plan.facts.etcd_setup
    hosts = dict(setup.hosts) if setup.external else None
    made: dict[str, StepHandler] = {
        StepKind.SNAPSHOT.value: _Snapshot(driver, ports, run.id, steps, after),
        StepKind.CONTROL_PLANE.value: _ControlPlane(driver, ports, run.id, steps, after),
        StepKind.EMULATION_COMMIT.value: _ControlPlane(driver, ports, run.id, steps, after),
        StepKind.NODES.value: _Nodes(driver, ports, run.id, steps, after),
        StepKind.ETCD.value: _Etcd(driver, ports, run.id, steps, after, hosts=hosts),
    }
    return made
