"""``upgrader snapshot``: verified, private snapshots of etcd and the control-plane manifests."""

from __future__ import annotations

from typing import Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render

app = _options.group("Take, list, verify and prune snapshots of etcd and the control-plane manifests.")

IdArgument = Annotated[str, typer.Argument(help="Snapshot id.")]


@app.command("create")
@_errors.handle
def create(
    cluster: _options.ClusterOption,
    label: Annotated[str | None, typer.Option("--label", help="A note kept with the snapshot.")] = None,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Snapshot etcd (verified sha256 trailer) and every control-plane node's manifests and versions."""
    from upgrader import config, session, snapshots
    from upgrader.state import store

    cfg = config.load(cluster)
    progress = _render.Progress("etcd snapshot")
    with (
        store.Store.open(db) as state,
        state.lock(cfg.name, "snapshot create"),
        session.ClusterSession.open(cfg, insecure=insecure) as opened,
    ):
        for allowed in opened.insecure:
            _render.warn(f"--insecure: {allowed}")
        try:
            created = snapshots.create(opened, state, label=label, progress=progress)
        finally:
            progress.finish()
    record = created.record
    if output is _render.OutputFormat.JSON:
        _render.emit_json({**record.summary(), "health": created.health.as_dict()})
        return
    _render.echo(
        f"snapshot {record.id}: revision {record.etcd_revision}, {record.key_count} keys, "
        f"{record.etcd_size / 2**20:.1f} MiB, {'KNOWN-GOOD' if record.known_good else 'not known-good'}"
    )
    _render.echo(f"  etcd:    {record.etcd_path}\n  archive: {record.archive_path}")
    for problem in created.health.problems:
        _render.warn(f"the cluster was not healthy, so this snapshot is not known-good: {problem}")


@app.command("list")
@_errors.handle
def list_(
    cluster: _options.OptionalClusterOption = None,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """List snapshots, newest first (of one cluster with -c, which also reports files that belong to none)."""
    from upgrader import config, snapshots
    from upgrader.state import store

    cfg = config.load(cluster) if cluster else None
    with store.Store.open(db) as state:
        found = state.snapshots(cfg.name if cfg else None)
        orphans = snapshots.orphans(cfg, state) if cfg else []
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
            s.label or "",
        )
        for s in found
    ]
    _render.echo(
        _render.table(("ID", "TAKEN", "REVISION", "SIZE", "KNOWN-GOOD", "LABEL"), rows) if rows else "no snapshots"
    )


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
        _render.emit_json(record.__dict__)
        return
    for key, value in record.summary().items():
        _render.echo(f"{key:15s} {value if not isinstance(value, list) else ', '.join(m['name'] for m in value)}")
    versions = ", ".join(f"{m['name']} {m['apiserver']}" for m in record.facts.get("control_plane", []))
    _render.echo(f"{'control plane':15s} {versions}")


@app.command("verify")
@_errors.handle
def verify(
    snapshot_id: IdArgument,
    restore_test: Annotated[
        bool,
        typer.Option(
            "--restore-test", help="Also restore it into a temporary directory and compare revision and key count."
        ),
    ] = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Re-check a snapshot's sha256 trailer and archive; a failure takes known-good away for good (exit 1)."""
    from upgrader import snapshots
    from upgrader.state import store

    with store.Store.open(db) as state:
        result = snapshots.verify_snapshot(state, snapshot_id, restore_test=restore_test)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {"id": result.record.id, "ok": result.ok, "checks": result.checks, "known_good": result.record.known_good}
        )
    else:
        for check, outcome in result.checks.items():
            _render.echo(f"{check:15s} {outcome}")
    if not result.ok:
        failed = next(v for v in result.checks.values() if v != "ok")
        raise errors.OperationFailed(
            f"snapshot {snapshot_id} failed verification and is no longer known-good: {failed}"
        )


@app.command("prune")
@_errors.handle
def prune(
    cluster: _options.ClusterOption,
    keep: Annotated[
        int | None, typer.Option("--keep", help="Known-good snapshots to keep [default: the config's snapshots.keep].")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
    yes: _options.YesOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Delete all but the newest known-good snapshots (never the newest known-good one), and files that
    belong to no snapshot (left by an interrupted create)."""
    from upgrader import config, snapshots
    from upgrader.state import store

    cfg = config.load(cluster)
    if keep is not None and keep < 1:
        raise errors.UsageError("--keep must be at least 1: the newest known-good snapshot is never deleted")
    with store.Store.open(db) as state, state.lock(cfg.name, "snapshot prune"):
        doomed = snapshots.prune_candidates(state.snapshots(cfg.name), keep or cfg.snapshots.keep)
        orphans = snapshots.orphans(cfg, state)
        verb = "would delete" if dry_run else "delete"
        if output is _render.OutputFormat.JSON:
            _render.emit_json(
                {"dry_run": dry_run, "delete": [s.id for s in doomed], "orphans": [str(p) for p in orphans]}
            )
        else:
            for item in doomed:
                _render.echo(f"{verb} {item.id} ({'known-good' if item.known_good else 'not known-good'})")
            for path in orphans:
                _render.echo(f"{verb} {path} (belongs to no snapshot)")
            if not doomed and not orphans:
                _render.echo("nothing to prune")
        if dry_run or not (doomed or orphans):
            return
        _options.confirm(f"Delete {len(doomed)} snapshots and {len(orphans)} stray files of {cfg.name}?", yes=yes)
        for item in doomed:
            snapshots.delete(state, item)
        for path in orphans:
            snapshots.remove_orphan(path)
