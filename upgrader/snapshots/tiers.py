"""A snapshot's copies across tiers: written, checked, pulled back, pruned and imported.

The local copy is written and verified first (``local.take``); every other configured tier is copied
from it. A tier that fails is named, recorded as such, and leaves the others and the snapshot's row
intact. A snapshot stays known-good while one of its copies is good; a copy that fails a check is
marked and never used again (a good copy pulled from another tier replaces it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from upgrader import errors
from upgrader.cluster import health, session
from upgrader.core import config
from upgrader.core.tier import Tier
from upgrader.etcd import snapshot, tools
from upgrader.objectstore import sealing
from upgrader.snapshots import local, peer, remote, restore_tool
from upgrader.state import records, store
from upgrader.support import files

GOOD = (records.CopyState.OK, records.CopyState.UNCHECKED)


@dataclass(frozen=True)
class Created:
    record: records.SnapshotRecord
    health: health.Health
    failed: dict[Tier, str]  # tier -> one line naming what went wrong

    def missing_required(self, settings: config.SnapshotSettings) -> list[str]:
        return [self.failed[t] for t in settings.require if t in self.failed]


def create(
    cluster: session.ClusterSession,
    state: store.Store,
    *,
    label: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    report: Callable[[str], None] | None = None,
) -> Created:
    """Takes a snapshot into the local tier, then copies it to every other configured tier.

    The caller holds the cluster lock."""
    taken = local.take(cluster, state, label=label, progress=progress)
    place_restore_tool(cluster, state, taken.record.id, report)
    failed: dict[Tier, str] = {}
    for tier in cluster.cfg.snapshots.tiers:
        if tier is Tier.LOCAL:
            continue
        if report:
            report(f"copying {taken.record.id} to the {tier.value} tier")
        problem = copy_to(cluster, state, taken.record, tier)
        if problem:
            failed[tier] = problem
    return Created(state.snapshot(taken.record.id), taken.health, failed)


def place_restore_tool(
    cluster: session.ClusterSession, state: store.Store, snapshot_id: str, report: Callable[[str], None] | None
) -> None:
    """etcd's restore tool on every control-plane node now, while nothing is down: a rollback to this
    snapshot will find it there. A node it cannot be placed on is a warning event, not a failed snapshot
    (the rollback checks again, and refuses before stopping anything)."""
    try:
        restore_tool.ensure(cluster, place=True)
    except errors.UpgraderError as exc:
        state.record_event(
            kind="restore-tool-missing",
            cluster=cluster.name,
            level=records.EventLevel.WARNING,
            message=f"snapshot {snapshot_id}: {exc.message}",
            data={"snapshot": snapshot_id},
        )
        if report:
            report(f"warning: {exc.message}")


def copy_to(
    cluster: session.ClusterSession, state: store.Store, record: records.SnapshotRecord, tier: Tier
) -> str | None:
    """Copies the (verified) local files to ``tier`` and records the copies; None, or what failed."""
    try:
        if tier is Tier.PEER:
            for host in peer.replicate(cluster, record):
                state.record_copy(
                    records.CopyRecord.now(record.id, tier, peer.location(host), records.CopyState.OK, place=host)
                )
        elif tier is Tier.S3:
            bucket = _remote(cluster.cfg)
            state.record_copy(
                records.CopyRecord.now(record.id, tier, remote.upload(bucket, record), records.CopyState.OK)
            )
        return None
    except errors.UpgraderError as exc:
        problem = _named(tier, exc)
    if tier is Tier.PEER:
        _record_peers(cluster, state, record)
    else:
        state.record_copy(
            records.CopyRecord.now(
                record.id, tier, _where(cluster.cfg, record), records.CopyState.MISSING, detail=problem
            )
        )
    return problem


def push(cluster: session.ClusterSession, state: store.Store, snapshot_id: str, tier: Tier) -> str | None:
    """Copies a snapshot's local copy, verified first, to ``tier``; None, or what failed."""
    if tier is Tier.LOCAL:
        raise errors.UsageError("push copies to the peer or s3 tier; `snapshot pull` restores the local copy")
    if tier not in cluster.cfg.snapshots.tiers:
        raise errors.UsageError(f"{cluster.cfg.source or 'the config'} has no {tier.value} tier in snapshots.tiers")
    record = state.snapshot(snapshot_id)
    if record.cluster != cluster.name:
        raise errors.Refused(f"snapshot {record.id} belongs to cluster {record.cluster}, not {cluster.name}")
    checks = _check_local(state, record)
    if failed := next((f"{k}: {v}" for k, v in checks.items() if v != "ok"), None):
        raise errors.Refused(f"the local copy of {record.id} does not verify ({failed}): `snapshot pull` it first")
    return copy_to(cluster, state, state.snapshot(record.id), tier)


