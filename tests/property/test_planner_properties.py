"""Property tests: random clusters, every plan replayed step by step against an independent oracle.

The oracle below is written from the skew policy's text, not from upgrader.core.rules, so a shared bug
cannot hide. For each random cluster (minors 1.25 to 1.36, random kubelet spreads, mid-hop and
two-step starting states) the plan must keep the policy after every step, move the control plane
one minor at a time with a snapshot before each control-plane and commit step, end with everything
at the target, and drain each node no more often than a brute-force search says is possible.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.unit.plan_helpers import CATALOG, make_facts, make_plan
from upgrader.core.planner.model import Plan, StepKind
from upgrader.core.versions import Version

# -- the oracle: the version-skew policy as written -----------------------------------------------


def kubelet_floor(newest_minor: int) -> int:
    # The skew policy: N-3 from 1.28, N-2 before. kubeadm's `upgrade apply` is stricter through 1.28: it
    # refuses kubelets more than one minor older than the new version (N-3 from kubeadm 1.29).
    policy = 3 if newest_minor >= 28 else 2
    kubeadm = 3 if newest_minor >= 29 else 1
    return newest_minor - min(policy, kubeadm)


def emulation_ok(binary_minor: int, emulated_minor: int) -> bool:
    if emulated_minor == binary_minor:
        return True
    return binary_minor >= 32 and max(31, binary_minor - 3) <= emulated_minor < binary_minor


@dataclass
class Replay:
    binaries: dict[str, Version]
    emulated: dict[str, int]
    kubelets: dict[str, Version]

    def bounds(self) -> tuple[int, int]:
        newest = max(b.minor for b in self.binaries.values())
        ceiling = min(min(b.minor for b in self.binaries.values()), min(self.emulated.values()))
        return kubelet_floor(newest), ceiling

    def assert_policy(self, where: str) -> None:
        minors = [b.minor for b in self.binaries.values()]
        assert max(minors) - min(minors) <= 1, f"{where}: apiservers more than one minor apart"
        for name, binary in self.binaries.items():
            assert emulation_ok(binary.minor, self.emulated[name]), f"{where}: {name} emulation out of range"
        floor, ceiling = self.bounds()
        for name, kubelet in self.kubelets.items():
            assert floor <= kubelet.minor <= ceiling, f"{where}: kubelet {name} {kubelet} outside {floor}..{ceiling}"


def replay(plan: Plan, start: Replay) -> list[tuple[int, int]]:
    """Applies each step, checks the policy after each, and returns the (floor, ceiling) of each
    control-plane state in order (the brute-force search's stages)."""
    state = start
    stages = [state.bounds()]
    state.assert_policy("start")
    latest = {m.minor: e.latest for m, e in CATALOG.minors.items()}
    for i, step in enumerate(plan.steps):
        where = f"step {i + 1} ({step.kind})"
        if step.kind in (StepKind.CONTROL_PLANE, StepKind.EMULATION_COMMIT):
            assert i > 0 and plan.steps[i - 1].kind is StepKind.SNAPSHOT, f"{where}: no snapshot before it"
        if step.kind is StepKind.CONTROL_PLANE:
            assert step.version is not None
            assert step.version in (latest[step.version.minor], plan.target), f"{where}: not the latest patch"
            for name in step.nodes:
                assert 0 <= step.version.minor - state.binaries[name].minor <= 1, f"{where}: skipped a minor"
                assert step.version > state.binaries[name]
                state.binaries[name] = step.version
                state.emulated[name] = step.emulated.minor if step.emulated else step.version.minor
        elif step.kind is StepKind.EMULATION_COMMIT:
            assert step.emulated is not None
            for name in step.nodes:
                assert state.binaries[name].minor == step.emulated.minor
                state.emulated[name] = step.emulated.minor
        elif step.kind is StepKind.NODES:
            assert step.version is not None
            for name in step.nodes:
                assert step.version > state.kubelets[name], f"{where}: not an upgrade"
                state.kubelets[name] = step.version
        state.assert_policy(where)
        if step.kind is not StepKind.NODES and step.kind is not StepKind.SNAPSHOT:
            stages.append(state.bounds())
    assert set(state.binaries.values()) == {plan.target}
    assert set(state.emulated.values()) == {plan.target.minor}
    assert set(state.kubelets.values()) == {plan.target}
    return stages


def fewest_drains(start: Version, target: Version, stages: list[tuple[int, int]]) -> int:
    """Brute force: the fewest kubelet upgrades that keep the node within (floor, ceiling) at every
    stage and end at ``target``, choosing freely when to upgrade and to which release."""
    releases = sorted({start, target} | {e.latest for e in CATALOG.minors.values()})
    queue: list[tuple[int, int, Version]] = [(0, 0, start)]
    best: dict[tuple[int, Version], int] = {}
    while queue:
        cost, stage, kubelet = heapq.heappop(queue)
        if best.get((stage, kubelet), 1 << 30) <= cost:
            continue
        best[(stage, kubelet)] = cost
        if stage == len(stages) - 1 and kubelet == target:
            return cost
        floor, ceiling = stages[stage]
        for release in releases:  # upgrade now, in this stage
            if release > kubelet and floor <= release.minor <= ceiling and release <= target:
                heapq.heappush(queue, (cost + 1, stage, release))
        if stage + 1 < len(stages):  # or stay while the control plane takes its next step
            next_floor, next_ceiling = stages[stage + 1]
            if next_floor <= kubelet.minor <= next_ceiling:
                heapq.heappush(queue, (cost, stage + 1, kubelet))
    raise AssertionError("no schedule reaches the target")


# -- random clusters ----------------------------------------------------------------------------


def release(draw: st.DrawFn, minor: int, *, at_most: Version | None = None) -> Version:
    entry = CATALOG.minors.get(Version(1, minor, 0).minor_version)
    patches = [p for p in entry.patches] if entry else [Version(1, minor, p) for p in range(0, 10)]
    if at_most is not None:
        patches = [p for p in patches if p <= at_most] or [Version(1, minor, 0)]
    return draw(st.sampled_from(patches))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple:  # type: ignore[type-arg]
    newest = draw(st.integers(25, 36))
    target_minor = draw(st.integers(newest, min(newest + 6, 36)))
    count = draw(st.integers(1, 3))
    modes = ["uniform"] + (["mid-hop"] if count > 1 and newest > 25 else [])
    if newest >= 32:
        modes += ["window"] + (["mid-window"] if count > 1 else [])
    mode = draw(st.sampled_from(modes))
    event(f"start: {mode}")
    control_plane = []
    for i in range(count):
        lagging = mode in ("mid-hop", "mid-window") and i > 0 and draw(st.booleans())
        if (
            mode in ("mid-hop", "mid-window")
            and i == count - 1
            and not any(b.minor < newest for _, b, _ in control_plane)
        ):
            lagging = True  # at least one node behind, or it is not mid-hop
        minor = newest - 1 if lagging else newest
        emulated = newest - 1 if mode in ("window", "mid-window") and not lagging else None
        control_plane.append((f"cp-{i + 1}", release(draw, minor), emulated))
    oldest = min(b.minor for _, b, _ in control_plane)
    ceiling = (
        min(oldest, *(e for _, _, e in control_plane if e is not None))
        if any(e for _, _, e in control_plane)
        else oldest
    )
    floor = kubelet_floor(newest)
    target = CATALOG.entry(Version(1, target_minor, 0).minor_version).latest
    cap = min(min(b for _, b, _ in control_plane), target)

    def kubelet() -> Version:
        minor = draw(st.integers(max(floor, 23), ceiling))
        return release(draw, minor, at_most=cap if minor == cap.minor else None)

    cp_rows = [(name, str(binary), f"1.{e}" if e else None, str(kubelet())) for name, binary, e in control_plane]
    workers = [(f"w-{i}", str(kubelet())) for i in range(draw(st.integers(0, 4)))]
    two_step = draw(st.booleans())
    max_unavailable = draw(st.sampled_from(["1", "2", "50%", "100%"]))
    return cp_rows, workers, str(target), two_step, max_unavailable


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_plan_keeps_the_policy_reaches_the_target_and_drains_least(scenario: tuple) -> None:  # type: ignore[type-arg]
    cp_rows, workers, target, two_step, max_unavailable = scenario
    facts = make_facts(cp_rows, workers)
    plan = make_plan(facts, target, two_step=two_step, max_unavailable=max_unavailable)
    start = Replay(
        binaries={m.name: m.apiserver for m in facts.control_plane},
        emulated={m.name: m.emulated.minor for m in facts.control_plane},
        kubelets={n.name: n.kubelet for n in facts.nodes},
    )
    stages = replay(plan, start)
    for node in facts.nodes:
        assert plan.summary.drains_per_node[node.name] == fewest_drains(node.kubelet, plan.target, stages), node.name
    assert not [b for b in plan.blockers if b.code.startswith(("SKEW", "KUBELET", "EMULATION"))]
