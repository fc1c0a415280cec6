"""Private, durable files: 0700 directories, 0600 files, renames that survive a power loss.

Snapshots and the state database hold every Secret of a cluster, so whatever upgrader creates that
could hold them is private from its first byte (created with its mode, never chmod-ed after), and a
file that a record or a message calls done has been fsynced, renamed, and its directory fsynced.
"""

from __future__ import annotations

import os
from pathlib import Path

from upgrader import errors


def private_dir(path: Path, *, what: str = "directory") -> Path:
    """Makes sure ``path`` is a directory only its owner can enter (0700); returns it."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:
        raise errors.OperationFailed(f"cannot prepare the {what} {path}: {exc.strerror}") from exc
    return path


def fsync_dir(directory: Path) -> None:
    """Makes the entries of ``directory`` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path, dest: Path) -> None:
    """Renames ``source`` (already fsynced) over ``dest`` and fsyncs the directory: after this
    returns, a crash or power loss leaves ``dest`` complete, never missing or half-written."""
    os.replace(source, dest)
    fsync_dir(dest.parent)
