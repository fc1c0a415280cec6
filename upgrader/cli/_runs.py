"""What the commands that start or read runs share: the lock-and-session preamble, the progress
observer, a run's end on the terminal or as JSON, and a run as one JSON-ready document (the same for
``apply -o json``, ``status`` and ``history``). Commands import this, never each other."""

from __future__ import annotations

import contextlib
import enum
from typing import TYPE_CHECKING, Any, NoReturn

from upgrader import errors
from upgrader.cli import _errors, _render

if TYPE_CHECKING:
    from collections.abc import Iterator

    from upgrader.cluster.session import ClusterSession
    from upgrader.core.config import ClusterConfig
    from upgrader.engine import ports
    from upgrader.state import records
    from upgrader.state.store import Store
    from upgrader.usecases import runs


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


def seconds(text: str, flag: str) -> float:
    from upgrader.core import config

    parsed = config.seconds(text)
    if parsed is None:
        raise errors.UsageError(f"{flag} takes a duration like 90s, 30m or 2h, not {text!r}")
    return float(parsed)


@contextlib.contextmanager
def locked(
    cfg: ClusterConfig, state: Store, command: str, *, insecure: bool
) -> Iterator[tuple[ports.Lease, ClusterSession]]:
    """The cluster's lock held for ``command`` and a session on the cluster; what ``--insecure``
    allowed is said once, on stderr."""
    from upgrader.cluster import session

    with state.lock(cfg.name, command) as lease, session.ClusterSession.open(cfg, insecure=insecure) as opened:
        for allowed in opened.insecure:
            _render.warn(f"--insecure: {allowed}")
        yield lease, opened


@contextlib.contextmanager
def observer(log_format: LogFormat, title: str) -> Iterator[ports.Observer]:
    """JSON events on stdout with --log-format json; else live progress on a terminal; else lines."""
    from upgrader.cli import _progress

    if log_format is LogFormat.JSON:
        yield _progress.json_events()
    elif _render.interactive_stderr():
        with _progress.board(title) as board:
            yield board
    else:
        yield _progress.lines()


def finished(
    summary: dict[str, object], output: _render.OutputFormat, log_format: LogFormat, *, announced: bool = False
) -> None:
    """The run's end: one JSON document, or one line, unless the progress already said it (``announced``:
    the engine's run-succeeded event, which the board and the log lines show)."""
    if output is _render.OutputFormat.JSON and log_format is LogFormat.TEXT:
        _render.emit_json({"ok": True, **summary})
    elif not (announced and log_format is LogFormat.TEXT):
        _render.note(f"run {summary['run']} {summary['status']}")


def stopped(halted: runs.RunStopped, output: _render.OutputFormat, log_format: LogFormat) -> NoReturn:
    """One JSON document (the run, with the error) or the notes an SRE needs next, then the exit code."""
    from upgrader.engine import ports

    cordoned = ports.cordoned_by_us(halted.run)
    if output is _render.OutputFormat.JSON and log_format is LogFormat.TEXT:
        _render.emit_json({"ok": False, "run": halted.run.id, **as_dict(halted.run), "message": halted.message})
    elif cordoned:
        _render.warn(f"cordoned by upgrader and still cordoned: {', '.join(cordoned)}")
    _errors.exit_with(halted.exit_code, f"error: {halted.message}" if halted.exit_code != 6 else halted.message)


def as_dict(run: records.RunRecord) -> dict[str, Any]:
    from upgrader.engine import ports

    return {
        "id": run.id,
        "kind": run.kind.value,
        "plan": run.plan_id,
        "status": run.status.value,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "host": run.host,
        "pid": run.pid,
        "stopped_reason": run.stopped_reason,
        "error": run.error,
        "cordoned_by_upgrader": ports.cordoned_by_us(run),
        "steps": [
            {
                "step": s.position + 1,
                "kind": s.kind,
                "version": s.spec.get("version"),
                "nodes": s.spec.get("nodes", []),
                "status": s.status.value,
                "attempts": s.attempts,
                "seconds": s.seconds,
                "error": s.error,
            }
            for s in run.steps
        ],
    }
