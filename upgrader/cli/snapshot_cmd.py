"""``upgrader snapshot``: verified, private snapshots of etcd and the control-plane manifests."""

import contextlib
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render, _runs
from upgrader.core.tier import Tier

if TYPE_CHECKING:
    from collections.abc import Iterator

    from upgrader.cluster.session import ClusterSession
    from upgrader.core.config import ClusterConfig
    from upgrader.state import records
    from upgrader.state.store import Store

app = _options.group(
    "Take, list, verify, copy and prune snapshots of etcd and the control-plane manifests, in up to three tiers."
)

IdArgument = Annotated[str, typer.Argument(help="Snapshot id.")]


@contextlib.contextmanager
def _locked(
    cfg: "ClusterConfig", db: str | None, command: str, *, insecure: bool
) -> "Iterator[tuple[Store, ClusterSession]]":
    """The state database, the cluster lock held for ``command``, and a session on the cluster."""
    from upgrader.state import store

    with store.Store.open(db) as state, _runs.locked(cfg, state, command, insecure=insecure) as (_, opened):
        yield state, opened


@app.command("create")
@_errors.handle
def create(
    cluster: _options.ClusterOption,
    label: Annotated[str | None, typer.Option("--label", help="A note kept with the snapshot.")] = None,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Snapshot etcd (verified sha256 trailer) and every control-plane node's manifests and versions,
    then copy it to every tier in snapshots.tiers (a tier that fails is named: exit 1, the rest kept)."""
    from upgrader.core import config
    from upgrader.snapshots import tiers

    cfg = config.load(cluster)
    progress = _render.Progress("etcd snapshot")
    with _locked(cfg, db, "snapshot create", insecure=insecure) as (state, opened):
        try:
            created = tiers.create(opened, state, label=label, progress=progress, report=_render.note)
        finally:
            progress.finish()
    record = created.record
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {
                **record.summary(),
                "health": created.health.as_dict(),
                "failed_tiers": {t.value: why for t, why in created.failed.items()},
            }
        )
    else:
        _render.echo(
            f"snapshot {record.id}: revision {record.etcd_revision}, {record.key_count} keys, "
            f"{record.etcd_size / 2**20:.1f} MiB, {'KNOWN-GOOD' if record.known_good else 'not known-good'}"
        )
        _render.echo(f"  etcd:    {record.etcd_path}\n  archive: {record.archive_path}")
        for copy in record.copies:
            if copy.tier is not Tier.LOCAL:
                _render.echo(f"  {copy.name + ':':8s} {copy.location} ({copy.state.value})")
        for problem in created.health.problems:
            _render.warn(f"the cluster was not healthy, so this snapshot is not known-good: {problem}")
    if created.failed:
        first = next(iter(created.failed.values()))
        more = f" (and {len(created.failed) - 1} more tier)" if len(created.failed) > 1 else ""
        _errors.exit_with(errors.ExitCode.FAILURE, f"error: snapshot {record.id} was taken, but {first}{more}")


@app.command("list")
@_errors.handle
def list_(
    cluster: _options.OptionalClusterOption = None,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """List snapshots, newest first (of one cluster with -c, which also reports files that belong to none)."""
    from upgrader.core import config
    from upgrader.snapshots import local
    from upgrader.state import store

    cfg = config.load(cluster) if cluster else None
    with store.Store.open(db) as state:
        found = state.snapshots(cfg.name if cfg else None)
        orphans = local.orphans(cfg, state) if cfg else []
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"snapshots": [s.summary() for s in found], "orphans": [str(p) for p in orphans]})
        return
    for path in orphans:
        _render.warn(
            f"{path} belongs to no snapshot (left by an interrupted create): `upgrader snapshot prune` removes it"
        )
    rows = [
        (
            s.id,
            _render.timestamp(s.created_at),
            s.etcd_revision,
            f"{s.etcd_size / 2**20:.1f} MiB",
            "yes" if s.known_good else "no",
            _copies(s),
            s.label or "",
        )
        for s in found
    ]
    _render.echo(
        _render.table(("ID", "TAKEN", "REVISION", "SIZE", "KNOWN-GOOD", "COPIES", "LABEL"), rows)
        if rows
        else "no snapshots"
    )


def _copies(record: "records.SnapshotRecord") -> str:
    """``local peer(3/3) s3``; a copy that is not good is shown with its state (``s3:bad``)."""
    from upgrader.state.records import CopyState

    out = []
    for tier in Tier:
        held = [c for c in record.copies if c.tier is tier]
        if not held:
            continue
        good = [c for c in held if c.state in (CopyState.OK, CopyState.UNCHECKED)]
        if tier is Tier.PEER:
            out.append(f"peer({len(good)}/{len(held)})")
        else:
            out.append(tier.value if good else f"{tier.value}:{held[0].state.value}")
    return " ".join(out) or "-"


@app.command("show")
@_errors.handle
def show(
    snapshot_id: IdArgument, db: _options.DbOption = None, output: _options.OutputOption = _render.OutputFormat.TABLE
) -> None:
    """Show one snapshot, with the facts recorded when it was taken."""
    from upgrader.state import store

    with store.Store.open(db) as state:
        record = state.snapshot(snapshot_id)
    if output is _render.OutputFormat.JSON:
        _render.emit_json({**record.summary(), "facts": record.facts})
        return
    for key, value in record.summary().items():
        if key in ("members", "copies"):
            continue
        _render.echo(f"{key:15s} {value}")
    _render.echo(f"{'members':15s} {', '.join(m['name'] for m in record.members)}")
    versions = ", ".join(f"{m['name']} {m['apiserver']}" for m in record.facts.get("control_plane", []))
    _render.echo(f"{'control plane':15s} {versions}")
    for copy in record.copies:
        detail = f": {copy.detail}" if copy.detail else ""
        _render.echo(
            f"{'copy ' + copy.name:15s} {copy.state.value} at {copy.location} "
            f"(checked {_render.timestamp(copy.checked_at)}){detail}"
        )


@app.command("verify")
@_errors.handle
def verify(
    snapshot_id: IdArgument,
    cluster: _options.OptionalClusterOption = None,
    tier: Annotated[
        str | None, typer.Option("--tier", help="Check only this tier: local, peer or s3 (peer and s3 need -c).")
    ] = None,
    restore_test: Annotated[
        bool,
        typer.Option(
            "--restore-test", help="Also restore it into a temporary directory and compare revision and key count."
        ),
    ] = False,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Re-check a snapshot's copies: the local sha256 trailer and archive, and with -c every configured
    tier (peer: sha256 on each node; s3: download and sha256). A copy that fails is marked and never used
    again; the snapshot stays known-good while one copy is good. Exit 1 when any check fails."""
    from upgrader.cluster import session
    from upgrader.core import config
    from upgrader.snapshots import tiers
    from upgrader.state import store

    only = [_tier(tier)] if tier else None
    if only and only != [Tier.LOCAL] and cluster is None:
        raise errors.UsageError(f"checking the {tier} tier needs the cluster's config: add -c CLUSTER.yaml")
    cfg = config.load(cluster) if cluster else None
    if cfg is not None and only and only[0] not in cfg.snapshots.tiers:
        raise errors.UsageError(f"{cfg.source or 'the config'} has no {only[0].value} tier in snapshots.tiers")
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(store.Store.open(db))
        opened = stack.enter_context(session.ClusterSession.open(cfg, insecure=insecure)) if cfg else None
        if cfg is not None and state.snapshot(snapshot_id).cluster != cfg.name:
            raise errors.Refused(f"snapshot {snapshot_id} does not belong to cluster {cfg.name}")
        result = tiers.verify(state, snapshot_id, cluster=opened, tiers=only, restore_test=restore_test)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {"id": result.record.id, "ok": result.ok, "checks": result.checks, "known_good": result.record.known_good}
        )
    else:
        for check, outcome in result.checks.items():
            _render.echo(f"{check:15s} {outcome}")
    if not result.ok:
        failed = next(f"{k}: {v}" for k, v in result.checks.items() if v != "ok")
        state_now = "still known-good (another copy is good)" if result.record.known_good else "no longer known-good"
        _errors.exit_with(
            errors.ExitCode.FAILURE, f"error: snapshot {snapshot_id} failed verification ({failed}); it is {state_now}"
        )


