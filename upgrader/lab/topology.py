"""What a lab is: its nodes, their loopback addresses, and where each of its files lives.

Each lab takes a /24 block of the loopback range (127.A.B.0) so that every node has its own address
and kubeadm's standard ports (etcd 2379/2380, apiserver 6443) without clashing with another lab:
the control-plane endpoint (a TCP balancer, as kubeadm's controlPlaneEndpoint) is .10, control-plane
nodes are .11 upwards, external etcd nodes (Kubespray's ``etcd`` group on hosts of its own) .21
upwards, workers .101 upwards. ``lab.json`` records all of it.
"""

from __future__ import annotations

import enum
import json
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upgrader import errors
from upgrader.core.versions import Version
from upgrader.support import names

ETCD_CLIENT_PORT = 2379
ETCD_PEER_PORT = 2380
ETCD_METRICS_PORT = 2381
APISERVER_PORT = 6443
MIRROR_PORT = 8080
SSH_PORT = 22
MAX_CONTROL_PLANES = 9
MAX_WORKERS = 99
MAX_ETCD_NODES = 9


class Role(enum.StrEnum):
    CONTROL_PLANE = "control-plane"
    WORKER = "worker"
    ETCD = "etcd"  # an external etcd member: a systemd service, no kubelet, not a Kubernetes node


class Layout(enum.StrEnum):
    """How the nodes are laid out. kubeadm: the packages' way, binaries in /usr/bin, the package's
    kubelet unit with kubeadm's drop-in. kubespray: Kubespray's defaults, binaries in bin_dir
    (/usr/local/bin) and its own unit in /etc/systemd/system, bin_dir set in the inventory."""

    KUBEADM = "kubeadm"
    KUBESPRAY = "kubespray"

    @property
    def bin_dir(self) -> str:
        return "/usr/local/bin" if self is Layout.KUBESPRAY else "/usr/bin"


@dataclass(frozen=True)
class LabNode:
    name: str
    role: Role
    ip: str

    @property
    def control_plane(self) -> bool:
        return self.role is Role.CONTROL_PLANE


@dataclass(frozen=True)
class Lab:
    dir: Path
    name: str
    version: Version
    block: str
    nodes: tuple[LabNode, ...]
    etcd_binary: str  # the one etcd binary of labs made before etcd_binaries; the fallback of every tag
    python: str
    layout: Layout = Layout.KUBEADM
    ssh: bool = False  # nodes reached over a real sshd per node, as a non-root user that becomes root
    packages: str = "binary"  # binary: from the lab's dl.k8s.io mirror; apt: from its pkgs.k8s.io, real apt and dpkg
    # every etcd binary the lab may run, by the version it reports (``runtime.etcd_binary`` picks one per tag)
    etcd_binaries: Mapping[str, str] = field(default_factory=dict)

    # -- addresses -----------------------------------------------------------------------------

    @property
    def endpoint_ip(self) -> str:
        return f"{self.block}.10"

    @property
    def server_url(self) -> str:
        return f"https://{self.endpoint_ip}:{APISERVER_PORT}"

    @property
    def mirror_url(self) -> str:
        return f"http://{self.endpoint_ip}:{MIRROR_PORT}"

    @property
    def control_plane(self) -> tuple[LabNode, ...]:
        return tuple(n for n in self.nodes if n.control_plane)

    @property
    def workers(self) -> tuple[LabNode, ...]:
        return tuple(n for n in self.nodes if n.role is Role.WORKER)

    @property
    def kube_nodes(self) -> tuple[LabNode, ...]:
        """The Kubernetes nodes (each with a kubelet and a Node object): control planes and workers."""
        return tuple(n for n in self.nodes if n.role is not Role.ETCD)

    @property
    def etcd_nodes(self) -> tuple[LabNode, ...]:
        """The external etcd members' hosts; empty when etcd is stacked on the control planes."""
        return tuple(n for n in self.nodes if n.role is Role.ETCD)

    @property
    def external_etcd(self) -> bool:
        return bool(self.etcd_nodes)

    def etcd_member(self, node: LabNode) -> str:
        """A node's etcd member name: kubeadm names a stacked member after its node; Kubespray names its
        own etcd1, etcd2, ... by position in the etcd group (kubespray_defaults' etcd_member_name)."""
        return f"etcd{self.etcd_nodes.index(node) + 1}" if node.role is Role.ETCD else node.name

    def node(self, name: str) -> LabNode:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise errors.InputError(f"no node {name!r} in lab {self.name} (it has {known})")

    def etcd_endpoints(self) -> tuple[str, ...]:
        return tuple(f"https://{n.ip}:{ETCD_CLIENT_PORT}" for n in (self.etcd_nodes or self.control_plane))

    # -- files ---------------------------------------------------------------------------------

    def root(self, node: LabNode | str) -> Path:
        """The node's filesystem root: /etc/kubernetes, /var/lib/etcd and /usr/bin live below it."""
        return self.dir / "nodes" / (node if isinstance(node, str) else node.name)

    def manifests(self, node: LabNode | str) -> Path:
        return self.root(node) / "etc" / "kubernetes" / "manifests"

    @property
    def run_dir(self) -> Path:
        return self.dir / "run"

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "admin.conf"

    @property
    def mirror_dir(self) -> Path:
        return self.dir / "mirror"

    # -- lab.json ------------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": str(self.version),
            "block": self.block,
            "nodes": [{"name": n.name, "role": n.role.value, "ip": n.ip} for n in self.nodes],
            "etcd_binary": self.etcd_binary,
            "etcd_binaries": dict(self.etcd_binaries),
            "python": self.python,
            "layout": self.layout.value,
            "ssh": self.ssh,
            "packages": self.packages,
        }

    def save(self) -> None:
        (self.dir / "lab.json").write_text(json.dumps(self.as_dict(), indent=2) + "\n")


