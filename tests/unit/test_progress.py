"""apply's live progress: the engine's events folded into steps, nodes, elapsed and time left, as a
terminal shows them (rendered by Rich into a string, as it would be drawn)."""

from __future__ import annotations

import io

from rich.console import Console

from upgrader.cli import _progress
from upgrader.engine.ports import Event


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outline(*descriptions: str, estimate: float = 60.0) -> Event:
    steps = [
        {"position": i, "description": d, "status": "pending", "seconds": None, "estimate": estimate}
        for i, d in enumerate(descriptions)
    ]
    return Event("run-started", f"run r: {len(steps)} steps", data={"steps": steps})


def drawn(board: _progress.Board) -> str:
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, color_system=None, width=110).print(board)
    return "\n".join(" ".join(line.split()) for line in buffer.getvalue().splitlines())  # columns: one space


def test_the_current_step_its_nodes_and_the_time_left_are_shown() -> None:
    clock = Clock()
    board = _progress.Board("prod: plan p to v1.33.5", clock)
    board(outline("snapshot", "control-plane v1.31.13", "nodes w-1, w-2 to v1.31.13"))
    board(Event("step-started", "snapshot", position=0))
    clock.now += 12
    board(Event("step-succeeded", "step 1 done", position=0))
    board(Event("step-started", "control-plane", position=1))
    clock.now += 100  # over its 60 s estimate
    board(Event("step-succeeded", "step 2 done", position=1))
    board(Event("step-started", "nodes", position=2))
    board(Event("node-draining", "w-1: cordoned, draining", position=2, node="w-1"))
    board(Event("node-playbook", "w-2: kubelet playbook", position=2, node="w-2"))
    clock.now += 20
    text = drawn(board)
    assert "✓ 1 snapshot" in text and "12s" in text
    assert "1m40s" in text  # the control-plane step's measured time
    assert "▶ 3 nodes w-1, w-2 to v1.31.13" in text and "20s / ~1m00s" in text
    assert "w-1 cordoned, draining" in text
    assert "w-2 kubelet playbook" in text
    assert "elapsed 2m12s · about 40s left" in text


def test_a_resumed_run_counts_only_what_is_left_and_a_failure_stays_on_screen() -> None:
    clock = Clock()
    board = _progress.Board("resuming", clock)
    started = outline("snapshot", "control-plane v1.31.13", "nodes cp-1")
    started.data["steps"][0].update(status="succeeded", seconds=9.0)
    board(started)
    assert board.left() == 120.0  # the two steps not done; the finished snapshot counts nothing
    board(Event("step-started", "control-plane", position=1))
    clock.now += 5
    board(Event("node-playbook", "cp-1: control-plane playbook", position=1, node="cp-1"))
    board(Event("step-failed", "timed out waiting for the apiserver on cp-1", position=1))
    text = drawn(board)
    assert "✗ 2 control-plane v1.31.13" in text
    assert "cp-1 control-plane playbook" in text  # where it stopped
    assert "timed out waiting for the apiserver on cp-1" in text
    assert board.left() == 120.0  # a failed step is still to do


def test_a_long_plan_shows_a_window_around_the_current_step() -> None:
    clock = Clock()
    board = _progress.Board("big", clock)
    board(outline(*(f"nodes batch {i}" for i in range(1, 41))))
    for position in range(20):
        board(Event("step-started", "", position=position))
        board(Event("step-succeeded", "", position=position))
    board(Event("step-started", "", position=20))
    text = drawn(board)
    assert "… 17 earlier steps done" in text
    assert "nodes batch 18" in text and "nodes batch 21" in text and "nodes batch 27" in text
    assert "nodes batch 28" not in text and "… 13 more steps" in text


def test_without_a_terminal_each_event_is_one_line(capsys: object) -> None:
    show = _progress.lines()
    show(Event("node-draining", "w-1: cordoned, draining", position=2, node="w-1"))
    show(Event("run-started", "run r: 3 steps"))  # the outline is for the board, not for logs
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.count("\n") == 1 and "w-1: cordoned, draining" in err


def test_while_waiting_for_a_leftover_playbook_no_time_left_is_claimed() -> None:
    """Issue 20: before the run's steps are known the board said "about 0s left"."""
    clock = Clock()
    board = _progress.Board("prod: resuming run r", clock)
    board(Event("waiting", "waiting for the kubelet playbook on w-1 (pid 42) to finish"))
    clock.now += 30
    text = drawn(board)
    assert "elapsed 30s" in text and "left" not in text.split("elapsed 30s")[1].splitlines()[0]
    assert "waiting for the kubelet playbook on w-1" in text


def test_the_end_of_a_run_is_said_once(capsys: object) -> None:
    """Issue 20: the engine's run-succeeded event (on the board or a log line) and the command's own
    closing line both said "run ... succeeded"; the command now stays silent when the progress said it."""
    from upgrader.cli import _render, _runs

    summary = {"run": "r-1", "status": "succeeded"}
    _runs.finished(summary, _render.OutputFormat.TABLE, _runs.LogFormat.TEXT, announced=True)
    _runs.finished(summary, _render.OutputFormat.TABLE, _runs.LogFormat.TEXT)  # nothing said it before
    captured = capsys.readouterr()  # type: ignore[attr-defined]
    assert captured.err.count("run r-1 succeeded") == 1


def test_the_board_says_where_its_estimates_come_from() -> None:
    board = _progress.Board("prod: plan p", Clock())
    started = outline("snapshot")
    board(Event("run-started", started.message, data={**started.data, "estimates": "estimates: defaults"}))
    assert "(estimates: defaults)" in drawn(board)
