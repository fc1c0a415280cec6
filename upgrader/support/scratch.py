"""Per-process scratch directories under upgrader's private data directory, never a shared ``/tmp``.

What a command writes while it works (an Ansible run's data directory, a restore test's keyspace)
can hold every Secret of a cluster. It goes into ``DATA_DIR/KIND/run-PID-XXXX`` (0700), which the
command removes when it is done. A SIGKILL skips that, so the next command of the same kind removes
the directories whose process is gone (``stale``), and ``upgrader status``-style reports can name them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path

from upgrader.support import environment, files, pids


def parent(kind: str, *, what: str) -> Path:
    return files.private_dir(environment.data_dir() / kind, what=what)


def stale(kind: str) -> dict[Path, int]:
    """The scratch directories of ``kind`` whose process is gone, with that process's pid."""
    dead = {}
    for directory in (environment.data_dir() / kind).glob("run-*-*"):
        pid = directory.name.split("-")[1]
        if pid.isdigit() and not pids.alive(int(pid)):
            dead[directory] = int(pid)
    return dead


def directory(kind: str, *, what: str, keep: Collection[str] = ()) -> Path:
    """A fresh 0700 directory for this process; first removes the ones dead processes left behind,
    except those named in ``keep`` (still in use by something that outlived its process)."""
    base = parent(kind, what=what)
    for gone in stale(kind):
        if str(gone) not in keep:
            shutil.rmtree(gone, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=base))
