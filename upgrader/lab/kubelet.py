"""The lab kubelet: runs a node's static pods and keeps its Node object and mirror pods current.

Like the real kubelet it watches ``/etc/kubernetes/manifests``: a new or changed manifest (re)starts
its component, a manifest moved out of the directory stops it (how kubeadm and restore procedures
stop control-plane components), a component that exits is restarted with a growing back-off and is
reported as not ready meanwhile. Towards the API it registers the Node, reports it Ready with the
``kubeletVersion`` of the binary its kubelet unit runs (``systemctl cat``), publishes mirror pods for its
static pods and marks the workload pods bound to it as running.

Like a real kubelet it reports the version it was started with: installing a new kubelet changes
nothing until ``systemctl restart kubelet`` (the node's stand-in, ``lab.systemctl``) asks it to
restart, so a crash between the two leaves a node "installed but not restarted", as on a real node.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from upgrader.lab import faults, http, manifests, mirror, processes, runtime, systemctl, topology

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
RUNTIME_VERSION = "containerd://2.1.4"
MAX_BACKOFF = 8.0


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StaticPod:
    manifest: str  # file name
    container: runtime.Container | None
    source: dict[str, Any] = field(default_factory=dict)  # the manifest itself, mirrored to the API
    error: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: str = field(default_factory=now)  # when its container (last) started
    not_before: float = 0.0  # crash-loop back-off
    last_exit: int | None = None
    published: dict[str, Any] = field(default_factory=dict)

    @property
    def component(self) -> str:
        return self.container.component if self.container else self.manifest.removesuffix(".yaml")

    def state(self) -> str:
        if self.error:
            return "Error"
        if self.container is None:
            return "Unknown"
        if self.container.virtual or (self.popen is not None and self.popen.poll() is None):
            return "Running"
        return "CrashLoopBackOff" if self.restarts else "Waiting"


class Kubelet:
    def __init__(self, lab: topology.Lab, node: topology.LabNode, *, stop: threading.Event) -> None:
        self.lab = lab
        self.node = node
        self.root = lab.root(node)
        self.stop_event = stop
        self.faults = faults.View(lab.run_dir, node.name)
        self.pulled: set[str] = set()  # the images this node has run: present, never pulled again
        self.pods: dict[str, StaticPod] = {}
        self._bytes: dict[str, bytes] = {}  # each manifest as last parsed
        self.lock = threading.Lock()
        self.api: http.Client | None = None
        self._registered = False
        self.log_dir = lab.run_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.running_version = self._installed()  # what this kubelet "process" was started from
        self._restart_seen = self._restart_token()

    def _installed(self) -> str:
        """The version of the binary the node's kubelet unit runs (what systemd would start)."""
        binary = systemctl.kubelet_binary(self.root)
        version = mirror.installed_version(binary) if binary else None
        return f"v{version}" if version else "unknown"

    def _restart_token(self) -> str | None:
        try:
            return systemctl.request_path(self.root).read_text().strip()
        except OSError:
            return None

    def check_restart(self) -> None:
        """A ``systemctl restart kubelet`` since the last look: run the installed kubelet from now on."""
        token = self._restart_token()
        if token is None or token == self._restart_seen:
            return
        self.running_version = self._installed()
        self._restart_seen = token
        ack = systemctl.ack_path(self.root)
        tmp = ack.with_suffix(".tmp")
        tmp.write_text(token)
        tmp.replace(ack)
        log.info("%s: kubelet restarted at %s", self.node.name, self.running_version)

    # -- static pods ---------------------------------------------------------------------------

    def _start(self, pod: StaticPod) -> None:
        assert pod.container is not None
        if pod.container.virtual:
            return
        self.pulled.add(pod.container.image)
        env = dict(os.environ, UPGRADER_LAB_RUN=str(self.lab.run_dir), UPGRADER_LAB_NODE=self.node.name)
        logfile = (self.log_dir / f"{self.node.name}-{pod.component}.log").open("ab")
        try:
            pod.popen = subprocess.Popen(
                list(pod.container.argv),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                cwd=self.root,
            )
        finally:
            logfile.close()
        pod.started = now()

    def _stop(self, pod: StaticPod) -> None:
        if pod.popen is not None:
            pod.last_exit = processes.stop_popen(pod.popen)
            pod.popen = None

    def _pod(self, path: Path, raw: bytes | OSError) -> StaticPod:
        """The static pod that the bytes read of ``path`` describe (or why there is none)."""
        try:
            if isinstance(raw, OSError):
                raise raw
            manifest = manifests.parse(raw, path)
            container = runtime.container(manifest, node=self.node, root=self.root, lab=self.lab)
            return StaticPod(path.name, container, source=manifest)
        except (OSError, ValueError, KeyError) as exc:
            return StaticPod(path.name, None, error=str(exc).splitlines()[0][:200])

    def sync_static_pods(self) -> None:
        directory = self.lab.manifests(self.node)
        wanted = (
            {p.name: p for p in sorted(directory.glob("*.yaml")) if not p.name.startswith(".")}
            if directory.is_dir()
            else {}
        )
        with self.lock:
            for name in list(self.pods):
                if name not in wanted:
                    self._stop(self.pods.pop(name))
                    self._bytes.pop(name, None)
            for name, path in wanted.items():
                current = self.pods.get(name)
                try:
                    raw: bytes | OSError = path.read_bytes()
                except OSError as exc:
                    raw = exc
                if current is not None and self._bytes.get(name) == raw:
                    # The same bytes are the same pod: parsing each manifest's YAML four times a second cost
                    # an idle 3+3 lab a fifth of a core. A real kubelet, too, acts on a manifest's changes.
                    self._keep_running(current)
                    continue
                fresh = self._pod(path, raw)  # parsed from the bytes compared: one read, no window between
                if isinstance(raw, bytes):
                    self._bytes[name] = raw
                if current is None or _digest(current) != _digest(fresh):
                    if current is not None:
                        self._stop(current)
                    self.pods[name] = fresh
                    if fresh.container is not None and not self._blocked(fresh):
                        self._start(fresh)
                    continue
                self._keep_running(current)

    def _blocked(self, pod: StaticPod) -> bool:
        """A pod the kubelet does not run now: etcd under ``etcd-stop``; under ``image-pull``, a pod whose
        image this node has not run before (imagePullPolicy IfNotPresent: only a missing image is pulled,
        and the pull fails; kubelet pkg/kubelet/images/image_manager.go shouldPullImage)."""
        if pod.component == "etcd" and faults.Fault.ETCD_STOP in self.faults:
            return True
        image = pod.container.image if pod.container is not None else None
        return image is not None and image not in self.pulled and faults.Fault.IMAGE_PULL in self.faults

    def _keep_running(self, pod: StaticPod) -> None:
        if pod.container is None or pod.container.virtual:
            return
        if self._blocked(pod):
            self._stop(pod)
            return
        if pod.popen is not None and pod.popen.poll() is None:
            return
        if pod.popen is not None:  # it exited on its own: crash-loop back-off
            pod.last_exit = pod.popen.returncode
            pod.popen = None
            pod.restarts += 1
            pod.not_before = time.monotonic() + min(MAX_BACKOFF, 0.5 * 2 ** min(pod.restarts, 5))
        if time.monotonic() >= pod.not_before:
            self._start(pod)

    def stop_all(self, *, keep: tuple[str, ...] = ()) -> None:
        with self.lock:
            for pod in self.pods.values():
                if pod.component not in keep:
                    self._stop(pod)

    def stop_component(self, component: str) -> None:
        with self.lock:
            for pod in self.pods.values():
                if pod.component == component:
                    self._stop(pod)

    def children(self) -> list[int]:
        with self.lock:
            return [p.popen.pid for p in self.pods.values() if p.popen is not None and p.popen.poll() is None]

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {
                pod.component: {
                    "state": pod.state(),
                    "image": pod.container.image if pod.container else None,
                    "pid": pod.popen.pid if pod.popen is not None and pod.popen.poll() is None else None,
                    "restarts": pod.restarts,
                    "error": pod.error,
                }
                for pod in self.pods.values()
            }

    # -- the API side --------------------------------------------------------------------------

    def kubelet_version(self) -> str:
        return self.running_version

    def _client(self) -> http.Client:
        if self.api is None:
            self.api = http.Client(self.root / "etc" / "kubernetes" / "kubelet.conf", timeout=3.0)
        return self.api

    def _node_object(self) -> dict[str, Any]:
        labels = {"kubernetes.io/hostname": self.node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        spec: dict[str, Any] = {}
        if self.node.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = ""
            spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node.name, "labels": labels},
            "spec": spec,
        }

    def _node_status(self) -> dict[str, Any]:
        notready = faults.Fault.KUBELET_NOTREADY in self.faults
        ready = {
            "type": "Ready",
            "status": "False" if notready else "True",
            "reason": "KubeletNotReady" if notready else "KubeletReady",
            "message": "container runtime is down (lab fault)" if notready else "kubelet is posting ready status",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }
        return {
            "conditions": [ready],
            "addresses": [
                {"type": "InternalIP", "address": self.node.ip},
                {"type": "Hostname", "address": self.node.name},
            ],
            "nodeInfo": {
                "kubeletVersion": self.kubelet_version(),
                "kubeProxyVersion": self.kubelet_version(),
                "containerRuntimeVersion": RUNTIME_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "upgrader lab",
                "kernelVersion": os.uname().release,
                "machineID": self.node.name,
                "systemUUID": self.node.name,
                "bootID": self.node.name,
            },
        }

    def heartbeat(self) -> None:
        api = self._client()
        path = f"/api/v1/nodes/{self.node.name}"
        if not self._registered:
            if api.get(path).status == 404:
                api.request("POST", "/api/v1/nodes", self._node_object())
            self._registered = True
        reply = api.request(
            "PATCH", f"{path}/status", {"status": self._node_status()}, content_type="application/merge-patch+json"
        )
        if reply.status == 404:
            self._registered = False
        if self.stop_event.is_set():
            return
        self._publish_mirror_pods(api)
        if self.stop_event.is_set():
            return
        self._start_bound_pods(api)

    def _mirror_pod(self, pod: StaticPod) -> dict[str, Any]:
        state = pod.state()
        running = state == "Running"
        component = pod.component
        image = pod.container.image if pod.container else ""
        digest = (pod.container.digest if pod.container else "0").ljust(64, "0")
        source_meta = pod.source.get("metadata") or {}
        spec = {k: v for k, v in (pod.source.get("spec") or {}).items()}
        spec["nodeName"] = self.node.name
        spec.setdefault("containers", [{"name": component, "image": image}])
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{component}-{self.node.name}",
                "namespace": "kube-system",
                "labels": dict(source_meta.get("labels") or {"component": component, "tier": "control-plane"}),
                "annotations": {
                    **(source_meta.get("annotations") or {}),
                    "kubernetes.io/config.hash": digest[:32],
                    "kubernetes.io/config.mirror": digest[:32],
                    "kubernetes.io/config.source": "file",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node.name,
                        "controller": True,
                        "uid": self.node.name,
                    }
                ],
            },
            "spec": spec,
            "status": {
                "phase": "Running" if running else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
                "containerStatuses": [
                    {
                        "name": component,
                        "ready": running,
                        "started": running,
                        "restartCount": pod.restarts,
                        "image": image,
                        "imageID": f"{image.rsplit(':', 1)[0]}@sha256:{digest}",
                        "containerID": f"containerd://{digest}{pod.restarts:04d}" if running else "",
                        "state": {"running": {"startedAt": pod.started}} if running else {"waiting": {"reason": state}},
                    }
                ],
            },
        }

    def _publish_mirror_pods(self, api: http.Client) -> None:
        with self.lock:
            wanted = {p.component: self._mirror_pod(p) for p in self.pods.values()}
            pods = list(self.pods.values())
        base = "/api/v1/namespaces/kube-system/pods"
        for pod in pods:
            body = wanted[pod.component]
            if body == pod.published:
                continue
            name = body["metadata"]["name"]
            reply = api.request("PUT", f"{base}/{name}", body)
            if reply.status == 404:
                reply = api.request("POST", base, body)
            if reply.status < 300:
                reply = api.request(
                    "PATCH",
                    f"{base}/{name}/status",
                    {"status": body["status"]},
                    content_type="application/merge-patch+json",
                )
            if reply.status < 300:
                pod.published = body

    def _start_bound_pods(self, api: http.Client) -> None:
        reply = api.get(f"/api/v1/pods?fieldSelector=spec.nodeName%3D{self.node.name}")
        if reply.status != 200:
            return
        for item in reply.json().get("items", []):
            status = item.get("status") or {}
            if status.get("phase") not in (None, "", "Pending") or meta_mirror(item):
                continue
            meta = item["metadata"]
            api.request(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {
                    "status": {
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "startTime": now(),
                    }
                },
                content_type="application/merge-patch+json",
            )

    # -- the loop ------------------------------------------------------------------------------

    def run_api(self) -> None:
        """Node status and pods; on its own thread, since an unreachable apiserver makes calls slow."""
        while not self.stop_event.is_set():
            try:
                self.heartbeat()
            except (OSError, ValueError) as exc:  # an unreachable apiserver is normal while the lab starts
                log.debug("%s: %s", self.node.name, exc)
                self._registered = False
            self.stop_event.wait(HEARTBEAT_SECONDS if self._registered else 0.3)

    def run(self) -> None:
        api = threading.Thread(target=self.run_api, name=f"kubelet-api-{self.node.name}", daemon=True)
        api.start()
        while not self.stop_event.is_set():
            try:
                self.check_restart()
            except OSError as exc:
                log.warning("%s: kubelet restart: %s", self.node.name, exc)
            if self.node.control_plane:
                try:
                    self.sync_static_pods()
                except OSError as exc:
                    log.warning("%s: static pods: %s", self.node.name, exc)
            self.stop_event.wait(0.25)
        api.join(timeout=10)  # let a heartbeat in flight finish while the apiservers still answer
        self.stop_all(keep=("etcd",))  # the supervisor stops etcd members in leader-first order


def meta_mirror(pod: dict[str, Any]) -> bool:
    """Mirror pods are reported by their static pod's state, not started like workload pods."""
    return "kubernetes.io/config.mirror" in (pod.get("metadata", {}).get("annotations") or {})


def _digest(pod: StaticPod) -> str:
    return pod.container.digest if pod.container else f"error:{pod.error}"
