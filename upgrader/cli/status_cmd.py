"""``upgrader status`` and ``upgrader history``: where a cluster stands, and what ran on it."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from upgrader.cli import _errors, _options, _render, _runs

if TYPE_CHECKING:
    from upgrader.state import records

status_app = _options.group("Where a cluster stands: versions, the current or last run, what to do next.")
history_app = _options.group("Past runs on a cluster.")


def _next(run: "records.RunRecord | None", holder: str | None, cluster: str) -> str:
    """``holder``: "alive" or "unknown" while an unexpired lease is held, "gone" when its process is."""
    if run is not None and not run.status.finished:
        if holder in {"alive", "unknown"}:
            return f"run {run.id} is in progress (pid {run.pid} on {run.host}); watch `upgrader status -c {cluster}`"
        verb = "rollback" if run.kind.value == "rollback" else "apply"
        again = f"upgrader {verb} --resume {run.id} -c {cluster}"
        gone = f"run {run.id} stopped: its process (pid {run.pid} on {run.host}) is gone; " if holder == "gone" else ""
        return gone + (
            again if verb == "rollback" else f"{again} (or roll it back: upgrader rollback -c {cluster} --dry-run)"
        )
    return f"upgrader plan -c {cluster} --to MINOR --save, then upgrader apply PLAN_ID -c {cluster}"


@status_app.callback(invoke_without_command=True)
@_errors.handle
def status(
    cluster: _options.ClusterOption,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Versions per node (from the API), the current or last run with each step, the newest known-good
    snapshot, and the command to run next."""
    from upgrader.cluster import session
    from upgrader.core import config
    from upgrader.kube import cluster as kube
    from upgrader.state import lease, store

    cfg = config.load(cluster)
    with store.Store.open(db) as state:
        runs = state.runs(cfg.name, limit=1)
        locks = [lock for lock in state.locks(cfg.name) if not lock.expired(datetime.now(UTC))]
        holder = lease.liveness(locks[0]).value if locks else None
        good = next((s for s in state.snapshots(cfg.name) if s.known_good), None)
    versions: dict[str, dict[str, Any]] = {}
    problem = None
    try:
        with session.ClusterSession.open(cfg, insecure=insecure) as opened:
            for node in opened.api.nodes():
                versions[node.name] = {"kubelet": node.kubelet, "ready": node.ready, "cordoned": node.unschedulable}
            for server in opened.api.apiservers():
                live = opened.api.version(server.endpoint)
                versions.setdefault(server.node, {}).update(apiserver=live.git_version, emulated=live.emulation)
    except kube.KubeUnavailable as exc:
        problem = str(exc)
    run = runs[0] if runs else None
    source = str(cfg.source or cluster)
    body = {
        "cluster": cfg.name,
        "nodes": versions,
        "api_problem": problem,
        "run": _runs.as_dict(run) if run else None,
        "lock": locks[0].describe() if locks else None,
        "known_good_snapshot": good.id if good else None,
        "lock_holder": holder,
        "next": _next(run, holder, source),
    }
    if output is _render.OutputFormat.JSON:
        _render.emit_json(body)
        return
    rows = [
        (
            name,
            v.get("apiserver", ""),
            v.get("emulated") or "",
            v.get("kubelet", ""),
            "yes" if v.get("ready") else "NO",
            "yes" if v.get("cordoned") else "",
        )
        for name, v in sorted(versions.items())
    ]
    _render.echo(_render.table(("NODE", "APISERVER", "EMULATED", "KUBELET", "READY", "CORDONED"), rows))
    if problem:
        _render.warn(problem)
    if run:
        _render.echo(f"\nrun {run.id}: {run.status.value}" + (f" ({run.stopped_reason})" if run.stopped_reason else ""))
        _render.echo(
            _render.table(
                ("STEP", "KIND", "VERSION", "NODES", "STATUS", "ATTEMPTS", "SECONDS"),
                [
                    (
                        s.position + 1,
                        s.kind,
                        s.spec.get("version") or "",
                        ",".join(s.spec.get("nodes", [])),
                        s.status.value,
                        s.attempts,
                        f"{s.seconds:.0f}" if s.seconds is not None else "",
                    )
                    for s in run.steps
                ],
            )
        )
        if run.error:
            _render.echo(f"error: {run.error}")
    _render.echo(f"\nnewest known-good snapshot: {good.id if good else 'none'}")
    _render.echo(f"next: {body['next']}")


@history_app.callback(invoke_without_command=True)
@_errors.handle
def history(
    cluster: _options.ClusterOption,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Past runs, newest first."""
    from upgrader.core import config
    from upgrader.state import store

    cfg = config.load(cluster)
    with store.Store.open(db) as state:
        runs = state.runs(cfg.name)
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"runs": [_runs.as_dict(r) for r in runs]})
        return
    rows = [
        (
            r.id,
            r.kind.value,
            r.plan_id or "",
            r.status.value,
            _render.timestamp(r.started_at),
            _render.timestamp(r.finished_at),
            f"{sum(1 for s in r.steps if s.status.value == 'succeeded')}/{len(r.steps)}",
        )
        for r in runs
    ]
    _render.echo(
        _render.table(("RUN", "KIND", "PLAN", "STATUS", "STARTED", "FINISHED", "STEPS"), rows) if rows else "no runs"
    )
