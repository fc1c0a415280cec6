"""The peer tier: a snapshot's files on every control-plane node, in /var/lib/upgrader/snapshots.

``rollback-etcd.yml`` restores each member from the copy on its own disk when its sha256 matches, so
a rollback with good peer copies moves no data during the outage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from upgrader import errors
from upgrader.cluster import session
from upgrader.etcd import snapshot
from upgrader.executor import runner
from upgrader.state import records
from upgrader.support import files

STORE = "/var/lib/upgrader/snapshots"


class PeerError(errors.OperationFailed):
    """The peer tier could not be written or read."""


def location(host: str) -> str:
    return f"{host}:{STORE}"


def _failed(result: runner.PlaybookResult, what: str) -> PeerError:
    detail = "; ".join(result.failures()[:3]) or f"status {result.status.value}, rc {result.rc}"
    return PeerError(f"peer tier: {what}: {detail}")


def replicate(cluster: session.ClusterSession, record: records.SnapshotRecord) -> list[str]:
    """Copies the verified local files to every control-plane node; the nodes written."""
    expected = record.file_sha256s()
    if not record.archive_path:
        raise PeerError(f"snapshot {record.id} has no archive to copy")
    sources = record.local_files()
    result = cluster.playbook(
        "snapshot-replicate.yml",
        extravars={
            "snapshot_files": [
                {"name": name, "src": str(sources[name]), "sha256": sha} for name, sha in expected.items()
            ]
        },
        timeout=3600,
    )
    if result.status is not runner.Status.SUCCESSFUL:
        raise _failed(result, "copying to the control-plane nodes failed")
    return sorted(cluster.inventory.hosts("kube_control_plane"))


@dataclass(frozen=True)
class NodeCopy:
    host: str
    state: records.CopyState
    detail: str | None


def check(cluster: session.ClusterSession, record: records.SnapshotRecord) -> list[NodeCopy]:
    """Each control-plane node's copy: ok when both files are there with the recorded sha256."""
    expected = record.file_sha256s()
    result = cluster.playbook(
        "snapshot-peer.yml", extravars={"peer_action": "check", "snapshot_names": list(expected)}, timeout=600
    )
    printed = result.by_host("upgrader: peer copies")
    out = []
    for host in sorted(cluster.inventory.hosts("kube_control_plane")):
        if host not in printed:
            out.append(NodeCopy(host, records.CopyState.MISSING, "the node could not be read"))
            continue
        out.append(_judge(host, str(printed[host].get("stdout", "")), expected))
    return out


def _judge(host: str, stdout: str, expected: Mapping[str, str]) -> NodeCopy:
    seen: dict[str, str] = {}
    for line in stdout.splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            seen[name.strip()] = digest
    problems: list[str] = []
    state = records.CopyState.OK
    for name, sha in expected.items():
        found = seen.get(name)
        if found is None or found == "missing":
            problems.append(f"{name} is missing")
            state = state if state is records.CopyState.BAD else records.CopyState.MISSING
        elif found != sha:
            problems.append(f"{name} does not match its sha256")
            state = records.CopyState.BAD
    return NodeCopy(host, state, "; ".join(f"{host}: {p}" for p in problems) or None)


def delete(cluster: session.ClusterSession, record: records.SnapshotRecord) -> None:
    names = list(record.local_files())
    result = cluster.playbook(
        "snapshot-peer.yml", extravars={"peer_action": "delete", "snapshot_names": names}, timeout=600
    )
    if result.status is not runner.Status.SUCCESSFUL:
        raise _failed(result, f"deleting {record.id} from the control-plane nodes failed")


def pull(
    cluster: session.ClusterSession,
    record: records.SnapshotRecord,
    good: Mapping[str, NodeCopy],
    dest: Mapping[str, Path],
) -> str:
    """Fetches ``dest``'s files (node name -> local path) from the first node whose copy is good; each
    lands under a temporary name, is checked against its sha256, then renamed. The node used."""
    expected = record.file_sha256s()
    host = next((h for h, c in sorted(good.items()) if c.state is records.CopyState.OK), None)
    if host is None:
        raise PeerError(f"peer tier: no control-plane node has a good copy of {record.id}")
    directory = next(iter(dest.values())).parent
    files.private_dir(directory, what="snapshot directory")
    result = cluster.playbook(
        "snapshot-peer.yml",
        extravars={
            "peer_action": "fetch",
            "snapshot_names": list(dest),
            "source_host": host,
            "dest_dir": str(directory),
        },
        limit=(host,),
        timeout=3600,
    )
    pulled = {name: directory / f".{name}.pulled" for name in dest}
    try:
        if result.status is not runner.Status.SUCCESSFUL:
            raise _failed(result, f"fetching from {host} failed")
        for name, target in dest.items():
            os.chmod(pulled[name], 0o600)
            if snapshot.file_sha256(pulled[name]) != expected[name]:
                raise PeerError(f"peer tier: the copy of {name} fetched from {host} does not match its sha256")
            files.replace_durably(pulled[name], target)
    finally:
        for path in pulled.values():
            path.unlink(missing_ok=True)
    return host
