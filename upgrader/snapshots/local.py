"""The local tier: a snapshot taken, written and checked in the controller's snapshot directory.

A snapshot is two private files (0600, in a 0700 directory, as they hold every Secret of the
cluster) and one row. ``ID.db`` is the etcd snapshot, streamed and checked against its sha256
trailer. ``ID.tar.gz`` holds each control-plane node's static pod manifests and installed kubeadm
and kubelet versions (fetched with a playbook), the kubeadm ClusterConfiguration, the facts, and a
SHA256SUMS list of all of them. The row is written last and records what was checked: it is
known-good only if the cluster was healthy when the snapshot was taken and every check passed. On
any failure the files are removed and no row is written; a snapshot that later fails verification
loses known-good for good and can never be used for a rollback.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from upgrader import errors
from upgrader.cluster import health, live_facts, session
from upgrader.core import config
from upgrader.core.rules import facts as facts_mod
from upgrader.core.tier import Tier
from upgrader.etcd import snapshot, tools
from upgrader.executor import runner
from upgrader.state import records, store
from upgrader.support import files, scratch

SUMS = "SHA256SUMS"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _archive(members: dict[str, bytes], dest: Path) -> str:
    """Writes a gzip tar of ``members`` plus SHA256SUMS to ``dest`` (0600, atomically); returns its sha256."""
    sums = "".join(f"{_sha256(data)}  {name}\n" for name, data in sorted(members.items()))
    part = dest.with_name(dest.name + ".part")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for name, data in [*sorted(members.items()), (SUMS, sums.encode())]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o600
                info.mtime = 0
                archive.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        files.replace_durably(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return snapshot.file_sha256(dest)


def _read_archive(path: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise snapshot.SnapshotCorrupt(f"{path}: not a readable archive ({exc})") from exc


REGISTRY = "/registry/"
REGISTRY_KEYS = "registry-keys.txt"  # in the archive: one key per line, as etcd held them at the snapshot


def registry_keys(archived: dict[str, bytes]) -> list[str] | None:
    """The keys a snapshot recorded, or None for a snapshot taken before upgrader recorded them."""
    listing = archived.get(REGISTRY_KEYS)
    return None if listing is None else listing.decode(errors="backslashreplace").splitlines()


def facts_of(record: records.SnapshotRecord) -> facts_mod.Facts:
    """The cluster as the snapshot saw it, parsed once where a use case reads it (the store keeps the
    mapping). A record whose facts do not parse is named."""
    try:
        return facts_mod.from_mapping(record.facts)
    except errors.InputError as exc:
        raise errors.InputError(f"snapshot {record.id}: its facts cannot be read: {exc}") from None


def archive_members(record: records.SnapshotRecord) -> dict[str, bytes]:
    """The files of a snapshot's archive by name (``cp-1/manifests/kube-apiserver.yaml``, ...)."""
    if not record.archive_path:
        raise snapshot.SnapshotCorrupt(f"snapshot {record.id} has no archive")
    contents = _read_archive(Path(record.archive_path))
    contents.pop(SUMS, None)
    return contents


def check_archive(path: Path) -> None:
    """Every file in the archive matches its line in SHA256SUMS, and every line has its file."""
    contents = _read_archive(path)
    if SUMS not in contents:
        raise snapshot.SnapshotCorrupt(f"{path}: no {SUMS} in the archive")
    listed = {}
    for line in contents.pop(SUMS).decode().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    if set(listed) != set(contents):
        raise snapshot.SnapshotCorrupt(f"{path}: files and {SUMS} disagree")
    for name, data in contents.items():
        if _sha256(data) != listed[name]:
            raise snapshot.SnapshotCorrupt(f"{path}: {name} does not match its sha256")


_MANIFEST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.yaml$")


