"""``upgrader apply``: a reviewed, saved plan carried out on the cluster, journaled and resumable.

``prepare`` does everything that may refuse, and changes nothing: the plan is read back as typed
values (its id must match its content), it must have no blockers and belong to this cluster, no other
run of the cluster may be unfinished, the live facts must still be the ones the plan was made from
(drift is named node by node), and the cluster must be healthy. ``execute`` then writes the run and
its steps to the journal and drives the engine with the real ports; ``resume`` continues an
unfinished run from its first step not done, after the engine has re-read what is really done.
The caller holds the cluster lock throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from upgrader import errors
from upgrader.cluster import drain, gates, health, live_facts, rollout, session
from upgrader.core.planner.model import Plan, StepKind
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import facts as facts_mod
from upgrader.engine import driver, expectations, upgrade
from upgrader.engine.ports import CORDONED, Event, Lease, PauseAfter, Ports
from upgrader.executor import rendering
from upgrader.kube import writes
from upgrader.snapshots import tiers
from upgrader.state import records, store
from upgrader.support import redaction
from upgrader.usecases import runs


@dataclass(frozen=True)
class Options:
    window_end: datetime | None = None
    pause_after: PauseAfter | None = None
    force_drain: bool = False
    delete_emptydir_data: bool = False
    drain_timeout: float | None = None  # default: the config's upgrade.drain_timeout
    wait_timeout: float = 300.0
    insecure: tuple[str, ...] = ()  # what --insecure allowed on this run's connections (recorded with it)

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_end": self.window_end.isoformat() if self.window_end else None,
            "pause_after": self.pause_after.value if self.pause_after else None,
            "force_drain": self.force_drain,
            "delete_emptydir_data": self.delete_emptydir_data,
            "drain_timeout": self.drain_timeout,
            "insecure": list(self.insecure),
        }


@dataclass(frozen=True)
class Prepared:
    plan: Plan
    plan_id: records.PlanId
    warnings: tuple[str, ...] = ()
    # Nodes an earlier, ended run of upgrader cordoned and left cordoned: node -> that run's id. This
    # run takes them as its own, so it uncordons them once they are upgraded.
    inherited: Mapping[str, str] = field(default_factory=dict)


def left_cordoned(state: store.Store, cluster: str) -> dict[str, tuple[str, int]]:
    """Nodes that ended runs of upgrader cordoned and never uncordoned, from the journal: node -> (run, step)."""
    out: dict[str, tuple[str, int]] = {}
    for run in state.runs(cluster, limit=200):
        if not run.status.finished:
            continue
        for step in run.steps:
            for key in step.detail:
                if key.startswith(CORDONED):
                    out.setdefault(key.removeprefix(CORDONED), (run.id, step.position))
    return out


def inherit_cordons(cluster: session.ClusterSession, state: store.Store, plan: Plan) -> dict[str, str]:
    """What ended runs left cordoned: a node since uncordoned (by the operator) is forgotten; one still
    cordoned that this plan upgrades is this run's to uncordon; one it does not touch is refused, named."""
    left = left_cordoned(state, cluster.name)
    if not left:
        return {}
    cordoned = {node.name for node in cluster.api.nodes() if node.unschedulable}
    still = {node: where for node, where in left.items() if node in cordoned}
    drained = {node for step in plan.steps if step.kind is StepKind.NODES for node in step.nodes}
    untouched = sorted(set(still) - drained)
    if untouched:
        node = untouched[0]
        raise errors.Refused(
            f"{', '.join(untouched)} still cordoned by upgrader run {still[node][0]}, which ended without "
            f"uncordoning it, and this plan does not upgrade it: check it and `kubectl uncordon {node}`, "
            "then apply again; nothing was changed"
        )
    return {node: run_id for node, (run_id, _) in still.items()}


