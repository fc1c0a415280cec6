"""A rollback's vocabulary: its two routes, its step kinds, its options, and what was seen live."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from upgrader.core.versions import Minor, Version
from upgrader.engine import expectations
from upgrader.engine.ports import Expected
from upgrader.snapshots import local
from upgrader.state import records
from upgrader.usecases import apply

STOPPED = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")  # held before etcd, started after it


BUMP_MARGIN = 1000  # --bump-revision adds this beyond the gap: cheap, and covers writes after the reading


class Route(enum.StrEnum):
    WINDOW = "window"
    FULL_RESTORE = "full-restore"


class Kind(enum.StrEnum):
    """The steps of a rollback run, in the order they may appear."""

    HOLD_CONTROL_PLANE = "hold-control-plane"
    HOLD_ETCD = "hold-etcd"
    RESTORE_ETCD = "restore-etcd"
    START_ETCD = "start-etcd"
    REVISION = "revision"
    KUBEADM_CONFIG = "kubeadm-config"
    CONTROL_PLANE = "restore-control-plane"
    KUBELETS = "kubelets"
    VERIFY = "verify"
    CLEAN_UP = "clean-up"


DESCRIPTIONS = {
    Kind.HOLD_CONTROL_PLANE: "stop the apiservers, controller managers and schedulers; record etcd's revision",
    Kind.HOLD_ETCD: "stop etcd on every member",
    Kind.RESTORE_ETCD: "restore every etcd member from the snapshot (old data directories kept aside)",
    Kind.START_ETCD: "start etcd from the snapshot's manifests",
    Kind.REVISION: "move the revision past the highest one served, compact older revisions",
    Kind.KUBEADM_CONFIG: "put back the snapshot's kubeadm ClusterConfiguration",
    Kind.CONTROL_PLANE: "kubeadm and the snapshot's control-plane manifests",
    Kind.KUBELETS: "put back kubelets newer than the restored control plane allows",
    Kind.VERIFY: "verify the cluster against the snapshot",
    Kind.CLEAN_UP: "remove what was kept aside",
}


@dataclass(frozen=True)
class Options:
    allow_revision_regression: bool = False
    force_drain: bool = False
    delete_emptydir_data: bool = False
    drain_timeout: float | None = None
    wait_timeout: float = 300.0
    insecure: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "allow_revision_regression": self.allow_revision_regression,
            "force_drain": self.force_drain,
            "delete_emptydir_data": self.delete_emptydir_data,
            "drain_timeout": self.drain_timeout,
            "insecure": list(self.insecure),
        }

    def for_apply(self) -> apply.Options:
        return apply.Options(
            force_drain=self.force_drain,
            delete_emptydir_data=self.delete_emptydir_data,
            drain_timeout=self.drain_timeout,
            wait_timeout=self.wait_timeout,
            insecure=self.insecure,
        )


@dataclass(frozen=True)
class Observed:
    """What the cluster runs as the rollback is prepared (what answers)."""

    apiservers: Mapping[str, tuple[Version, Minor]]
    kubelets: Mapping[str, Version]
    revision: int | None
    etcd_version: Version | None

    @property
    def minor(self) -> Minor | None:
        return max((v.minor_version for v, _ in self.apiservers.values()), default=None)


def snapshot_version(record: records.SnapshotRecord) -> Version:
    """The control plane's version when the snapshot was taken (its newest apiserver)."""
    return newest(expectations.initial(local.facts_of(record)))


def newest(then: Expected) -> Version:
    """The newest apiserver of a state: the control plane's version."""
    return max(v for v, _ in then.apiservers.values())
