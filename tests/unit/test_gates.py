"""The gate after every step, against a fake of upgrader's own Kubernetes and etcd adapters: what it
reports, and that one check lists the apiservers' mirror pods and the Nodes once each, and a probe of
one kubelet reads that one Node (issue 20: the gate listed both twice, the probe every Node per node
per poll)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, cast

from upgrader.cluster import gates, session
from upgrader.core import config
from upgrader.core.rules import catalog
from upgrader.core.versions import Minor, Version
from upgrader.engine.ports import Expected
from upgrader.kube import cluster as kube

V = Version.parse


class FakeApi:
    """``kube.Cluster``'s reads over a few fields, counting each call."""

    def __init__(self, kubelets: dict[str, str], apiserver: str = "v1.31.13") -> None:
        self.kubelets = kubelets
        self.apiserver_version = apiserver
        self.calls: Counter[str] = Counter()

    def apiservers(self) -> list[kube.Apiserver]:
        self.calls["apiservers"] += 1
        return [kube.Apiserver("cp-1", "10.0.0.1:6443", "v1.31.13", None, "Running")]

    def nodes(self) -> list[kube.NodeInfo]:
        self.calls["nodes"] += 1
        return [self._info(name) for name in self.kubelets]

    def node(self, name: str) -> kube.NodeInfo | None:
        self.calls["node"] += 1
        return self._info(name) if name in self.kubelets else None

    def _info(self, name: str) -> kube.NodeInfo:
        return kube.NodeInfo(name, self.kubelets[name], "containerd://1.7.24", True, False, name.startswith("cp"))

    def version(self, endpoint: str) -> kube.VersionInfo:
        self.calls["version"] += 1
        return kube.VersionInfo(self.apiserver_version, None)

    def ready(self, endpoint: str) -> bool:
        self.calls["ready"] += 1
        return True


class FakeEtcd:
    def status_of(self, endpoint: str) -> tuple[str, str | None]:
        return "3.5.16", "cp-1"


def cluster_gate(cluster_yaml: Path, api: FakeApi) -> gates.ClusterGate:
    opened = session.ClusterSession(
        cfg=config.load(cluster_yaml), inventory=cast(Any, None), api=cast(Any, api), etcd=cast(Any, FakeEtcd())
    )
    return gates.ClusterGate(opened, catalog.load())


def test_one_gate_check_lists_the_mirror_pods_and_the_nodes_once(cluster_yaml: Path) -> None:
    api = FakeApi({"cp-1": "v1.31.13", "w-1": "v1.31.13", "w-2": "v1.30.14"})
    expected = Expected(
        apiservers={"cp-1": (V("1.31.13"), Minor.parse("1.31"))},
        kubelets={"cp-1": V("1.31.13"), "w-1": V("1.31.13"), "w-2": V("1.31.13")},
    )
    problems = cluster_gate(cluster_yaml, api).check(expected)
    assert problems == ["node w-2 runs kubelet v1.30.14, the plan expects v1.31.13"]
    assert api.calls["apiservers"] == 1 and api.calls["nodes"] == 1
    assert api.calls["node"] == 0


def test_a_gate_names_an_apiserver_that_serves_another_version(cluster_yaml: Path) -> None:
    api = FakeApi({"cp-1": "v1.31.13"}, apiserver="v1.30.14")
    expected = Expected(apiservers={"cp-1": (V("1.31.13"), Minor.parse("1.31"))}, kubelets={"cp-1": V("1.31.13")})
    problems = cluster_gate(cluster_yaml, api).check(expected)
    assert problems[0] == (
        "the apiserver on cp-1 serves v1.30.14 emulating 1.30, the plan expects v1.31.13 emulating 1.31"
    )


def test_probing_one_kubelet_reads_one_node_not_the_list(cluster_yaml: Path) -> None:
    api = FakeApi({"cp-1": "v1.31.13", "w-1": "v1.30.14"})
    probe = cluster_gate(cluster_yaml, api)
    assert probe.kubelet("w-1") == (V("1.30.14"), True)
    assert probe.kubelet("gone") == (None, False)
    assert api.calls["nodes"] == 0 and api.calls["node"] == 2
