"""Draining a node the way ``kubectl drain`` does, through the Eviction API so PodDisruptionBudgets hold.

- cordon first (the caller does), then evict every pod bound to the node except mirror pods (the
  kubelet owns them) and DaemonSet pods (their controller would put them straight back), as
  ``kubectl drain --ignore-daemonsets`` does (``pkg/drain/filters.go``);
- a pod with no controller is refused unless ``force`` (``kubectl drain --force``): nothing would
  recreate it; so is a DaemonSet's pod whose DaemonSet no longer exists (deleted with
  ``--cascade=orphan``);
- a finished pod (Succeeded or Failed) is evicted whatever owns it and whatever its volumes: its
  disruption has already happened;
- a pod with emptyDir volumes is refused unless ``delete_emptydir_data``
  (``kubectl drain --delete-emptydir-data``): its data is deleted with it;
- an eviction a budget refuses (HTTP 429) is retried until ``timeout``, after 1 s, then 2 s, then
  every ``retry`` seconds (``kubectl drain`` waits 5 s each time; a budget often allows the next
  eviction as soon as the replacement is ready, seconds later); then the drain fails naming the pod
  and the budget's message;
- the drain is done when every evicted pod is gone from the node.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from upgrader import errors
from upgrader.kube import writes


class DrainFailed(errors.OperationFailed):
    """A node could not be drained; the message names the pod and why."""


@dataclass(frozen=True)
class DrainPolicy:
    timeout: float = 600.0
    force: bool = False  # evict pods no controller would recreate
    delete_emptydir_data: bool = False  # kubectl drain's default: refuse, unless --delete-emptydir-data
    retry: float = 5.0  # the longest wait between evictions a budget refused (1 s, 2 s, 4 s, then this)
    first_retry: float = 1.0
    poll: float = 1.0


class PodWriter(Protocol):
    """What a drain needs of the Kubernetes API (``kube.writes.Writer``)."""

    def unschedulable(self, node: str) -> bool: ...

    def set_unschedulable(self, node: str, unschedulable: bool) -> None: ...

    def pods_on(self, node: str) -> list[writes.PodInfo]: ...

    def evict(self, pod: writes.PodInfo) -> writes.Eviction: ...

    def pod_exists(self, pod: writes.PodInfo) -> bool: ...

    def daemonset_exists(self, namespace: str, name: str) -> bool: ...


class Drainer:
    def __init__(self, writer: PodWriter, policy: DrainPolicy, cancel: threading.Event) -> None:
        self.writer = writer
        self.policy = policy
        self.cancel = cancel

    def cordon(self, node: str) -> None:
        self.writer.set_unschedulable(node, True)

    def uncordon(self, node: str) -> None:
        self.writer.set_unschedulable(node, False)

    def cordoned(self, node: str) -> bool:
        return self.writer.unschedulable(node)

    def _to_evict(self, node: str) -> list[writes.PodInfo]:
        pods = [p for p in self.writer.pods_on(node) if not p.mirror]
        finished = [p for p in pods if p.finished]
        running = [p for p in pods if not p.finished]
        daemons = [p for p in running if p.daemon]
        orphans = [p for p in daemons if not self.writer.daemonset_exists(p.namespace, p.owner_name)]
        if orphans and not self.policy.force:
            names = ", ".join(f"{p.ref} (DaemonSet {p.owner_name})" for p in orphans[:5])
            raise DrainFailed(
                f"cannot drain {node}: {names}: its DaemonSet no longer exists, so nothing would recreate it; "
                "delete it, or pass --force-drain"
            )
        others = [p for p in running if not p.daemon]
        bare = [p.ref for p in others if p.owner_kind is None]
        if bare and not self.policy.force:
            raise DrainFailed(
                f"cannot drain {node}: {', '.join(bare[:5])} has no controller and would not come back; "
                "delete it, or pass --force-drain"
            )
        local = [p.ref for p in others if p.empty_dir]
        if local and not self.policy.delete_emptydir_data:
            raise DrainFailed(
                f"cannot drain {node}: {', '.join(local[:5])} uses emptyDir, whose data an eviction deletes; "
                "pass --delete-emptydir-data"
            )
        return finished + orphans + others

    def drain(self, node: str) -> int:
        pods = self._to_evict(node)
        deadline = time.monotonic() + self.policy.timeout
        waiting = list(pods)
        blocked: dict[str, str] = {}
        pause = min(self.policy.first_retry, self.policy.retry)
        while waiting:
            self._check(deadline, node, blocked)
            still: list[writes.PodInfo] = []
            for pod in waiting:
                result = self.writer.evict(pod)
                if result.outcome is writes.Evicted.BLOCKED:
                    blocked[pod.ref] = result.detail or "a PodDisruptionBudget does not allow it"
                    still.append(pod)
                else:
                    blocked.pop(pod.ref, None)
            waiting = still
            if waiting:
                self._sleep(pause, deadline)
                pause = min(pause * 2, self.policy.retry)
        gone = list(pods)
        while gone:
            self._check(deadline, node, {p.ref: "still terminating" for p in gone})
            gone = [p for p in gone if self.writer.pod_exists(p)]
            if gone:
                self._sleep(self.policy.poll, deadline)
        return len(pods)

    def _check(self, deadline: float, node: str, blocked: dict[str, str]) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt("canceled")
        if time.monotonic() >= deadline:
            pod, why = next(iter(blocked.items())) if blocked else ("?", "timed out")
            raise DrainFailed(
                f"draining {node} timed out after {self.policy.timeout:.0f}s: {pod}: {why}"
                + (f" (and {len(blocked) - 1} more pods)" if len(blocked) > 1 else "")
            )

    def _sleep(self, seconds: float, deadline: float) -> None:
        self.cancel.wait(max(0.0, min(seconds, deadline - time.monotonic())))
