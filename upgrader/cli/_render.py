"""Output for people (aligned tables, short lines) and for automation (JSON), in one place."""

from __future__ import annotations

import enum
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import typer


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    JSON = "json"


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2, default=_default, sort_keys=False)


def json_line(data: Any) -> str:
    """One JSON object on one line, for a stream of events."""
    import json

    return json.dumps(data, default=_default, separators=(",", ":"))


def emit_json(data: Any) -> None:
    typer.echo(json_text(data))


def timestamp(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table; no colours, so it survives pipes, logs and change-review tickets."""
    cells = [[str(h) for h in headers], *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    return "\n".join(lines)


def interactive_stderr() -> bool:
    """A person watches standard error: redraw progress there (never in a pipe, a log or CI)."""
    import os

    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def echo(text: str = "") -> None:
    typer.echo(text)


def note(text: str) -> None:
    """A remark for the person at the terminal, on stderr so that stdout stays parseable."""
    typer.echo(text, err=True)


class Progress:
    """A one-line byte counter on stderr, only when stderr is a terminal (logs stay clean)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.enabled = interactive_stderr()
        self._shown = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled or (time.monotonic() - self._shown < 0.2 and done != total):
            return
        self._shown = time.monotonic()
        share = f" ({100 * done // total}%)" if total else ""
        sys.stderr.write(f"\r{self.label}: {done / 2**20:8.1f} MiB{share}")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def warn(text: str) -> None:
    typer.echo(f"upgrader: warning: {text}", err=True)
