"""``upgrader rollback``: back to a known-good snapshot, by the least destructive path, verified."""

import dataclasses
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render, apply_cmd

if TYPE_CHECKING:
    from upgrader import runs, session
    from upgrader.engine import driver
    from upgrader.rollback import model as rollback_model
    from upgrader.rollback import service as rollback_mod
    from upgrader.state import records, store


@_errors.handle
def rollback(
    cluster: _options.ClusterOption,
    to: Annotated[
        str | None,
        typer.Option("--to", help="A snapshot id [default: the newest known-good one at an older minor]."),
    ] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an unfinished rollback run.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the route, what would be lost and every step; change nothing.")
    ] = False,
    allow_revision_regression: Annotated[
        bool,
        typer.Option(
            "--allow-revision-regression",
            help="Go on when the revision gap is over etcd.max_revision_gap; every kubelet is restarted.",
        ),
    ] = False,
    force_drain: _options.ForceDrainOption = False,
    delete_emptydir_data: _options.DeleteEmptydirOption = False,
    drain_timeout: _options.DrainTimeoutOption = None,
    log_format: Annotated[
        apply_cmd.LogFormat, typer.Option("--log-format", help="json: one event per line on stdout.")
    ] = apply_cmd.LogFormat.TEXT,
    insecure: _options.InsecureOption = False,
    yes: _options.YesOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Roll the cluster back to a known-good snapshot, then verify it matches.

    Inside a two-step window (the new minor's emulation never committed) the snapshot's manifests,
    kubeadm and ClusterConfiguration go back node by node and nothing is lost; otherwise etcd is
    restored on every member and what was written since the snapshot is lost (asked first).

    Exit codes: 0 rolled back and verified, 1 a step failed (resumable), 2 bad input, 3 refused
    (nothing changed), 5 stopped (interrupted or the lock lost; resumable).
    """
    from upgrader import config, runs, session
    from upgrader.rollback import model as rollback_model
    from upgrader.rollback import service as rollback_mod
    from upgrader.state import store

    if resume and (to or dry_run):
        raise errors.UsageError("--resume continues a run as it was planned: give it without --to or --dry-run")
    cfg = config.load(cluster)
    options = rollback_model.Options(
        allow_revision_regression=allow_revision_regression,
        force_drain=force_drain,
        delete_emptydir_data=delete_emptydir_data,
        drain_timeout=apply_cmd.seconds(drain_timeout, "--drain-timeout") if drain_timeout else None,
    )
    with store.Store.open(db) as state:
        command = f"rollback --resume {resume}" if resume else "rollback"
        with state.lock(cfg.name, command) as lease, session.ClusterSession.open(cfg, insecure=insecure) as opened:
            for allowed in opened.insecure:
                _render.warn(f"--insecure: {allowed}")
            options = dataclasses.replace(options, insecure=opened.insecure)
            try:
                if resume:
                    with apply_cmd.observer(log_format, f"{cfg.name}: resuming rollback {resume}") as observe:
                        done = rollback_mod.resume(opened, state, resume, options, lease=lease, observe=observe)
                    summary = {"run": done.id, **_summary(done)}
                else:
                    prepared = rollback_mod.prepare(opened, state, to, options, place_tool=not dry_run)
                    _describe(prepared, output)
                    if dry_run:
                        _show_dry_run(prepared, rollback_mod.dry_run(prepared), output)
                        return
                    _options.confirm(_question(prepared, cfg.name), yes=yes)
                    done = run_prepared(opened, state, prepared, options, lease=lease, log_format=log_format)
                    summary = {"run": done.id, **_summary(done), "rollback": prepared.summary()}
            except runs.RunStopped as stopped:
                apply_cmd.stopped(stopped, output, log_format)
    apply_cmd.finished(summary, output, log_format, announced=True)  # its run-succeeded event said it


def _summary(run: "records.RunRecord") -> dict[str, object]:
    from upgrader.cli import _runs

    return _runs.as_dict(run)


def run_prepared(
    opened: "session.ClusterSession",
    state: "store.Store",
    prepared: "rollback_mod.Prepared",
    options: "rollback_model.Options",
    *,
    lease: "driver.Lease",
    log_format: apply_cmd.LogFormat,
) -> "records.RunRecord":
    from upgrader.rollback import service as rollback_mod

    title = f"{opened.name}: rollback to {prepared.snapshot.id} ({prepared.route.value})"
    with apply_cmd.observer(log_format, title) as observe:
        return rollback_mod.execute(opened, state, prepared, options, lease=lease, observe=observe)


def _question(prepared: "rollback_mod.Prepared", cluster: str) -> str:
    from upgrader.rollback import model as rollback_model

    if prepared.route is rollback_model.Route.WINDOW:
        return f"Roll {cluster} back to snapshot {prepared.snapshot.id} (v{prepared.version}); nothing is lost?"
    return f"Restore etcd of {cluster} from snapshot {prepared.snapshot.id}: {_lost(prepared)} are lost. Go on?"


def _lost(prepared: "rollback_mod.Prepared") -> str:
    minutes = int(prepared.lost_seconds // 60)
    revisions = f"{prepared.lost_revisions} revisions" if prepared.lost_revisions is not None else "the revisions"
    return f"{revisions} written in the {minutes} min since {prepared.snapshot.created_at:%Y-%m-%d %H:%M:%SZ}"


def _describe(prepared: "rollback_mod.Prepared", output: _render.OutputFormat) -> None:
    """The route and what it loses, on stderr (stdout is kept for the result)."""
    from upgrader.rollback import model as rollback_model

    for passed in prepared.passed_over:
        _render.warn(f"passed over, fails verification: {passed}")
    if output is _render.OutputFormat.JSON:
        return
    _render.note(f"snapshot {prepared.snapshot.id} (v{prepared.version}), route: {prepared.route.value}")
    _render.note(f"  because {prepared.why}")
    if prepared.route is rollback_model.Route.FULL_RESTORE:
        _render.warn(f"a full restore: {_lost(prepared)} are lost")
    if prepared.ends is not None:
        _render.note(f"  it ends run {prepared.ends.id} ({prepared.ends.status.value}), marked rolled-back")


def _show_dry_run(
    prepared: "rollback_mod.Prepared", steps: list[dict[str, object]], output: _render.OutputFormat
) -> None:
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"dry_run": True, **prepared.summary(), "steps": steps})
        return
    for entry in steps:
        _render.echo(f"{entry['step']:>2}  {entry['kind']}")
        for action in entry["actions"]:  # type: ignore[attr-defined]
            _render.echo(f"      {action}")


def after_failed_apply(
    opened: "session.ClusterSession",
    state: "store.Store",
    halted: "runs.RunStopped",
    *,
    lease: "driver.Lease",
    log_format: apply_cmd.LogFormat,
    output: _render.OutputFormat,
) -> NoReturn:
    """``apply --on-failure rollback``: back to the last snapshot the failed run took (else the default
    choice), without asking (the option is the consent), then exit 4 once verified. If the rollback
    cannot be prepared or stops, its own error and exit code are what the caller sees."""
    from upgrader import runs
    from upgrader.rollback import model as rollback_model
    from upgrader.rollback import service as rollback_mod

    taken = [s.detail["snapshot"] for s in halted.run.steps if s.kind == "snapshot" and s.detail.get("snapshot")]
    _render.warn(f"error: {halted.message}")
    _render.warn(f"--on-failure rollback: rolling back to {taken[-1] if taken else 'the last known-good snapshot'}")
    options = rollback_model.Options(insecure=opened.insecure)
    try:
        prepared = rollback_mod.prepare(opened, state, taken[-1] if taken else None, options)
        _describe(prepared, output)
        done = run_prepared(opened, state, prepared, options, lease=lease, log_format=log_format)
    except runs.RunStopped as stopped:
        apply_cmd.stopped(stopped, output, log_format)
    message = (
        f"run {halted.run.id} failed ({halted.message}); rolled back to snapshot {prepared.snapshot.id} by "
        f"{prepared.route.value} in run {done.id}, verified"
    )
    if output is _render.OutputFormat.JSON and log_format is apply_cmd.LogFormat.TEXT:
        _render.emit_json(
            {"ok": False, "rolled_back": True, "run": halted.run.id, "rollback": {"run": done.id, **prepared.summary()}}
        )
    _errors.exit_with(errors.ExitCode.ROLLED_BACK, message)