def _tier(value: str) -> Tier:

    try:
        return Tier(value)
    except ValueError:
        raise errors.UsageError(f"no tier {value!r}: local, peer or s3") from None


@app.command("prune")
@_errors.handle
def prune(
    cluster: _options.ClusterOption,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep", help="Known-good copies to keep in every tier [default: each tier's keep in the config]."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
    yes: _options.YesOption = False,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """In each tier, delete all but the newest known-good copies (never a tier's newest known-good one),
    and files that belong to no snapshot (left by an interrupted create). A snapshot with no copy left
    loses its row."""
    from upgrader.cluster import session
    from upgrader.core import config
    from upgrader.snapshots import local, tiers
    from upgrader.state import store

    cfg = config.load(cluster)
    if keep is not None and keep < 1:
        raise errors.UsageError("--keep must be at least 1: the newest known-good snapshot is never deleted")
    with contextlib.ExitStack() as stack:
        state = stack.enter_context(store.Store.open(db))
        stack.enter_context(state.lock(cfg.name, "snapshot prune"))
        doomed = tiers.prune_plan(cfg, state.snapshots(cfg.name), keep)
        orphans = local.orphans(cfg, state)
        verb = "would delete" if dry_run else "delete"
        if output is _render.OutputFormat.JSON:
            _render.emit_json(
                {
                    "dry_run": dry_run,
                    "delete": [{"tier": d.tier.value, "id": d.record.id} for d in doomed],
                    "orphans": [str(p) for p in orphans],
                }
            )
        else:
            for item in doomed:
                good = "known-good" if item.record.known_good else "not known-good"
                _render.echo(f"{verb} {item.record.id} from the {item.tier.value} tier ({good})")
            for path in orphans:
                _render.echo(f"{verb} {path} (belongs to no snapshot)")
            if not doomed and not orphans:
                _render.echo("nothing to prune")
        if dry_run or not (doomed or orphans):
            return
        _options.confirm(f"Delete {len(doomed)} copies and {len(orphans)} stray files of {cfg.name}?", yes=yes)

        def opened() -> "session.ClusterSession":
            return stack.enter_context(session.ClusterSession.open(cfg, insecure=insecure))

        tiers.prune(cfg, state, doomed, functools.cache(opened))
        for path in orphans:
            local.remove_orphan(path)


@app.command("pull")
@_errors.handle
def pull(
    snapshot_id: IdArgument,
    cluster: _options.ClusterOption,
    source: Annotated[str, typer.Option("--from", help="The tier to copy from: peer or s3.")],
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Restore the local copy of a snapshot from another tier; each file is checked against its
    recorded sha256 before it replaces anything."""
    from upgrader.core import config
    from upgrader.snapshots import tiers

    tier = _tier(source)
    cfg = config.load(cluster)
    with _locked(cfg, db, "snapshot pull", insecure=insecure) as (state, opened):
        where = tiers.pull(opened, state, snapshot_id, tier)
        record = state.snapshot(snapshot_id)
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"id": record.id, "from": where, "etcd_path": record.etcd_path})
        return
    _render.echo(f"snapshot {record.id}: local copy restored from {where} and verified\n  etcd: {record.etcd_path}")


@app.command("push")
@_errors.handle
def push(
    snapshot_id: IdArgument,
    cluster: _options.ClusterOption,
    target: Annotated[str, typer.Option("--to", help="The tier to copy to: peer or s3.")],
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Copy a snapshot's verified local copy to another tier: after a tier failed at create, or to
    replace a copy that verify found bad."""
    from upgrader.core import config
    from upgrader.snapshots import tiers

    tier = _tier(target)
    cfg = config.load(cluster)
    with _locked(cfg, db, "snapshot push", insecure=insecure) as (state, opened):
        problem = tiers.push(opened, state, snapshot_id, tier)
        record = state.snapshot(snapshot_id)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {"id": record.id, "tier": tier.value, "ok": problem is None, "copies": record.summary()["copies"]}
        )
    elif problem is None:
        for copy in record.copies:
            if copy.tier is tier:
                _render.echo(f"{copy.name}: {copy.location} ({copy.state.value})")
    if problem:
        _errors.exit_with(errors.ExitCode.FAILURE, f"error: {problem}")


@app.command("import")
@_errors.handle
def import_(
    cluster: _options.ClusterOption,
    source: Annotated[str, typer.Option("--from", help="Where to import from: s3.")] = "s3",
    snapshot_ids: Annotated[
        list[str] | None, typer.Argument(help="Only these snapshots [default: every one this database lacks].")
    ] = None,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Find this cluster's snapshots in the bucket and record the ones this database lacks, each file
    downloaded and verified: the way back when the controller and its database are both gone. Nothing
    the bucket says is trusted: ids, descriptions (authenticated with the key) and files are checked."""
    from upgrader.core import config
    from upgrader.snapshots import tiers
    from upgrader.state import store

    if _tier(source) is not Tier.S3:
        raise errors.UsageError("snapshots are imported from the s3 tier: --from s3")
    cfg = config.load(cluster)
    with store.Store.open(db) as state, state.lock(cfg.name, "snapshot import"):
        result = tiers.import_from_s3(cfg, state, snapshot_ids or (), insecure=insecure)
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"imported": [r.summary() for r in result.imported], "skipped": result.skipped})
    else:
        for record in result.imported:
            good = "KNOWN-GOOD" if record.known_good else "not known-good"
            _render.echo(f"imported {record.id}: revision {record.etcd_revision}, {good}")
        for snapshot_id, why in result.skipped.items():
            _render.echo(f"skipped {snapshot_id}: {why}")
        if not result.imported and not result.skipped:
            _render.echo("nothing to import")
    if snapshot_ids and (failed := {i: w for i, w in result.skipped.items() if w != "already in this database"}):
        _errors.exit_with(
            errors.ExitCode.FAILURE, f"error: {len(failed)} snapshot(s) not imported: {next(iter(failed.values()))}"
        )


@app.command("keygen")
@_errors.handle
def keygen(
    path: Annotated[Path, typer.Argument(help="Where to write the new key (0600; an existing file is refused).")],
) -> None:
    """Write a new random AES-256 key for the s3 tier's encryption. Keep a copy away from the cluster:
    without it, the sealed snapshots in the bucket cannot be read."""
    from upgrader.objectstore import sealing

    sealing.Key.generate(path)
    _render.echo(f"wrote {path} (key id {sealing.Key.load(path).fingerprint}); point snapshots.s3.key_file at it")
