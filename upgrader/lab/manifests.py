"""kubeadm's static pod manifests for a control-plane node, written as kubeadm writes them.

Paths and addresses are the node's own (``/var/lib/etcd``, ``https://127.0.0.1:2379``): the lab
kubelet maps hostPath volumes under the node's root and 127.0.0.1 to the node's address, the way a
container runtime and a network namespace would, so the manifests need no lab-specific edits and
``kubeadm upgrade`` (stand-in or real) rewrites them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from upgrader.core.versions import Minor, Version
from upgrader.lab import topology

REGISTRY = "registry.k8s.io"
PKI = "/etc/kubernetes/pki"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _volume(
    name: str, path: str, mount: str | None = None, *, read_only: bool = False, kind: str = "DirectoryOrCreate"
) -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": name, "hostPath": {"path": path, "type": kind}}
    mount_entry: dict[str, Any] = {"name": name, "mountPath": mount or path}
    if read_only:
        mount_entry["readOnly"] = True
    return volume, mount_entry


def _pod(
    component: str,
    image: str,
    command: list[str],
    volumes: list[tuple[dict[str, Any], dict[str, Any]]],
    *,
    annotations: dict[str, str] | None = None,
    probe_port: int,
    probe_path: str,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "annotations": annotations or {},
            "labels": {"component": component, "tier": "control-plane"},
            "name": component,
            "namespace": "kube-system",
        },
        "spec": {
            "containers": [
                {
                    "command": command,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "name": component,
                    "livenessProbe": {
                        "httpGet": {"host": "127.0.0.1", "path": probe_path, "port": probe_port, "scheme": "HTTPS"},
                        "failureThreshold": 8,
                        "initialDelaySeconds": 10,
                        "periodSeconds": 10,
                        "timeoutSeconds": 15,
                    },
                    "volumeMounts": [m for _, m in volumes],
                }
            ],
            "hostNetwork": True,
            "priority": 2000001000,
            "priorityClassName": "system-node-critical",
            "volumes": [v for v, _ in volumes],
        },
        "status": {},
    }


def etcd(node: topology.LabNode, members: tuple[topology.LabNode, ...], etcd_version: Version) -> dict[str, Any]:
    ip = node.ip
    cluster = ",".join(f"{m.name}=https://{m.ip}:{topology.ETCD_PEER_PORT}" for m in members)
    command = [
        "etcd",
        f"--advertise-client-urls=https://{ip}:{topology.ETCD_CLIENT_PORT}",
        f"--cert-file={PKI}/etcd/server.crt",
        "--client-cert-auth=true",
        "--data-dir=/var/lib/etcd",
        "--experimental-initial-corrupt-check=true",
        f"--initial-advertise-peer-urls=https://{ip}:{topology.ETCD_PEER_PORT}",
        f"--initial-cluster={cluster}",
        "--initial-cluster-state=new",
        "--initial-cluster-token=etcd-cluster",
        f"--key-file={PKI}/etcd/server.key",
        f"--listen-client-urls=https://127.0.0.1:{topology.ETCD_CLIENT_PORT},https://{ip}:{topology.ETCD_CLIENT_PORT}",
        f"--listen-metrics-urls=http://127.0.0.1:{topology.ETCD_METRICS_PORT}",
        f"--listen-peer-urls=https://{ip}:{topology.ETCD_PEER_PORT}",
        f"--name={node.name}",
        f"--peer-cert-file={PKI}/etcd/peer.crt",
        "--peer-client-cert-auth=true",
        f"--peer-key-file={PKI}/etcd/peer.key",
        f"--peer-trusted-ca-file={PKI}/etcd/ca.crt",
        "--snapshot-count=10000",
        f"--trusted-ca-file={PKI}/etcd/ca.crt",
    ]
    volumes = [_volume("etcd-certs", f"{PKI}/etcd"), _volume("etcd-data", "/var/lib/etcd")]
    pod = _pod(
        "etcd",
        f"{REGISTRY}/etcd:{etcd_version}-0",
        command,
        volumes,
        annotations={"kubeadm.kubernetes.io/etcd.advertise-client-urls": f"https://{ip}:{topology.ETCD_CLIENT_PORT}"},
        probe_port=topology.ETCD_METRICS_PORT,
        probe_path="/health?exclude=NOSPACE&serializable=true",
    )
    pod["spec"]["containers"][0]["livenessProbe"]["httpGet"]["scheme"] = "HTTP"
    return pod


# Kubespray's etcd certificates (etcd_cert_dir), which an external etcd's clients and members use
ETCD_CERT_DIR = "/etc/ssl/etcd/ssl"


def apiserver(
    node: topology.LabNode, version: Version, emulated: Minor | None = None, *, external_etcd: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``external_etcd``: the endpoints of an external etcd, which the apiserver reaches with the node's
    certificate from Kubespray's ``etcd_cert_dir`` (kubeadm mounts that directory, controlplane/volumes.go)."""
    command = [
        "kube-apiserver",
        f"--advertise-address={node.ip}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        f"--client-ca-file={PKI}/ca.crt",
        "--enable-admission-plugins=NodeRestriction",
        "--enable-bootstrap-token-auth=true",
        f"--etcd-cafile={PKI}/etcd/ca.crt",
        f"--etcd-certfile={PKI}/apiserver-etcd-client.crt",
        f"--etcd-keyfile={PKI}/apiserver-etcd-client.key",
        f"--etcd-servers=https://127.0.0.1:{topology.ETCD_CLIENT_PORT}",
        f"--kubelet-client-certificate={PKI}/apiserver-kubelet-client.crt",
        f"--kubelet-client-key={PKI}/apiserver-kubelet-client.key",
        f"--secure-port={topology.APISERVER_PORT}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={PKI}/sa.pub",
        "--service-cluster-ip-range=10.96.0.0/12",
        f"--tls-cert-file={PKI}/apiserver.crt",
        f"--tls-private-key-file={PKI}/apiserver.key",
    ]
    if emulated is not None:
        command.append(f"--emulated-version={emulated}")
    volumes = [_volume("k8s-certs", PKI, read_only=True), _volume("ca-certs", "/etc/ssl/certs", read_only=True)]
    if external_etcd:
        etcd_flags = {
            "--etcd-cafile": f"{ETCD_CERT_DIR}/ca.pem",
            "--etcd-certfile": f"{ETCD_CERT_DIR}/node-{node.name}.pem",
            "--etcd-keyfile": f"{ETCD_CERT_DIR}/node-{node.name}-key.pem",
            "--etcd-servers": ",".join(external_etcd),
        }
        command = [a for a in command if a.split("=", 1)[0] not in etcd_flags]
        command += [f"{flag}={value}" for flag, value in etcd_flags.items()]
        command = [command[0], *sorted(command[1:])]
        volumes.append(_volume("etcd-certs-0", ETCD_CERT_DIR, read_only=True))
    return _pod(
        "kube-apiserver",
        f"{REGISTRY}/kube-apiserver:v{version}",
        command,
        volumes,
        annotations={
            "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint": f"{node.ip}:{topology.APISERVER_PORT}"
        },
        probe_port=topology.APISERVER_PORT,
        probe_path="/livez",
    )


