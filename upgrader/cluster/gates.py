"""The live cluster against what a plan expects: the probe the engine uses to skip finished work and to
wait for a change, and the gate it runs after every step.

The gate holds when every apiserver serves the expected version and emulated version and answers
``/readyz``, every node is Ready with the expected kubelet, etcd answers on every member with a leader,
and the version-skew policy (``rules.skew``) holds on the live versions. Each failing check is one line
naming the node and what differs.
"""

from __future__ import annotations

from collections.abc import Mapping

from upgrader import errors
from upgrader.cluster import health, session
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import skew
from upgrader.core.versions import Minor, Version
from upgrader.engine.ports import EtcdMember, Expected
from upgrader.kube import cluster as kube


def plain(version: str) -> Version | None:
    try:
        return Version.parse(version.lstrip("v").split("-")[0].split("+")[0])
    except errors.InputError:
        return None


class ClusterGate:
    """Probe and gate over one cluster session."""

    def __init__(self, cluster: session.ClusterSession, catalog: catalog_mod.Catalog) -> None:
        self.cluster = cluster
        self.catalog = catalog

    def servers(self) -> dict[str, kube.Apiserver]:
        """Each control-plane node's apiserver, from its mirror pod (endpoint, manifest flags)."""
        try:
            return {a.node: a for a in self.cluster.api.apiservers()}
        except kube.KubeUnavailable:
            return {}

    def apiserver(self, node: str, servers: Mapping[str, kube.Apiserver] | None = None) -> tuple[Version, Minor] | None:
        """``node``'s apiserver as it answers: its binary version, and the version it emulates. ``/version``
        reports the emulation only from Kubernetes 1.33 (apimachinery's ``version.Info`` gained
        ``emulationMajor``/``emulationMinor`` in v0.33); an older apiserver started with
        ``--emulated-version`` says only its binary's version, so the flag is read from its mirror pod.
        ``servers`` saves listing the mirror pods again."""
        server = (self.servers() if servers is None else servers).get(node)
        if server is None:
            return None
        try:
            live = self.cluster.api.version(server.endpoint)
        except kube.KubeUnavailable:
            return None
        version = plain(live.git_version)
        if version is None:
            return None
        emulation = live.emulation or server.emulated_flag
        try:
            return version, Minor.parse(emulation) if emulation else version.minor_version
        except errors.UpgraderError:
            return version, version.minor_version

    def kubelet(self, node: str) -> tuple[Version | None, bool]:
        """``node``'s kubelet version and readiness, from its own Node object (one GET, not a list)."""
        try:
            found = self.cluster.api.node(node)
        except kube.KubeUnavailable:
            return None, False
        if found is None:
            return None, False
        return plain(found.kubelet), found.ready

    def etcd(self, node: str) -> EtcdMember | None:
        """The etcd member named ``node`` (kubeadm names a stacked member after its node) as it answers
        on its own client URL."""
        store = self.cluster.etcd
        try:
            member = next((m for m in store.members() if m.name == node), None)
            if member is None or not member.client_urls:
                return None
            status = store.member_status(member.client_urls[0])
        except errors.UpgraderError:
            return None
        version = plain(status.version)
        return EtcdMember(version, status.leader, status.revision) if version is not None else None

    def check(self, expected: Expected) -> list[str]:
        problems: list[str] = []
        apiservers: dict[str, Version] = {}
        emulated: dict[str, Minor] = {}
        servers = self.servers()  # once for every apiserver, not once each
        for name, wanted in sorted(expected.apiservers.items()):
            live = self.apiserver(name, servers)
            if live is None:
                problems.append(f"the apiserver on {name} does not answer")
                continue
            apiservers[name], emulated[name] = live
            if live != wanted:
                problems.append(
                    f"the apiserver on {name} serves v{live[0]} emulating {live[1]}, the plan expects "
                    f"v{wanted[0]} emulating {wanted[1]}"
                )
        try:
            listed = self.cluster.api.nodes()
        except kube.KubeUnavailable as exc:
            return [*problems, str(exc)]
        nodes = {n.name: n for n in listed}
        kubelets: dict[str, Version] = {}
        for name, wanted_kubelet in sorted(expected.kubelets.items()):
            node = nodes.get(name)
            running = plain(node.kubelet) if node else None
            if node is None or running is None:
                problems.append(f"node {name} has no Node object or no kubelet version")
                continue
            kubelets[name] = running
            if running != wanted_kubelet:
                problems.append(f"node {name} runs kubelet v{running}, the plan expects v{wanted_kubelet}")
        problems += list(health.check(self.cluster, servers=list(servers.values()) or None, nodes=listed).problems)
        if apiservers and kubelets:
            state = skew.ClusterState(apiservers, emulated, kubelets)
            problems += [f"skew: {f.message}" for f in skew.violations(state, self.catalog)]
        return problems
