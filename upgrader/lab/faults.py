"""Faults injected into a lab (``upgrader lab fault``), shared through ``run/faults.json``.

Each fault belongs to a node. The lab's components read the file as they go: the kubelet stops
etcd or reports NotReady, or starts no pod whose image it has not run before (``image-pull``); the
apiserver stand-in crashes or slows down; the supervisor raises etcd's NOSPACE alarm for
``disk-full``; and the kubeadm stand-in fails its upgrade commands for ``kubeadm-fail``.
"""

from __future__ import annotations

import enum
import json
import time
from pathlib import Path


class Fault(enum.StrEnum):
    APISERVER_CRASH = "apiserver-crash"
    ETCD_STOP = "etcd-stop"
    KUBELET_NOTREADY = "kubelet-notready"
    DISK_FULL = "disk-full"
    SLOW = "slow"
    KUBEADM_FAIL = "kubeadm-fail"
    IMAGE_PULL = "image-pull"  # the node pulls no image: only images it already ran start (IfNotPresent)


FILE = "faults.json"
SLOW_SECONDS = 1.5


def read(run_dir: Path) -> dict[str, set[Fault]]:
    try:
        data = json.loads((run_dir / FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {node: {Fault(f) for f in faults if f in Fault.__members__.values()} for node, faults in data.items()}


def write(run_dir: Path, faults: dict[str, set[Fault]]) -> None:
    path = run_dir / FILE
    tmp = path.with_name(f".{FILE}.tmp")
    tmp.write_text(json.dumps({n: sorted(f.value for f in fs) for n, fs in faults.items() if fs}, indent=2))
    tmp.replace(path)


class View:
    """A cached view of one node's faults, re-read at most every ``ttl`` seconds."""

    def __init__(self, run_dir: Path, node: str, ttl: float = 0.5) -> None:
        self.run_dir = run_dir
        self.node = node
        self.ttl = ttl
        self._read_at = 0.0
        self._faults: set[Fault] = set()

    def active(self) -> set[Fault]:
        now = time.monotonic()
        if now - self._read_at > self.ttl:
            self._faults = read(self.run_dir).get(self.node, set())
            self._read_at = now
        return self._faults

    def __contains__(self, fault: Fault) -> bool:
        return fault in self.active()
