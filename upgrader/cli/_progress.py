"""What an SRE watches during ``apply``: every step with its state and time, the current step's nodes
(draining, playbook, waiting, done), the elapsed time and an estimate of what is left.

``Board`` folds the engine's events into that picture and renders it with Rich; ``live`` keeps it
redrawn on a terminal. Without a terminal ``apply`` prints one line per event instead (``lines``), and
``--log-format json`` one JSON object per event.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from upgrader.cli import _render

if TYPE_CHECKING:
    from upgrader.engine import ports

_MARK = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold cyan"),
    "succeeded": ("✓", "green"),
    "skipped": ("-", "dim"),
    "failed": ("✗", "bold red"),
    "interrupted": ("!", "yellow"),
}
_STEP_STATUS = {"step-succeeded": "succeeded", "step-failed": "failed", "step-interrupted": "interrupted"}
_NODE_EVENTS = ("node-draining", "node-drained", "node-playbook", "node-waiting", "node-done")
DONE_SHOWN = 3  # finished steps kept on screen above the current one
NEXT_SHOWN = 6  # pending steps shown below it
NODES_SHOWN = 20


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass
class StepLine:
    position: int
    description: str
    status: str
    estimate: float
    seconds: float | None = None
    started: float | None = None  # the clock's reading when it started in this process
    nodes: dict[str, str] = field(default_factory=dict)  # node -> what it is doing, in event order


class Board:
    """The run as the events describe it. Thread-safe: batch drains report from worker threads while
    the terminal redraws from its own."""

    def __init__(self, title: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.title = title
        self.clock = clock
        self.started = clock()
        self.steps: list[StepLine] = []
        self.note = ""
        self.estimates = ""  # where the estimates come from, as the run's outline says
        self._lock = threading.Lock()

    def __call__(self, event: ports.Event) -> None:
        with self._lock:
            self._fold(event)

    def _fold(self, event: ports.Event) -> None:
        if event.kind == "run-started":
            self.steps = [
                StepLine(
                    position=int(s["position"]),
                    description=str(s["description"]),
                    status=str(s["status"]),
                    estimate=float(s["estimate"]),
                    seconds=s.get("seconds"),
                )
                for s in event.data.get("steps", ())
            ]
            self.estimates = str(event.data.get("estimates") or "")
            return
        line = self._line(event.position)
        if event.kind == "step-started" and line is not None:
            line.status, line.started, line.nodes = "running", self.clock(), {}
        elif event.kind in _STEP_STATUS and line is not None:
            line.status = _STEP_STATUS[event.kind]
            if line.started is not None:
                line.seconds = self.clock() - line.started
            if line.status != "succeeded":
                self.note = event.message
        elif event.kind in _NODE_EVENTS and line is not None and event.node:
            line.nodes[event.node] = event.message.removeprefix(f"{event.node}: ")
        elif event.kind in ("run-paused", "run-succeeded", "waiting"):
            self.note = event.message

    def _line(self, position: int | None) -> StepLine | None:
        return next((s for s in self.steps if s.position == position), None)

    def left(self) -> float:
        """Seconds still to go by the estimates: the pending steps, and what the current one has left."""
        now = self.clock()
        total = 0.0
        for step in self.steps:
            if step.status in ("pending", "interrupted", "failed"):
                total += step.estimate
            elif step.status == "running" and step.started is not None:
                total += max(0.0, step.estimate - (now - step.started))
        return total

    def __rich__(self) -> RenderableType:
        with self._lock:
            return self._render()

    def _render(self) -> RenderableType:
        now = self.clock()
        table = Table(box=None, show_header=False, padding=(0, 1), expand=False)
        table.add_column(width=1)
        table.add_column(justify="right")
        table.add_column()
        table.add_column(justify="right")
        current = next((i for i, s in enumerate(self.steps) if s.status in ("running", "failed", "interrupted")), None)
        if current is None:
            current = next((i for i, s in enumerate(self.steps) if s.status == "pending"), len(self.steps))
        first, last = max(0, current - DONE_SHOWN), min(len(self.steps), current + 1 + NEXT_SHOWN)
        if first:
            table.add_row("", "", Text(f"… {first} earlier steps done", style="dim"), "")
        for step in self.steps[first:last]:
            mark, style = _MARK.get(step.status, ("?", ""))
            if step.status == "running" and step.started is not None:
                timing = f"{duration(now - step.started)} / ~{duration(step.estimate)}"
            elif step.status == "pending":
                timing = f"~{duration(step.estimate)}"
            else:
                timing = duration(step.seconds)
            table.add_row(Text(mark, style=style), str(step.position + 1), Text(step.description, style=style), timing)
            if step.status in ("running", "failed", "interrupted"):
                shown = list(step.nodes.items())
                for node, doing in shown[:NODES_SHOWN]:
                    table.add_row("", "", Text(f"    {node:<20} {doing}", style="dim" if "done" in doing else ""), "")
                if len(shown) > NODES_SHOWN:
                    table.add_row("", "", Text(f"    … {len(shown) - NODES_SHOWN} more nodes", style="dim"), "")
        if len(self.steps) > last:
            table.add_row("", "", Text(f"… {len(self.steps) - last} more steps", style="dim"), "")
        # Before the run's steps are known (waiting for a leftover playbook) there is nothing to estimate.
        left = f" · about {duration(self.left())} left" if self.steps else ""
        footer = Text(f"elapsed {duration(now - self.started)}{left}", style="bold")
        if self.steps and self.estimates:
            footer.append(f" ({self.estimates})", style="dim")
        parts: list[RenderableType] = [Text(self.title, style="bold"), table, footer]
        if self.note:
            parts.append(Text(self.note))
        return Group(*parts)


@contextlib.contextmanager
def board(title: str) -> Iterator[Board]:
    """The board, redrawn on standard error while the block runs; the final picture stays on screen."""
    board = Board(title)
    with Live(board, console=Console(stderr=True), refresh_per_second=4, transient=False):
        yield board


def lines() -> Callable[[ports.Event], None]:
    """One timestamped line per step, node and run event on standard error: for logs and pipes."""

    def show(event: ports.Event) -> None:
        if event.kind in ("step-started", "run-paused", "step-failed", "step-interrupted", "run-succeeded", "waiting"):
            _render.note(f"[{datetime.now(UTC):%H:%M:%S}] {event.message}")
        elif event.kind in ("node-done", "node-draining", "node-drained", "node-playbook"):
            _render.note(f"[{datetime.now(UTC):%H:%M:%S}]   {event.message}")

    return show


def json_events() -> Callable[[ports.Event], None]:
    """One JSON object per event on standard output, for automation."""

    def show(event: ports.Event) -> None:
        _render.echo(
            _render.json_line(
                {
                    "at": datetime.now(UTC),
                    "event": event.kind,
                    "message": event.message,
                    "step": event.position,
                    "node": event.node,
                    **event.data,
                }
            )
        )

    return show