def load(directory: Path) -> Lab:
    path = directory / "lab.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise errors.InputError(
            f"{directory} is not a lab (no lab.json): create one with `upgrader lab create`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise errors.InputError(f"cannot read {path}: {exc}") from exc
    try:
        return Lab(
            dir=directory.resolve(),
            name=data["name"],
            version=Version.parse(data["version"]),
            block=data["block"],
            nodes=tuple(LabNode(names.node_name(n["name"]), Role(n["role"]), n["ip"]) for n in data["nodes"]),
            etcd_binary=data["etcd_binary"],
            etcd_binaries={str(Version.parse(v)): str(p) for v, p in dict(data.get("etcd_binaries") or {}).items()},
            python=data["python"],
            layout=Layout(data.get("layout", Layout.KUBEADM.value)),
            ssh=bool(data.get("ssh", False)),
            packages=str(data.get("packages", "binary")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.InputError(f"{path} is malformed: {exc}") from exc


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def addresses(block: str, control_planes: int, workers: int, etcd_nodes: int = 0) -> list[tuple[str, Role, str]]:
    nodes = [(f"cp-{i}", Role.CONTROL_PLANE, f"{block}.{10 + i}") for i in range(1, control_planes + 1)]
    nodes += [(f"etcd-{i}", Role.ETCD, f"{block}.{20 + i}") for i in range(1, etcd_nodes + 1)]
    nodes += [(f"w-{i}", Role.WORKER, f"{block}.{100 + i}") for i in range(1, workers + 1)]
    return nodes


def ports_taken(block: str, nodes: list[tuple[str, Role, str]], *, ssh: bool = False) -> list[str]:
    """The address:port pairs of a lab that something else already holds."""
    wanted = [(f"{block}.10", APISERVER_PORT), (f"{block}.10", MIRROR_PORT)]
    wanted += [(ip, SSH_PORT) for _, _, ip in nodes] if ssh else []
    for _, role, ip in nodes:
        if role is Role.CONTROL_PLANE:
            wanted += [(ip, ETCD_CLIENT_PORT), (ip, ETCD_PEER_PORT), (ip, ETCD_METRICS_PORT), (ip, APISERVER_PORT)]
        elif role is Role.ETCD:
            wanted += [(ip, ETCD_CLIENT_PORT), (ip, ETCD_PEER_PORT)]
    return [f"{ip}:{port}" for ip, port in wanted if not _bindable(ip, port)]


def pick_block(
    control_planes: int, workers: int, taken: set[str], rng: random.Random | None = None, etcd_nodes: int = 0
) -> str:
    """A free 127.A.B block: not used by another lab on this machine, nothing listening on its ports."""
    rng = rng or random.SystemRandom()
    for _ in range(50):
        block = f"127.{rng.randint(16, 250)}.{rng.randint(0, 255)}"
        if block in taken:
            continue
        if not ports_taken(block, addresses(block, control_planes, workers, etcd_nodes)):
            return block
    raise errors.OperationFailed("could not find a free loopback block for the lab after 50 tries")
