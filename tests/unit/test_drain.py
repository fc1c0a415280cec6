"""Drain semantics (kubectl drain's) against a fake of upgrader's own pod-writer interface."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from upgrader.cluster import drain
from upgrader.kube.writes import Evicted, Eviction, PodInfo


def pod(
    name: str,
    owner: str | None = "ReplicaSet",
    *,
    mirror: bool = False,
    empty_dir: bool = False,
    phase: str = "Running",
    owner_name: str = "owner",
) -> PodInfo:
    owner_fields = (owner_name, "apps/v1") if owner else ("", "")
    return PodInfo("demo", name, owner, mirror, empty_dir, phase, f"uid-{name}", *owner_fields)


@dataclass
class FakeWriter:
    pods: list[PodInfo]
    blocked: dict[str, int] = field(default_factory=dict)  # pod -> how many evictions a budget refuses first
    cordoned: set[str] = field(default_factory=set)
    evicted: list[str] = field(default_factory=list)
    lingering: dict[str, int] = field(default_factory=dict)  # pod -> reads before it is gone
    daemonsets: set[str] = field(default_factory=lambda: {"kube-proxy"})

    def unschedulable(self, node: str) -> bool:
        return node in self.cordoned

    def set_unschedulable(self, node: str, unschedulable: bool) -> None:
        (self.cordoned.add if unschedulable else self.cordoned.discard)(node)

    def pods_on(self, node: str) -> list[PodInfo]:
        return list(self.pods)

    def evict(self, target: PodInfo) -> Eviction:
        if self.blocked.get(target.name, 0) > 0:
            self.blocked[target.name] -= 1
            return Eviction(Evicted.BLOCKED, "The disruption budget web needs more healthy pods")
        self.evicted.append(target.name)
        return Eviction(Evicted.EVICTED)

    def daemonset_exists(self, namespace: str, name: str) -> bool:
        return name in self.daemonsets

    def pod_exists(self, target: PodInfo) -> bool:
        left = self.lingering.get(target.name, 0)
        self.lingering[target.name] = left - 1
        return left > 0


def drainer(writer: FakeWriter, **policy: object) -> drain.Drainer:
    settings = {"timeout": 2.0, "retry": 0.01, "poll": 0.01, **policy}
    return drain.Drainer(writer, drain.DrainPolicy(**settings), threading.Event())  # type: ignore[arg-type]


def test_daemonset_and_mirror_pods_are_skipped_and_evicted_pods_are_waited_for() -> None:
    writer = FakeWriter(
        [
            pod("web-1"),
            pod("kube-proxy-x", "DaemonSet", owner_name="kube-proxy"),
            pod("kube-apiserver-cp-1", "Node", mirror=True),
        ],
        lingering={"web-1": 3},
    )
    assert drainer(writer).drain("w-1") == 1
    assert writer.evicted == ["web-1"] and writer.lingering["web-1"] < 0  # read until it was gone


def test_a_pod_without_a_controller_is_refused_unless_forced() -> None:
    writer = FakeWriter([pod("debug", None)])
    with pytest.raises(drain.DrainFailed, match=r"demo/debug has no controller.*--force-drain"):
        drainer(writer).drain("w-1")
    assert drainer(writer, force=True).drain("w-1") == 1


def test_a_daemonset_pod_whose_daemonset_is_gone_is_refused_unless_forced_like_kubectl() -> None:
    """kubectl's daemonSetFilter: a DaemonSet deleted with --cascade=orphan leaves pods nothing recreates."""
    orphan = pod("node-exporter-x", "DaemonSet", owner_name="node-exporter")
    writer = FakeWriter([orphan, pod("kube-proxy-x", "DaemonSet", owner_name="kube-proxy")])
    with pytest.raises(drain.DrainFailed, match=r"demo/node-exporter-x \(DaemonSet node-exporter\).*--force-drain"):
        drainer(writer).drain("w-1")
    assert writer.evicted == []
    assert drainer(writer, force=True).drain("w-1") == 1
    assert writer.evicted == ["node-exporter-x"]  # the live DaemonSet's pod is still skipped


def test_finished_pods_are_evicted_whatever_owns_them_or_their_volumes() -> None:
    """kubectl lets a Succeeded or Failed pod through every filter: no --force, no --delete-emptydir-data."""
    done = [
        pod("job-done", None, phase="Succeeded"),
        pod("cache-failed", empty_dir=True, phase="Failed"),
        pod("proxy-old", "DaemonSet", owner_name="gone", phase="Failed"),
    ]
    writer = FakeWriter(done)
    assert drainer(writer).drain("w-1") == 3
    assert sorted(writer.evicted) == ["cache-failed", "job-done", "proxy-old"]


def test_emptydir_data_is_refused_unless_asked_for_like_kubectl() -> None:
    writer = FakeWriter([pod("cache", empty_dir=True)])
    with pytest.raises(drain.DrainFailed, match=r"emptyDir.*--delete-emptydir-data"):
        drainer(writer).drain("w-1")
    assert writer.evicted == []
    assert drainer(writer, delete_emptydir_data=True).drain("w-1") == 1


def test_a_budget_that_refuses_is_retried_and_then_names_the_pod_and_budget() -> None:
    writer = FakeWriter([pod("web-1"), pod("web-2")], blocked={"web-2": 3})
    assert drainer(writer).drain("w-1") == 2  # refused three times, then allowed
    stuck = FakeWriter([pod("web-1")], blocked={"web-1": 10**6})
    with pytest.raises(drain.DrainFailed, match=r"timed out after 1s: demo/web-1: The disruption budget web"):
        drainer(stuck, timeout=1.0).drain("w-1")


class RecordingDrainer(drain.Drainer):
    """Records each wait between refused evictions instead of sleeping."""

    pauses: list[float]

    def _sleep(self, seconds: float, deadline: float) -> None:
        self.pauses.append(seconds)


def test_refused_evictions_are_retried_soon_then_every_few_seconds() -> None:
    writer = FakeWriter([pod("web-1")], blocked={"web-1": 6})
    recording = RecordingDrainer(writer, drain.DrainPolicy(timeout=60.0, poll=0.0), threading.Event())
    recording.pauses = []
    assert recording.drain("w-1") == 1
    assert recording.pauses == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # kubectl drain waits 5 s every time
