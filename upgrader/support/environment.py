"""Process-wide settings that come from the environment: variable names and default locations.

Only names and defaults live here; values are read when a command asks for them, never at import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from upgrader import errors

ENV_DB = "UPGRADER_DB"
ENV_CLUSTER = "UPGRADER_CLUSTER"
ENV_HOST = "UPGRADER_HOST"
ENV_LOCK_TTL = "UPGRADER_LOCK_TTL"
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")

APP_NAME = "upgrader"
DB_FILENAME = "state.db"


def data_dir() -> Path:
    """The user's data directory for upgrader (XDG: ``$XDG_DATA_HOME/upgrader`` or ``~/.local/share``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def default_db_url() -> str:
    """The SQLAlchemy URL of the default state database: a SQLite file in the user's data directory."""
    return f"sqlite:///{data_dir() / DB_FILENAME}"


def host() -> str:
    """Who this machine is in the lock and the journal: ``UPGRADER_HOST`` (for runners whose hostname
    changes every job, or containers that share one), else the hostname. A process on another host is
    never judged dead by its pid."""
    given = os.environ.get(ENV_HOST, "").strip()
    if not given:
        return os.uname().nodename  # what gethostname(2) gives, without importing socket at start-up
    if not _HOST.match(given):
        raise errors.InputError(f"{ENV_HOST} must be a host name (letters, digits, '.', '_', '-'), not {given!r}")
    return given


def lock_ttl(default: float = 60.0) -> float:
    """Seconds a cluster lock lives without renewal (``UPGRADER_LOCK_TTL``, 5 to 3600; 60 by default):
    how long another host waits to take over from a holder that died without releasing it."""
    given = os.environ.get(ENV_LOCK_TTL, "").strip()
    if not given:
        return default
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 5 <= seconds <= 3600:
        raise errors.InputError(f"{ENV_LOCK_TTL} must be a number of seconds from 5 to 3600, not {given!r}")
    return seconds
