"""``upgrader plan``: compute an upgrade plan (exit 0 executable, 3 blocked or refused, 2 bad input)."""

import enum
from pathlib import Path
from typing import Annotated

import typer

from upgrader import errors
from upgrader.cli import _errors, _options, _render

app = _options.group("Compute an upgrade plan, or show a saved one.")


class PlanFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


def _render_plan(plan: dict[str, object], output: PlanFormat) -> None:
    from upgrader.cli import _plan_view

    if output is PlanFormat.JSON:
        _render.emit_json(plan)
    elif output is PlanFormat.MARKDOWN:
        _render.echo(_plan_view.markdown(plan).rstrip("\n"))
    else:
        _render.echo(_plan_view.table(plan))


@app.callback(invoke_without_command=True)
@_errors.handle
def plan(
    ctx: typer.Context,
    to: Annotated[str | None, typer.Option("--to", help="Target: 1.33 (latest known patch) or 1.33.4.")] = None,
    facts: Annotated[Path | None, typer.Option("--facts", help="Plan from a facts file (JSON).")] = None,
    cluster: _options.OptionalClusterOption = None,
    one_step: Annotated[bool, typer.Option("--one-step", help="No two-step (emulated-version) hops.")] = False,
    max_unavailable: Annotated[
        str | None, typer.Option("--max-unavailable", help="Workers drained at once: N or P% [default: 1].")
    ] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Use this rules catalog file.")] = None,
    save: Annotated[bool, typer.Option("--save", help="Store the plan in the state database.")] = False,
    insecure: _options.InsecureOption = False,
    db: _options.DbOption = None,
    output: Annotated[PlanFormat, typer.Option("--output", "-o", case_sensitive=False)] = PlanFormat.TABLE,
) -> None:
    """Plan an upgrade to --to: the control plane one minor at a time, nodes drained as rarely as possible.

    Exit codes: 0 the plan can be executed, 3 it has blockers (it is still shown) or was refused,
    2 bad input.
    """
    if ctx.invoked_subcommand is not None:
        return
    from upgrader.usecases import plans

    if to is None:
        raise errors.UsageError("--to is required (e.g. --to 1.33)")
    result = plans.make_plan(
        plans.PlanRequest(
            target=to,
            facts_file=facts,
            cluster_config=cluster,
            one_step=one_step,
            max_unavailable=max_unavailable,
            catalog_file=catalog,
            insecure=insecure,
        )
    )
    for warning in result.warnings:
        _render.warn(warning)
    body = result.plan.as_dict()
    stored = plans.save(result, db) if save else None  # first: a failed save prints one error, no plan
    _render_plan(body, output)
    if stored is not None:
        _render.note(f"plan {body['id']} {'saved' if stored else 'was already saved'}: upgrader plan show {body['id']}")
    if not result.plan.executable:
        _errors.exit_with(
            errors.ExitCode.REFUSED,
            f"the plan has {len(result.plan.blockers)} blocker(s) and cannot be executed as it stands",
        )


@app.command("show")
@_errors.handle
def show(
    plan_id: Annotated[str, typer.Argument(help="Plan id (or a unique prefix of at least 6 characters).")],
    db: _options.DbOption = None,
    output: Annotated[PlanFormat, typer.Option("--output", "-o", case_sensitive=False)] = PlanFormat.TABLE,
) -> None:
    """Show a saved plan."""
    from upgrader.usecases import plans

    _render_plan(plans.show(plan_id, db), output)