def adopt_cordons(state: store.Store, run: records.RunRecord, prepared: Prepared) -> None:
    """Moves each inherited cordon into the new run's journal (the step that drains the node) before
    the old run's mark is removed: a kill in between leaves the node marked twice, never unmarked. The
    marks of nodes uncordoned since (by the operator) are dropped: they say nothing any more."""
    left = left_cordoned(state, run.cluster)
    for node, (old_run, position) in left.items():
        if node not in prepared.inherited:
            state.step_progress(old_run, position, {f"{CORDONED}{node}": None})
    for node, old_run in prepared.inherited.items():
        position = next(s.position for s in run.steps if s.kind == StepKind.NODES.value and node in s.spec["nodes"])
        state.step_progress(run.id, position, {f"{CORDONED}{node}": f"by upgrader run {old_run}, which ended"})
        if node in left:
            state.step_progress(left[node][0], left[node][1], {f"{CORDONED}{node}": None})
        state.record_event(
            kind="cordon-inherited",
            cluster=run.cluster,
            run_id=run.id,
            level=records.EventLevel.WARNING,
            message=f"{node} was left cordoned by run {old_run}: this run uncordons it once it is upgraded",
            data={"node": node, "run": old_run},
        )


def load_plan(state: store.Store, plan_id: str, cluster: str) -> tuple[records.PlanId, Plan]:
    stored = state.plan(plan_id)
    plan = Plan.from_dict(stored.body, stored.facts)
    if plan.id != stored.id:  # the body reproduces its own id, but not the one it was saved and reviewed under
        raise errors.InputError(
            f"saved plan {stored.id} holds the content of plan {plan.id}: the row was changed after it was "
            "saved; make the plan again"
        )
    if not plan.executable:
        codes = ", ".join(sorted({b.code.value for b in plan.blockers}))
        raise errors.Refused(f"plan {stored.id} has blockers ({codes}) and cannot be applied; nothing was changed")
    if stored.cluster is not None and stored.cluster != cluster:
        raise errors.Refused(f"plan {stored.id} was made for cluster {stored.cluster}, not {cluster}")
    return stored.id, plan


def refuse_unfinished(state: store.Store, cluster: str) -> None:
    found = state.unfinished_run(cluster)
    if found is not None:
        raise errors.Refused(
            f"cluster {cluster} has an unfinished run {found.id} ({found.status.value}): continue it with "
            f"`upgrader apply --resume {found.id} -c CLUSTER.yaml`, "
            f"or abandon it with `upgrader apply --abandon {found.id}`"
        )


def drift(plan: Plan, now: facts_mod.Facts) -> list[str]:
    """How the live cluster differs from the facts the plan was made from, one line per difference."""
    then = plan.facts
    out: list[str] = []
    live_cp = {m.name: m for m in now.control_plane}
    for member in then.control_plane:
        seen = live_cp.get(member.name)
        if seen is None:
            out.append(f"{member.name} is no longer a control-plane node with an apiserver")
        elif (seen.apiserver, seen.emulated) != (member.apiserver, member.emulated):
            out.append(
                f"{member.name} apiserver is {seen.apiserver} (emulating {seen.emulated}), "
                f"the plan expected {member.apiserver} (emulating {member.emulated})"
            )
    live_nodes = {n.name: n for n in now.nodes}
    for node in then.nodes:
        seen_node = live_nodes.get(node.name)
        if seen_node is None:
            out.append(f"node {node.name} is gone")
        elif seen_node.kubelet != node.kubelet:
            out.append(f"{node.name} kubelet is {seen_node.kubelet}, the plan expected {node.kubelet}")
    added = sorted(set(live_nodes) - {n.name for n in then.nodes})
    if added:
        out.append(f"nodes the plan does not know: {', '.join(added)}")
    return out


