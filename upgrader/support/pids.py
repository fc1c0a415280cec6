"""Whether a process still exists on this host, for clean-ups after a SIGKILL (a killed holder's lock,
its private directories). A pid reused by another process reads as alive: the caller then waits or
keeps what it would have removed, the safe direction.

``identity`` names a process in a way a reused pid cannot fake: the boot it runs in, its pid namespace
and its start time (in clock ticks since boot, from ``/proc/PID/stat``). ``judge`` tells, from another
process, whether the process so named is alive, gone, or cannot be told (another boot, which is also
what another machine under the same ``UPGRADER_HOST`` looks like, or another pid namespace).
"""

from __future__ import annotations

import enum
import os
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


class Liveness(enum.Enum):
    ALIVE = "alive"
    GONE = "gone"
    UNKNOWN = "unknown"  # another boot or pid namespace: only the lease's expiry can tell


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _namespace(pid: int | str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return "?"


def _start_time(pid: int | str) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22: after the command name, which may hold spaces


def identity(pid: int | None = None) -> str:
    """``BOOT:PIDNS:START`` for ``pid`` (this process by default)."""
    which: int | str = "self" if pid is None else pid
    return f"{_boot_id()}:{_namespace(which)}:{_start_time(which) or '?'}"


def judge(pid: int, recorded: str | None) -> Liveness:
    """Whether the process ``pid`` whose ``identity`` was ``recorded`` still runs, seen from here."""
    if not recorded:
        return Liveness.ALIVE if alive(pid) else Liveness.UNKNOWN  # an old record: a pid alone proves nothing gone
    boot, namespace, start = ([*recorded.split(":"), "", "", ""])[:3]
    if "?" in (boot, namespace) or boot != _boot_id() or namespace != _namespace("self"):
        return Liveness.UNKNOWN
    now = _start_time(pid)
    return Liveness.ALIVE if now is not None and now == start else Liveness.GONE
