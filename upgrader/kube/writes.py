"""The writes upgrader makes through the Kubernetes API, kept apart from the read-only ``cluster`` module:
cordon and uncordon a node, evict a pod (policy/v1 Eviction, which honours PodDisruptionBudgets), and
the reads a drain needs (the pods bound to a node, with what owns them).

An eviction refused for a disruption budget (HTTP 429) is a result, not an error: the caller retries
until its drain timeout. Every other failure becomes ``KubeUnavailable``.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from upgrader.kube.cluster import Cluster

_MERGE = "application/strategic-merge-patch+json"
KUBEADM_CONFIG = "kubeadm-config"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class Evicted(enum.StrEnum):
    EVICTED = "evicted"
    GONE = "gone"  # the pod no longer exists: nothing to evict
    BLOCKED = "blocked"  # 429: a PodDisruptionBudget does not allow it now


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    owner_kind: str | None  # ReplicaSet, DaemonSet, StatefulSet, Job, ... or None for a bare pod
    mirror: bool  # a static pod's mirror: the kubelet owns it, evicting it does nothing
    empty_dir: bool  # has emptyDir volumes, whose data an eviction deletes
    phase: str
    uid: str = ""  # the object's identity: a StatefulSet's pod comes back under the same name, not this uid
    owner_name: str = ""  # the controller's name (a DaemonSet's, to see whether it still exists)
    owner_api_version: str = ""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        """Succeeded or Failed: its disruption has already happened, so kubectl's filters all let it go."""
        return self.phase in ("Succeeded", "Failed")

    @property
    def daemon(self) -> bool:
        """Controlled by an apps/v1 DaemonSet (kubectl's isControllerRefDaemonSet)."""
        return self.owner_kind == "DaemonSet" and self.owner_api_version == "apps/v1"


@dataclass(frozen=True)
class Eviction:
    outcome: Evicted
    detail: str = ""  # for BLOCKED: the apiserver's reason, naming the budget


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason or "")
    causes = (body.get("details") or {}).get("causes") or []
    detail = "; ".join(str(c.get("message", "")) for c in causes if c.get("message"))
    return detail or str(body.get("message") or exc.reason or "")


class Writer:
    """Writes through one ``Cluster``'s client (the command's one Kubernetes session)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.core = client.CoreV1Api(cluster.api)
        self.timeout = cluster.timeout

    def set_unschedulable(self, node: str, unschedulable: bool) -> None:
        """Cordon (True) or uncordon (False) ``node``; idempotent."""
        self.cluster.call(
            f"{'cordon' if unschedulable else 'uncordon'} {node}",
            lambda: self.core.patch_node(
                node,
                {"spec": {"unschedulable": unschedulable or None}},
                _content_type=_MERGE,
                _request_timeout=self.timeout,
            ),
        )

    def unschedulable(self, node: str) -> bool:
        found = self.cluster.call(f"read node {node}", lambda: self.core.read_node(node, _request_timeout=self.timeout))
        return bool(found.spec and found.spec.unschedulable)

    def pods_on(self, node: str) -> list[PodInfo]:
        items = self.cluster.call(
            f"list pods on {node}",
            lambda: self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _request_timeout=self.timeout
            ),
        ).items
        out = []
        for pod in items:
            # Only the controller counts, as kubectl's GetControllerOf: an owner that is not the controller
            # recreates nothing, so such a pod is bare (kept unless --force-drain).
            owners = pod.metadata.owner_references or []
            controller = next((o for o in owners if o.controller), None)
            volumes = (pod.spec.volumes if pod.spec else None) or []
            out.append(
                PodInfo(
                    namespace=pod.metadata.namespace,
                    name=pod.metadata.name,
                    owner_kind=controller.kind if controller else None,
                    mirror=MIRROR_ANNOTATION in (pod.metadata.annotations or {}),
                    empty_dir=any(v.empty_dir is not None for v in volumes),
                    phase=(pod.status.phase if pod.status else "") or "",
                    uid=str(pod.metadata.uid or ""),
                    owner_name=controller.name if controller else "",
                    owner_api_version=controller.api_version if controller else "",
                )
            )
        return out

    def daemonset_exists(self, namespace: str, name: str) -> bool:
        """Whether the DaemonSet still exists: one deleted with ``--cascade=orphan`` leaves pods nothing
        will recreate (kubectl's daemonSetFilter refuses them unless forced)."""
        apps = client.AppsV1Api(self.cluster.api)

        def call() -> bool:
            try:
                apps.read_namespaced_daemon_set(name, namespace, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            return True

        return self.cluster.call(f"read daemonset {namespace}/{name}", call)  # type: ignore[no-any-return]

    def evict(self, pod: PodInfo) -> Eviction:
        body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace))

        def call() -> Eviction:
            try:
                self.core.create_namespaced_pod_eviction(pod.name, pod.namespace, body, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 429:
                    return Eviction(Evicted.BLOCKED, _status_message(exc))
                if exc.status == 404:
                    return Eviction(Evicted.GONE)
                raise
            return Eviction(Evicted.EVICTED)

        return self.cluster.call(f"evict {pod.ref}", call)  # type: ignore[no-any-return]

    def edit_cluster_configuration(self, change: Callable[[str], str]) -> bool:
        """Rewrites the kubeadm ClusterConfiguration (the ``kubeadm-config`` ConfigMap) with ``change``,
        only if it is unchanged since it was read (resourceVersion); True if anything changed."""
        configmap = self.cluster.call(
            "read kubeadm-config",
            lambda: self.core.read_namespaced_config_map(KUBEADM_CONFIG, "kube-system", _request_timeout=self.timeout),
        )
        current = (configmap.data or {}).get("ClusterConfiguration", "")
        updated = change(current)
        if updated == current:
            return False
        body = {
            "metadata": {"resourceVersion": configmap.metadata.resource_version},
            "data": {"ClusterConfiguration": updated},
        }
        self.cluster.call(
            "update kubeadm-config",
            lambda: self.core.patch_namespaced_config_map(
                KUBEADM_CONFIG, "kube-system", body, _content_type=_MERGE, _request_timeout=self.timeout
            ),
        )
        return True

    def pod_exists(self, pod: PodInfo) -> bool:
        """Whether this very pod is still there: not found, or found with another uid (a StatefulSet's
        controller recreates ``db-0`` under its name within seconds), is gone, as kubectl's waitForDelete
        counts it."""

        def call() -> bool:
            try:
                found = self.core.read_namespaced_pod(pod.name, pod.namespace, _request_timeout=self.timeout)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            uid = found.metadata.uid if found.metadata else None
            return not pod.uid or str(uid or "") == pod.uid

        return self.cluster.call(f"read pod {pod.ref}", call)  # type: ignore[no-any-return]
