"""What a rollback's steps need from the world, as small protocols of upgrader's own.

The real implementations (``rollback.adapters``) run playbooks on the control-plane nodes, talk to
etcd and the API, and verify against the snapshot; the rollback's unit tests use fakes of these, the
same way the upgrade's handlers are tested against fakes of ``engine.ports``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from upgrader.core.versions import Version
from upgrader.engine.ports import Drainer, KubeletRollout, Probe


class NodeActions(Protocol):
    """Playbooks on the control-plane nodes and the etcd hosts (and every node's kubelet restart)."""

    def hold(self, hosts: list[str], components: tuple[str, ...]) -> None:
        """Moves the components' static pod manifests aside, so the kubelet stops them."""

    def restore_etcd(self, hosts: list[str], variables: Mapping[str, Any]) -> Mapping[str, bool]:
        """Restores every member from the pushed snapshot; per host, whether its tool bumped the revision."""

    def place(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        """Puts the snapshot's manifests back (and kubeadm, when asked)."""

    def restart_kubelets(self, nodes: list[str]) -> None: ...

    def etcd_service(self, hosts: list[str], action: str) -> None:
        """``systemctl stop`` or ``start`` (``action``) of etcd on its hosts, where etcd runs as a service."""

    def clean_up(self, hosts: list[str], variables: Mapping[str, Any]) -> None:
        """Removes the data directories and manifests kept aside, and the pushed snapshot."""


class Etcd(Protocol):
    def revision(self) -> int: ...

    def leader_seen_by(self, url: str) -> str | None:
        """The leader's name as the member at ``url`` sees it; raises ``UpgraderError`` if it does not answer."""

    def member_count(self) -> int: ...

    def advance_past(self, highest: int, *, max_gap: int, progress: Callable[[int, int], None]) -> Advanced:
        """No-op writes until the revision is above ``highest``, then a compaction."""


@dataclass(frozen=True)
class Advanced:
    start: int
    reached: int
    seconds: float


@dataclass(frozen=True)
class Verified:
    ok: bool
    first_failure: str  # "" when ok
    detail: Mapping[str, Any]  # the verdict, for the journal


class Cluster(Protocol):
    """The cluster as the steps between the restore and the proof see it."""

    def answers(self, host: str, port: int) -> bool:
        """Whether something listens at host:port (a stopped component's port refuses)."""

    def node_revision(self, node: str) -> int | None:
        """The etcd revision of ``node``'s Node object (its kubelet's last status), None if unreadable."""

    def installed_kubelets(self) -> Mapping[str, Version | None]:
        """Each node's own ``kubelet --version``."""

    def running_kubelets(self) -> Mapping[str, Version]:
        """The kubelet versions the Node objects report."""

    def put_cluster_configuration(self, text: str) -> bool:
        """kubeadm's ClusterConfiguration replaced by ``text``; whether it changed."""

    def settled(self, snapshot_id: str) -> bool:
        """Whether the versions, readiness, etcd and skew the API shows match the snapshot (cheap)."""

    def verify(self, snapshot_id: str) -> Verified:
        """``upgrader verify --against``, the snapshot itself already checked by this run."""


@dataclass(frozen=True)
class Ports:
    nodes: NodeActions
    etcd: Etcd
    cluster: Cluster
    probe: Probe
    drainer: Drainer
    kubelets: KubeletRollout
