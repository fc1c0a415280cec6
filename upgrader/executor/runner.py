"""Runs one of upgrader's playbooks through ansible-runner: the only module that imports it.

A frozen request goes in (playbook, a validated inventory, extra variables, limit, timeout, check
mode) and a frozen result comes out (status, rc, per-host stats, the result of each task on each
host). What reaches Ansible is never templated: every string of the extra variables is written as
``!unsafe`` YAML, so a ``{{ }}`` in a path is a path. The inventory is an ``inventory.Inventory``,
which only exists once its groups and host names have been checked, and ``limit`` names only its
hosts.

Each run gets a fresh private data directory (a reused one replays stale ``env/cmdline`` and
extravars) inside upgrader's own 0700 state directory, never a shared ``/tmp``: its artifacts record
the whole environment. They are deleted once the run is read; those of a process that was killed are
deleted by the next run. Events are kept (the handler returns True); SIGINT, SIGTERM and SIGHUP cancel
the run through runner's cancel callback (which stops the ``ansible-playbook`` process group) and are
raised as ``KeyboardInterrupt`` once it has stopped; the interpreter's bin directory is put on PATH so
``ansible-playbook`` is found in an unactivated virtual environment.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from upgrader import bundled, environment, errors, files, interrupts, pids
from upgrader.executor.inventory import Inventory


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
    inventory: Inventory  # validated when it was loaded
    extravars: Mapping[str, Any] = field(default_factory=dict)
    limit: tuple[str, ...] = ()
    timeout: int = 600
    check: bool = False
    host_key_checking: bool = True
    forks: int = 50
    pipelining: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.limit) - set(self.inventory.all_hosts()))
        if unknown:
            raise errors.InputError(f"not in the inventory {self.inventory.source}: {', '.join(unknown)}")


@dataclass(frozen=True)
class TaskResult:
    host: str
    task: str
    ok: bool
    changed: bool
    result: Mapping[str, Any]
    duration: float | None = None  # seconds, as ansible-runner measured the task on that host


@dataclass(frozen=True)
class PlaybookResult:
    status: Status
    rc: int  # -1: ansible-playbook ended without an exit status (killed by a signal)
    stats: Mapping[str, Mapping[str, int]]  # "ok", "changed", "failures", "dark" -> {host: count}
    tasks: tuple[TaskResult, ...]
    tail: tuple[str, ...] = ()  # the last lines ansible-playbook printed, for a failure with no failed task

    def by_host(self, task: str) -> dict[str, Mapping[str, Any]]:
        """The successful result of ``task`` on each host."""
        return {t.host: t.result for t in self.tasks if t.task == task and t.ok}

    def failures(self) -> list[str]:
        failed = [f"{t.host}: {t.task}: {_message(t.result)}" for t in self.tasks if not t.ok]
        if not failed and self.status is not Status.SUCCESSFUL and self.tail:
            failed.append(" / ".join(self.tail))
        return failed


def _message(result: Mapping[str, Any]) -> str:
    stderr = [line for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    if stderr and result.get("msg") in (None, "", "non-zero return code"):  # a raw command: say what it said
        return f"{stderr[-1].strip()[:300]} (rc {result.get('rc')})"
    text = str(result.get("msg") or result.get("reason") or "failed")
    return text.strip().splitlines()[0][:300] if text.strip() else "failed"


_KEEP = ("msg", "stat", "stdout", "stderr", "rc", "dest", "checksum", "files", "content", "changed", "failed")


MARK = "UPGRADER_PLAYBOOK"  # in every ansible-playbook's environment: "<private dir>:<playbook>"


def _environment(request: PlaybookRequest, private: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    env = {
        MARK: f"{private}:{request.playbook}",  # how a later run finds it if upgrader is killed under it
        "PATH": bin_dir + (os.pathsep + path if path else ""),
        "ANSIBLE_NOCOLOR": "true",
        "ANSIBLE_DEPRECATION_WARNINGS": "false",
        "ANSIBLE_RETRY_FILES_ENABLED": "false",
        "ANSIBLE_FORKS": str(request.forks),  # nodes in parallel; serial plays set their own batch sizes
        "ANSIBLE_PIPELINING": "true" if request.pipelining else "false",
    }
    if not request.host_key_checking:  # Ansible's default (on) otherwise; cluster.yaml may turn it off
        env["ANSIBLE_HOST_KEY_CHECKING"] = "false"
    return env


_STR = "tag:yaml.org,2002:str"


def _unsafe_node(value: Any) -> yaml.Node:
    """A YAML node for ``value`` in which every string is ``!unsafe``: Ansible never templates it."""
    if isinstance(value, Mapping):
        pairs = [(yaml.ScalarNode(_STR, str(k), style='"'), _unsafe_node(v)) for k, v in value.items()]
        return yaml.MappingNode("tag:yaml.org,2002:map", pairs)
    if isinstance(value, list | tuple):
        return yaml.SequenceNode("tag:yaml.org,2002:seq", [_unsafe_node(v) for v in value])
    if isinstance(value, bool):
        return yaml.ScalarNode("tag:yaml.org,2002:bool", "true" if value else "false")
    if isinstance(value, int | float):
        return yaml.ScalarNode(f"tag:yaml.org,2002:{'int' if isinstance(value, int) else 'float'}", repr(value))
    if value is None:
        return yaml.ScalarNode("tag:yaml.org,2002:null", "null")
    return yaml.ScalarNode("!unsafe", str(value), style='"')


def unsafe_yaml(extravars: Mapping[str, Any]) -> str:
    """The extra variables as a YAML document whose every string is tagged ``!unsafe``."""
    return str(yaml.serialize(_unsafe_node(extravars), Dumper=yaml.SafeDumper, width=1_000_000))


@dataclass(frozen=True)
class Leftover:
    """An ansible-playbook still running for an upgrader process that is gone (a SIGKILL skips the
    cancel): it may still be changing nodes, so nothing else may start a playbook until it ends."""

    playbook: str
    pids: tuple[int, ...]  # ansible-playbook and its forks
    owner: int  # the upgrader process that started it

    def describe(self) -> str:
        return f"{self.playbook} (pid {self.pids[0]}), left running by upgrader pid {self.owner}, which is gone"


def leftovers() -> list[Leftover]:
    """The playbooks of dead upgrader processes on this host that are still running (read from /proc)."""
    dead = {str(directory): owner for directory, owner in _dead_runs(environment.data_dir() / "ansible").items()}
    if not dead:
        return []
    found: dict[str, tuple[str, list[int]]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or another user's
            continue
        for entry in environ:
            if entry.startswith(MARK.encode() + b"="):
                directory, _, playbook = entry.decode(errors="replace").split("=", 1)[1].rpartition(":")
                if directory in dead:
                    found.setdefault(directory, (playbook, []))[1].append(int(proc.name))
                break
    return [Leftover(playbook, tuple(sorted(p)), dead[d]) for d, (playbook, p) in sorted(found.items())]


def wait_for_leftovers(timeout: float, cancel: threading.Event | None = None) -> None:
    """Returns once no leftover playbook runs; ``ExecutorError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while left := leftovers():
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt("canceled")
        if time.monotonic() > deadline:
            raise errors.ExecutorError(
                f"{left[0].describe()} is still running after {timeout:.0f}s; let it finish, or stop "
                f"it (kill {left[0].pids[0]}) and check its nodes"
            )
        time.sleep(0.5)


