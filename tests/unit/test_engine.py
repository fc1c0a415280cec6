"""The step engine against a fake cluster of our own ports and a real SQLite journal: order, the gate,
resume after a failure or an interruption from the real state, windows, pauses, and cordons."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.plan_helpers import make_facts, make_plan
from upgrader import errors
from upgrader.core.planner import model
from upgrader.core.versions import Minor, Version
from upgrader.engine import driver, expectations, ports, upgrade
from upgrader.engine.ports import Expected, Ports
from upgrader.state import records, store


@dataclass
class FakeCluster:
    """Implements every port over a dict of versions. ``fail`` maps a call and its occurrence
    (("kubelet w-1", 2): the second kubelet call for w-1) to the exception that call raises."""

    apiservers: dict[str, tuple[Version, Minor]]
    kubelets: dict[str, Version]
    cordoned: set[str] = field(default_factory=set)
    emulation: Minor | None = None
    calls: list[str] = field(default_factory=list)
    drains: Counter[str] = field(default_factory=Counter)
    fail: dict[tuple[str, int], BaseException] = field(default_factory=dict)
    snapshots: int = 0
    broken_gate: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    # etcd: each member's version, the leader, members that do not answer, the version at which a member
    # does not come back, and the revision (every look writes one)
    etcd: dict[str, Version] = field(default_factory=dict)
    etcd_leader: str | None = None
    etcd_down: set[str] = field(default_factory=set)
    etcd_broken: dict[str, Version] = field(default_factory=dict)
    revision: int = 100

    def _call(self, name: str) -> None:
        with self.lock:
            self.calls.append(name)
            failure = self.fail.pop((name, self.calls.count(name)), None)
        if failure is not None:
            raise failure

    # Executor
    def set_emulation(self, minor: Minor | None) -> None:
        self.emulation = minor

    def control_plane(self, node: str, version: Version, *, first: bool) -> None:
        self._call(f"control-plane {node}")
        self.apiservers[node] = (version, self.emulation or version.minor_version)

    def kubelet(self, nodes: tuple[str, ...], version: Version) -> None:
        for node in nodes:
            self._call(f"kubelet {node}")
            self.kubelets[node] = version

    def etcd_member(self, node: str, version: Version) -> None:
        self._call(f"etcd {node} {version}")
        self.etcd[node] = version
        if self.etcd_broken.get(node) == version:
            self.etcd_down.add(node)
        else:
            self.etcd_down.discard(node)

    def etcd_service(self, host: str, version: Version, *, restart: bool) -> None:
        """An external member: the fake's etcd dict is keyed by member name, etcdN on host etcd-N."""
        self._call(f"service {host} {version}" + (" restart" if restart else ""))
        member = host.replace("-", "")
        self.etcd[member] = version
        self.etcd_down.discard(member)

    def etcd_state(self, node: str) -> ports.EtcdMember | None:
        self.revision += 1  # the apiservers keep writing
        if node in self.etcd_down:
            return None
        return ports.EtcdMember(self.etcd[node], self.etcd_leader, self.revision)

    # Drainer
    def cordon(self, node: str) -> None:
        with self.lock:
            self.cordoned.add(node)
        self._call(f"cordon {node}")  # a failure here comes after the cordon took effect

    def drain(self, node: str) -> int:
        self._call(f"drain {node}")
        with self.lock:
            self.drains[node] += 1
        return 2

    def uncordon(self, node: str) -> None:
        with self.lock:
            self.cordoned.discard(node)

    def is_cordoned(self, node: str) -> bool:
        return node in self.cordoned

    # Probe
    def apiserver(self, node: str) -> tuple[Version, Minor] | None:
        return self.apiservers.get(node)

    def kubelet_state(self, node: str) -> tuple[Version | None, bool]:
        return self.kubelets.get(node), True

    # Gate
    def check(self, expected: Expected) -> list[str]:
        problems = [
            f"apiserver on {n}: {self.apiservers[n]} != {w}"
            for n, w in expected.apiservers.items()
            if self.apiservers[n] != w
        ]
        problems += [f"kubelet on {n}" for n, w in expected.kubelets.items() if self.kubelets[n] != w]
        return ([self.broken_gate] if self.broken_gate else []) + problems

    # Snapshotter
    def take(self, label: str) -> str:
        self._call("snapshot")
        self.snapshots += 1
        return f"snap-{self.snapshots}"


