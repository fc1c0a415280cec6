"""Processes the lab starts, identified by pid *and* start time, so a reused pid is never signalled.

Every process the lab starts is recorded (``run/pids.json``); stopping sends SIGTERM, waits, then
SIGKILL, and waits again: nothing is left behind, and nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from upgrader import errors


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class ProcessId:
    pid: int
    started: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        started = start_time(pid)
        return None if started is None else cls(pid, started)

    def alive(self) -> bool:
        if start_time(self.pid) != self.started:
            return False
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL and wait until it is gone."""
        self.signal(signal.SIGTERM)
        if not wait_gone(self, timeout):
            self.signal(signal.SIGKILL)
            wait_gone(self, 10.0)


def wait_gone(process: ProcessId, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while process.alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_popen(popen: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
    """Stops a child this process started and reaps it; returns its exit code."""
    if popen.poll() is None:
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(10.0)
    return popen.returncode


class Registry:
    """The file of every process a lab started (``run/pids.json``), for cleaning up after a crash."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[ProcessId]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        return [ProcessId(int(p["pid"]), int(p["started"])) for p in data]

    def write(self, processes: list[ProcessId]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps([{"pid": p.pid, "started": p.started} for p in processes]))
        tmp.replace(self.path)

    def stop_all(self) -> int:
        """Stops every recorded process still alive; returns how many there were."""
        alive = [p for p in self.read() if p.alive()]
        for process in alive:
            process.signal(signal.SIGTERM)
        for process in alive:
            if not wait_gone(process, 10.0):
                process.signal(signal.SIGKILL)
                wait_gone(process, 10.0)
        self.path.unlink(missing_ok=True)
        return len(alive)


def run(argv: list[str], *, env: dict[str, str] | None = None, stdin: str = "") -> str:
    """A set-up command of the lab (ssh-keygen, gpg, dpkg, useradd); its output, or one line naming it."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False, input=stdin, env=env)
    if done.returncode != 0:
        raise errors.OperationFailed(f"{' '.join(argv[:3])}: {(done.stderr or done.stdout).strip()[:300]}")
    return str(done.stdout)