def _named(tier: Tier, exc: errors.UpgraderError) -> str:
    """One line that starts with the tier's name."""
    text = exc.message
    return text if text.startswith(f"{tier.value} tier") else f"{tier.value} tier: {text}"


def _where(cfg: config.ClusterConfig, record: records.SnapshotRecord) -> str:
    s3 = cfg.snapshots.s3
    return f"s3://{s3.bucket}/{s3.prefix}{cfg.name}/{record.id}" if s3 else "s3"


def _remote(cfg: config.ClusterConfig) -> remote.Remote:
    if cfg.snapshots.s3 is None:
        raise errors.UsageError(f"{cfg.source or 'the config'} has no snapshots.s3 section")
    return remote.Remote.open(cfg.snapshots.s3, cfg.name)


def _record_peers(
    cluster: session.ClusterSession, state: store.Store, record: records.SnapshotRecord
) -> dict[str, peer.NodeCopy]:
    """Checks every node's copy and records each; the copies by node."""
    try:
        found = {c.host: c for c in peer.check(cluster, record)}
    except errors.UpgraderError as exc:
        found = {
            h: peer.NodeCopy(h, records.CopyState.MISSING, _named(Tier.PEER, exc))
            for h in cluster.inventory.hosts("kube_control_plane")
        }
    for host, node in found.items():
        state.record_copy(
            records.CopyRecord.now(
                record.id, Tier.PEER, peer.location(host), node.state, place=host, detail=node.detail
            )
        )
    return found


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    record: records.SnapshotRecord
    checks: dict[str, str]  # check -> "ok" or what failed
    ok: bool


def _check_local(state: store.Store, record: records.SnapshotRecord) -> dict[str, str]:
    checks = local.check(record)
    copy_state = local.copy_state(checks)
    detail = next((v for v in checks.values() if v != "ok"), None)
    state.record_copy(records.CopyRecord.now(record.id, Tier.LOCAL, record.etcd_path, copy_state, detail=detail))
    if copy_state is records.CopyState.OK and record.etcd_file_sha256 is None:
        state.record_file_sha256(record.id, snapshot.file_sha256(Path(record.etcd_path)))
    return checks


def _conclude(state: store.Store, snapshot_id: str) -> records.SnapshotRecord:
    """Known-good stays only while one copy is still good; the check is dated."""
    record = state.snapshot(snapshot_id)
    good = any(c.state in GOOD for c in record.copies)
    state.record_verification(snapshot_id, ok=good, at=datetime.now(UTC))
    return state.snapshot(snapshot_id)


def verify(
    state: store.Store,
    snapshot_id: str,
    *,
    cluster: session.ClusterSession | None = None,
    tiers: Sequence[Tier] | None = None,
    restore_test: bool = False,
) -> Verified:
    """Checks each copy in ``tiers`` (the local tier, and with a cluster every configured tier)."""
    record = state.snapshot(snapshot_id)
    if tiers is None:
        tiers = cluster.cfg.snapshots.tiers if cluster else [Tier.LOCAL]
    if cluster is None and any(t is not Tier.LOCAL for t in tiers):
        raise errors.UsageError("checking the peer and s3 tiers needs the cluster's config: add -c CLUSTER.yaml")
    checks: dict[str, str] = {}
    if Tier.LOCAL in tiers:
        checks.update(_check_local(state, record))
        record = state.snapshot(snapshot_id)
    if cluster is not None and Tier.PEER in tiers:
        for host, node in _record_peers(cluster, state, record).items():
            checks[f"peer {host}"] = "ok" if node.state is records.CopyState.OK else (node.detail or node.state.value)
    if cluster is not None and Tier.S3 in tiers:
        checks["s3"] = _check_remote(cluster.cfg, state, record)
    if restore_test and all(v == "ok" for v in checks.values()) and Tier.LOCAL in tiers:
        try:
            local.restore_test(record)
            checks["restore test"] = "ok"
        except errors.UpgraderError as exc:
            checks["restore test"] = exc.message
    final = _conclude(state, snapshot_id)
    return Verified(final, checks, all(v == "ok" for v in checks.values()))


def _check_remote(cfg: config.ClusterConfig, state: store.Store, record: records.SnapshotRecord) -> str:
    try:
        copy_state, detail = remote.check(_remote(cfg), record)
    except errors.UpgraderError as exc:  # the bucket unreachable, the key unreadable: the copy is unknown now
        return _named(Tier.S3, exc)
    state.record_copy(records.CopyRecord.now(record.id, Tier.S3, _where(cfg, record), copy_state, detail=detail))
    return "ok" if copy_state is records.CopyState.OK else (detail or copy_state.value)


# -- pulling back ------------------------------------------------------------------------------


