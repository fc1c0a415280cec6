"""``upgrader facts``: what the planner needs, read from a live cluster (read-only)."""

from upgrader.cli import _errors, _options, _render

app = _options.group("Read a live cluster's versions and upgrade blockers (read-only).")


@app.callback(invoke_without_command=True)
@_errors.handle
def facts(
    cluster: _options.ClusterOption,
    insecure: _options.InsecureOption = False,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Collect the facts the planner uses from a live cluster; -o json writes a file `plan --facts` reads."""
    from upgrader.cluster import live_facts, session
    from upgrader.core import config

    with session.ClusterSession.open(config.load(cluster), insecure=insecure) as opened:
        collected = live_facts.collect(opened)
    data = collected.as_dict()
    if output is _render.OutputFormat.JSON:
        _render.emit_json(data)
        return
    rows = [
        (
            m["name"],
            m["apiserver"],
            m.get("emulated", ""),
            m.get("manifest_version", ""),
            m.get("kubelet", ""),
            m.get("cgroup", "?"),
            m.get("container_runtime", ""),
        )
        for m in data["control_plane"]
    ]
    _render.echo(
        _render.table(("CONTROL PLANE", "APISERVER", "EMULATED", "MANIFEST", "KUBELET", "CGROUP", "RUNTIME"), rows)
    )
    if data["nodes"]:
        node_rows = [
            (
                n["name"],
                n.get("kubelet", "?"),
                n.get("cgroup", "?"),
                n.get("container_runtime", ""),
                "yes" if n.get("ready") else "NO",
            )
            for n in data["nodes"]
        ]
        _render.echo("")
        _render.echo(_render.table(("NODE", "KUBELET", "CGROUP", "RUNTIME", "READY"), node_rows))
    etcd = data["etcd"]
    hosts = ", ".join(f"{h['host']} ({h['member']})" for h in etcd.get("hosts", []))
    how = f", external on {hosts or 'hosts not known'} (kubeadm never moves it)" if etcd.get("external") else ""
    _render.echo(
        f"\netcd {etcd['version']} (oldest member){how}, members: {', '.join(m['name'] for m in etcd['members'])}"
    )
    if data["apis_in_use"]:
        _render.echo("APIs in use that a later release stops serving:")
        for api in data["apis_in_use"]:
            count = f", {api['count']} objects" if "count" in api else ""
            _render.echo(f"  {api['group']}/{api['version']} {api['resource']} ({api['source']}{count})")
    for warning in data["warnings"]:
        _render.warn(warning)
