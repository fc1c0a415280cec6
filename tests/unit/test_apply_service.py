"""The apply service's pure parts against a real SQLite journal: duration estimates and drift."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.unit.plan_helpers import make_facts, make_plan
from upgrader import errors
from upgrader.core.rules import facts as facts_mod
from upgrader.engine import driver
from upgrader.state import records, store
from upgrader.usecases import apply, runs


@pytest.fixture
def journal(db_url: str) -> Iterator[store.Store]:
    with store.Store.open(db_url) as opened:
        yield opened


def step(kind: str, nodes: list[str]) -> dict[str, object]:
    return {"kind": kind, "version": None if kind == "snapshot" else "1.31.13", "nodes": nodes}


def new_run(
    journal: store.Store,
    run_id: str,
    steps: list[dict[str, object]],
    kind: records.RunKind = records.RunKind.UPGRADE,
) -> records.RunRecord:
    return journal.create_run(
        run_id=records.RunId(run_id),
        cluster="prod-eu1",
        plan_id=None,
        kind=kind,
        steps=steps,
        host="h",
        pid=1,
        options={},
    )


def test_estimates_come_from_this_clusters_history_per_node_for_the_control_plane(journal: store.Store) -> None:
    specs = [step("snapshot", []), step("control-plane", ["cp-1", "cp-2", "cp-3"]), step("nodes", ["w-1", "w-2"])]
    run = new_run(journal, "prod-eu1-1", specs)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    for position, seconds in enumerate((12, 30, 20)):
        journal.start_step(run.id, position, at=start)
        journal.finish_step(run.id, position, records.StepStatus.SUCCEEDED, at=start + timedelta(seconds=seconds))
    estimate = runs.estimator(journal, "prod-eu1")

    def record(kind: str, nodes: list[str]) -> records.StepRecord:
        return records.StepRecord(
            records.RunId("x"), 0, kind, records.StepStatus.PENDING, 0, step(kind, nodes), {}, None, None, None
        )

    assert estimate(record("snapshot", [])) == 12
    assert estimate(record("control-plane", ["cp-1"])) == 10  # 30 s for three nodes, one at a time
    assert estimate(record("control-plane", ["a", "b", "c", "d", "e"])) == 50
    assert estimate(record("nodes", ["w-3", "w-4", "w-5"])) == 20  # a batch goes in parallel
    assert estimate(record("emulation-commit", ["cp-1", "cp-2"])) == 2 * runs.DEFAULT_SECONDS["emulation-commit"]
    assert runs.estimator(journal, "another-cluster")(record("nodes", ["w-1"])) == runs.DEFAULT_SECONDS["nodes"]
    assert "this cluster's journal (1 past runs" in estimate.source  # and the board says so
    assert "defaults" in runs.estimator(journal, "another-cluster").source


def test_drift_names_each_node_that_moved_since_the_plan() -> None:
    facts = make_facts([("cp-1", "1.30.14", None, "1.30.14")], [("w-1", "1.29.15"), ("w-2", "1.30.14")])
    plan = make_plan(facts, "1.31")
    then = plan.facts.as_mapping()
    live = then | {
        "control_plane": [{**then["control_plane"][0], "apiserver": "1.31.13", "kubelet": "1.30.14"}],
        "nodes": [{**then["nodes"][0], "kubelet": "1.30.14"}, {"name": "w-9", "kubelet": "1.30.14"}],
    }
    assert apply.drift(plan, facts_mod.from_mapping(live)) == [
        "cp-1 apiserver is 1.31.13 (emulating 1.30), the plan expected 1.30.14 (emulating 1.30)",
        "w-1 kubelet is 1.30.14, the plan expected 1.29.15",
        "node w-2 is gone",
        "nodes the plan does not know: w-9",
    ]
    assert apply.drift(plan, plan.facts) == []


def _rollback_run(journal: store.Store, run_id: str) -> records.RunRecord:
    return new_run(
        journal,
        run_id,
        [{"kind": "hold-control-plane", "nodes": ["cp-1"]}, {"kind": "restore", "nodes": ["cp-1"]}],
        records.RunKind.ROLLBACK,
    )


def test_abandon_refuses_another_clusters_run_and_a_rollback_that_has_begun(journal: store.Store) -> None:
    """Issue 17: --abandon abandoned a running rollback of another cluster's config; after a killed restore,
    abandoning it let a new rollback pick another snapshot with the old run's held manifests stranded."""
    begun = _rollback_run(journal, "prod-eu1-rb-1")
    journal.set_run(begun.id, records.RunStatus.INTERRUPTED, stopped_reason="SIGKILL", at=datetime.now(UTC))
    with pytest.raises(errors.Refused, match="is of cluster prod-eu1, not staging"):
        runs.abandon(journal, "staging", begun.id)
    journal.start_step(begun.id, 0, at=datetime.now(UTC))  # the control plane's manifests are held
    with pytest.raises(
        errors.Refused, match=r"a rollback that has begun .* `upgrader rollback --resume prod-eu1-rb-1`"
    ):
        runs.abandon(journal, "prod-eu1", begun.id)
    assert journal.run(begun.id).status is records.RunStatus.INTERRUPTED  # unchanged
    untouched = _rollback_run(journal, "prod-eu1-rb-2")  # stopped before its first step: nothing held
    gone = runs.abandon(journal, "prod-eu1", untouched.id)
    assert gone.run.status is records.RunStatus.CANCELED and gone.cordoned == ()
    assert gone.left_behind() == "nothing left behind"


