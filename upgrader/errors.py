"""One error hierarchy for the whole tool, grouped by what the operator must do next.

Every expected failure is an ``UpgraderError`` whose class carries the process exit code; the CLI
turns it into one line on stderr (``cli._errors``) and nothing else does. Adapters convert
third-party exceptions where they enter and chain them (``raise StateError(...) from exc``).
Messages never contain credentials: they name files, keys, nodes and versions, not secrets.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process exit codes, a stable contract for automation."""

    OK = 0
    FAILURE = 1  # the operation ran and failed; the cluster may need a look
    USAGE = 2  # bad flags, bad input files, malformed versions: nothing was attempted
    REFUSED = 3  # refused for safety; nothing was changed
    ROLLED_BACK = 4  # failed, and the tool rolled the cluster back to its last known-good state
    NEEDS_HUMAN = 5  # stopped in a state the tool will not resolve on its own
    PAUSED = 6  # stopped on purpose at a safe point (a maintenance window's end, --pause-after): resumable


class UpgraderError(Exception):
    """Base of every expected error. ``str(err)`` is the one-line message shown to the operator."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(UpgraderError):
    """Bad command-line input: a flag combination, a value, a missing argument."""

    exit_code = ExitCode.USAGE


class InputError(UsageError):
    """A file or value given to the tool is malformed (YAML, JSON, a version string)."""


class ConfigError(InputError):
    """The cluster config is invalid. ``problems`` holds every problem found, each with its location."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class Refused(UpgraderError):
    """The tool refused to act because acting would be unsafe. Nothing was changed."""

    exit_code = ExitCode.REFUSED


class LockHeld(Refused):
    """Another mutating command holds the cluster lock."""


class LockLost(UpgraderError):
    """This process's cluster lock expired or was broken while it worked; it must stop and report."""

    exit_code = ExitCode.NEEDS_HUMAN


class SchemaOutOfDate(Refused):
    """The state database schema is not the one this version of upgrader expects."""


class OperationFailed(UpgraderError):
    """The operation was attempted and failed."""

    exit_code = ExitCode.FAILURE


class StateError(OperationFailed):
    """The state database could not be opened, read or written."""


class ExecutorError(OperationFailed):
    """Ansible (or a tool it needs) could not run or failed."""


class NotFound(OperationFailed):
    """A named record (snapshot, plan, lock) does not exist."""


class RolledBack(UpgraderError):
    """The operation failed and the cluster was rolled back to its last known-good snapshot."""

    exit_code = ExitCode.ROLLED_BACK


class NeedsHuman(UpgraderError):
    """The tool stopped where only an operator can decide how to go on."""

    exit_code = ExitCode.NEEDS_HUMAN