def fetch_control_plane(cluster: session.ClusterSession) -> dict[str, bytes]:
    """Each control-plane node's manifests and installed versions, as archive members under its name."""
    result = cluster.playbook("snapshot-fetch.yml", timeout=600)
    if result.status is not runner.Status.SUCCESSFUL:
        detail = "; ".join(result.failures()[:3]) or f"status {result.status.value}, rc {result.rc}"
        raise errors.ExecutorError(f"fetching the control-plane manifests failed: {detail}")
    printed = result.by_host("upgrader: control-plane state")
    members: dict[str, bytes] = {}
    for host in cluster.inventory.hosts("kube_control_plane"):
        members.update(_node_state(host, str(printed.get(host, {}).get("stdout", ""))))
    for host, res in result.by_host("upgrader: etcd host state").items():
        members.update(_etcd_host_state(host, str(res.get("stdout", ""))))
    return members


ETCD_ENV = "etcd.env"  # an etcd host's /etc/etcd.env, archived as HOST/etcd.env
MAX_ETCD_ENV = 64 * 1024


def _etcd_host_state(host: str, stdout: str) -> dict[str, bytes]:
    """What snapshot-fetch.yml printed for an etcd host: its ``/etc/etcd.env`` when etcd runs as a service."""
    line = next((x.strip() for x in stdout.splitlines() if x.strip().startswith("etcd_env=")), None)
    if line is None:
        return {}
    try:
        data = base64.b64decode(line.removeprefix("etcd_env="), validate=True)
    except ValueError as exc:
        raise errors.ExecutorError(f"{host}: the /etc/etcd.env it sent is not base64 ({exc})") from exc
    if len(data) > MAX_ETCD_ENV:
        raise errors.ExecutorError(f"{host}: its /etc/etcd.env is over {MAX_ETCD_ENV} bytes: not an etcd environment")
    return {f"{host}/{ETCD_ENV}": data}


def _node_state(host: str, stdout: str) -> dict[str, bytes]:
    """What snapshot-fetch.yml printed for ``host``: ``kubelet=``, ``kubeadm=`` and ``manifests=`` lines."""
    lines = dict(line.strip().partition("=")[::2] for line in stdout.splitlines() if "=" in line)
    try:
        with tarfile.open(fileobj=io.BytesIO(base64.b64decode(lines.get("manifests", ""), validate=True))) as tar:
            manifests = {
                Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and _MANIFEST_NAME.match(Path(m.name).name)
            }
    except (ValueError, OSError, tarfile.TarError, EOFError) as exc:
        raise errors.ExecutorError(f"{host}: the manifests it sent are not a readable archive ({exc})") from exc
    if "kube-apiserver.yaml" not in manifests:
        raise errors.ExecutorError(f"no kube-apiserver manifest was fetched from {host}")
    versions = {"kubelet": lines.get("kubelet", ""), "kubeadm": lines.get("kubeadm", "")}
    out = {f"{host}/manifests/{name}": data for name, data in manifests.items()}
    out[f"{host}/versions.json"] = (json.dumps(versions, indent=2) + "\n").encode()
    return out


@dataclass(frozen=True)
class Created:
    record: records.SnapshotRecord
    health: health.Health


