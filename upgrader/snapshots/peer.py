"""The peer tier: a snapshot's files on every control-plane node, in /var/lib/upgrader/snapshots.

``rollback-etcd.yml`` restores each member from the copy on its own disk when its sha256 matches, so
a rollback with good peer copies moves no data during the outage.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from upgrader import errors, files, session
from upgrader.etcd import snapshot
from upgrader.executor import runner
from upgrader.state import records

STORE = "/var/lib/upgrader/snapshots"


class PeerError(errors.OperationFailed):
    """The peer tier could not be written or read."""


@dataclass(frozen=True)
class Expected:
    """A snapshot's two files as every copy must hold them: name on the node -> whole-file sha256."""

    db: tuple[str, str]
    archive: tuple[str, str]

    @classmethod
    def of(cls, record: records.SnapshotRecord) -> Expected:
        if not record.etcd_file_sha256 or not record.archive_sha256:
            raise PeerError(f"snapshot {record.id} has no recorded file sha256: verify its local copy first")
        return cls(
            db=(f"{record.id}.db", record.etcd_file_sha256), archive=(f"{record.id}.tar.gz", record.archive_sha256)
        )

    @property
    def names(self) -> list[str]:
        return [self.db[0], self.archive[0]]

    def sha256(self, name: str) -> str:
        return dict((self.db, self.archive))[name]


def location(host: str) -> str:
    return f"{host}:{STORE}"


def _failed(result: runner.PlaybookResult, what: str) -> PeerError:
    detail = "; ".join(result.failures()[:3]) or f"status {result.status.value}, rc {result.rc}"
    return PeerError(f"peer tier: {what}: {detail}")


def replicate(cluster: session.ClusterSession, record: records.SnapshotRecord) -> list[str]:
    """Copies the verified local files to every control-plane node; the nodes written."""
    expected = Expected.of(record)
    if not record.archive_path:
        raise PeerError(f"snapshot {record.id} has no archive to copy")
    sources = {expected.db[0]: record.etcd_path, expected.archive[0]: record.archive_path}
    result = cluster.playbook(
        "snapshot-replicate.yml",
        extravars={
            "snapshot_files": [
                {"name": name, "src": sources[name], "sha256": expected.sha256(name)} for name in expected.names
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
    expected = Expected.of(record)
    result = cluster.playbook(
        "snapshot-peer.yml", extravars={"peer_action": "check", "snapshot_names": expected.names}, timeout=600
    )
    printed = result.by_host("upgrader: peer copies")
    out = []
    for host in sorted(cluster.inventory.hosts("kube_control_plane")):
        if host not in printed:
            out.append(NodeCopy(host, records.CopyState.MISSING, "the node could not be read"))
            continue
        out.append(_judge(host, str(printed[host].get("stdout", "")), expected))
    return out


def _judge(host: str, stdout: str, expected: Expected) -> NodeCopy:
    seen: dict[str, str] = {}
    for line in stdout.splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            seen[name.strip()] = digest
    problems: list[str] = []
    state = records.CopyState.OK
    for name in expected.names:
        found = seen.get(name)
        if found is None or found == "missing":
            problems.append(f"{name} is missing")
            state = state if state is records.CopyState.BAD else records.CopyState.MISSING
        elif found != expected.sha256(name):
            problems.append(f"{name} does not match its sha256")
            state = records.CopyState.BAD
    return NodeCopy(host, state, "; ".join(f"{host}: {p}" for p in problems) or None)


def delete(cluster: session.ClusterSession, record: records.SnapshotRecord) -> None:
    names = [f"{record.id}.db", f"{record.id}.tar.gz"]
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
    expected = Expected.of(record)
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
            if snapshot.file_sha256(pulled[name]) != expected.sha256(name):
                raise PeerError(f"peer tier: the copy of {name} fetched from {host} does not match its sha256")
            files.replace_durably(pulled[name], target)
    finally:
        for path in pulled.values():
            path.unlink(missing_ok=True)
    return host