def ports_of(fake: FakeCluster) -> Ports:
    class Probe:
        apiserver = staticmethod(fake.apiserver)
        kubelet = staticmethod(fake.kubelet_state)
        etcd = staticmethod(fake.etcd_state)

    class Drain:
        cordon = staticmethod(fake.cordon)
        drain = staticmethod(fake.drain)
        uncordon = staticmethod(fake.uncordon)
        cordoned = staticmethod(fake.is_cordoned)

    return Ports(
        control_plane=fake, kubelets=fake, drainer=Drain(), probe=Probe(), gate=fake, snapshotter=fake, etcd=fake
    )


class NoLease:
    def confirm(self) -> bool:
        return True

    def check(self) -> None:
        pass


FACTS = make_facts(
    [("cp-1", "1.30.14", None, "1.30.14"), ("cp-2", "1.30.14", None, "1.30.14")],
    [("w-1", "1.29.15"), ("w-2", "1.28.15"), ("w-3", "1.30.14")],
)


@pytest.fixture
def journal(db_url: str) -> Iterator[store.Store]:
    with store.Store.open(db_url) as opened:
        yield opened


@pytest.fixture
def plan() -> model.Plan:
    return make_plan(FACTS, "1.33", max_unavailable="2")


def cluster_from(plan: model.Plan) -> FakeCluster:
    start = expectations.initial(plan.facts)
    return FakeCluster(apiservers=dict(start.apiservers), kubelets=dict(start.kubelets))


def new_run(journal: store.Store, plan: model.Plan, run_id: str = "run-0001") -> records.RunRecord:
    return journal.create_run(
        run_id=records.RunId(run_id),
        cluster="prod-eu1",
        plan_id=None,
        kind=records.RunKind.UPGRADE,
        steps=[s.as_dict() for s in plan.steps],
        host="test",
        pid=1,
        options={},
    )


class BrokenLease(NoLease):
    """A lease that another command broke while a step ran: the database no longer has it."""

    def confirm(self) -> bool:
        return False


def drive(
    journal: store.Store,
    plan: model.Plan,
    fake: FakeCluster,
    run: records.RunRecord,
    lease: NoLease | None = None,
    *,
    window_end: datetime | None = None,
    pause_after: ports.PauseAfter | None = None,
) -> tuple[driver.Outcome, list[ports.Event]]:
    events: list[ports.Event] = []
    ports = ports_of(fake)
    engine = driver.Driver(
        journal,
        gate=ports.gate,
        lease=lease or NoLease(),
        settings=driver.Settings(wait_timeout=2, poll=0.01),
        estimate=lambda record: 60.0,
        observe=events.append,
        cancel=threading.Event(),
    )
    current = journal.run(run.id)
    steps_policy = upgrade.policy(window_end, pause_after, plan.steps)
    return engine.run(current, upgrade.handlers(engine, ports, current, plan), steps_policy), events


def test_a_plan_runs_to_its_target_with_a_snapshot_and_gate_per_step(journal: store.Store, plan: model.Plan) -> None:
    fake = cluster_from(plan)
    outcome, events = drive(journal, plan, fake, new_run(journal, plan))
    assert outcome is driver.Outcome.SUCCEEDED
    target = plan.target
    assert set(fake.apiservers.values()) == {(target, target.minor_version)}
    assert set(fake.kubelets.values()) == {target}
    assert fake.snapshots == sum(1 for s in plan.steps if s.kind is model.StepKind.SNAPSHOT)
    assert dict(fake.drains) == plan.summary.drains_per_node  # each node drained as often as planned
    assert not fake.cordoned
    done = journal.run("run-0001")
    assert done.status is records.RunStatus.SUCCEEDED
    assert {s.status for s in done.steps} == {records.StepStatus.SUCCEEDED} and {s.attempts for s in done.steps} == {1}
    assert [e.kind for e in events].count("step-succeeded") == len(plan.steps)


