"""The ``upgrader`` command line: Typer only. Parse, call one service, render, exit.

This is the only package that prints or exits. Heavy libraries (SQLAlchemy, Alembic, the
Kubernetes client, ansible_runner, etcd3/grpc, Jinja2, pydantic) are imported inside command
bodies, never here, so ``upgrader --help`` costs little more than importing Typer.
"""

from typing import Annotated

import typer

import upgrader
from upgrader.cli import (
    _options,
    apply_cmd,
    config_cmd,
    db_cmd,
    facts_cmd,
    lab_cmd,
    lock_cmd,
    plan_cmd,
    rollback_cmd,
    snapshot_cmd,
    status_cmd,
    verify_cmd,
)

app = _options.group()
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
app.add_typer(lock_cmd.app, name="lock")
app.add_typer(facts_cmd.app, name="facts")
app.add_typer(plan_cmd.app, name="plan")
app.add_typer(snapshot_cmd.app, name="snapshot")
app.command("apply", help="Carry out a saved plan on the cluster.", no_args_is_help=True)(apply_cmd.apply)
app.command("rollback", help="Roll the cluster back to a known-good snapshot, verified.")(rollback_cmd.rollback)
app.add_typer(status_cmd.status_app, name="status")
app.add_typer(status_cmd.history_app, name="history")
app.add_typer(verify_cmd.app, name="verify")
app.add_typer(lab_cmd.app, name="lab")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"upgrader {upgrader.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Upgrade self-managed Kubernetes clusters across minors, and roll back to a verified snapshot.

    Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 refused for safety (nothing changed),
    4 failed and rolled back, 5 needs a human, 6 paused at a safe point.
    """


def main() -> None:
    """Console-script entry point."""
    from upgrader.support import interrupts

    interrupts.install()  # SIGTERM and SIGHUP clean up like Ctrl-C
    app(prog_name="upgrader")