def controller_manager(version: Version) -> dict[str, Any]:
    command = [
        "kube-controller-manager",
        "--authentication-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--authorization-kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--bind-address=127.0.0.1",
        f"--client-ca-file={PKI}/ca.crt",
        "--cluster-name=kubernetes",
        f"--cluster-signing-cert-file={PKI}/ca.crt",
        f"--cluster-signing-key-file={PKI}/ca.key",
        "--controllers=*,bootstrapsigner,tokencleaner",
        "--kubeconfig=/etc/kubernetes/controller-manager.conf",
        "--leader-elect=true",
        f"--root-ca-file={PKI}/ca.crt",
        f"--service-account-private-key-file={PKI}/sa.key",
        "--use-service-account-credentials=true",
    ]
    volumes = [
        _volume("k8s-certs", PKI, read_only=True),
        _volume("kubeconfig", "/etc/kubernetes/controller-manager.conf", read_only=True, kind="FileOrCreate"),
    ]
    return _pod(
        "kube-controller-manager",
        f"{REGISTRY}/kube-controller-manager:v{version}",
        command,
        volumes,
        probe_port=10257,
        probe_path="/healthz",
    )


def scheduler(version: Version) -> dict[str, Any]:
    command = [
        "kube-scheduler",
        "--authentication-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--authorization-kubeconfig=/etc/kubernetes/scheduler.conf",
        "--bind-address=127.0.0.1",
        "--kubeconfig=/etc/kubernetes/scheduler.conf",
        "--leader-elect=true",
    ]
    volumes = [_volume("kubeconfig", "/etc/kubernetes/scheduler.conf", read_only=True, kind="FileOrCreate")]
    return _pod(
        "kube-scheduler",
        f"{REGISTRY}/kube-scheduler:v{version}",
        command,
        volumes,
        probe_port=10259,
        probe_path="/livez",
    )


def write(path: Path, manifest: dict[str, Any]) -> None:
    """Writes a manifest atomically (the kubelet must never read half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(manifest, sort_keys=False))
    tmp.replace(path)


def read(path: Path) -> dict[str, Any]:
    return parse(path.read_bytes(), path)


def parse(raw: bytes, path: Path) -> dict[str, Any]:
    """A manifest from the bytes read of ``path`` (named in the error)."""
    data = yaml.safe_load(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a manifest")
    return data


def image_version(manifest: dict[str, Any]) -> str:
    """The tag of a static pod's image, e.g. ``v1.30.6`` or ``3.5.15-0``."""
    image = str(manifest["spec"]["containers"][0]["image"])
    return image.rsplit(":", 1)[1] if ":" in image else ""