def test_a_failed_step_stops_the_run_and_a_resume_finishes_without_repeating_done_nodes(
    journal: store.Store, plan: model.Plan
) -> None:
    fake = cluster_from(plan)
    failing = next(i for i, s in enumerate(plan.steps) if s.kind is model.StepKind.NODES and len(s.nodes) == 2)
    victim = plan.steps[failing].nodes[1]
    occurrence = 1 + sum(1 for s in plan.steps[:failing] if s.kind is model.StepKind.NODES and victim in s.nodes)
    fake.fail[(f"kubelet {victim}", occurrence)] = errors.ExecutorError(f"{victim}: apt could not reach the mirror")
    run = new_run(journal, plan)
    with pytest.raises(errors.ExecutorError, match="could not reach"):
        drive(journal, plan, fake, run)
    stopped = journal.run(run.id)
    assert stopped.status is records.RunStatus.FAILED and stopped.next_step() is not None
    assert stopped.next_step().position == failing  # type: ignore[union-attr]
    assert stopped.steps[failing].status is records.StepStatus.FAILED
    assert victim in fake.cordoned  # left cordoned, and the journal says why
    assert stopped.steps[failing].detail[f"cordoned:{victim}"] == "by upgrader, to drain it"
    drains_before = Counter(fake.drains)
    outcome, _ = drive(journal, plan, fake, stopped)
    assert outcome is driver.Outcome.SUCCEEDED
    partner = plan.steps[failing].nodes[0]
    assert fake.drains[partner] == drains_before[partner]  # the node that finished is not drained again
    assert journal.run(run.id).steps[failing].attempts == 2
    assert not fake.cordoned


def test_a_step_that_fails_after_the_lock_was_broken_stops_with_lock_lost_not_its_symptom(
    journal: store.Store, plan: model.Plan
) -> None:
    """Issue 17: a rollback took the broken lock and stopped the control plane; the apply under it died on
    an SSL error (exit 1) instead of saying it had lost the lock (exit 5)."""
    fake = cluster_from(plan)
    fake.fail[("control-plane cp-2", 1)] = errors.ExecutorError("cp-2: SSL: UNEXPECTED_EOF_WHILE_READING")
    run = new_run(journal, plan)
    with pytest.raises(errors.LockLost) as lost:
        drive(journal, plan, fake, run, lease=BrokenLease())
    assert lost.value.exit_code == errors.ExitCode.NEEDS_HUMAN
    assert "the lock on this cluster was lost" in lost.value.message and "SSL" in lost.value.message
    stopped = journal.run(run.id)
    failed = next(s for s in stopped.steps if s.status is not records.StepStatus.SUCCEEDED)
    assert failed.status is records.StepStatus.INTERRUPTED
    assert stopped.status is records.RunStatus.RUNNING  # left to the new holder, which may mark it rolled back


def test_an_interruption_is_journaled_and_resumable(journal: store.Store, plan: model.Plan) -> None:
    fake = cluster_from(plan)
    second_cp = next(i for i, s in enumerate(plan.steps) if s.kind is model.StepKind.CONTROL_PLANE)
    fake.fail[("control-plane cp-2", 1)] = KeyboardInterrupt("SIGTERM")
    run = new_run(journal, plan)
    with pytest.raises(KeyboardInterrupt):
        drive(journal, plan, fake, run)
    stopped = journal.run(run.id)
    assert stopped.status is records.RunStatus.INTERRUPTED
    assert stopped.steps[second_cp].status is records.StepStatus.INTERRUPTED
    assert stopped.steps[second_cp].detail == {"node:cp-1": "upgraded"}
    cp1_calls = fake.calls.count("control-plane cp-1")
    assert drive(journal, plan, fake, stopped)[0] is driver.Outcome.SUCCEEDED
    # cp-1 already served the hop's version: the resumed step did not run kubeadm on it again for that hop
    hops = sum(1 for s in plan.steps if s.kind in (model.StepKind.CONTROL_PLANE, model.StepKind.EMULATION_COMMIT))
    assert fake.calls.count("control-plane cp-1") == hops and cp1_calls == 1


