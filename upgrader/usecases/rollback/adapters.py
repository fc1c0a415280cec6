"""The rollback's ports on a real cluster: playbooks through the executor, etcd through its client,
the API through the Kubernetes client, and ``verify --against``."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from upgrader import errors
from upgrader.cluster import gates, live_facts, rollout, session
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.versions import Version
from upgrader.engine.ports import Drainer
from upgrader.etcd import revisions
from upgrader.executor import rendering
from upgrader.kube import writes
from upgrader.state import records, store
from upgrader.usecases import runs, verification
from upgrader.usecases.rollback import ports

RESTORE_TASK = "upgrader: restore etcd"  # rollback-etcd.yml's task that prints bumps=yes|no


class Playbooks:
    def __init__(self, rollout_: rollout.Rollout, run_id: str) -> None:
        self.rollout = rollout_
        self.run_id = run_id

    def _run(self, playbook: str, nodes: list[str], variables: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
        result = self.rollout.run(playbook, tuple(nodes), {"run": self.run_id, **variables})
        return result.by_host(RESTORE_TASK)

    def hold(self, hosts: list[str], components: tuple[str, ...]) -> None:
        self._run("rollback-hold.yml", hosts, {"components": list(components)})

    def restore_etcd(self, hosts: list[str], variables: Mapping[str, Any]) -> Mapping[str, bool]:
        printed = self._run("rollback-etcd.yml", hosts, variables)
        return {h: "bumps=yes" in str(printed.get(h, {}).get("stdout", "")) for h in hosts}

    def place(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        self._run("rollback-control-plane.yml", hosts, variables)

    def restart_kubelets(self, nodes: list[str]) -> None:
        self._run("rollback-restart-kubelets.yml", nodes, {})

    def etcd_service(self, hosts: list[str], action: str) -> None:
        if action not in ("stop", "start"):
            raise errors.OperationFailed(f"etcd service action {action!r} is not stop or start")
        self._run("rollback-etcd-service.yml", hosts, {"etcd_action": action})

    def clean_up(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        self._run("rollback-clean-up.yml", hosts, variables)


class Etcd:
    def __init__(self, cluster: session.ClusterSession) -> None:
        self.cluster = cluster

    def revision(self) -> int:
        return self.cluster.etcd.revision()

    def leader_seen_by(self, url: str) -> str | None:
        return self.cluster.etcd.status_of(url)[1]

    def member_count(self) -> int:
        return len(self.cluster.etcd.members())

    def advance_past(self, highest: int, *, max_gap: int, progress: Callable[[int, int], None]) -> ports.Advanced:
        moved = revisions.advance_past(self.cluster.etcd, highest, max_gap=max_gap, progress=progress)
        return ports.Advanced(start=moved.start, reached=moved.reached, seconds=moved.seconds)


class Cluster:
    def __init__(self, cluster: session.ClusterSession, state: store.Store, probe: gates.ClusterGate) -> None:
        self.cluster = cluster
        self.state = state
        self.probe = probe

    def answers(self, host: str, port: int) -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def node_revision(self, node: str) -> int | None:
        try:
            found = self.cluster.api.node(node)
        except errors.UpgraderError:
            return None
        return found.revision if found is not None else None

    def installed_kubelets(self) -> Mapping[str, Version | None]:
        return live_facts.installed_kubelets(self.cluster)

    def running_kubelets(self) -> Mapping[str, Version]:
        return verification.live_versions(self.probe).kubelets

    def put_cluster_configuration(self, text: str) -> bool:
        return writes.Writer(self.cluster.api).edit_cluster_configuration(lambda _: text)

    def settled(self, snapshot_id: str) -> bool:
        return verification.settled(self.cluster, self.state.snapshot(snapshot_id))

    def verify(self, snapshot_id: str) -> ports.Verified:
        verdict = verification.against(self.cluster, self.state, snapshot_id, reference_checked=True)
        first = verdict.failures[0].detail if verdict.failures else ""
        return ports.Verified(ok=verdict.ok, first_failure=first, detail=verdict.as_dict())


class KubeletsBack:
    """The kubelet rollout port during a rollback: kubelets put back with ``rollback-node.yml``
    (the node's kubelet at its snapshot version, a worker's kubeadm at the restored control plane's)."""

    def __init__(self, cluster: session.ClusterSession, rollout_: rollout.Rollout, control_plane: Version) -> None:
        self.packages = cluster.cfg.packages
        self.rollout = rollout_
        self.control_plane_version = control_plane

    def kubelet(self, nodes: tuple[str, ...], version: Version) -> None:
        variables = {
            "kubelet_packages": rendering.package_vars(self.packages, version),
            "kubeadm_packages": rendering.package_vars(self.packages, self.control_plane_version),
        }
        self.rollout.run("rollback-node.yml", nodes, variables)


def real(
    cluster: session.ClusterSession,
    state: store.Store,
    run_id: records.RunId,
    drainer: Drainer,
    control_plane: Version,
) -> ports.Ports:
    recorder = runs.task_recorder(state, cluster.name, run_id)
    kubeadm = rollout.Rollout(cluster, writes.Writer(cluster.api), recorder)
    probe = gates.ClusterGate(cluster, catalog_mod.load())
    return ports.Ports(
        nodes=Playbooks(kubeadm, run_id),
        etcd=Etcd(cluster),
        cluster=Cluster(cluster, state, probe),
        probe=probe,
        drainer=drainer,
        kubelets=KubeletsBack(cluster, kubeadm, control_plane),
    )
