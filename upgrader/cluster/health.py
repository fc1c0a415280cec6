"""Whether a cluster is healthy right now: every apiserver ready, every node Ready, etcd healthy with
quorum. A snapshot is known-good only if the cluster passed this when it was taken.

An unhealthy cluster is a result, not an exception: the report says what failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from upgrader import errors
from upgrader.cluster import session
from upgrader.kube import cluster as kube


@dataclass(frozen=True)
class Health:
    apiservers: dict[str, bool] = field(default_factory=dict)
    nodes: dict[str, bool] = field(default_factory=dict)
    etcd: dict[str, bool] = field(default_factory=dict)  # endpoint -> answered
    etcd_leader: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def quorum(self) -> bool:
        return self.etcd_leader is not None and sum(self.etcd.values()) > len(self.etcd) // 2

    @property
    def ok(self) -> bool:
        return (
            bool(self.apiservers)
            and all(self.apiservers.values())
            and bool(self.nodes)
            and all(self.nodes.values())
            and self.quorum
            and all(self.etcd.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "apiservers": self.apiservers,
            "nodes": self.nodes,
            "etcd": self.etcd,
            "etcd_leader": self.etcd_leader,
            "quorum": self.quorum,
            "problems": list(self.problems),
        }


def check(
    cluster: session.ClusterSession,
    *,
    servers: Sequence[kube.Apiserver] | None = None,
    nodes: Sequence[kube.NodeInfo] | None = None,
) -> Health:
    """The cluster's health now. A caller that has just listed the apiservers' mirror pods or the Nodes
    (the gate) passes them, so one check lists each once."""
    problems: list[str] = []
    apiservers: dict[str, bool] = {}
    ready: dict[str, bool] = {}
    api = cluster.api
    try:
        for server in api.apiservers() if servers is None else servers:
            apiservers[server.node] = api.ready(server.endpoint)
        ready = {n.name: n.ready for n in (api.nodes() if nodes is None else nodes)}
    except kube.KubeUnavailable as exc:
        problems.append(str(exc))
    problems += [f"apiserver on {n} is not ready" for n, ok in apiservers.items() if not ok]
    problems += [f"node {n} is not Ready" for n, ok in ready.items() if not ok]
    etcd: dict[str, bool] = {}
    leader = None
    for endpoint in cluster.cfg.etcd.endpoints:
        try:
            _, seen_leader = cluster.etcd.status_of(endpoint)
            etcd[endpoint] = True
            leader = leader or seen_leader
        except errors.UpgraderError as exc:
            etcd[endpoint] = False
            problems.append(f"etcd at {endpoint}: {exc}")
    if leader is None:
        problems.append("etcd has no leader (no quorum)")
    return Health(apiservers=apiservers, nodes=ready, etcd=etcd, etcd_leader=leader, problems=tuple(problems))