def test_a_window_too_short_pauses_before_a_step_and_resume_goes_on(journal: store.Store, plan: model.Plan) -> None:
    fake = cluster_from(plan)
    run = new_run(journal, plan)
    soon = datetime.now(UTC) + timedelta(seconds=30)  # every step is estimated at 60 s
    outcome, _events = drive(journal, plan, fake, run, window_end=soon)
    assert outcome is driver.Outcome.PAUSED
    paused = journal.run(run.id)
    assert paused.status is records.RunStatus.PAUSED and "the window has" in (paused.stopped_reason or "")
    assert all(s.status is records.StepStatus.PENDING for s in paused.steps)  # nothing was started
    assert drive(journal, plan, fake, paused)[0] is driver.Outcome.SUCCEEDED


def test_pause_after_emulation_stops_inside_the_rollback_safe_window(journal: store.Store, plan: model.Plan) -> None:
    fake = cluster_from(plan)
    run = new_run(journal, plan)
    outcome, _ = drive(journal, plan, fake, run, pause_after=ports.PauseAfter.EMULATION)
    assert outcome is driver.Outcome.PAUSED
    paused = journal.run(run.id)
    last = max(s.position for s in paused.steps if s.status is records.StepStatus.SUCCEEDED)
    assert plan.steps[last].kind is model.StepKind.CONTROL_PLANE and plan.steps[last].emulated is not None
    versions = {v for v, _ in fake.apiservers.values()}
    emulated = {e for _, e in fake.apiservers.values()}
    assert all(e < v.minor_version for v, e in fake.apiservers.values()), (versions, emulated)


def test_a_failing_gate_names_the_check_and_fails_the_step(journal: store.Store, plan: model.Plan) -> None:
    fake = cluster_from(plan)
    fake.broken_gate = "etcd has no leader (no quorum)"
    run = new_run(journal, plan)
    with pytest.raises(driver.GateFailed, match=r"gate after step 1: etcd has no leader"):
        drive(journal, plan, fake, run)
    assert journal.run(run.id).steps[0].status is records.StepStatus.FAILED


def test_a_run_killed_between_its_journal_and_the_cordon_still_uncordons_on_resume(
    journal: store.Store,
) -> None:
    facts = make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.30.14")])
    plan = make_plan(facts, "1.31.13")
    fake = cluster_from(plan)
    step = next(i for i, s in enumerate(plan.steps) if s.kind is model.StepKind.NODES and "w-1" in s.nodes)
    occurrence = 1 + sum(1 for s in plan.steps[:step] if s.kind is model.StepKind.NODES and "w-1" in s.nodes)
    # killed right after the API call that cordoned w-1: whatever the journal says must come before it
    fake.fail[("cordon w-1", occurrence)] = KeyboardInterrupt("SIGKILL, as far as the journal can tell")
    run = new_run(journal, plan)
    with pytest.raises(KeyboardInterrupt):
        drive(journal, plan, fake, run)
    assert "w-1" in fake.cordoned
    assert journal.run(run.id).steps[step].detail["cordoned:w-1"] == "by upgrader, to drain it"
    assert drive(journal, plan, fake, journal.run(run.id))[0] is driver.Outcome.SUCCEEDED
    assert not fake.cordoned and "cordoned:w-1" not in journal.run(run.id).steps[step].detail


def test_a_node_the_operator_cordoned_stays_cordoned(journal: store.Store) -> None:
    facts = make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.30.14")])
    plan = make_plan(facts, "1.31.13")
    fake = cluster_from(plan)
    fake.cordoned.add("w-1")  # cordoned for a hardware check before the window
    assert drive(journal, plan, fake, new_run(journal, plan))[0] is driver.Outcome.SUCCEEDED
    assert fake.kubelets["w-1"] == Version.parse("1.31.13") and fake.cordoned == {"w-1"}


def test_handlers_are_made_from_the_typed_plan_and_refuse_a_journal_that_holds_other_steps(
    journal: store.Store, plan: model.Plan
) -> None:
    """The handlers act on the plan's typed steps, not on the journal's JSON of them; so a run whose
    journal does not hold its plan's steps (a row changed since it was created) is refused before a step."""
    other = make_plan(make_facts([("cp-1", "1.30.14", None, "1.30.14")], [("w-1", "1.30.14")]), "1.31.13")
    assert [s.kind for s in other.steps] != [s.kind for s in plan.steps]
    fake = cluster_from(plan)
    run = new_run(journal, other)
    with pytest.raises(errors.OperationFailed, match=f"steps are not those of its plan {plan.id}"):
        drive(journal, plan, fake, run)
    assert all(s.status is records.StepStatus.PENDING for s in journal.run(run.id).steps)
    assert not fake.drains and not fake.snapshots