def prepare(cluster: session.ClusterSession, state: store.Store, plan_id: str) -> Prepared:
    """Every check that may refuse (exit 3); changes nothing."""
    stored_id, plan = load_plan(state, plan_id, cluster.name)
    refuse_unfinished(state, cluster.name)
    collected = live_facts.collect(cluster)
    try:
        now = facts_mod.from_mapping(collected.data)
    except errors.InputError as exc:
        raise errors.InputError(f"the live cluster's facts: {exc}") from None
    moved = drift(plan, now)
    if moved:
        more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
        raise errors.Refused(f"the cluster is not where plan {stored_id} starts: {moved[0]}{more}; make a new plan")
    checked = health.check(cluster)
    if not checked.ok:
        raise errors.Refused(f"the cluster is not healthy: {checked.problems[0]}; nothing was changed")
    inherited = inherit_cordons(cluster, state, plan)
    warnings = [
        *collected.warnings,
        *(
            f"{node} was left cordoned by run {run_id}: this run uncordons it once upgraded"
            for node, run_id in inherited.items()
        ),
    ]
    return Prepared(plan=plan, plan_id=stored_id, warnings=tuple(warnings), inherited=inherited)


class SnapshotTaker:
    def __init__(self, cluster: session.ClusterSession, state: store.Store) -> None:
        self.cluster = cluster
        self.state = state

    def take(self, label: str) -> str:
        created = tiers.create(self.cluster, self.state, label=label)
        if not created.record.known_good:
            problem = created.health.problems[0] if created.health.problems else "a check failed"
            raise driver.StepFailed(f"snapshot {created.record.id} is not known-good ({problem}): not going on")
        if missing := created.missing_required(self.cluster.cfg.snapshots):
            raise driver.StepFailed(
                f"snapshot {created.record.id} lacks a required tier (snapshots.require): {missing[0]}"
            )
        for tier, problem in created.failed.items():
            self.state.record_event(
                kind="snapshot-tier-failed",
                cluster=self.cluster.name,
                level=records.EventLevel.WARNING,
                message=f"snapshot {created.record.id}: {problem}",
                data={"snapshot": created.record.id, "tier": tier.value},
            )
        return created.record.id


def ports(
    cluster: session.ClusterSession, state: store.Store, options: Options, run_id: records.RunId | None = None
) -> Ports:
    writer = writes.Writer(cluster.api)
    gate = gates.ClusterGate(cluster, catalog_mod.load())
    policy = drain.DrainPolicy(
        timeout=options.drain_timeout
        if options.drain_timeout is not None
        else float(cluster.cfg.upgrade.drain_timeout),
        force=options.force_drain,
        delete_emptydir_data=options.delete_emptydir_data,
    )

    kubeadm = rollout.Rollout(cluster, writer, runs.task_recorder(state, cluster.name, run_id))
    return Ports(
        control_plane=kubeadm,
        kubelets=kubeadm,
        drainer=drain.Drainer(writer, policy, cluster.cancel),
        probe=gate,
        gate=gate,
        snapshotter=SnapshotTaker(cluster, state),
        etcd=kubeadm,
    )


def execute(
    cluster: session.ClusterSession,
    state: store.Store,
    prepared: Prepared,
    options: Options,
    *,
    lease: Lease,
    observe: Callable[[Event], None],
) -> records.RunRecord:
    steps = [s.as_dict() for s in prepared.plan.steps]
    run = runs.create(
        state, cluster.name, records.RunKind.UPGRADE, steps, options=options.as_dict(), plan_id=prepared.plan_id
    )
    adopt_cordons(state, run, prepared)
    return _drive(cluster, state, state.run(run.id), prepared.plan, options, lease=lease, observe=observe)


def resume(
    cluster: session.ClusterSession,
    state: store.Store,
    run_id: str,
    options: Options,
    *,
    lease: Lease,
    observe: Callable[[Event], None],
) -> records.RunRecord:
    found = state.run(run_id)
    if found.kind is records.RunKind.UPGRADE and found.plan_id is None:
        raise errors.Refused(f"run {found.id} has no plan to resume from")
    run = runs.reopen(state, run_id, cluster.name, records.RunKind.UPGRADE)
    assert run.plan_id is not None
    _, plan = load_plan(state, run.plan_id, cluster.name)
    return _drive(cluster, state, run, plan, options, lease=lease, observe=observe)