def pull(
    cluster: session.ClusterSession,
    state: store.Store,
    snapshot_id: str,
    source: Tier,
    *,
    only: Sequence[str] = (),
    nodes: Mapping[str, peer.NodeCopy] | None = None,
) -> str:
    """Restores the local copy (or only the files named in ``only``) from ``source``; each file is
    checked before it replaces anything. Returns where it came from. ``nodes``: the peer copies as
    just checked, so that they are not checked again."""
    record = state.snapshot(snapshot_id)
    if record.cluster != cluster.name:
        raise errors.Refused(f"snapshot {record.id} belongs to cluster {record.cluster}, not {cluster.name}")
    if record.etcd_file_sha256 is None:
        raise errors.Refused(f"snapshot {record.id} predates tiers: it has no whole-file sha256 to check a copy by")
    wanted = {n: p for n, p in record.local_files().items() if not only or n in only}
    files.private_dir(record.local_files()[f"{record.id}.db"].parent, what="snapshot directory")
    try:
        if source is Tier.PEER:
            good = nodes if nodes is not None else _record_peers(cluster, state, record)
            where = f"peer {peer.pull(cluster, record, good, wanted)}"
        elif source is Tier.S3:
            remote.pull(_remote(cluster.cfg), record, wanted)
            where = "s3"
        else:
            raise errors.UsageError("pull copies from the peer or s3 tier into the local one")
    except (errors.UsageError, errors.Refused):
        raise
    except errors.UpgraderError as exc:
        raise errors.OperationFailed(_named(source, exc)) from None
    checks = _check_local(state, record)
    relevant = {"etcd database": f"{record.id}.db" in wanted, "archive": f"{record.id}.tar.gz" in wanted}
    if failed := next((v for k, v in checks.items() if relevant.get(k) and v != "ok"), None):
        raise errors.OperationFailed(f"the copy pulled from {where} does not verify: {failed}")
    return where


# -- ready for a rollback ----------------------------------------------------------------------


