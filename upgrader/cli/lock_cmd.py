"""``upgrader lock``: see and break the per-cluster lease that serialises mutating commands."""

from datetime import UTC, datetime
from typing import Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render

app = _options.group("Inspect or break cluster locks.")

NameOption = Annotated[
    str | None, typer.Option("--name", help="Cluster name, instead of reading it from a cluster config.")
]


def _cluster_name(cluster: object, name: str | None, *, required: bool) -> str | None:
    from pathlib import Path

    from upgrader.core import config

    if cluster is not None and name is not None:
        raise errors.UsageError("give either -c/--cluster or --name, not both")
    if isinstance(cluster, Path):
        return config.load(cluster).name
    if name is None and required:
        raise errors.UsageError("name the cluster with -c/--cluster or --name")
    return name


@app.command("status")
@_errors.handle
def status(
    cluster: _options.OptionalClusterOption = None,
    name: NameOption = None,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Show who holds the lock on a cluster (or on every cluster), and until when."""
    from upgrader.state import store

    wanted = _cluster_name(cluster, name, required=False)
    with store.Store.open(db) as state:
        leases = state.locks(wanted)
    now = datetime.now(UTC)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {"locks": [{**l.__dict__, "expired": l.expired(now)} for l in leases]}  # noqa: E741
        )
        return
    if not leases:
        _render.echo(f"cluster {wanted} is not locked" if wanted else "no cluster is locked")
        return
    rows = [
        (
            l.cluster,
            l.command,
            l.host,
            l.pid,
            _render.timestamp(l.acquired_at),
            _render.timestamp(l.expires_at),
            "expired" if l.expired(now) else "held",
        )
        for l in leases  # noqa: E741
    ]
    _render.echo(_render.table(("CLUSTER", "COMMAND", "HOST", "PID", "SINCE", "EXPIRES", "STATE"), rows))


@app.command("break")
@_errors.handle
def break_(
    cluster: _options.OptionalClusterOption = None,
    name: NameOption = None,
    db: _options.DbOption = None,
    yes: _options.YesOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="Break it even if its holder runs or its lease is fresh (dangerous).")
    ] = False,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Remove a cluster's lock once its holder is gone: its lease expired, or its process (on this host)
    no longer runs. A live holder's lock is refused (exit 3) unless --force."""
    from upgrader.state import records, store

    wanted = _cluster_name(cluster, name, required=True)
    assert wanted is not None
    with store.Store.open(db) as state:
        held = state.locks(wanted)
        if not held:
            raise errors.NotFound(f"cluster {wanted} is not locked; nothing to break")
        _options.confirm(f"Break the lock on {wanted} held by {held[0].describe()}?", yes=yes)
        broken = state.break_lock(wanted, force=force)
        if broken is not None:
            state.record_event(
                kind="lock-broken",
                cluster=wanted,
                level=records.EventLevel.WARNING,
                message=f"lock held by {broken.describe()} was broken" + (" with --force" if force else ""),
                data={
                    "holder_host": broken.host,
                    "holder_pid": broken.pid,
                    "command": broken.command,
                    "forced": force,
                },
            )
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"broken": broken.__dict__ if broken else None})
    else:
        _render.echo(f"lock on {wanted} broken" if broken else f"cluster {wanted} was released meanwhile")