def _dead_runs(parent: Path) -> dict[Path, int]:
    """The private directories (``run-PID-*``) whose upgrader process is gone, with that pid."""
    dead = {}
    for directory in parent.glob("run-*-*"):
        pid = directory.name.split("-")[1]
        if pid.isdigit() and not pids.alive(int(pid)):
            dead[directory] = int(pid)
    return dead


def _private_data_dir() -> Path:
    """A fresh 0700 directory for one run under upgrader's state directory; removes the ones of dead
    processes (a SIGKILL skips every ``finally``)."""
    parent = files.private_dir(environment.data_dir() / "ansible", what="Ansible working directory")
    for stale in _dead_runs(parent):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=parent))


def _write_extravars(private: Path, extravars: Mapping[str, Any]) -> None:
    env = private / "env"
    env.mkdir(mode=0o700)
    fd = os.open(env / "extravars", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(unsafe_yaml(extravars))


def _tail(runner: Any, lines: int) -> tuple[str, ...]:
    try:
        handle = runner.stdout  # ansible-runner opens the file anew on each access: close it
        try:
            text = handle.read()
        finally:
            handle.close()
    except (OSError, AttributeError, ValueError):
        return ()
    kept = [line.strip() for line in str(text).splitlines() if line.strip()]
    return tuple(line[:200] for line in kept[-lines:]) or ("ansible-playbook ended without an exit status",)


def run(
    request: PlaybookRequest,
    *,
    cancel: threading.Event | None = None,
    on_event: Callable[[Mapping[str, Any]], None] | None = None,
) -> PlaybookResult:
    """Runs the playbook and waits for it; raises ``ExecutorError`` if Ansible could not run at all."""
    project = bundled.playbooks_dir()
    if not (project / request.playbook).is_file():
        raise errors.ExecutorError(f"no playbook {request.playbook} in {project}")
    requested = cancel or threading.Event()
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
                    duration=float(data["duration"]) if isinstance(data.get("duration"), int | float) else None,
                )
            )
        if on_event is not None:
            on_event(event)
        return True  # keep the event: without it runner keeps no stats

    wait_for_leftovers(request.timeout, requested)  # never two playbooks on the same nodes
    private = _private_data_dir()
    try:
        if request.extravars:
            _write_extravars(private, request.extravars)  # runner passes env/extravars as -e @file
        with interrupts.deferred() as signalled:
            runner = ansible_runner.run(
                private_data_dir=str(private),
                project_dir=str(project),
                playbook=request.playbook,
                inventory=str(request.inventory.source),
                limit=",".join(request.limit) or None,
                cmdline="--check --diff" if request.check else None,
                envvars=_environment(request, private),
                timeout=request.timeout,
                quiet=True,
                event_handler=handle,
                cancel_callback=lambda: requested.is_set() or signalled.is_set(),
                status_handler=lambda status, runner_config: None,
                settings={"suppress_ansible_output": True, "pexpect_timeout": 1},
            )
        status = _RUNNER_STATUS.get(str(runner.status))
        if status is None:
            raise errors.ExecutorError(f"ansible-runner ended in an unexpected state {runner.status!r}")
        stats = runner.stats or {}
        return PlaybookResult(
            status=status,
            rc=int(runner.rc) if runner.rc is not None else -1,
            stats={k: dict(v) for k, v in stats.items() if isinstance(v, dict)},
            tasks=tuple(tasks),
            tail=() if status is Status.SUCCESSFUL else _tail(runner, 3),
        )
    except (OSError, RuntimeError) as exc:
        raise errors.ExecutorError(f"could not run {request.playbook}: {exc}") from exc
    finally:
        shutil.rmtree(private, ignore_errors=True)
