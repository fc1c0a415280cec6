"""Computes an upgrade plan: the control plane one minor at a time, nodes only when they must move.

The rules, in the order the planner applies them:

- Refuse (``errors.Refused``) a target the catalog does not know, one older than the control plane
  or than a kubelet (going back is rollback's job), and any path through a minor the catalog lacks.
- The control plane moves one minor at a time, each hop to the latest known patch of that minor
  (the target's own patch on the last hop), control-plane nodes one after another. A control plane
  caught mid-hop finishes that hop first, in the emulation mode it was caught in; one caught in a
  two-step window commits before it moves on.
- A hop is two-step where the new binary can emulate the previous minor (and ``two_step`` is on):
  a ``control-plane`` step with ``emulated`` = the previous minor, then ``emulation-commit``.
- A ``snapshot`` precedes every ``control-plane`` and ``emulation-commit`` step.
- A kubelet is upgraded only when the next control-plane state would leave it outside the skew
  policy, and then straight to the newest version allowed at that moment; at the end every node
  goes to the target. Upgrading late and as far as possible needs the fewest drains per node: a
  later forced upgrade can only be pushed further back by a higher version, and no version above
  the one chosen is allowed at that moment (tests check this against a brute-force search).
- Kubelet skew is counted from apiserver binary versions, not the wider range emulation allows.
- etcd goes where kubeadm takes it at each hop (``checks.etcd_route``); where a hop would take it out
  of its minor from below that minor's minimum patch, an ``etcd`` step to that patch (with a snapshot
  of its own) comes before the hop's snapshot.
"""

from __future__ import annotations

import dataclasses

from upgrader import errors
from upgrader.core.planner import batching
from upgrader.core.planner.model import Plan, PlanOptions, Step, StepKind, Summary
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import checks, skew
from upgrader.core.rules import facts as facts_mod
from upgrader.core.rules.findings import Code, Finding, Severity
from upgrader.core.versions import Minor, Version


class _Cluster:
    """The versions the planner moves forward as it emits steps (internal, mutable)."""

    def __init__(self, facts: facts_mod.Facts) -> None:
        self.control_plane = [m.name for m in facts.control_plane]
        self.binaries = {m.name: m.apiserver for m in facts.control_plane}
        self.emulated = {m.name: m.emulated for m in facts.control_plane}
        self.kubelets = {n.name: n.kubelet for n in facts.nodes}
        self.workers = [n.name for n in facts.nodes if not n.control_plane]

    def state(self) -> skew.ClusterState:
        return skew.ClusterState(dict(self.binaries), dict(self.emulated), dict(self.kubelets))


