"""Options shared by many commands, each with its environment variable, and the confirmation rule."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from upgrader import errors
from upgrader.cli import _render
from upgrader.support import environment

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar=environment.ENV_DB,
        help="SQLAlchemy URL of the state database [default: a SQLite file in the user's data directory].",
        show_default=False,
    ),
]
_CLUSTER = typer.Option(
    "-c",
    "--cluster",
    envvar=environment.ENV_CLUSTER,
    help="The cluster config (cluster.yaml).",
    show_default=False,
)
ClusterOption = Annotated[Path, _CLUSTER]
OptionalClusterOption = Annotated[Path | None, _CLUSTER]
OutputOption = Annotated[
    _render.OutputFormat,
    typer.Option("--output", "-o", case_sensitive=False, help="Output format."),
]
InsecureOption = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="Allow plain-http etcd or a kubeconfig that skips TLS verification (recorded; not for production).",
    ),
]
YesOption = Annotated[
    bool,
    typer.Option("--yes", "-y", help="Do not ask for confirmation (required when stdin is not a terminal)."),
]

ForceDrainOption = Annotated[
    bool, typer.Option("--force-drain", help="Evict pods no controller would recreate (kubectl drain --force).")
]
DeleteEmptydirOption = Annotated[
    bool, typer.Option("--delete-emptydir-data", help="Evict pods with emptyDir volumes (their data is deleted).")
]
DrainTimeoutOption = Annotated[
    str | None, typer.Option("--drain-timeout", help="How long a drain may wait for PodDisruptionBudgets: 90s, 10m.")
]


def group(help_text: str | None = None, *, cls: type[TyperGroup] | None = None) -> typer.Typer:
    """A command group with the settings every group shares (plain help, no pretty tracebacks).

    Without ``help_text`` the group's callback docstring is its help.
    """
    settings: dict[str, Any] = {
        "no_args_is_help": True,
        "add_completion": False,
        "pretty_exceptions_enable": False,  # never print local variables: they may hold credentials
        "rich_markup_mode": None,  # plain help: rich is not imported at start-up
        "context_settings": {"help_option_names": ["-h", "--help"]},
    }
    if help_text is not None:
        settings["help"] = help_text
    if cls is not None:
        settings["cls"] = cls
    return typer.Typer(**settings)


def confirm(question: str, *, yes: bool) -> None:
    """Goes on with ``--yes`` or an interactive yes; never prompts when stdin is not a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise errors.UsageError(f"{question.rstrip('?')}: refusing without --yes, as stdin is not a terminal")
    if not typer.confirm(question, default=False):
        raise errors.Refused("not confirmed; nothing was changed")
