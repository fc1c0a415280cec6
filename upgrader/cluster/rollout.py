"""Rolling versions out to nodes: the engine's executor port on a real cluster (and the lab).

- ``set_emulation``: ``--emulated-version`` for kube-apiserver, kube-controller-manager and
  kube-scheduler in the kubeadm ClusterConfiguration's ``extraArgs`` (v1beta4 lists or v1beta3 maps),
  which ``kubeadm upgrade apply`` and ``upgrade node`` then write into each node's manifests: a
  two-step hop goes in through kubeadm's own mechanism, and the commit takes it out the same way.
- ``control_plane`` and ``kubelet``: the upgrade playbooks on one node (``--limit``), with the package
  variables rendered for the configured method.
- ``etcd_member``: the stacked etcd member's image tag on one node (``upgrade-etcd.yml``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from upgrader import errors
from upgrader.cluster import session
from upgrader.core.versions import Minor, Version
from upgrader.executor import rendering, runner
from upgrader.kube import writes

EMULATED_FLAG = "emulated-version"
COMPONENTS = ("apiServer", "controllerManager", "scheduler")


MAP_ARGS = "kubeadm.k8s.io/v1beta3"  # extraArgs is a map of flag -> value
LIST_ARGS = "kubeadm.k8s.io/v1beta4"  # extraArgs is a list of {name, value}


def with_emulation(cluster_configuration: str, minor: Minor | None) -> str:
    """The ClusterConfiguration with ``--emulated-version`` set to ``minor`` (or removed) on every
    component that takes it; unchanged text when it already says so. The shape of ``extraArgs`` is
    the one its ``apiVersion`` defines (a v1beta3 document without any ``extraArgs`` still gets a map)."""
    config: dict[str, Any] = yaml.safe_load(cluster_configuration) or {}
    api_version = config.get("apiVersion")
    if api_version not in (MAP_ARGS, LIST_ARGS):
        raise errors.OperationFailed(
            f"the kubeadm ClusterConfiguration is {api_version!r}; upgrader edits {MAP_ARGS} and {LIST_ARGS}"
        )
    changed = False
    for component in COMPONENTS:
        section = config.setdefault(component, {}) or {}
        config[component] = section
        extra = section.get("extraArgs")
        if api_version == MAP_ARGS:
            extra = extra if isinstance(extra, dict) else {}
            if minor is not None or extra:
                section["extraArgs"] = extra
            before = extra.get(EMULATED_FLAG)
            if minor is None:
                extra.pop(EMULATED_FLAG, None)
            else:
                extra[EMULATED_FLAG] = str(minor)
            changed |= before != extra.get(EMULATED_FLAG)
        else:  # v1beta4: a list of {name, value}
            items = [e for e in (extra or []) if e.get("name") != EMULATED_FLAG]
            if minor is not None:
                items.append({"name": EMULATED_FLAG, "value": str(minor)})
            changed |= items != (extra or [])
            if items:
                section["extraArgs"] = items
            else:
                section.pop("extraArgs", None)
    return yaml.safe_dump(config, sort_keys=False) if changed else cluster_configuration


TaskRecorder = Callable[[str, runner.TaskResult], None]  # (playbook, one task's result on one host)


class Rollout:
    def __init__(
        self, cluster: session.ClusterSession, writer: writes.Writer, record: TaskRecorder | None = None
    ) -> None:
        self.cluster = cluster
        self.writer = writer
        self.record = record

    def set_emulation(self, minor: Minor | None) -> None:
        self.writer.edit_cluster_configuration(lambda text: with_emulation(text, minor))

    def control_plane(self, node: str, version: Version, *, first: bool) -> None:
        self._playbook("upgrade-control-plane.yml", (node,), version, first=first)

    def kubelet(self, nodes: tuple[str, ...], version: Version) -> None:
        self._playbook("upgrade-node.yml", nodes, version)

    def etcd_member(self, node: str, version: Version) -> None:
        self.run("upgrade-etcd.yml", (node,), {"etcd_version": str(version)})

    def etcd_service(self, host: str, version: Version, *, restart: bool) -> None:
        releases = self.cluster.cfg.etcd.releases or rendering.ETCD_RELEASES
        variables = {"etcd_version": str(version), "etcd_releases": releases.rstrip("/"), "etcd_restart": restart}
        self.run("upgrade-etcd-service.yml", (host,), variables)

    def _playbook(self, playbook: str, nodes: tuple[str, ...], version: Version, **extra: Any) -> None:
        self.run(playbook, nodes, {**rendering.package_vars(self.cluster.cfg.packages, version), **extra})

    def run(self, playbook: str, nodes: tuple[str, ...], variables: dict[str, Any]) -> runner.PlaybookResult:
        """One of upgrader's playbooks on ``nodes``, every task recorded; raises unless it succeeded."""
        result = self.cluster.playbook(playbook, extravars=variables, limit=rendering.node_limit(*nodes), timeout=1800)
        where = ", ".join(nodes)
        if self.record is not None:
            for task in result.tasks:
                self.record(playbook, task)
        if result.status is not runner.Status.SUCCESSFUL:
            detail = "; ".join(result.failures()[:2]) or f"status {result.status.value}, rc {result.rc}"
            if result.status is runner.Status.CANCELED:
                raise KeyboardInterrupt(f"{playbook} on {where} canceled")
            raise errors.ExecutorError(f"{playbook} on {where} failed: {detail}")
        return result