def test_a_new_run_takes_over_the_cordons_an_ended_run_left_and_forgets_those_since_uncordoned(
    journal: store.Store,
) -> None:
    """Issue 17: after SIGTERM mid-drain and --abandon, a new apply succeeded with w-1 still cordoned."""
    specs = [step("snapshot", []), step("nodes", ["w-1", "w-2"])]
    old = new_run(journal, "prod-eu1-old", specs)
    journal.step_progress(old.id, 1, {"cordoned:w-1": "by upgrader, to drain it", "cordoned:w-2": "by upgrader"})
    journal.set_run(old.id, records.RunStatus.CANCELED, stopped_reason="abandoned", at=datetime.now(UTC))
    assert apply.left_cordoned(journal, "prod-eu1") == {"w-1": (old.id, 1), "w-2": (old.id, 1)}
    new = new_run(journal, "prod-eu1-new", specs)
    plan = make_plan(make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.30.14")]), "1.31.13")
    prepared = apply.Prepared(plan=plan, plan_id=records.PlanId(plan.id), inherited={"w-1": old.id})  # w-2: uncordoned
    apply.adopt_cordons(journal, journal.run(new.id), prepared)
    assert journal.run(new.id).steps[1].detail["cordoned:w-1"] == f"by upgrader run {old.id}, which ended"
    assert journal.run(old.id).steps[1].detail == {}  # moved, and the stale one forgotten
    assert apply.left_cordoned(journal, "prod-eu1") == {}
    assert [e.kind for e in journal.events(cluster="prod-eu1")] == ["cordon-inherited"]


class _Cluster:
    """What ``runs.drive`` reads of a cluster session: its name and its cancel event."""

    name = "prod-eu1"

    def __init__(self) -> None:
        self.cancel = threading.Event()


class _Lease:
    def check(self) -> None:
        pass

    def confirm(self) -> bool:
        return True


class _NoGate:
    def check(self, expected: object) -> list[str]:
        return []


def _drive(journal: store.Store, run: records.RunRecord, go: Callable[[driver.Driver], driver.Outcome]) -> None:
    runs.drive(
        _Cluster(),  # type: ignore[arg-type]
        journal,
        run,
        gate=_NoGate(),
        lease=_Lease(),
        observe=lambda event: None,
        wait_timeout=1,
        insecure=(),
        go=go,
    )


@pytest.mark.parametrize("kind", list(records.RunKind))
def test_a_resumed_run_that_fails_before_its_first_step_is_marked_failed_not_left_running(
    journal: store.Store, kind: records.RunKind
) -> None:
    """Issue 20: a resumed apply that failed while waiting for a leftover playbook stayed RUNNING (only
    the rollback's twin marked it). One stop path for both kinds now."""
    new_run(journal, "prod-eu1-1", [step("snapshot", [])], kind=kind)
    reopened = runs.reopen(journal, "prod-eu1-1", "prod-eu1", kind)
    assert reopened.status is records.RunStatus.RUNNING

    def fails(engine: driver.Driver) -> driver.Outcome:
        raise errors.OperationFailed("the leftover playbook is still running after 1800s")

    with pytest.raises(runs.RunStopped) as stopped:
        _drive(journal, reopened, fails)
    assert stopped.value.exit_code is errors.ExitCode.FAILURE
    command = "apply" if kind is records.RunKind.UPGRADE else "rollback"
    assert f"`upgrader {command} --resume prod-eu1-1 -c CLUSTER.yaml`" in stopped.value.message
    failed = journal.run("prod-eu1-1")
    assert failed.status is records.RunStatus.FAILED and "leftover playbook" in (failed.error or "")

    def lock_lost(engine: driver.Driver) -> driver.Outcome:
        raise errors.LockLost("the lock was taken")

    again = runs.reopen(journal, "prod-eu1-1", "prod-eu1", kind)
    with pytest.raises(runs.RunStopped) as lost:
        _drive(journal, again, lock_lost)
    assert lost.value.exit_code is errors.ExitCode.NEEDS_HUMAN
    # whoever holds the lock now decides the run's status (a rollback marks the run it ends)
    assert journal.run("prod-eu1-1").status is records.RunStatus.RUNNING


def test_a_run_is_resumed_only_by_its_own_command_and_cluster(journal: store.Store) -> None:
    new_run(journal, "prod-eu1-rb", [step("snapshot", [])], kind=records.RunKind.ROLLBACK)
    with pytest.raises(errors.Refused, match=r"`upgrader rollback --resume prod-eu1-rb"):
        runs.reopen(journal, "prod-eu1-rb", "prod-eu1", records.RunKind.UPGRADE)
    with pytest.raises(errors.Refused, match="belongs to cluster prod-eu1, not staging"):
        runs.reopen(journal, "prod-eu1-rb", "staging", records.RunKind.ROLLBACK)
    assert journal.run("prod-eu1-rb").status is records.RunStatus.PENDING
