"""A rollback's steps on the one engine against a fake cluster of the rollback's own ports, with a real
SQLite journal and a real snapshot archive: the order of a full restore, how the revision is moved,
a kill mid-restore resumed from the journal alone, and a verification that fails naming why."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_rollback import Catalog
from upgrader import errors
from upgrader.core import config
from upgrader.core.versions import Minor, Version
from upgrader.engine import driver
from upgrader.engine.ports import Expected
from upgrader.state import records
from upgrader.usecases.rollback import model, ports, service
from upgrader.usecases.rollback.steps import Steps

V = Version.parse
HIGHEST_SERVED = 5000  # the revision the cluster had served when the rollback stopped its apiservers


@dataclass
class FakeWorld:
    """Every rollback port over a few fields: where the apiservers and etcd run, etcd's revision, the
    kubelets. ``fail`` maps a call's name to the exception its next call raises."""

    apiservers: dict[str, tuple[Version, Minor] | None]
    kubelets: dict[str, Version]
    tool_bumps: bool = False
    etcd_up: bool = True
    revision_now: int = HIGHEST_SERVED
    calls: list[str] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)
    cordoned: set[str] = field(default_factory=set)
    restored_with: dict[str, Any] = field(default_factory=dict)
    verdict_ok: bool = True

    def _call(self, name: str) -> None:
        self.calls.append(name)
        failure = self.fail.pop(name, None)
        if failure is not None:
            raise failure

    # NodeActions
    def hold(self, hosts: list[str], components: tuple[str, ...]) -> None:
        self._call(f"hold {','.join(components)}")
        if "kube-apiserver" in components:
            self.apiservers = dict.fromkeys(self.apiservers)
        if "etcd" in components:
            self.etcd_up = False

    def restore_etcd(self, hosts: list[str], variables: Mapping[str, Any]) -> Mapping[str, bool]:
        self._call("restore")
        assert not self.etcd_up, "restored while etcd ran"
        self.restored_with = dict(variables)
        self.revision_now = 10 + (int(variables["bump"]) if self.tool_bumps else 0)
        return dict.fromkeys(hosts, self.tool_bumps)

    def place(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        if not variables["install_kubeadm"]:
            self._call("start etcd")
            self.etcd_up = True
            return
        self._call("control plane back")
        assert self.etcd_up and self.revision_now > HIGHEST_SERVED, "apiservers started before the revision moved"
        for host in hosts:
            self.apiservers[host] = (V("1.31.13"), Minor.parse("1.31"))

    def restart_kubelets(self, nodes: list[str]) -> None:
        self._call("restart kubelets")

    def etcd_service(self, hosts: list[str], action: str) -> None:
        self._call(f"etcd service {action}")
        self.etcd_up = action == "start"

    def clean_up(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        self._call("clean up")

    # Etcd
    def revision(self) -> int:
        if not self.etcd_up:
            raise errors.OperationFailed("etcd does not answer")
        return self.revision_now

    def leader_seen_by(self, url: str) -> str | None:
        if not self.etcd_up:
            raise errors.OperationFailed("etcd does not answer")
        return "cp-1"

    def member_count(self) -> int:
        return 2

    def advance_past(self, highest: int, *, max_gap: int, progress: Callable[[int, int], None]) -> ports.Advanced:
        self._call(f"advance past {highest}")
        start, self.revision_now = self.revision_now, highest + 1
        return ports.Advanced(start=start, reached=self.revision_now, seconds=0.1)

    # Cluster
    def answers(self, host: str, port: int) -> bool:
        return any(self.apiservers.values()) if port == 6443 else self.etcd_up

    def node_revision(self, node: str) -> int | None:
        return self.revision_now + 1  # every kubelet has posted its status since

    def installed_kubelets(self) -> Mapping[str, Version | None]:
        return dict(self.kubelets)

    def running_kubelets(self) -> Mapping[str, Version]:
        return dict(self.kubelets)

    def put_cluster_configuration(self, text: str) -> bool:
        self._call("kubeadm config")
        return True

    def settled(self, snapshot_id: str) -> bool:
        return True

    def verify(self, snapshot_id: str) -> ports.Verified:
        self._call("verify")
        wrong = [n for n, v in self.kubelets.items() if v != V("1.31.13")]
        if not self.verdict_ok:
            wrong.append("cp-1/manifests/kube-apiserver.yaml differs from the snapshot's")
        return ports.Verified(ok=not wrong, first_failure=wrong[0] if wrong else "", detail={"wrong": wrong})

    # Probe
    def apiserver(self, node: str) -> tuple[Version, Minor] | None:
        return self.apiservers.get(node)

    def kubelet(self, node: str) -> tuple[Version | None, bool]:
        return self.kubelets.get(node), True

    # Drainer
    def cordon(self, node: str) -> None:
        self.cordoned.add(node)

    def drain(self, node: str) -> int:
        self._call(f"drain {node}")
        return 1

    def uncordon(self, node: str) -> None:
        self.cordoned.discard(node)

    def is_cordoned(self, node: str) -> bool:
        return node in self.cordoned

    # KubeletRollout
    def put_kubelets(self, nodes: tuple[str, ...], version: Version) -> None:
        self._call(f"kubelets {','.join(nodes)} v{version}")
        for node in nodes:
            self.kubelets[node] = version


def ports_of(world: FakeWorld) -> ports.Ports:
    class Probe:
        apiserver = staticmethod(world.apiserver)
        kubelet = staticmethod(world.kubelet)

    class Drain:
        cordon = staticmethod(world.cordon)
        drain = staticmethod(world.drain)
        uncordon = staticmethod(world.uncordon)
        cordoned = staticmethod(world.is_cordoned)

    class Kubelets:
        kubelet = staticmethod(world.put_kubelets)

    return ports.Ports(nodes=world, etcd=world, cluster=world, probe=Probe(), drainer=Drain(), kubelets=Kubelets())


class NoLease:
    def check(self) -> None:
        pass

    def confirm(self) -> bool:
        return True


class NoGate:
    def check(self, expected: Expected) -> list[str]:
        raise AssertionError("a rollback's steps have no gate: the verify step proves the whole cluster")


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    made = Catalog(tmp_path)
    made.state.ensure_cluster("c")
    return made


@pytest.fixture
def cfg(cluster_yaml: Path) -> config.ClusterConfig:
    """The example cluster's config (the steps read its packages, max_unavailable, tiers, revision gap)."""
    return config.load(cluster_yaml)


def new_rollback(catalog: Catalog, ends: str | None = None) -> tuple[records.RunRecord, records.SnapshotRecord]:
    snapshot = catalog.add("1.31.13")
    steps = service._steps(model.Route.FULL_RESTORE, ["cp-1", "cp-2"], V("1.31.13"))
    run = catalog.state.create_run(
        run_id=records.RunId("c-rollback-1"),
        cluster="c",
        plan_id=None,
        kind=records.RunKind.ROLLBACK,
        steps=steps,
        host="h",
        pid=1,
        options={
            "route": "full-restore",
            "snapshot": snapshot.id,
            "revision_at_start": HIGHEST_SERVED,
            "ends_run": ends,
        },
    )
    return run, snapshot


def drive(
    catalog: Catalog, world: FakeWorld, snapshot: records.SnapshotRecord, cfg: config.ClusterConfig
) -> driver.Outcome:
    engine = driver.Driver(
        catalog.state,
        gate=NoGate(),
        lease=NoLease(),
        settings=driver.Settings(wait_timeout=2, poll=0.01),
        estimate=lambda record: 60.0,
        observe=lambda event: None,
        cancel=threading.Event(),
    )
    run = catalog.state.run("c-rollback-1")
    return Steps(cfg, ports_of(world), run=run, snapshot=snapshot, options=model.Options(), engine=engine).run()


def at_132() -> FakeWorld:
    committed = (V("1.32.9"), Minor.parse("1.32"))
    return FakeWorld(
        apiservers={"cp-1": committed, "cp-2": committed},
        kubelets={"cp-1": V("1.32.9"), "cp-2": V("1.32.9"), "w-1": V("1.31.13")},
    )


def test_a_full_restore_runs_in_order_moves_the_revision_past_what_was_served_and_ends_the_apply_run(
    catalog: Catalog, cfg: config.ClusterConfig
) -> None:
    catalog.state.create_run(
        run_id=records.RunId("c-apply-1"),
        cluster="c",
        plan_id=None,
        kind=records.RunKind.UPGRADE,
        steps=[],
        host="h",
        pid=1,
        options={},
    )
    _, snapshot = new_rollback(catalog, ends="c-apply-1")
    world = at_132()
    assert drive(catalog, world, snapshot, cfg) is driver.Outcome.SUCCEEDED
    assert world.calls == [
        "hold kube-apiserver,kube-controller-manager,kube-scheduler",
        "hold etcd",
        "restore",
        "start etcd",
        f"advance past {HIGHEST_SERVED}",
        "control plane back",
        "drain cp-1",
        "drain cp-2",
        "kubelets cp-1,cp-2 v1.31.13",  # together: the control plane has just come back on every node
        "verify",
        "clean up",
    ], world.calls
    assert world.restored_with["bump"] == model.BUMP_MARGIN + HIGHEST_SERVED - snapshot.etcd_revision  # type: ignore[operator]
    done = catalog.state.run("c-rollback-1")
    assert done.status is records.RunStatus.SUCCEEDED
    assert done.steps[0].detail["highest_revision"] == HIGHEST_SERVED
    assert done.steps[4].detail["how"] == "no-op writes" and done.steps[4].detail["revision"] == HIGHEST_SERVED + 1
    assert catalog.state.run("c-apply-1").status is records.RunStatus.ROLLED_BACK
    assert not world.cordoned


def test_a_restore_tool_that_bumps_the_revision_needs_no_writes(catalog: Catalog, cfg: config.ClusterConfig) -> None:
    _, snapshot = new_rollback(catalog)
    world = at_132()
    world.tool_bumps = True
    assert drive(catalog, world, snapshot, cfg) is driver.Outcome.SUCCEEDED
    assert not [c for c in world.calls if c.startswith("advance")]
    assert catalog.state.run("c-rollback-1").steps[4].detail["how"] == "etcdutl --bump-revision"


def test_a_rollback_killed_mid_restore_resumes_from_the_journal_with_the_revision_it_recorded(
    catalog: Catalog, cfg: config.ClusterConfig
) -> None:
    _, snapshot = new_rollback(catalog)
    world = at_132()
    world.fail["restore"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        drive(catalog, world, snapshot, cfg)
    stopped = catalog.state.run("c-rollback-1")
    assert stopped.status is records.RunStatus.INTERRUPTED
    assert [s.status for s in stopped.steps[:3]] == [
        records.StepStatus.SUCCEEDED,
        records.StepStatus.SUCCEEDED,
        records.StepStatus.INTERRUPTED,
    ]
    # etcd is down now, so the highest revision served can only come from the journal
    assert drive(catalog, world, snapshot, cfg) is driver.Outcome.SUCCEEDED
    assert world.calls.count("hold etcd") == 1 and world.calls.count("restore") == 2
    assert f"advance past {HIGHEST_SERVED}" in world.calls
    assert catalog.state.run("c-rollback-1").steps[2].attempts == 2


def test_a_cluster_that_does_not_match_the_snapshot_fails_the_verify_step_naming_why(
    catalog: Catalog, cfg: config.ClusterConfig
) -> None:
    _, snapshot = new_rollback(catalog)
    world = at_132()
    world.verdict_ok = False
    with pytest.raises(driver.StepFailed, match=r"cp-1/manifests/kube-apiserver\.yaml differs"):
        drive(catalog, world, snapshot, cfg)
    failed = catalog.state.run("c-rollback-1")
    assert failed.status is records.RunStatus.FAILED
    assert failed.steps[-2].status is records.StepStatus.FAILED
    assert failed.steps[-1].status is records.StepStatus.PENDING
    assert failed.steps[-2].detail["verified"] is False