def ready(
    cluster: session.ClusterSession,
    state: store.Store,
    record: records.SnapshotRecord,
    *,
    need_database: bool = True,
    report: Callable[[str], None] | None = None,
) -> str | None:
    """None when a rollback can use the snapshot: its archive verifies locally (pulled back from
    another tier if it must be), and the etcd database verifies locally or on every control-plane
    node. Else what failed. The database is moved only when not every control-plane node has it."""
    checks = _check_local(state, record)
    archive_ok = checks.get("archive") == "ok"
    db_ok = checks.get("etcd database") == "ok"
    record = state.snapshot(record.id)
    if archive_ok and (db_ok or not need_database):
        _conclude(state, record.id)
        return None
    sources = _sources(cluster)
    if not sources:
        return next(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    nodes: dict[str, peer.NodeCopy] = {}
    if need_database and not db_ok and Tier.PEER in sources:
        nodes = _record_peers(cluster, state, record)
        if nodes and all(n.state is records.CopyState.OK for n in nodes.values()):
            db_ok = True  # each member restores from its own disk: nothing to move
            if report:
                report(f"the local copy of {record.id} is not usable; every control-plane node has a good copy")
    names = [f"{record.id}.tar.gz"] if db_ok or not need_database else [f"{record.id}.tar.gz", f"{record.id}.db"]
    if archive_ok:
        names = names[1:]
    problems = []
    for source in sources:
        if not names:
            break
        try:
            where = pull(cluster, state, record.id, source, only=names, nodes=nodes or None)
        except errors.UpgraderError as exc:
            problems.append(exc.message)
            continue
        if report:
            report(f"{', '.join(names)} pulled back from {where}")
        names = []
    _conclude(state, record.id)
    if names:
        return f"no tier has a good copy of {', '.join(names)} ({'; '.join(problems) or 'none recorded'})"
    return None


def _sources(cluster: session.ClusterSession) -> list[Tier]:
    """The configured tiers other than local, nearest first. Each is asked, whatever its recorded
    copies say: an imported snapshot has no record of the copies on the nodes."""
    return [t for t in (Tier.PEER, Tier.S3) if t in cluster.cfg.snapshots.tiers]


# -- pruning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Doomed:
    tier: Tier
    record: records.SnapshotRecord


def prune_plan(cfg: config.ClusterConfig, snapshots: list[records.SnapshotRecord], keep: int | None) -> list[Doomed]:
    """Per tier, the copies beyond that tier's ``keep`` (see ``local.prune_candidates``)."""
    out = []
    for tier in Tier:
        held = [s for s in snapshots if any(c.tier is tier for c in s.copies)]
        if tier is Tier.LOCAL:
            held = [s for s in snapshots if s.copy(Tier.LOCAL) is not None or not s.copies]
        out += [Doomed(tier, s) for s in local.prune_candidates(held, keep or cfg.snapshots.keep_for(tier))]
    return out


def prune(
    cfg: config.ClusterConfig,
    state: store.Store,
    doomed: list[Doomed],
    cluster: Callable[[], session.ClusterSession],
) -> None:
    """Deletes each doomed copy; a snapshot left with no copy loses its row."""
    for item in doomed:
        if item.tier is Tier.LOCAL:
            local.delete_files(item.record)
            state.forget_copy(item.record.id, Tier.LOCAL)
        elif item.tier is Tier.PEER:
            peer.delete(cluster(), item.record)
            for copy in item.record.copies:
                if copy.tier is Tier.PEER:
                    state.forget_copy(item.record.id, Tier.PEER, copy.place)
        else:
            remote.delete(_remote(cfg), item.record)
            state.forget_copy(item.record.id, Tier.S3)
    for snapshot_id in {d.record.id for d in doomed}:
        if not state.snapshot(snapshot_id).copies:
            state.delete_snapshot(snapshot_id)


# -- import ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    imported: list[records.SnapshotRecord]
    skipped: dict[str, str]  # id -> why


def import_from_s3(
    cfg: config.ClusterConfig, state: store.Store, wanted: Sequence[str] = (), *, insecure: bool = False
) -> Imported:
    """Every snapshot of this cluster described in the bucket and unknown to this database (or the
    ``wanted`` ones): both files downloaded and checked, then recorded with their local and s3 copies.

    Nothing the bucket says is trusted: the id is the object key's (and must be one upgrader gives this
    cluster), a description must authenticate with the key, each file must match its sha256, and the
    revision and key count recorded are read from the downloaded file, not from the description."""
    session.refuse_plain(cfg, insecure=insecure)
    bucket = _remote(cfg)
    known = {s.id for s in state.snapshots(cfg.name)}
    found = remote.described(bucket)
    if wanted and (absent := sorted(set(wanted) - {d.id for d in found})):
        raise errors.InputError(f"no snapshot {', '.join(absent)} of cluster {cfg.name} in {bucket.location('')}")
    imported, skipped = [], {}
    for item in found:
        if (wanted and item.id not in wanted) or item.id in known:
            if item.id in known and (not wanted or item.id in wanted):
                skipped[item.id] = "already in this database"
            continue
        if item.refused:
            skipped[item.id] = item.refused
            continue
        try:
            imported.append(_import_one(cfg, state, bucket, item))
        except (errors.UpgraderError, sealing.Unsealable) as exc:
            skipped[item.id] = exc.message
    return Imported(imported, skipped)


def _import_one(
    cfg: config.ClusterConfig, state: store.Store, bucket: remote.Remote, item: remote.Described
) -> records.SnapshotRecord:
    fields = dict(item.fields)
    try:
        for key in ("created_at", "verified_at"):
            if fields.get(key):
                fields[key] = datetime.fromisoformat(str(fields[key]))
    except ValueError as exc:
        raise errors.InputError(f"{item.id}: its description in the bucket has a bad time ({exc})") from None
    directory = files.private_dir(cfg.snapshots.dir, what="snapshot directory")
    paths = {f"{item.id}.db": directory / f"{item.id}.db", f"{item.id}.tar.gz": directory / f"{item.id}.tar.gz"}
    if there := [str(p) for p in paths.values() if p.exists() or p.is_symlink()]:
        raise errors.Refused(f"{item.id}: {there[0]} exists already (another database's snapshot?): left as it is")
    try:
        record = records.SnapshotRecord(
            **{
                **fields,
                "id": item.id,
                "cluster": cfg.name,
                "etcd_path": str(paths[f"{item.id}.db"]),
                "archive_path": str(paths[f"{item.id}.tar.gz"]),
            }
        )
    except TypeError as exc:
        raise errors.InputError(f"{item.id}: its description in the bucket is not one upgrader wrote ({exc})") from None
    local.announce(state, cfg.name, item.id, tuple(paths.values()))
    try:
        remote.pull(bucket, record, paths)
        checks = local.check(record)
        if failed := next((v for v in checks.values() if v != "ok"), None):
            raise snapshot.SnapshotCorrupt(f"{item.id}: downloaded, but {failed}")
        status = tools.status(paths[f"{item.id}.db"])  # what the file holds, whatever the description says
        now = datetime.now(UTC)
        record = replace(
            record,
            etcd_revision=status.revision,
            key_count=status.keys,
            # known-good only as an authenticated description says: an unsealed bucket proves nothing
            known_good=record.known_good and bucket.key is not None,
            verified_at=now,
            copies=(
                records.CopyRecord.now(record.id, Tier.LOCAL, str(paths[f"{item.id}.db"]), records.CopyState.OK),
                records.CopyRecord.now(record.id, Tier.S3, bucket.location(record.id), records.CopyState.OK),
            ),
        )
        state.add_snapshot(record)
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    return state.snapshot(record.id)
