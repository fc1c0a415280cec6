"""One playbook run, in a process of its own that outlives upgrader: ``python -m upgrader.executor.detached DIR``.

upgrader starts this in a new session, its standard streams on files in the run's private
directory ``DIR``, so nothing ties the playbook to upgrader: a SIGKILL of upgrader leaves it running
to its end (its pseudo-terminal is this process's, not upgrader's), and a resumed upgrader waits for
it, watching its events. It reads ``DIR/request.json`` (what ``ansible_runner.run`` is given),
appends every event as one JSON line to ``DIR/events.jsonl`` (flushed, so a reader sees whole
lines), and writes ``DIR/result.json`` last, atomically. SIGTERM (or SIGINT, SIGHUP) cancels the run
through runner's cancel callback, which stops the ``ansible-playbook`` process group.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

REQUEST, EVENTS, RESULT, LOG = "request.json", "events.jsonl", "result.json", "detached.log"


def _tail(runner: Any, lines: int) -> list[str]:
    try:
        handle = runner.stdout  # ansible-runner opens the file anew on each access: close it
        try:
            text = handle.read()
        finally:
            handle.close()
    except (OSError, AttributeError, ValueError):
        return []
    kept = [line.strip() for line in str(text).splitlines() if line.strip()]
    return [line[:200] for line in kept[-lines:]] or ["ansible-playbook ended without an exit status"]


def _write_result(directory: Path, result: dict[str, Any]) -> None:
    part = directory / f".{RESULT}.part"
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(result, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, directory / RESULT)


def main(directory: Path) -> int:
    import ansible_runner

    cancel = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: cancel.set())
    request = json.loads((directory / REQUEST).read_text(encoding="utf-8"))
    fd = os.open(directory / EVENTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as events:

        def handle(event: dict[str, Any]) -> bool:
            events.write(json.dumps(event, default=str) + "\n")
            events.flush()
            return True  # keep the event: without it runner keeps no stats

        try:
            runner = ansible_runner.run(
                **request,
                quiet=True,
                event_handler=handle,
                cancel_callback=cancel.is_set,
                status_handler=lambda status, runner_config: None,
            )
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises ExecutorError
            _write_result(directory, {"error": f"{type(exc).__name__}: {exc}"})
            return 1
    status = str(runner.status)
    _write_result(
        directory,
        {
            "status": status,
            "rc": int(runner.rc) if runner.rc is not None else -1,
            "stats": {k: dict(v) for k, v in (runner.stats or {}).items() if isinstance(v, dict)},
            "tail": [] if status == "successful" else _tail(runner, 3),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