class _Planner:
    def __init__(
        self, facts: facts_mod.Facts, target: Version, options: PlanOptions, catalog: catalog_mod.Catalog
    ) -> None:
        self.facts = facts
        self.target = target
        self.options = options
        self.catalog = catalog
        self.cluster = _Cluster(facts)
        self.steps: list[Step] = []
        self.control_plane_minors: list[Minor] = []  # the minor of each control-plane step, for etcd
        self.initial = skew.violations(self.cluster.state(), catalog)  # the start's own skew findings
        self.check_every_state = not self.initial

    # -- emitting steps -------------------------------------------------------------------------

    def _verify(self) -> None:
        """Every state the plan passes through must satisfy the skew policy (if the start did)."""
        if self.check_every_state:
            broken = skew.violations(self.cluster.state(), self.catalog)
            if broken:
                raise AssertionError(f"planner bug: a planned state breaks the skew policy: {broken[0].message}")

    def _snapshot(self, reason: str) -> None:
        self.steps.append(Step(StepKind.SNAPSHOT, reason=reason))

    def _upgrade_kubelets(self, names: list[str], version: Version, reason: str) -> None:
        moving = set(names)
        control_plane = [n for n in self.cluster.control_plane if n in moving]
        workers = [n for n in self.cluster.workers if n in moving]
        for batch, (index, total) in batching.batches(control_plane, workers, self.options.max_unavailable):
            self.steps.append(Step(StepKind.NODES, version=version, nodes=batch, reason=reason, batch=(index, total)))
        for name in names:
            self.cluster.kubelets[name] = version
        self._verify()

    def _kubelet_ceiling(self) -> Version:
        """The newest kubelet release allowed now: the oldest apiserver binary, capped by emulation."""
        ceiling = self.cluster.state().kubelet_ceiling()
        oldest = min(self.cluster.binaries.values())
        return oldest if oldest.minor_version == ceiling else self.catalog.entry(ceiling).latest

    def _make_room_for(self, newest: Minor) -> None:
        """Upgrades the kubelets that an apiserver at ``newest`` would leave too far behind."""
        floor = skew.kubelet_floor(newest, self.catalog)
        ceiling = self._kubelet_ceiling()
        if ceiling.minor_version < floor:
            return  # only reachable from a start state that is already a blocker
        forced = [n for n, v in self.cluster.kubelets.items() if v.minor_version < floor]
        if forced:
            self._upgrade_kubelets(
                forced, ceiling, f"kubelets older than {floor} must move before an apiserver reaches {newest}"
            )

    def _commit_windows_below(self, minor: Minor | None) -> None:
        """Commits every two-step window whose binaries are below ``minor`` (all, if None)."""
        pending = [
            n
            for n in self.cluster.control_plane
            if self.cluster.emulated[n] < self.cluster.binaries[n].minor_version
            and (minor is None or self.cluster.binaries[n].minor_version < minor)
        ]
        if not pending:
            return
        binary = min(self.cluster.binaries[n] for n in pending)
        new = binary.minor_version
        self._snapshot(f"before committing emulated version {new}: the point of no return for this hop")
        self.steps.append(
            Step(
                StepKind.EMULATION_COMMIT,
                version=binary,
                nodes=tuple(pending),
                emulated=new,
                reason=f"control plane starts to behave as {new}; rolling back needs a snapshot restore after this",
            )
        )
        for name in pending:
            self.cluster.emulated[name] = self.cluster.binaries[name].minor_version
        self._verify()

    def _emulation_for(self, minor: Minor, members: list[str]) -> Minor | None:
        """The emulated version for a step to ``minor``: the window it was caught in, else two-step if possible."""
        at_minor = [n for n in self.cluster.control_plane if self.cluster.binaries[n].minor_version == minor]
        inherited = [self.cluster.emulated[n] for n in at_minor if self.cluster.emulated[n] < minor]
        if inherited:
            return min(inherited)  # continue the two-step window this hop was caught in
        if at_minor:
            return None  # a patch step, or a one-step hop caught half-way: stay one-step
        previous = minor - 1
        if self.options.two_step and self.catalog.entry(minor).can_emulate(previous):
            return previous
        return None

    def _hop(self, minor: Minor) -> None:
        version = self.target if minor == self.target.minor_version else self.catalog.entry(minor).latest
        members = [n for n in self.cluster.control_plane if self.cluster.binaries[n] < version]
        if members:
            self._commit_windows_below(minor)
            emulated = self._emulation_for(minor, members)
            self._make_room_for(max(*self.cluster.binaries.values(), version).minor_version)
            start = min(self.cluster.binaries[n] for n in members)
            self._snapshot(f"before the control plane moves from {start} to {version}")
            self.steps.append(
                Step(
                    StepKind.CONTROL_PLANE,
                    version=version,
                    nodes=tuple(members),
                    emulated=emulated,
                    reason="rollback-safe: new binaries, previous behaviour and storage" if emulated else "",
                )
            )
            self.control_plane_minors.append(minor)
            for name in members:
                self.cluster.binaries[name] = version
                self.cluster.emulated[name] = emulated if emulated is not None else minor
            self._verify()
        self._commit_windows_below(minor + 1)

    def run(self) -> None:
        start = min(self.cluster.binaries.values()).minor_version
        goal = self.target.minor_version
        hops = [goal] if goal == start else [start + i for i in range(1, start.distance(goal) + 1)]
        for minor in hops:
            self._hop(minor)
        self._commit_windows_below(None)
        behind = [n for n, v in self.cluster.kubelets.items() if v != self.target]
        if behind:
            self._upgrade_kubelets(behind, self.target, f"every node to the target {self.target}")


def _refuse_going_back(facts: facts_mod.Facts, target: Version) -> None:
    for member in facts.control_plane:
        if member.apiserver > target:
            raise errors.Refused(
                f"target {target} is older than the control plane ({member.name} runs {member.apiserver}): "
                "going back is a rollback (`upgrader rollback`), not an upgrade"
            )
    for node in facts.nodes:
        if node.kubelet > target:
            raise errors.Refused(
                f"target {target} is older than the kubelet on {node.name} ({node.kubelet}): "
                "kubelets are never downgraded by an upgrade"
            )


