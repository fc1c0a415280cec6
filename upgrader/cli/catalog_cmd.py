"""``upgrader catalog``: which rules catalog plans use, and ``update`` from the release mirror."""

from typing import Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render

app = _options.group("Show the rules catalog plans use, or refresh its patch releases from the release mirror.")


@app.command("show")
@_errors.handle
def show(output: _options.OutputOption = _render.OutputFormat.TABLE) -> None:
    """The catalog a plan uses now: its version, where it comes from, and each minor's newest patch, the
    etcd kubeadm runs with it, and the etcd an external etcd is moved to before a hop to it."""
    from upgrader.usecases import catalogs

    in_use = catalogs.current()
    if in_use.warning:
        _render.warn(in_use.warning)
    catalog = in_use.catalog
    minors = [
        {
            "minor": str(m),
            "latest": str(e.latest),
            "patches_complete": e.patches_complete,
            "etcd": str(e.kubeadm_etcd),
            "external_etcd": str(catalog.external_etcd[m]) if m in catalog.external_etcd else None,
        }
        for m, e in sorted(catalog.minors.items())
    ]
    incomplete = {str(m): why for m, why in sorted(catalog.incomplete.items())}
    if output is _render.OutputFormat.JSON:
        _render.emit_json(
            {
                "catalog": catalog.version,
                "source": in_use.source,
                "refreshed": dict(catalog.refreshed),
                "minors": minors,
                "incomplete": incomplete,
            }
        )
        return
    refreshed = catalog.refreshed
    how = f", refreshed {refreshed['at']} from {refreshed['source']}" if refreshed else ""
    _render.echo(f"catalog {catalog.version} ({in_use.source}{how})")
    rows = [
        (m["minor"], m["latest"], "yes" if m["patches_complete"] else "maybe not", m["etcd"], m["external_etcd"] or "-")
        for m in minors
    ]
    _render.echo(_render.table(("MINOR", "NEWEST PATCH", "COMPLETE", "KUBEADM ETCD", "EXTERNAL ETCD"), rows))
    for minor, why in incomplete.items():
        _render.echo(f"{minor}: not planned: {why}")


@app.command("update")
@_errors.handle
def update(
    cluster: _options.OptionalClusterOption = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror", help="Release mirror laid out like dl.k8s.io/release [default: the cluster's].", metavar="URL"
        ),
    ] = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Read each minor's newest patch (stable-1.X.txt) and its checksums from the release mirror, as
    `kubeadm upgrade plan` does, and write the refreshed catalog to upgrader's data directory.

    Exit codes: 0 written, 1 the mirror could not be read (nothing written; plans keep the catalog
    they used), 2 bad input.
    """
    from upgrader.core import config
    from upgrader.releases import mirror as mirror_mod
    from upgrader.usecases import catalogs

    if cluster is not None and mirror is not None:
        raise errors.UsageError("give -c/--cluster or --mirror, not both")
    base = mirror or catalogs.mirror_of(config.load(cluster) if cluster is not None else None)
    source = mirror_mod.Mirror(base)
    try:
        updated = catalogs.update(source, source.shown)  # the catalog records the URL without its user-info
    except errors.OperationFailed as exc:
        raise errors.OperationFailed(
            f"{exc.message}; nothing written, plans still use catalog {catalogs.current().catalog.version}"
        ) from None
    if output is _render.OutputFormat.JSON:
        _render.emit_json(updated.as_dict())
        return
    _render.echo(f"catalog {updated.catalog.version} written to {updated.path} (from {source.shown})")
    for change in updated.changes:
        added = ", ".join(str(v) for v in change.added) or "nothing new"
        note = f" ({change.note})" if change.note else ""
        _render.echo(f"  {change.minor}: marker {change.marker or '-'}: {added}{note}")
