"""Runs one of upgrader's playbooks through ansible-runner: the only module that imports it.

A frozen request goes in (playbook, inventory, extra variables, limit, timeout, check mode) and a
frozen result comes out (status, rc, per-host stats, the result of each task on each host). Each run
gets a fresh private data directory (a reused one replays stale ``env/cmdline`` and extravars),
events are kept (the handler returns True), a cancel callback keeps runner from installing its own
signal handlers, and the interpreter's bin directory is put on PATH so ``ansible-playbook`` is found
in an unactivated virtual environment. The artifacts, which record the whole environment, are
deleted once the run is read.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

from upgrader import errors, resources


class Status(enum.StrEnum):
    SUCCESSFUL = "successful"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


_RUNNER_STATUS = {
    "successful": Status.SUCCESSFUL,
    "failed": Status.FAILED,
    "timeout": Status.TIMEOUT,
    "canceled": Status.CANCELED,
}


@dataclass(frozen=True)
class PlaybookRequest:
    playbook: str  # a file in upgrader's playbooks directory
    inventory: Path
    extravars: Mapping[str, Any] = field(default_factory=dict)
    limit: tuple[str, ...] = ()
    timeout: int = 600
    check: bool = False


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    ok: bool
    changed: bool
    result: Mapping[str, Any]


@dataclass(frozen=True)
class PlaybookResult:
    status: Status
    rc: int
    stats: Mapping[str, Mapping[str, int]]  # "ok", "changed", "failures", "dark" -> {host: count}
    tasks: tuple[TaskResult, ...]

    def by_host(self, task: str) -> dict[str, Mapping[str, Any]]:
        """The successful result of ``task`` on each host."""
        return {t.host: t.result for t in self.tasks if t.task == task and t.ok}

    def failures(self) -> list[str]:
        return [f"{t.host}: {t.task}: {_message(t.result)}" for t in self.tasks if not t.ok]


def _message(result: Mapping[str, Any]) -> str:
    text = str(result.get("msg") or result.get("stderr") or result.get("reason") or "failed")
    return text.strip().splitlines()[0][:300] if text.strip() else "failed"


_KEEP = ("msg", "stat", "stdout", "stderr", "rc", "dest", "checksum", "files", "content", "changed", "failed")


def _environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return {
        "PATH": bin_dir + (os.pathsep + path if path else ""),
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_HOST_KEY_CHECKING": "false",
        "ANSIBLE_FORKS": "20",  # nodes in parallel; serial plays set their own batch sizes
    }


def run(
    request: PlaybookRequest,
    *,
    cancel: threading.Event | None = None,
    on_event: Callable[[Mapping[str, Any]], None] | None = None,
) -> PlaybookResult:
    """Runs the playbook and waits for it; raises ``ExecutorError`` if Ansible could not run at all."""
    project = resources.playbooks_dir()
    if not (project / request.playbook).is_file():
        raise errors.ExecutorError(f"no playbook {request.playbook} in {project}")
    cancel = cancel or threading.Event()
    tasks: list[TaskResult] = []

    def handle(event: Mapping[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable"):
            res = data.get("res") or {}
            tasks.append(
                TaskResult(
                    host=str(data.get("host", "")),
                    task=str(data.get("task", "")),
                    ok=kind == "runner_on_ok",
                    changed=bool(res.get("changed")),
                    result={k: res[k] for k in _KEEP if k in res},
                )
            )
        if on_event is not None:
            on_event(event)
        return True  # keep the event: without it runner keeps no stats

    private = Path(tempfile.mkdtemp(prefix="upgrader-ansible-"))
    try:
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(project),
            playbook=request.playbook,
            inventory=str(request.inventory),
            extravars=dict(request.extravars),
            limit=",".join(request.limit) or None,
            cmdline="--check --diff" if request.check else None,
            envvars=_environment(),
            timeout=request.timeout,
            quiet=True,
            event_handler=handle,
            cancel_callback=cancel.is_set,
            status_handler=lambda status, runner_config: None,
            settings={"suppress_ansible_output": True, "pexpect_timeout": 1},
        )
        status = _RUNNER_STATUS.get(str(runner.status))
        if status is None:
            raise errors.ExecutorError(f"ansible-runner ended in an unexpected state {runner.status!r}")
        stats = runner.stats or {}
        return PlaybookResult(
            status=status,
            rc=int(runner.rc),
            stats={k: dict(v) for k, v in stats.items() if isinstance(v, dict)},
            tasks=tuple(tasks),
        )
    except (OSError, RuntimeError) as exc:
        raise errors.ExecutorError(f"could not run {request.playbook}: {exc}") from exc
    finally:
        shutil.rmtree(private, ignore_errors=True)
