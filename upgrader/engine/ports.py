"""The engine's ports: what it needs from the world, as small protocols of upgrader's own.

The real implementations drive a cluster (playbooks through the executor, drains and probes through
the Kubernetes API, snapshots through the snapshot service); the engine's tests use fakes of these
protocols, and the end-to-end tests use the real ones on the lab.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from upgrader.core.versions import Minor, Version
from upgrader.state import records


@dataclass(frozen=True)
class Expected:
    """What the cluster must look like after a step: every apiserver's version and emulated minor,
    and every kubelet's version (nodes the plan does not touch keep what the facts said)."""

    apiservers: Mapping[str, tuple[Version, Minor]] = field(default_factory=dict)
    kubelets: Mapping[str, Version] = field(default_factory=dict)


class ControlPlaneRollout(Protocol):
    """The control plane changed on its nodes (playbooks) and in the kubeadm configuration."""

    def set_emulation(self, minor: Minor | None) -> None:
        """Sets (or, with None, removes) --emulated-version in the kubeadm ClusterConfiguration."""

    def control_plane(self, node: str, version: Version, *, first: bool) -> None:
        """kubeadm at ``version`` on ``node``, then ``upgrade apply`` (``first``) or ``upgrade node``."""


class EtcdRollout(Protocol):
    """etcd members changed on their hosts: the etcd step's one action."""

    def etcd_member(self, node: str, version: Version) -> None:
        """The stacked etcd member on ``node`` at ``version``: its static pod's image tag rewritten
        (``etcd.yaml``), which the kubelet then restarts. Returns once the manifest is written, not once
        the member is back."""

    def etcd_service(self, host: str, version: Version, *, restart: bool) -> None:
        """The external etcd member on ``host`` (a systemd service) at ``version``: the release's binary,
        checked against its published sha256, in the unit's place, and the unit restarted when the binary
        changed or ``restart`` says so (a run resumed after the binary changed). Returns once restarted."""


@dataclass(frozen=True)
class EtcdMember:
    """One etcd member as it answers for itself (``etcdctl endpoint status``)."""

    version: Version
    leader: str | None  # the leader it follows; None while it sees none (no quorum)
    revision: int  # the revision it has applied


class KubeletRollout(Protocol):
    """Kubelets changed on drained nodes: upgraded by an apply, put back by a rollback."""

    def kubelet(self, nodes: tuple[str, ...], version: Version) -> None:
        """The kubelet (and kubectl, and a worker's kubeadm) at ``version`` on drained ``nodes``, restarted:
        one run for the batch."""


class Drainer(Protocol):
    def cordon(self, node: str) -> None:
        """Marks ``node`` unschedulable (idempotent)."""

    def drain(self, node: str) -> int:
        """Evicts what may be evicted from ``node`` (PodDisruptionBudgets honoured) and waits until it is
        gone; returns how many pods were evicted. Raises ``DrainFailed`` naming the pod and budget."""

    def uncordon(self, node: str) -> None: ...

    def cordoned(self, node: str) -> bool: ...


class Probe(Protocol):
    """The cluster as it is, to skip what is already done on resume and to wait for a change."""

    def apiserver(self, node: str) -> tuple[Version, Minor] | None:
        """The live version and emulated minor of ``node``'s apiserver, None when it does not answer."""

    def kubelet(self, node: str) -> tuple[Version | None, bool]:
        """The version ``node``'s kubelet reports, and whether the node is Ready."""

    def etcd(self, member: str) -> EtcdMember | None:
        """The etcd member named ``member`` as it answers, None when it does not."""


class Gate(Protocol):
    def check(self, expected: Expected) -> list[str]:
        """Every problem with the live cluster against ``expected`` (versions, readiness, etcd, skew)."""


class Snapshotter(Protocol):
    def take(self, label: str) -> str:
        """Takes a verified, known-good snapshot; returns its id. Raises if it is not known-good."""


class Journal(Protocol):
    """Where a run's progress is recorded before and after every step acts (the state store)."""

    def run(self, run_id: str) -> records.RunRecord: ...

    def step(self, run_id: str, position: int) -> records.StepRecord: ...

    def set_run(
        self,
        run_id: str,
        status: records.RunStatus,
        *,
        error: str | None = None,
        stopped_reason: str | None = None,
        at: datetime | None = None,
    ) -> None: ...

    def start_step(self, run_id: str, position: int, *, at: datetime) -> None: ...

    def step_progress(self, run_id: str, position: int, detail: Mapping[str, Any]) -> None: ...

    def finish_step(
        self, run_id: str, position: int, status: records.StepStatus, *, at: datetime, error: str | None = None
    ) -> None: ...


class StepHandler(Protocol):
    """One kind of step: what it is called, what it does, and what the cluster must look like after it
    (checked by the gate), or None when the step has no gate."""

    def describe(self, record: records.StepRecord) -> str: ...

    def act(self, record: records.StepRecord) -> None: ...

    def expected(self, record: records.StepRecord) -> Expected | None: ...


@dataclass(frozen=True)
class Ports:
    """What an upgrade's steps use."""

    control_plane: ControlPlaneRollout
    kubelets: KubeletRollout
    drainer: Drainer
    probe: Probe
    gate: Gate
    snapshotter: Snapshotter
    etcd: EtcdRollout


# The engine's vocabulary for those who watch or steer a run (the use cases and the CLI).


class Lease(Protocol):
    def check(self) -> None: ...

    def confirm(self) -> bool: ...


# A step's detail key, written before upgrader cordons a schedulable node and removed once it uncordons
# it: the nodes upgrader itself left cordoned, and so may uncordon.
CORDONED = "cordoned:"


def cordoned_by_us(run: records.RunRecord) -> list[str]:
    """The nodes this run cordoned and has not uncordoned, from the journal."""
    return sorted(key.removeprefix(CORDONED) for step in run.steps for key in step.detail if key.startswith(CORDONED))


@dataclass(frozen=True)
class Event:
    kind: str  # run-started, step-started, node-done, step-succeeded, step-failed, run-paused, ...
    message: str
    position: int | None = None
    node: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    level: records.EventLevel | None = None  # None: an error for a kind ending in "failed", else info


Observer = Callable[[Event], None]


class PauseAfter(enum.StrEnum):
    EMULATION = "emulation"  # after a control-plane step that leaves a rollback-safe window open
    HOP = "hop"  # after every control-plane or emulation-commit step
    STEP = "step"  # after every step