def take(
    cluster: session.ClusterSession,
    state: store.Store,
    *,
    label: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Created:
    """Takes a snapshot; on any failure or interruption (SIGINT, SIGTERM, SIGHUP) no file and no row remain.

    The caller holds the cluster lock."""
    cfg = cluster.cfg
    directory = files.private_dir(cfg.snapshots.dir, what="snapshot directory")
    now = datetime.now(UTC)
    snapshot_id = records.SnapshotId(f"{cfg.name}-{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}")
    db_path, archive_path = directory / f"{snapshot_id}.db", directory / f"{snapshot_id}.tar.gz"
    checked = health.check(cluster)
    announce(state, cfg.name, snapshot_id, (db_path, archive_path))
    collected = live_facts.collect(cluster).as_dict()
    try:
        streamed = snapshot.save(cluster.etcd, db_path, progress=progress)
        members = [
            {"id": m.id, "name": m.name, "peer_urls": list(m.peer_urls), "client_urls": list(m.client_urls)}
            for m in cluster.etcd.members()
        ]
        snapshot.check_file(db_path)  # read back: the stream proved what arrived, this proves what is on disk
        file_sha = snapshot.file_sha256(db_path)
        status = tools.status(db_path)
        contents = fetch_control_plane(cluster)
        contents["cluster-configuration.yaml"] = (cluster.api.cluster_configuration() or "").encode()
        contents["facts.json"] = json.dumps(collected, indent=2, sort_keys=True).encode()
        # What a restore must bring back: the keys under /registry at the snapshot's own revision (names
        # only), for ``verify --against`` to compare key by key.
        keys = cluster.etcd.keys_at(REGISTRY, status.revision)
        contents[REGISTRY_KEYS] = "".join(f"{k}\n" for k in keys).encode()
        archive_sha = _archive(contents, archive_path)
        check_archive(archive_path)
        record = records.SnapshotRecord(
            id=snapshot_id,
            cluster=cfg.name,
            created_at=now,
            label=label,
            etcd_revision=status.revision,
            key_count=status.keys,
            members=members,
            etcd_path=str(db_path),
            etcd_size=streamed.size,
            etcd_sha256=streamed.sha256,
            archive_path=str(archive_path),
            archive_sha256=archive_sha,
            facts=collected,
            healthy=checked.ok,
            known_good=checked.ok,
            verified_at=datetime.now(UTC),
            etcd_file_sha256=file_sha,
            copies=(records.CopyRecord.now(snapshot_id, Tier.LOCAL, str(db_path), records.CopyState.OK),),
        )
        state.add_snapshot(record)
    except BaseException:
        db_path.unlink(missing_ok=True)
        archive_path.unlink(missing_ok=True)
        raise
    if cluster.insecure:
        state.record_event(
            kind="insecure-transport",
            cluster=cfg.name,
            level=records.EventLevel.WARNING,
            message=f"snapshot {snapshot_id} was taken over a connection allowed only by --insecure",
            data={"snapshot": snapshot_id, "allowed": list(cluster.insecure)},
        )
    return Created(record=record, health=checked)


def check(record: records.SnapshotRecord) -> dict[str, str]:
    """The local copy's checks: check -> "ok", "missing: ..." or what failed."""
    checks: dict[str, str] = {}

    def attempt(name: str, path: Path, check: Callable[[], None]) -> None:
        if not path.exists():
            checks[name] = f"missing: {path} is not there"
            return
        try:
            check()
            checks[name] = "ok"
        except errors.UpgraderError as exc:
            checks[name] = str(exc)

    db = Path(record.etcd_path)

    def database() -> None:
        # The trailer is checked against the contents, then against the sha256 recorded when the
        # snapshot was taken, so a file replaced by another valid snapshot is caught too.
        if snapshot.check_file(db) != record.etcd_sha256:
            raise snapshot.SnapshotCorrupt(f"{db}: not the database recorded for this snapshot (sha256 differs)")

    attempt("etcd database", db, database)
    if record.archive_path:
        archive = Path(record.archive_path)

        def archive_hash() -> None:
            if snapshot.file_sha256(archive) != record.archive_sha256:
                raise snapshot.SnapshotCorrupt(f"{archive}: the archive changed since it was written (sha256 differs)")
            check_archive(archive)

        attempt("archive", archive, archive_hash)
    return checks


def copy_state(checks: dict[str, str]) -> records.CopyState:
    if all(v == "ok" for v in checks.values()):
        return records.CopyState.OK
    if all(v == "ok" or v.startswith("missing:") for v in checks.values()):
        return records.CopyState.MISSING
    return records.CopyState.BAD


RESTORE_TESTS = "restore-tests"  # scratch directories: a whole restored keyspace, so never a shared /tmp


def restore_test(record: records.SnapshotRecord) -> None:
    tmp = scratch.directory(RESTORE_TESTS, what="restore-test directory")
    try:
        data_dir = tmp / "data"
        tools.restore(Path(record.etcd_path), data_dir)
        restored = tools.status(data_dir / "member" / "snap" / "db")
        # A restore replaces the membership bucket with the one member it creates, so the snapshot's
        # other members' keys are gone; every other key, and the revision, must be exactly there.
        expected_keys = (record.key_count or 0) - (max(len(record.members), 1) - 1)
        if (restored.revision, restored.keys) != (record.etcd_revision, expected_keys):
            raise snapshot.SnapshotCorrupt(
                f"restored database has revision {restored.revision} and {restored.keys} keys; the snapshot "
                f"recorded revision {record.etcd_revision} and {record.key_count} keys "
                f"({expected_keys} expected after a restore to one member)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prune_candidates(snapshots: list[records.SnapshotRecord], keep: int) -> list[records.SnapshotRecord]:
    """What prune deletes: known-good snapshots beyond the newest ``keep`` (at least one is always kept),
    and snapshots that are not known-good and older than the newest known-good one."""
    keep = max(keep, 1)
    good = [s for s in snapshots if s.known_good]  # newest first
    kept = good[:keep]
    newest_good = kept[0].created_at if kept else None
    out = []
    for item in snapshots:
        if item.known_good:
            if item not in kept:
                out.append(item)
        elif newest_good is not None and item.created_at < newest_good:
            out.append(item)
    return out


def delete_files(record: records.SnapshotRecord) -> None:
    for path in (record.etcd_path, record.archive_path):
        if path:
            Path(path).unlink(missing_ok=True)


WRITING = "snapshot-writing"  # the event that says which files a snapshot is about to write, before it does


def announce(state: store.Store, cluster: str, snapshot_id: str, paths: tuple[Path, ...]) -> None:
    """Journals, before the first byte is written, which files this database's snapshot ``snapshot_id``
    is about to write: the only proof ``orphans`` accepts that a file without a row is this database's
    to delete (a second database sharing the directory, or a path reached through a link, proves nothing)."""
    state.record_event(
        kind=WRITING,
        cluster=cluster,
        message=f"snapshot {snapshot_id}: writing {', '.join(str(p) for p in paths)}",
        data={"snapshot": snapshot_id, "files": [str(p) for p in paths]},
    )


def _own_file(cluster: str) -> re.Pattern[str]:
    """The files ``create`` writes for ``cluster``: ID.db, ID.tar.gz and their .part."""
    snapshot_id = rf"{re.escape(cluster)}-\d{{8}}T\d{{6}}Z-[0-9a-f]{{4}}"
    return re.compile(rf"^(?P<id>{snapshot_id})\.(?:db|tar\.gz)(?:\.part)?$")


def _real(path: str | Path) -> str:
    return os.path.realpath(path)


def orphans(cfg: config.ClusterConfig, state: store.Store) -> list[Path]:
    """The files in the snapshot directory that a ``create`` or ``import`` of this database announced
    (``announce``) and that no snapshot row names: what an interrupted or killed one left (a full etcd
    copy among them). Nothing else is ever called an orphan: not a file that merely has this cluster's
    name (another state database's snapshot in a shared directory), nor a row's file seen through
    another path (compared by real path). Run under the cluster lock, since a ``create`` in progress
    has files and no row yet."""
    directory = cfg.snapshots.dir
    if not directory.is_dir():
        return []
    rows = state.snapshots(cfg.name)
    known = {_real(p) for s in rows for p in (s.etcd_path, s.archive_path) if p}
    recorded = {s.id for s in rows}
    announced: set[str] = set()
    for event in state.events(cluster=cfg.name, kinds=(WRITING,), limit=100_000):
        files_of = event.data.get("files")
        if event.data.get("snapshot") not in recorded and isinstance(files_of, list):
            announced.update(_real(f) for f in files_of)
            announced.update(_real(f"{f}.part") for f in files_of)
    pattern = _own_file(cfg.name)
    return sorted(
        p
        for p in directory.iterdir()
        if pattern.match(p.name) and p.is_file() and (real := _real(p)) in announced and real not in known
    )


def remove_orphan(path: Path) -> None:
    path.unlink(missing_ok=True)
