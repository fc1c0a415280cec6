"""Runs one of upgrader's playbooks through ansible-runner (in ``detached``, its only importer).

A frozen request goes in (playbook, a validated inventory, extra variables, limit, timeout, check
mode) and a frozen result comes out (status, rc, per-host stats, the result of each task on each
host). What reaches Ansible is never templated: every string of the extra variables is written as
``!unsafe`` YAML, so a ``{{ }}`` in a path is a path. The inventory is an ``inventory.Inventory``,
which only exists once its groups and host names have been checked, and ``limit`` names only its
hosts.

Each run gets a fresh private data directory (a reused one replays stale ``env/cmdline`` and
extravars) inside upgrader's own 0700 state directory, never a shared ``/tmp``. The playbook runs in
a process of its own (``detached``: a new session, its output and events in that directory), so its
life does not hang on upgrader's: if upgrader is killed it runs to its end, and the next upgrader
finds it (``leftovers``), waits for it while its events advance and says it is stuck when they stop.
It inherits only what Ansible, SSH and sudo need of upgrader's environment (``passed_environment``):
no cloud or database credential reaches a playbook or its artifacts. The directory is deleted once
the run is read; one a killed process left is deleted by the next run once its playbook has ended.
SIGINT, SIGTERM and SIGHUP cancel the run (runner stops the ``ansible-playbook`` process group) and
are raised as ``KeyboardInterrupt`` once it has stopped; the interpreter's bin directory is put on
PATH so ``ansible-playbook`` is found in an unactivated virtual environment.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from upgrader import errors
from upgrader.executor import detached
from upgrader.executor.inventory import Inventory
from upgrader.support import bundled, interrupts, redaction, scratch


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
    become: bool = False  # privilege escalation for every task (the inventory's ansible_become otherwise)
    become_user: str = "root"
    become_method: str = "sudo"

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
        """One line per failed task (or the run's last lines), URLs' user-info masked: a module's message
        may quote the mirror URL it was given, and these lines reach the output and the journal."""
        failed = [f"{t.host}: {t.task}: {_message(t.result)}" for t in self.tasks if not t.ok]
        if not failed and self.status is not Status.SUCCESSFUL and self.tail:
            failed.append(" / ".join(self.tail))
        return [redaction.url(line) for line in failed]


def _message(result: Mapping[str, Any]) -> str:
    stderr = [line for line in str(result.get("stderr") or "").splitlines() if line.strip()]
    if stderr and result.get("msg") in (None, "", "non-zero return code"):  # a raw command: say what it said
        return f"{stderr[-1].strip()[:300]} (rc {result.get('rc')})"
    text = str(result.get("msg") or result.get("reason") or "failed")
    return text.strip().splitlines()[0][:600] if text.strip() else "failed"  # apt names the key late in its line


_KEEP = ("msg", "stat", "stdout", "stderr", "rc", "dest", "checksum", "files", "content", "changed", "failed")


MARK = "UPGRADER_PLAYBOOK"  # in every ansible-playbook's environment: "<private dir>:<playbook>"
KIND = "ansible"  # the scratch directories of playbook runs

# What a playbook is given of upgrader's own environment: what Ansible, SSH and sudo need, and nothing
# else. upgrader's environment may hold AWS credentials, PGPASSWORD or a database URL with its password;
# ansible-runner writes the whole environment it was given into the run's artifacts.
_PASSED = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "SSH_AUTH_SOCK")
_PASSED_PREFIXES = ("LC_", "ANSIBLE_", "XDG_")


def passed_environment(source: Mapping[str, str]) -> dict[str, str]:
    """The part of ``source`` a playbook run inherits (see ``_PASSED``)."""
    return {k: v for k, v in source.items() if k in _PASSED or k.startswith(_PASSED_PREFIXES)}


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
    if request.become:  # Ansible's [privilege_escalation] settings, as `-b --become-user --become-method`
        env.update(
            ANSIBLE_BECOME="true", ANSIBLE_BECOME_USER=request.become_user, ANSIBLE_BECOME_METHOD=request.become_method
        )
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


STALLED_AFTER = 600.0  # seconds without an event after which a leftover playbook is called stuck


@dataclass(frozen=True)
class Leftover:
    """An ansible-playbook still running for an upgrader process that is gone (a SIGKILL skips the
    cancel): it may still be changing nodes, so nothing else may start a playbook until it ends."""

    playbook: str
    pids: tuple[int, ...]  # the detached runner, ansible-playbook and its forks
    owner: int  # the upgrader process that started it
    directory: Path  # its private directory, where its events arrive

    def describe(self) -> str:
        return f"{self.playbook} (pid {self.pids[0]}), left running by upgrader pid {self.owner}, which is gone"

    def last_event(self) -> tuple[float, str]:
        """How many seconds ago it last reported (an event, else its start), and what that was."""
        events = self.directory / detached.EVENTS
        try:
            seen = events.stat().st_mtime
        except OSError:
            return max(time.time() - self.directory.stat().st_mtime, 0.0), "started"
        return max(time.time() - seen, 0.0), _last_task(events)


def _last_task(events: Path) -> str:
    try:
        with events.open("rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - 16384, 0))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "?"
    for line in reversed(lines):
        try:
            data = json.loads(line).get("event_data") or {}
        except ValueError:
            continue
        if data.get("task"):
            return f"task {data['task']!r}" + (f" on {data['host']}" if data.get("host") else "")
    return "its start"


def _marked() -> dict[str, tuple[str, list[int]]]:
    """Every process on this host carrying a playbook mark: private directory -> (playbook, pids)."""
    found: dict[str, tuple[str, list[int]]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or another user's
            continue
        for entry in environ:
            if entry.startswith(MARK.encode() + b"="):
                directory, _, playbook = entry.decode(errors="replace").split("=", 1)[1].rpartition(":")
                found.setdefault(directory, (playbook, []))[1].append(int(proc.name))
                break
    return found


def leftovers() -> list[Leftover]:
    """The playbooks of dead upgrader processes on this host that are still running (read from /proc)."""
    dead = {str(directory): owner for directory, owner in scratch.stale(KIND).items()}
    if not dead:
        return []
    return [
        Leftover(playbook, tuple(sorted(p)), dead[d], Path(d))
        for d, (playbook, p) in sorted(_marked().items())
        if d in dead
    ]


def wait_for_leftovers(
    timeout: float,
    cancel: threading.Event | None = None,
    *,
    stalled_after: float = STALLED_AFTER,
    report: Callable[[str], None] | None = None,
) -> None:
    """Returns once no leftover playbook runs. ``NeedsHuman`` when one has sent no event for
    ``stalled_after`` seconds (stuck: a human must look at it), ``ExecutorError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    said = 0.0
    while left := leftovers():
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt("canceled")
        quiet, last = left[0].last_event()
        group = left[0].pids[0]
        if quiet >= stalled_after:
            raise errors.NeedsHuman(
                f"{left[0].describe()} has sent no event for {quiet:.0f}s (last: {last}): it looks stuck; "
                f"stop it (kill -TERM -- -{group}), check what it was doing on its nodes, then resume"
            )
        if time.monotonic() > deadline:
            raise errors.ExecutorError(
                f"{left[0].describe()} is still running after {timeout:.0f}s; let it finish, or stop "
                f"it (kill -TERM -- -{group}) and check its nodes"
            )
        if report is not None and time.monotonic() - said >= 30:
            report(f"{left[0].describe()} is working: last event {quiet:.0f}s ago ({last})")
            said = time.monotonic()
        time.sleep(0.5)


def _private_data_dir() -> Path:
    """A fresh 0700 directory for one run under upgrader's state directory; removes the ones of dead
    processes (a SIGKILL skips every ``finally``) whose playbook has ended."""
    return scratch.directory(KIND, what="Ansible working directory", keep=_marked().keys())


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def _write_extravars(private: Path, extravars: Mapping[str, Any]) -> None:
    env = private / "env"
    env.mkdir(mode=0o700)
    _write_private(env / "extravars", unsafe_yaml(extravars))


class _Events:
    """Reads the whole lines a detached run has appended to its events file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""

    def new(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


CANCEL_GRACE = 60.0  # seconds a canceled run may take to stop its playbook before it is killed


def _start(private: Path, request: PlaybookRequest, project: Path) -> subprocess.Popen[bytes]:
    arguments = {
        "private_data_dir": str(private),
        "project_dir": str(project),
        "playbook": request.playbook,
        "inventory": str(request.inventory.source),
        "limit": ",".join(request.limit) or None,
        "cmdline": "--check --diff" if request.check else None,
        "envvars": _environment(request, private),
        "timeout": request.timeout,
        "settings": {"suppress_ansible_output": True, "pexpect_timeout": 1},
    }
    _write_private(private / detached.REQUEST, json.dumps(arguments))
    env = {**passed_environment(os.environ), MARK: f"{private}:{request.playbook}"}
    log = os.open(private / detached.LOG, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "upgrader.executor.detached", str(private)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            cwd=str(private),
            start_new_session=True,  # its own session and process group: no terminal of upgrader's
            close_fds=True,
        )
    finally:
        os.close(log)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Cancels a detached run (runner then stops the playbook's process group) and waits for it."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(CANCEL_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run(
    request: PlaybookRequest,
    *,
    cancel: threading.Event | None = None,
    on_event: Callable[[Mapping[str, Any]], None] | None = None,
) -> PlaybookResult:
    """Runs the playbook in a detached process and waits for it, reading its events as they come;
    raises ``ExecutorError`` if Ansible could not run at all."""
    project = bundled.playbooks_dir()
    if not (project / request.playbook).is_file():
        raise errors.ExecutorError(f"no playbook {request.playbook} in {project}")
    requested = cancel or threading.Event()
    tasks: list[TaskResult] = []

    def handle(event: Mapping[str, Any]) -> None:
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

    wait_for_leftovers(request.timeout, requested)  # never two playbooks on the same nodes
    private = _private_data_dir()
    try:
        if request.extravars:
            _write_extravars(private, request.extravars)  # runner passes env/extravars as -e @file
        events = _Events(private / detached.EVENTS)
        with interrupts.deferred() as signalled:
            process = _start(private, request, project)
            try:
                while process.poll() is None:
                    for event in events.new():
                        handle(event)
                    if requested.is_set() or signalled.is_set():
                        _stop(process)
                        break
                    time.sleep(0.1)
            except BaseException:
                _stop(process)
                raise
            for event in events.new():
                handle(event)
        return _result(private, tasks)
    except OSError as exc:
        raise errors.ExecutorError(f"could not run {request.playbook}: {exc}") from exc
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _result(private: Path, tasks: list[TaskResult]) -> PlaybookResult:
    try:
        result = json.loads((private / detached.RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        try:
            said = [line for line in (private / detached.LOG).read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            said = []
        detail = said[-1][:300] if said else "it ended without a result"
        raise errors.ExecutorError(f"ansible-runner could not run: {detail}") from None
    if "error" in result:
        raise errors.ExecutorError(f"ansible-runner could not run: {str(result['error'])[:300]}")
    status = _RUNNER_STATUS.get(str(result.get("status")))
    if status is None:
        raise errors.ExecutorError(f"ansible-runner ended in an unexpected state {result.get('status')!r}")
    return PlaybookResult(
        status=status,
        rc=int(result.get("rc", -1)),
        stats={k: dict(v) for k, v in (result.get("stats") or {}).items() if isinstance(v, dict)},
        tasks=tuple(tasks),
        tail=tuple(str(line) for line in result.get("tail") or ()),
    )
