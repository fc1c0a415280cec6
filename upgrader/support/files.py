"""Private, durable files: 0700 directories, 0600 files, renames that survive a power loss.

Snapshots and the state database hold every Secret of a cluster, so whatever upgrader creates that
could hold them is private from its first byte (created with its mode, never chmod-ed after), and a
file that a record or a message calls done has been fsynced, renamed, and its directory fsynced.
"""

from __future__ import annotations

import os
from pathlib import Path

from upgrader import errors


class NotPrivate(errors.Refused):
    """An existing directory that others may enter: upgrader writes no secret there, and never changes
    its mode (it may be shared, or another application's)."""


def not_private(path: Path) -> str | None:
    """Why an existing directory (through a link, its target) is not fit for secrets; None if it is."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        return f"it belongs to uid {info.st_uid}, not to this user ({os.geteuid()})"
    if info.st_mode & 0o077:
        return f"others may enter it (mode {info.st_mode & 0o777:o})"
    return None


def private_dir(path: Path, *, what: str = "directory") -> Path:
    """A directory only its owner can enter (0700): created so when missing; an existing one must be
    already (``NotPrivate`` otherwise: its mode is never changed). Returns it."""
    try:
        path.mkdir(parents=True, mode=0o700)
        path.chmod(0o700)  # created just now, by us: the umask may have taken bits off, never added
        return path
    except FileExistsError:
        pass
    except OSError as exc:
        raise errors.OperationFailed(f"cannot prepare the {what} {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise errors.OperationFailed(f"cannot prepare the {what} {path}: it exists and is not a directory")
    why = not_private(path)
    if why:
        raise NotPrivate(
            f"the {what} {path} is not private: {why}; upgrader never changes the mode of a directory it did "
            f"not create: chmod 700 it if it is upgrader's alone, or choose a new directory"
        )
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
