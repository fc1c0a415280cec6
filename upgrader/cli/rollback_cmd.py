"""``upgrader rollback``: back to a known-good snapshot, by the least destructive path, verified."""

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render, _rollback_run, _runs

if TYPE_CHECKING:
    from upgrader.state import records
    from upgrader.usecases.rollback import service as rollback_mod


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
        _runs.LogFormat, typer.Option("--log-format", help="json: one event per line on stdout.")
    ] = _runs.LogFormat.TEXT,
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
    from upgrader.core import config
    from upgrader.state import store
    from upgrader.usecases import runs
    from upgrader.usecases.rollback import model as rollback_model
    from upgrader.usecases.rollback import service as rollback_mod

    if resume and (to or dry_run):
        raise errors.UsageError("--resume continues a run as it was planned: give it without --to or --dry-run")
    cfg = config.load(cluster)
    options = rollback_model.Options(
        allow_revision_regression=allow_revision_regression,
        force_drain=force_drain,
        delete_emptydir_data=delete_emptydir_data,
        drain_timeout=_runs.seconds(drain_timeout, "--drain-timeout") if drain_timeout else None,
    )
    with store.Store.open(db) as state:
        command = f"rollback --resume {resume}" if resume else "rollback"
        with _runs.locked(cfg, state, command, insecure=insecure) as (lease, opened):
            options = dataclasses.replace(options, insecure=opened.insecure)
            try:
                if resume:
                    with _runs.observer(log_format, f"{cfg.name}: resuming rollback {resume}") as observe:
                        done = rollback_mod.resume(opened, state, resume, options, lease=lease, observe=observe)
                    summary = {"run": done.id, **_summary(done)}
                else:
                    prepared = rollback_mod.prepare(opened, state, to, options, place_tool=not dry_run)
                    _rollback_run.describe(prepared, output)
                    if dry_run:
                        _show_dry_run(prepared, rollback_mod.dry_run(prepared), output)
                        return
                    _options.confirm(_question(prepared, cfg.name), yes=yes)
                    done = _rollback_run.run_prepared(
                        opened, state, prepared, options, lease=lease, log_format=log_format
                    )
                    summary = {"run": done.id, **_summary(done), "rollback": prepared.summary()}
            except runs.RunStopped as stopped:
                _runs.stopped(stopped, output, log_format)
    _runs.finished(summary, output, log_format, announced=True)  # its run-succeeded event said it


def _summary(run: "records.RunRecord") -> dict[str, object]:
    return _runs.as_dict(run)


def _question(prepared: "rollback_mod.Prepared", cluster: str) -> str:
    from upgrader.usecases.rollback import model as rollback_model

    if prepared.route is rollback_model.Route.WINDOW:
        return f"Roll {cluster} back to snapshot {prepared.snapshot.id} (v{prepared.version}); nothing is lost?"
    lost = _rollback_run.lost(prepared)
    return f"Restore etcd of {cluster} from snapshot {prepared.snapshot.id}: {lost} are lost. Go on?"


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
