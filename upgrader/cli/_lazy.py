"""Commands loaded when they are called, so ``upgrader --help`` imports no command module.

The root group lists each command from a one-line summary kept beside its module name; the
module is imported, and Typer builds its Click command, only when that command runs or its own
``--help`` is asked for. ``tests/unit/test_startup.py`` checks that each summary still reads as the
loaded command's own.
"""

import dataclasses
import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click
from typer._click.utils import make_default_short_help
from typer.core import TyperGroup

from upgrader.cli import _options


@dataclasses.dataclass(frozen=True)
class Entry:
    """Where a command lives: ``module.attribute`` is a Typer group, or one command function."""

    summary: str
    module: str
    attribute: str = "app"
    no_args_is_help: bool = False  # for a single command (a group says this itself)

    def target(self) -> "typer.Typer | Callable[..., Any]":
        found: object = getattr(importlib.import_module(self.module), self.attribute)
        if not (isinstance(found, typer.Typer) or callable(found)):
            raise TypeError(f"{self.module}.{self.attribute} is neither a Typer group nor a command")
        return found

    def load(self, name: str) -> _click.Command:
        target = self.target()
        if isinstance(target, typer.Typer):
            command: _click.Command = typer.main.get_group(target)
        else:
            single = _options.group()
            single.command(name, help=self.summary, no_args_is_help=self.no_args_is_help)(target)
            command = typer.main.get_command(single)
        command.name = name
        return command


class _Commands(MutableMapping[str, _click.Command]):
    """The group's ``commands``: every registered name, each built the first time it is looked up."""

    def __init__(self, entries: Mapping[str, Entry]) -> None:
        self._entries = entries
        self._built: dict[str, _click.Command] = {}

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._built:
            self._built[name] = self._entries[name].load(name)
        return self._built[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"command {name!r} cannot be removed")

    def __iter__(self) -> Iterator[str]:
        yield from self._entries
        yield from (name for name in self._built if name not in self._entries)

    def __len__(self) -> int:
        return len(set(self._entries) | set(self._built))


class LazyGroup(TyperGroup):
    """A Typer group whose subcommands come from ``entries``, which a subclass sets."""

    entries: ClassVar[Mapping[str, Entry]] = {}

    def __init__(self, **attrs: object) -> None:
        super().__init__(**attrs)  # type: ignore[arg-type]
        self.commands = _Commands(self.entries)

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The commands and their summaries, as Click lays them out, without loading a command."""
        if not self.entries:
            return
        limit = formatter.width - 6 - max(len(name) for name in self.entries)
        rows = [(name, make_default_short_help(entry.summary, limit)) for name, entry in self.entries.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