# -- the etcd step -----------------------------------------------------------------------------------

ETCD_FACTS = make_facts(
    [("cp-1", "1.33.5", None, "1.33.5"), ("cp-2", "1.33.5", None, "1.33.5"), ("cp-3", "1.33.5", None, "1.33.5")],
    [("w-1", "1.33.5")],
    etcd="3.5.24",
)


@pytest.fixture
def etcd_plan() -> model.Plan:
    plan = make_plan(ETCD_FACTS, "1.34")
    assert [s.kind for s in plan.steps[:3]] == [model.StepKind.SNAPSHOT, model.StepKind.ETCD, model.StepKind.SNAPSHOT]
    return plan


def etcd_cluster(plan: model.Plan, leader: str = "cp-1") -> FakeCluster:
    fake = cluster_from(plan)
    fake.etcd = {n: Version.parse("3.5.24") for n in ("cp-1", "cp-2", "cp-3")}
    fake.etcd_leader = leader
    return fake


def etcd_calls(fake: FakeCluster) -> list[str]:
    return [c for c in fake.calls if c.startswith("etcd ")]


def test_the_etcd_step_moves_one_member_at_a_time_and_the_leader_last(
    journal: store.Store, etcd_plan: model.Plan
) -> None:
    fake = etcd_cluster(etcd_plan, leader="cp-1")
    outcome, events = drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert outcome is driver.Outcome.SUCCEEDED
    assert etcd_calls(fake) == ["etcd cp-2 3.5.32", "etcd cp-3 3.5.32", "etcd cp-1 3.5.32"]
    assert set(fake.etcd.values()) == {Version.parse("3.5.32")}
    done = [e.message for e in events if e.kind == "node-done" and e.position == 1]
    assert done == ["cp-2: etcd 3.5.24 -> 3.5.32", "cp-3: etcd 3.5.24 -> 3.5.32", "cp-1: etcd 3.5.24 -> 3.5.32"]
    step = journal.run("run-0001").steps[1]
    assert not [k for k, v in step.detail.items() if k.startswith(upgrade.CHANGING) and v]


def test_a_member_already_at_the_version_is_not_restarted(journal: store.Store, etcd_plan: model.Plan) -> None:
    fake = etcd_cluster(etcd_plan)
    fake.etcd["cp-3"] = Version.parse("3.5.32")
    drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert etcd_calls(fake) == ["etcd cp-2 3.5.32", "etcd cp-1 3.5.32"]


def test_a_member_that_does_not_come_back_is_put_back_and_the_step_stops(
    journal: store.Store, etcd_plan: model.Plan
) -> None:
    fake = etcd_cluster(etcd_plan, leader="cp-1")
    fake.etcd_broken = {"cp-3": Version.parse("3.5.32")}
    with pytest.raises(driver.StepFailed, match=r"etcd on cp-3 to answer at 3.5.32.*cp-3 is back at 3.5.24"):
        drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert etcd_calls(fake) == ["etcd cp-2 3.5.32", "etcd cp-3 3.5.32", "etcd cp-3 3.5.24"]
    # quorum kept: two members at 3.5.32 and 3.5.24 answer; the leader was never touched
    assert fake.etcd == {n: Version.parse(v) for n, v in (("cp-1", "3.5.24"), ("cp-2", "3.5.32"), ("cp-3", "3.5.24"))}
    assert not fake.etcd_down
    run = journal.run("run-0001")
    assert run.status is records.RunStatus.FAILED and run.steps[1].status is records.StepStatus.FAILED


def test_no_member_is_restarted_while_another_is_down(journal: store.Store, etcd_plan: model.Plan) -> None:
    fake = etcd_cluster(etcd_plan)
    fake.etcd_down = {"cp-2"}
    with pytest.raises(driver.StepFailed, match=r"etcd on cp-2 does not answer: no member is restarted"):
        drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert etcd_calls(fake) == []


