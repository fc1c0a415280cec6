"""Whether a process still exists on this host, for clean-ups after a SIGKILL (a killed holder's lock,
its private directories). A pid reused by another process reads as alive: the caller then waits or
keeps what it would have removed, the safe direction."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True
