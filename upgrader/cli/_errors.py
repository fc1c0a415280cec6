"""The one place where expected errors become a message on stderr and an exit code.

Every command is wrapped in ``handle``: an ``UpgraderError`` prints ``upgrader: error: ...`` (plus
one line per problem for config errors) and exits with the error's code. Under ``--output json``
the same error is also written to stdout as JSON, so automation never parses stderr. Anything
else is a bug and keeps its traceback (without local variables).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import PurePath
from typing import NoReturn, ParamSpec, TypeVar

import typer

from upgrader import errors
from upgrader.cli import _render
from upgrader.support import interrupts

P = ParamSpec("P")
R = TypeVar("R")


def report(exc: errors.UpgraderError, *, as_json: bool) -> None:
    problems = exc.problems if isinstance(exc, errors.ConfigError) else ()
    if as_json:
        payload = {
            "ok": False,
            "error": {
                "type": type(exc).__name__,
                "message": exc.message,
                "exit_code": int(exc.exit_code),
                "problems": list(problems),
            },
        }
        _render.emit_json(payload)
    typer.echo(f"upgrader: error: {exc.message}", err=True)
    for problem in problems:
        typer.echo(f"  - {problem}", err=True)


def exit_with(code: errors.ExitCode, message: str) -> NoReturn:
    """Ends a command that already rendered its result (say, a blocked plan) with ``code``."""
    typer.echo(f"upgrader: {message}", err=True)
    raise typer.Exit(int(code))


def _printable_arguments(values: dict[str, object]) -> None:
    """Refuses an argument that is not valid UTF-8 text (bytes the shell passed as they were) before
    it reaches a database query, a file name or a message."""
    for name, value in values.items():
        for item in value if isinstance(value, list | tuple) else (value,):
            text = str(item) if isinstance(item, str | PurePath) else None
            if text is None:
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
                raise errors.UsageError(f"{name.replace('_', '-')}: {shown!r} is not valid UTF-8 text") from None


def handle(command: Callable[P, R]) -> Callable[P, R]:
    """Wraps a Typer command so expected errors exit with their code and one clear message."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            _printable_arguments(kwargs)
            return command(*args, **kwargs)
        except errors.UpgraderError as exc:
            report(exc, as_json=str(kwargs.get("output")) == _render.OutputFormat.JSON.value)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            # SIGINT, SIGTERM or SIGHUP (cli.main makes the last two raise this too): every clean-up
            # on the way here has run.
            stopped = errors.OperationFailed(f"interrupted by {interrupts.last()}: stopped")
            report(stopped, as_json=str(kwargs.get("output")) == _render.OutputFormat.JSON.value)
            raise typer.Exit(int(stopped.exit_code)) from None

    return wrapper