def test_no_member_is_restarted_while_etcd_has_no_leader(journal: store.Store, etcd_plan: model.Plan) -> None:
    fake = etcd_cluster(etcd_plan)
    fake.etcd_leader = None
    with pytest.raises(driver.StepFailed, match=r"etcd has no leader \(no quorum\)"):
        drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert etcd_calls(fake) == []


def test_etcd_is_never_downgraded_by_the_step(journal: store.Store, etcd_plan: model.Plan) -> None:
    fake = etcd_cluster(etcd_plan)
    fake.etcd["cp-2"] = Version.parse("3.6.5")
    with pytest.raises(driver.StepFailed, match=r"etcd on cp-2 runs 3.6.5, newer than 3.5.32: upgrader never"):
        drive(journal, etcd_plan, fake, new_run(journal, etcd_plan))
    assert etcd_calls(fake) == []


def test_a_run_killed_while_a_member_restarted_writes_it_again_and_sees_it_back_first(
    journal: store.Store, etcd_plan: model.Plan
) -> None:
    """What a SIGKILL after the journal said "changing cp-2" leaves: the step running, cp-2's old version
    recorded, its manifest maybe written. The resumed step writes it again (idempotent) before any other."""
    fake = etcd_cluster(etcd_plan, leader="cp-1")
    run = new_run(journal, etcd_plan)
    for position in (0,):
        journal.start_step(run.id, position, at=datetime.now(UTC))
        journal.finish_step(run.id, position, records.StepStatus.SUCCEEDED, at=datetime.now(UTC))
    journal.start_step(run.id, 1, at=datetime.now(UTC))
    journal.step_progress(run.id, 1, {upgrade.CHANGING + "cp-2": "3.5.24"})
    outcome, events = drive(journal, etcd_plan, fake, run)
    assert outcome is driver.Outcome.SUCCEEDED
    assert etcd_calls(fake) == ["etcd cp-2 3.5.32", "etcd cp-3 3.5.32", "etcd cp-1 3.5.32"]
    done = [e.message for e in events if e.kind == "node-done" and e.position == 1]
    assert done[0] == "cp-2: etcd 3.5.24 -> 3.5.32"


EXTERNAL_FACTS = make_facts(
    [("cp-1", "1.33.5", None, "1.33.5")],
    etcd="3.5.24",
    etcd_setup={
        "external": True,
        "hosts": [{"host": f"etcd-{i}", "member": f"etcd{i}"} for i in (1, 2, 3)],
    },
)


def test_external_etcd_moves_each_host_s_service_by_its_member_name_the_leader_last(journal: store.Store) -> None:
    plan = make_plan(EXTERNAL_FACTS, "1.34", two_step=False)
    assert (plan.steps[1].kind, plan.steps[1].nodes) == (model.StepKind.ETCD, ("etcd-1", "etcd-2", "etcd-3"))
    fake = cluster_from(plan)
    fake.etcd = {f"etcd{i}": Version.parse("3.5.24") for i in (1, 2, 3)}
    fake.etcd_leader = "etcd1"  # a member name: its host, etcd-1, goes last
    run = new_run(journal, plan)
    journal.start_step(run.id, 0, at=datetime.now(UTC))
    journal.finish_step(run.id, 0, records.StepStatus.SUCCEEDED, at=datetime.now(UTC))
    journal.start_step(run.id, 1, at=datetime.now(UTC))
    journal.step_progress(run.id, 1, {upgrade.CHANGING + "etcd-3": "3.5.24"})  # killed while etcd-3 changed
    outcome, _ = drive(journal, plan, fake, run)
    assert outcome is driver.Outcome.SUCCEEDED
    services = [c for c in fake.calls if c.startswith("service ")]
    # the member a killed run left changing first, restarted even if its binary is already new; then the
    # followers; the leader last
    assert services == ["service etcd-3 3.5.33 restart", "service etcd-2 3.5.33", "service etcd-1 3.5.33"]
    assert not etcd_calls(fake)  # never a manifest: external members have none
