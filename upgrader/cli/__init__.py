"""The ``upgrader`` command line: Typer only. Parse, call one service, render, exit.

This is the only package that prints or exits. Heavy libraries (SQLAlchemy, Alembic, the
Kubernetes client, ansible_runner, etcd3/grpc, Jinja2, pydantic) are imported inside command
bodies, never here, and each command's module is imported only when that command is called
(``_lazy``), so ``upgrader --help`` costs little more than importing Typer.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, ClassVar

import typer

import upgrader
from upgrader.cli import _lazy, _options


class _Commands(_lazy.LazyGroup):
    """Every command in the order of a maintenance window; each module is imported only when run."""

    entries: ClassVar[Mapping[str, _lazy.Entry]] = MappingProxyType(
        {
            "facts": _lazy.Entry(
                "Read a live cluster's versions and upgrade blockers (read-only).", "upgrader.cli.facts_cmd"
            ),
            "plan": _lazy.Entry("Compute an upgrade plan, or show a saved one.", "upgrader.cli.plan_cmd"),
            "apply": _lazy.Entry(
                "Carry out a saved plan on the cluster.", "upgrader.cli.apply_cmd", "apply", no_args_is_help=True
            ),
            "status": _lazy.Entry(
                "Where a cluster stands: versions, the current or last run, what to do next.",
                "upgrader.cli.status_cmd",
                "status_app",
            ),
            "history": _lazy.Entry("Past runs on a cluster.", "upgrader.cli.status_cmd", "history_app"),
            "rollback": _lazy.Entry(
                "Roll the cluster back to a known-good snapshot, verified.", "upgrader.cli.rollback_cmd", "rollback"
            ),
            "verify": _lazy.Entry(
                "Check the cluster: the apply gates, or a match with a snapshot (read-only).", "upgrader.cli.verify_cmd"
            ),
            "snapshot": _lazy.Entry(
                "Take, list, verify, copy and prune snapshots of etcd and the control-plane manifests, in up to three "
                "tiers.",
                "upgrader.cli.snapshot_cmd",
            ),
            "lock": _lazy.Entry("Inspect or break cluster locks.", "upgrader.cli.lock_cmd"),
            "db": _lazy.Entry("Manage the state database schema.", "upgrader.cli.db_cmd"),
            "config": _lazy.Entry("Check cluster configs.", "upgrader.cli.config_cmd"),
            "catalog": _lazy.Entry(
                "Show the rules catalog plans use, or refresh its patch releases from the release mirror.",
                "upgrader.cli.catalog_cmd",
            ),
            "lab": _lazy.Entry(
                "A simulated kubeadm cluster with real etcd, for tests and rehearsals.", "upgrader.cli.lab_cmd"
            ),
        }
    )


app = _options.group(cls=_Commands)


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