def _drive(
    cluster: session.ClusterSession,
    state: store.Store,
    run: records.RunRecord,
    plan: Plan,
    options: Options,
    *,
    lease: Lease,
    observe: Callable[[Event], None],
) -> records.RunRecord:
    wired = ports(cluster, state, options, run.id)
    steps_policy = upgrade.policy(options.window_end, options.pause_after, plan.steps)
    return runs.drive(
        cluster,
        state,
        run,
        gate=wired.gate,
        lease=lease,
        observe=observe,
        wait_timeout=options.wait_timeout,
        insecure=options.insecure,
        go=lambda engine: engine.run(run, upgrade.handlers(engine, wired, run, plan), steps_policy),
    )


def dry_run(cluster: session.ClusterSession, prepared: Prepared) -> list[dict[str, Any]]:
    """For every step: what would run, where, with which variables. Changes nothing."""
    out: list[dict[str, Any]] = []
    expected = expectations.each(prepared.plan.facts, prepared.plan.steps)
    for position, (step, after) in enumerate(zip(prepared.plan.steps, expected, strict=True)):
        entry: dict[str, Any] = {"step": position + 1, **step.as_dict(), "actions": []}
        actions: list[str] = entry["actions"]
        if step.kind is StepKind.SNAPSHOT:
            actions.append(f"snapshot etcd and the control-plane manifests into {cluster.cfg.snapshots.dir}")
        elif step.kind is StepKind.ETCD and step.version is not None:
            actions.append("one member at a time, the leader (as it is then) last, each only when every member answers")
            setup = prepared.plan.facts.etcd_setup
            releases = redaction.url(cluster.cfg.etcd.releases or rendering.ETCD_RELEASES)
            for node in step.nodes:
                change = (
                    f"upgrade-etcd-service.yml etcd_version={step.version} -> etcd {step.version} from {releases} "
                    "(checked against its SHA256SUMS) in etcd.service's ExecStart binary, systemctl restart etcd"
                    if setup.external
                    else f"upgrade-etcd.yml etcd_version={step.version} -> etcd.yaml image tag {step.version}"
                )
                actions.append(
                    f"{node}: {change}; wait for member {setup.member_of(node)} at {step.version} with a leader and "
                    "its revision advancing, every apiserver ready; else put its old version back and stop"
                )
        elif step.version is not None:
            variables = rendering.package_vars(cluster.cfg.packages, step.version)
            if step.kind in (StepKind.CONTROL_PLANE, StepKind.EMULATION_COMMIT):
                emulation = step.emulated if step.kind is StepKind.CONTROL_PLANE else None
                actions.append(
                    f"kubeadm ClusterConfiguration: --emulated-version={emulation}"
                    if emulation
                    else "kubeadm ClusterConfiguration: no --emulated-version"
                )
                patches = cluster.cfg.upgrade.kubeadm_patches
                with_patches = f" --patches {patches}" if patches else ""
                for index, node in enumerate(step.nodes):
                    command = f"kubeadm upgrade apply v{step.version} --yes" if index == 0 else "kubeadm upgrade node"
                    actions.append(f"{node}: upgrade-control-plane.yml {variables} -> {command}{with_patches}")
            else:
                for node in step.nodes:
                    actions.append(
                        f"{node}: cordon, drain (PodDisruptionBudgets honoured), upgrade-node.yml {variables}, "
                        f"wait Ready at v{step.version}, uncordon"
                    )
        entry["gate"] = {
            "apiservers": {n: f"{v} emulating {e}" for n, (v, e) in sorted(after.apiservers.items())},
            "kubelets": {n: str(v) for n, v in sorted(after.kubelets.items())},
        }
        out.append(entry)
    return out
