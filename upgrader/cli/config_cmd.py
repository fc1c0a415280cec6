"""``upgrader config``: validate a cluster config and its inventory."""

from upgrader.cli import _errors, _options, _render

app = _options.group("Check cluster configs.")


@app.command("check")
@_errors.handle
def check(
    cluster: _options.ClusterOption,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Validate cluster.yaml and its inventory; report every problem with where it is (exit 2)."""
    from upgrader.cluster import preflight
    from upgrader.support import redaction

    report = preflight.check_config(cluster)
    if output is _render.OutputFormat.JSON:
        _render.emit_json(report.as_dict())
        return
    cfg = report.config
    _render.echo(f"{cfg.source}: ok, cluster {cfg.name}")
    for group, hosts in report.groups.items():
        _render.echo(f"  {group}: {', '.join(hosts)}")
    _render.echo(f"  etcd endpoints: {', '.join(cfg.etcd.endpoints)} ({'TLS' if cfg.etcd.uses_tls else 'plain'})")
    _render.echo(
        f"  packages: {cfg.packages.method.value}"
        + (f" from {redaction.url(cfg.packages.mirror)}" if cfg.packages.mirror else "")
    )
    _render.echo(f"  snapshots: {cfg.snapshots.dir} (keep {cfg.snapshots.keep})")
    for warning in report.warnings:
        _render.warn(warning)
