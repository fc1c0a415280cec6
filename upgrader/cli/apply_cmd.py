"""``upgrader apply``: carry out a saved plan, journaled and resumable (exit codes in the README)."""

import dataclasses
import enum
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render, _runs

if TYPE_CHECKING:
    from upgrader.state import records


class OnFailure(enum.StrEnum):
    STOP = "stop"  # leave the run failed, resumable
    ROLLBACK = "rollback"  # roll back to the run's last snapshot and verify (exit 4)


class PauseAfterChoice(enum.StrEnum):
    EMULATION = "emulation"
    HOP = "hop"
    STEP = "step"


MAX_WINDOW = timedelta(days=366)  # a longer "window" is a typo, and far past it datetime overflows


def window_end(end: str | None, duration: str | None) -> datetime | None:
    """``--window-end`` (ISO 8601, UTC unless an offset is given) or ``--window`` (30m, 2h)."""
    if end and duration:
        raise errors.UsageError("give --window-end or --window, not both")
    if duration:
        length = _runs.seconds(duration, "--window")
        if length > MAX_WINDOW.total_seconds():
            raise errors.UsageError(f"--window {duration} is longer than {MAX_WINDOW.days} days: give a real window")
        return datetime.now(UTC) + timedelta(seconds=length)
    if end:
        try:
            parsed = datetime.fromisoformat(end.strip())
        except ValueError:
            raise errors.UsageError(
                f"--window-end takes an ISO 8601 time like 2026-12-02T05:00Z, not {end!r}"
            ) from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _summary(run: "records.RunRecord") -> dict[str, object]:
    return {"run": run.id, **_runs.as_dict(run)}


@_errors.handle
def apply(
    cluster: _options.ClusterOption,
    plan_id: Annotated[str | None, typer.Argument(help="A saved plan's id (plan --save).")] = None,
    resume: Annotated[str | None, typer.Option("--resume", help="Continue an unfinished run.")] = None,
    abandon: Annotated[str | None, typer.Option("--abandon", help="Mark an unfinished run abandoned.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check, and show every action; change nothing.")] = False,
    window_end_at: Annotated[
        str | None, typer.Option("--window-end", help="Start no step that would not finish by then (ISO 8601).")
    ] = None,
    window: Annotated[str | None, typer.Option("--window", help="The same, as a duration from now: 90m, 2h.")] = None,
    pause_after: Annotated[
        PauseAfterChoice | None, typer.Option("--pause-after", help="Stop at this kind of safe point, for a soak.")
    ] = None,
    force_drain: _options.ForceDrainOption = False,
    delete_emptydir_data: _options.DeleteEmptydirOption = False,
    drain_timeout: _options.DrainTimeoutOption = None,
    log_format: Annotated[_runs.LogFormat, typer.Option("--log-format", help="json: one event per line on stdout.")] = (
        _runs.LogFormat.TEXT
    ),
    on_failure: Annotated[
        OnFailure,
        typer.Option("--on-failure", help="rollback: when a step fails, roll back to the run's last snapshot."),
    ] = OnFailure.STOP,
    insecure: _options.InsecureOption = False,
    yes: _options.YesOption = False,
    db: _options.DbOption = None,
    output: _options.OutputOption = _render.OutputFormat.TABLE,
) -> None:
    """Apply a saved plan: snapshots, control-plane hops, drains and kubelets, a gate after every step.

    Exit codes: 0 done, 1 a step failed (resumable), 2 bad input, 3 refused (nothing changed),
    4 a step failed and --on-failure rollback put the cluster back (verified), 5 stopped (interrupted
    or the lock lost; resumable), 6 paused at a safe point (resumable).
    """
    from upgrader.core import config
    from upgrader.engine import ports
    from upgrader.state import store
    from upgrader.usecases import apply as apply_mod
    from upgrader.usecases import runs

    chosen = [x for x in (plan_id, resume, abandon) if x]
    if len(chosen) != 1:
        raise errors.UsageError("give a plan id, --resume RUN or --abandon RUN (one of them)")
    cfg = config.load(cluster)
    options = apply_mod.Options(
        window_end=window_end(window_end_at, window),
        pause_after=ports.PauseAfter(pause_after.value) if pause_after else None,
        force_drain=force_drain,
        delete_emptydir_data=delete_emptydir_data,
        drain_timeout=_runs.seconds(drain_timeout, "--drain-timeout") if drain_timeout else None,
        wait_timeout=float(cfg.upgrade.component_timeout),
    )
    with store.Store.open(db) as state:
        if abandon:
            with state.lock(cfg.name, f"apply --abandon {abandon}"):
                _options.confirm(f"Abandon run {abandon}?", yes=yes)
                gone = runs.abandon(state, cfg.name, abandon)
            if output is _render.OutputFormat.JSON:
                _render.emit_json({**_summary(gone.run), "left_cordoned": list(gone.cordoned)})
            else:
                _render.echo(f"run {gone.run.id} abandoned; {gone.left_behind()}")
            return
        command = f"apply --resume {resume}" if resume else f"apply {plan_id}"
        with _runs.locked(cfg, state, command, insecure=insecure) as (lease, opened):
            options = dataclasses.replace(options, insecure=opened.insecure)
            try:
                if resume:
                    with _runs.observer(log_format, f"{cfg.name}: resuming run {resume}") as observe:
                        done = apply_mod.resume(opened, state, resume, options, lease=lease, observe=observe)
                else:
                    assert plan_id is not None
                    prepared = apply_mod.prepare(opened, state, plan_id)
                    for warning in prepared.warnings:
                        _render.warn(warning)
                    if dry_run:
                        _show_dry_run(prepared.plan_id, apply_mod.dry_run(opened, prepared), output)
                        return
                    _render.note(
                        f"plan {prepared.plan_id}: {len(prepared.plan.steps)} steps to v{prepared.plan.target}"
                    )
                    _options.confirm(f"Apply plan {prepared.plan_id} to {cfg.name}?", yes=yes)
                    title = f"{cfg.name}: plan {prepared.plan_id} to v{prepared.plan.target}"
                    with _runs.observer(log_format, title) as observe:
                        done = apply_mod.execute(opened, state, prepared, options, lease=lease, observe=observe)
            except runs.RunStopped as halted:
                if on_failure is OnFailure.ROLLBACK and halted.exit_code is errors.ExitCode.FAILURE:
                    from upgrader.cli import _rollback_run

                    _rollback_run.after_failed_apply(
                        opened, state, halted, lease=lease, log_format=log_format, output=output
                    )
                _runs.stopped(halted, output, log_format)
    _runs.finished(_summary(done), output, log_format, announced=True)  # the engine's run-succeeded event said it


def _show_dry_run(plan_id: str, actions: list[dict[str, object]], output: _render.OutputFormat) -> None:
    if output is _render.OutputFormat.JSON:
        _render.emit_json({"plan": plan_id, "dry_run": True, "steps": actions})
        return
    for entry in actions:
        _render.echo(f"{entry['step']:>2}  {entry['kind']} {entry.get('version') or ''}".rstrip())
        for action in entry["actions"]:  # type: ignore[attr-defined]
            _render.echo(f"      {action}")