def _summary(facts: facts_mod.Facts, target: Version, steps: list[Step]) -> Summary:
    per_node = {n.name: 0 for n in facts.nodes}
    for step in steps:
        if step.kind is StepKind.NODES:
            for name in step.nodes:
                per_node[name] += 1
    every_minor = 0
    for node in facts.nodes:
        minors = node.kubelet.minor_version.distance(target.minor_version)
        every_minor += minors if minors > 0 else int(node.kubelet != target)
    binaries = sorted({m.apiserver for m in facts.control_plane})
    start = str(binaries[0]) if len(binaries) == 1 else f"{binaries[0]}..{binaries[-1]}"
    return Summary(
        start=start,
        drains=sum(per_node.values()),
        drains_every_minor=every_minor,
        drains_per_node=per_node,
        control_plane_steps=sum(1 for s in steps if s.kind is StepKind.CONTROL_PLANE),
        snapshots=sum(1 for s in steps if s.kind is StepKind.SNAPSHOT),
    )


def plan(
    facts: facts_mod.Facts,
    target: Version | Minor,
    options: PlanOptions,
    catalog: catalog_mod.Catalog,
) -> Plan:
    """The upgrade plan from ``facts`` to ``target``; refuses what it must, reports what blocks it."""
    resolved = catalog.resolve(target)
    _refuse_going_back(facts, resolved)
    oldest_emulated = min(m.emulated for m in facts.control_plane)
    for i in range(oldest_emulated.distance(resolved.minor_version) + 1):
        catalog.entry(oldest_emulated + i)  # every minor on the way must be known
    planner = _Planner(facts, resolved, options, catalog)
    planner.run()

    route = checks.etcd_route(facts.etcd, planner.control_plane_minors, catalog, facts.etcd_setup)
    setup = facts.etcd_setup
    members = [host for host, _ in setup.hosts] if setup.external else [m.name for m in facts.control_plane]
    steps = _with_etcd(planner.steps, route, members, planner.control_plane_minors)
    target_minor = resolved.minor_version
    found: list[Finding] = [
        *planner.initial,
        *checks.removed_apis(facts, after=oldest_emulated, target=target_minor, catalog=catalog),
        *checks.cgroup_v1(facts, target=target_minor, catalog=catalog),
        *checks.container_runtime(facts, target=target_minor, catalog=catalog),
        *route.findings,
    ]
    entry = catalog.entry(target_minor)
    if not entry.patches_complete and target == target_minor:
        found.append(
            Finding(
                Code.CATALOG_PATCHES_INCOMPLETE,
                Severity.WARNING,
                f"the catalog knows {target_minor} patches up to {entry.latest}; newer ones may exist",
                "run `upgrader catalog update` to read the newest patches from the release mirror, or pass "
                "an exact --to release the catalog lists",
            )
        )
    return Plan(
        target=resolved,
        catalog_version=catalog.version,
        options=options,
        steps=tuple(steps),
        blockers=tuple(f for f in found if f.severity is Severity.BLOCKER),
        warnings=tuple(f for f in found if f.severity is Severity.WARNING),
        summary=_summary(facts, resolved, steps),
        facts=facts,
    )


def _etcd_reason(patch: Version, hop: Minor, *, last: bool, external: bool) -> str:
    if external and last:
        return (
            f"external etcd at {patch} before the hop to {hop}: what Kubespray runs on the etcd hosts for {hop} "
            "(kubeadm never moves external etcd)"
        )
    return (
        f"etcd leaves a minor only from its minimum patch, one minor at a time: {patch} before the hop to {hop} "
        "(etcd's upgrade guides; kubeadm does not check it)"
    )


def _with_etcd(steps: list[Step], route: checks.EtcdRoute, members: list[str], hops: list[Minor]) -> list[Step]:
    """The steps with etcd's version (and who moves it) on each control-plane step, and an etcd step,
    with a snapshot of its own, before each hop that needs etcd at a newer patch first."""
    out: list[Step] = []
    hop = 0
    for index, step in enumerate(steps):
        hop_next = step.kind is StepKind.SNAPSHOT and index + 1 < len(steps)
        if hop_next and steps[index + 1].kind is StepKind.CONTROL_PLANE:
            moves = route.before.get(hop, ())
            for move, patch in enumerate(moves):
                external = route.mover is checks.EtcdMover.EXTERNAL
                reason = _etcd_reason(patch, hops[hop], last=move == len(moves) - 1, external=external)
                out.append(Step(StepKind.SNAPSHOT, reason=f"before etcd moves to {patch}"))
                out.append(Step(StepKind.ETCD, version=patch, nodes=tuple(members), reason=reason))
        if step.kind is StepKind.CONTROL_PLANE:
            out.append(
                dataclasses.replace(
                    step,
                    etcd=route.after[hop],  # one entry per control-plane step: the hops are theirs
                    etcd_mover="" if route.mover is checks.EtcdMover.KUBEADM else route.mover.value,
                )
            )
            hop += 1
        else:
            out.append(step)
    return out
