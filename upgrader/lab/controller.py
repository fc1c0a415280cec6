"""The lab's controllers: what kube-controller-manager and the scheduler would do for the seeded workloads.

Once the API answers it seeds a namespace ``demo`` with a ReplicaSet ``web`` of three pods guarded by a
PodDisruptionBudget (minAvailable 2), a StatefulSet ``db`` of two pods guarded by a budget of its own
(maxUnavailable 1), and in ``kube-system`` the DaemonSet ``kube-proxy`` with a pod per node, so drains
have something to evict, something that comes back under its own name, and something to skip. Then,
every second:

- the ReplicaSet keeps ``web`` at three pods and the StatefulSet keeps ``db-0`` and ``db-1``, the next
  ordinal only once the one before is Ready (OrderedReady), placing new pods on Ready, schedulable
  workers, the way the scheduler would; the DaemonSet puts back a node's kube-proxy pod;
- the disruption controller writes every budget's status (``lab.disruption``), which the apiserver's
  eviction handler spends;
- etcd's NOSPACE alarm is raised and cleared for the ``disk-full`` fault.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from upgrader.etcd import kv
from upgrader.lab import disruption, faults, http, manifests, topology

log = logging.getLogger(__name__)

NAMESPACE = "demo"
WEB_REPLICAS = 3
DB_REPLICAS = 2
PAUSE = "registry.k8s.io/pause:3.10"


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

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Creates, or reads what already exists (seeding is repeated after a restart)."""
        reply = self.api.request("POST", path, body)
        if reply.status == 409 and body.get("metadata", {}).get("name"):
            reply = self.api.get(f"{path}/{body['metadata']['name']}")
        if reply.status not in (200, 201):
            raise OSError(f"POST {path}: {reply.status}")
        found: dict[str, Any] = reply.json()
        return found

    def _list(self, path: str) -> list[dict[str, Any]] | None:
        reply = self.api.get(path)
        return list(reply.json()["items"]) if reply.status == 200 else None

    def _etcd_section(self) -> str:
        """The ClusterConfiguration's etcd: kubeadm's local etcd, or the external one Kubespray configures
        (its kubeadm-config template: endpoints, and the first control plane's client certificate)."""
        if not self.lab.external_etcd:
            return "etcd:\n  local:\n    dataDir: /var/lib/etcd\n"
        first = self.lab.control_plane[0].name
        endpoints = "".join(f"    - {e}\n" for e in self.lab.etcd_endpoints())
        ssl = manifests.ETCD_CERT_DIR
        return (
            f"etcd:\n  external:\n    endpoints:\n{endpoints}    caFile: {ssl}/ca.pem\n"
            f"    certFile: {ssl}/node-{first}.pem\n    keyFile: {ssl}/node-{first}-key.pem\n"
        )

    def seed(self) -> None:
        for namespace in ("kube-system", "default", NAMESPACE):
            self._post("/api/v1/namespaces", {"metadata": {"name": namespace}})
        for name, spec in (
            ("web", {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
            ("db", {"maxUnavailable": 1, "selector": {"matchExpressions": [_in("app", "db")]}}),
        ):
            budget = {"metadata": {"name": name}, "spec": spec}
            self._post(f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets", budget)
        self._post(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets",
            {"metadata": {"name": "web-7d4b9", "labels": {"app": "web"}}, "spec": _workload("web", WEB_REPLICAS)},
        )
        self._post(
            f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets",
            {
                "metadata": {"name": "db", "labels": {"app": "db"}},
                "spec": {**_workload("db", DB_REPLICAS), "serviceName": "db", "podManagementPolicy": "OrderedReady"},
            },
        )
        proxy = _workload("kube-proxy", 0, image=f"registry.k8s.io/kube-proxy:v{self.lab.version}", label="k8s-app")
        proxy.pop("replicas")
        daemonset = {"metadata": {"name": "kube-proxy"}, "spec": proxy}
        self._post("/apis/apps/v1/namespaces/kube-system/daemonsets", daemonset)
        self._post(
            "/api/v1/namespaces/kube-system/configmaps",
            {
                "metadata": {"name": "kubeadm-config"},
                "data": {
                    "ClusterConfiguration": f"apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
                    f"kubernetesVersion: v{self.lab.version}\n"
                    f"controlPlaneEndpoint: {self.lab.endpoint_ip}:6443\n" + self._etcd_section()
                },
            },
        )
        (self.lab.run_dir / "seeded").touch()
        self.seeded = True

    def _schedulable(self) -> list[str]:
        nodes = self._list("/api/v1/nodes") or []
        ready = [n for n in nodes if _ready(n) and not (n.get("spec") or {}).get("unschedulable")]
        # The seeded pods tolerate the control-plane taint (TOLERATIONS), so the control plane takes them
        # when no worker can: with every node cordoned a new pod waits, and a budget that needs it holds
        # the drain. Workers first: a simplification of the scheduler's spreading.
        untainted = [n for n in ready if not _taints(n)]
        tolerated = [n for n in ready if all(_tolerated(t) for t in _taints(n))]
        return [n["metadata"]["name"] for n in untainted or tolerated]

    def _create_pod(
        self, kind: str, owner: dict[str, Any], node: str, metadata: dict[str, Any], spec: dict[str, Any]
    ) -> None:
        reference = {
            "apiVersion": "apps/v1",
            "kind": kind,
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        body = {"metadata": {**metadata, "ownerReferences": [reference]}, "spec": {**spec, "nodeName": node}}
        self._post(f"/api/v1/namespaces/{owner['metadata']['namespace']}/pods", body)

    def reconcile_workloads(self) -> None:
        candidates = self._schedulable()
        pods = self._list(f"/api/v1/namespaces/{NAMESPACE}/pods")
        if pods is None:
            return
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        load = {n: 0 for n in candidates}
        for pod in live:
            node = pod.get("spec", {}).get("nodeName")
            if node in load:
                load[node] += 1

        def place() -> str | None:
            if not load:
                return None
            target = min(load, key=lambda n: (load[n], n))
            load[target] += 1
            return target

        for owner in self._list(f"/apis/apps/v1/namespaces/{NAMESPACE}/replicasets") or []:
            mine = [p for p in live if _owned_by(p, owner)]
            for _ in range(int(owner["spec"].get("replicas", 1)) - len(mine)):
                node = place()
                if node is None:
                    break
                template = owner["spec"]["template"]
                metadata = {"generateName": f"{owner['metadata']['name']}-", "labels": template["metadata"]["labels"]}
                self._create_pod("ReplicaSet", owner, node, metadata, template["spec"])
        for owner in self._list(f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets") or []:
            name = owner["metadata"]["name"]
            members = {p["metadata"]["name"]: p for p in pods if _owned_by(p, owner)}
            for ordinal in range(int(owner["spec"].get("replicas", 1))):
                pod_name = f"{name}-{ordinal}"
                if pod_name in members:
                    if not disruption.pod_ready(members[pod_name]):
                        break  # OrderedReady: the next ordinal waits for this one
                    continue
                node = place()
                if node is None:
                    break
                template = owner["spec"]["template"]
                labels = {**template["metadata"]["labels"], "statefulset.kubernetes.io/pod-name": pod_name}
                self._create_pod("StatefulSet", owner, node, {"name": pod_name, "labels": labels}, template["spec"])
                break  # one at a time, each once the one before is Ready
        self._reconcile_daemonset()

    def _reconcile_daemonset(self) -> None:
        reply = self.api.get("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")
        pods = self._list("/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-proxy")
        if reply.status != 200 or pods is None:
            return  # deleted: its pods are orphans now, as after kubectl delete --cascade=orphan
        owner = reply.json()
        have = {p.get("spec", {}).get("nodeName") for p in pods}
        template = owner["spec"]["template"]
        for node in self.lab.kube_nodes:
            if node.name not in have:
                metadata = {"name": f"kube-proxy-{node.name}", "labels": template["metadata"]["labels"]}
                self._create_pod("DaemonSet", owner, node.name, metadata, template["spec"])

    def reconcile_budgets(self) -> None:
        """The disruption controller: every budget's status, written only if the budget is unchanged."""
        budgets = self._list("/apis/policy/v1/poddisruptionbudgets")
        pods = self._list("/api/v1/pods")
        if budgets is None or pods is None:
            return
        scales: dict[tuple[str, str, str], int | None] = {}

        def scale_of(namespace: str, kind: str, name: str) -> int | None:
            key = (namespace, kind, name)
            if key not in scales:
                plural = {"ReplicaSet": "replicasets", "StatefulSet": "statefulsets"}.get(kind)
                reply = self.api.get(f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}") if plural else None
                scales[key] = int(reply.json()["spec"].get("replicas", 1)) if reply and reply.status == 200 else None
            return scales[key]

        now = datetime.now(UTC)
        for budget in budgets:
            new = disruption.status(budget, disruption.selected(budget, pods), scale_of, now)
            if new == budget.get("status"):
                continue
            meta = budget["metadata"]
            path = f"/apis/policy/v1/namespaces/{meta['namespace']}/poddisruptionbudgets/{meta['name']}/status"
            self.api.request("PUT", path, {**budget, "status": new})  # a 409 is retried next round

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
                self.reconcile_workloads()
                self.reconcile_budgets()
                self.disk_alarms()
            except (OSError, ValueError, kv.EtcdUnavailable) as exc:
                log.debug("controller: %s", exc)
            self.stop_event.wait(1.0)


def _in(key: str, *values: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": list(values)}


TOLERATIONS = [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}]


def _tolerated(taint: dict[str, Any]) -> bool:
    return any(t["key"] == taint.get("key") and t["effect"] == taint.get("effect") for t in TOLERATIONS)


def _workload(app: str, replicas: int, *, image: str = PAUSE, label: str = "app") -> dict[str, Any]:
    return {
        "replicas": replicas,
        "selector": {"matchLabels": {label: app}},
        "template": {
            "metadata": {"labels": {label: app}},
            "spec": {"containers": [{"name": app, "image": image}], "tolerations": TOLERATIONS},
        },
    }


def _owned_by(pod: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(
        o.get("controller") and o.get("uid") == owner["metadata"]["uid"]
        for o in pod["metadata"].get("ownerReferences") or []
    )
