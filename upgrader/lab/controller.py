"""The lab's controllers: what kube-controller-manager and the scheduler would do for the seeded workloads.

Once the API answers it seeds a namespace ``demo`` with a ReplicaSet-owned ``web`` workload of three
pods guarded by a PodDisruptionBudget (minAvailable 2), and a DaemonSet-owned ``kube-proxy`` pod per
node, so drains have something to evict and something to skip. Then it keeps ``web`` at three pods,
placing replacements on Ready, schedulable workers, the way a ReplicaSet and the scheduler would. It
also raises and clears etcd's NOSPACE alarm for the ``disk-full`` fault.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from upgrader.etcd import kv
from upgrader.lab import faults, http, topology

log = logging.getLogger(__name__)

REPLICAS = 3
NAMESPACE = "demo"


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _taints(node: dict[str, Any]) -> list[dict[str, Any]]:
    return list((node.get("spec") or {}).get("taints") or [])


class Controller:
    def __init__(self, lab: topology.Lab, stop: threading.Event) -> None:
        self.lab = lab
        self.stop_event = stop
        self.api = http.Client(lab.kubeconfig, timeout=3.0)
        self.seeded = (lab.run_dir / "seeded").exists()
        self._alarmed: set[str] = set()

    def _post(self, path: str, body: dict[str, Any]) -> None:
        reply = self.api.request("POST", path, body)
        if reply.status not in (200, 201, 409):
            raise OSError(f"POST {path}: {reply.status}")

    def seed(self) -> None:
        for namespace in ("kube-system", "default", NAMESPACE):
            self._post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        self._post(
            f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets",
            {
                "metadata": {"name": "web"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            },
        )
        self._post(
            "/api/v1/namespaces/kube-system/configmaps",
            {
                "metadata": {"name": "kubeadm-config"},
                "data": {
                    "ClusterConfiguration": f"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
                    f"kubernetesVersion: v{self.lab.version}\n"
                    f"controlPlaneEndpoint: {self.lab.endpoint_ip}:6443\n"
                    "etcd:\n  local:\n    dataDir: /var/lib/etcd\n"
                },
            },
        )
        for node in self.lab.nodes:
            self._post(
                "/api/v1/namespaces/kube-system/pods",
                {
                    "metadata": {
                        "name": f"kube-proxy-{node.name}",
                        "labels": {"k8s-app": "kube-proxy"},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "DaemonSet",
                                "name": "kube-proxy",
                                "controller": True,
                                "uid": "kube-proxy",
                            }
                        ],
                    },
                    "spec": {
                        "nodeName": node.name,
                        "containers": [
                            {"name": "kube-proxy", "image": f"registry.k8s.io/kube-proxy:v{self.lab.version}"}
                        ],
                    },
                },
            )
        (self.lab.run_dir / "seeded").touch()
        self.seeded = True

    def reconcile_web(self) -> None:
        pods = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Dweb")
        nodes = self.api.get("/api/v1/nodes")
        if pods.status != 200 or nodes.status != 200:
            return
        live = [p for p in pods.json()["items"] if not p["metadata"].get("deletionTimestamp")]
        candidates = [
            n
            for n in nodes.json()["items"]
            if _ready(n) and not (n.get("spec") or {}).get("unschedulable") and not _taints(n)
        ]
        if not candidates:  # a lab without workers: the control plane takes workloads
            candidates = [
                n for n in nodes.json()["items"] if _ready(n) and not (n.get("spec") or {}).get("unschedulable")
            ]
        load = {n["metadata"]["name"]: 0 for n in candidates}
        for pod in live:
            node = pod.get("spec", {}).get("nodeName")
            if node in load:
                load[node] += 1
        for _ in range(REPLICAS - len(live)):
            if not load:
                return
            target = min(load, key=lambda n: (load[n], n))
            load[target] += 1
            self._post(
                f"/api/v1/namespaces/{NAMESPACE}/pods",
                {
                    "metadata": {
                        "generateName": "web-",
                        "labels": {"app": "web"},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": "web-7d4b9",
                                "controller": True,
                                "uid": "web-7d4b9",
                            }
                        ],
                    },
                    "spec": {
                        "nodeName": target,
                        "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.10"}],
                    },
                },
            )

    def disk_alarms(self) -> None:
        active = {n for n, fs in faults.read(self.lab.run_dir).items() if faults.Fault.DISK_FULL in fs}
        if active == self._alarmed:
            return
        target = kv.Target(
            endpoints=self.lab.etcd_endpoints(),
            ca=self.lab.pki_dir / "etcd" / "ca.crt",
            cert=self.lab.pki_dir / "apiserver-etcd-client.crt",
            key=self.lab.pki_dir / "apiserver-etcd-client.key",
            timeout=3.0,
        )
        store = kv.KV(target)
        try:
            if active:
                store.raise_nospace_alarm()
            else:
                store.disarm_alarms()
            self._alarmed = active
        finally:
            store.close()

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if not self.seeded:
                    self.seed()
                self.reconcile_web()
                self.disk_alarms()
            except (OSError, ValueError, kv.EtcdUnavailable) as exc:
                log.debug("controller: %s", exc)
            self.stop_event.wait(1.0)
