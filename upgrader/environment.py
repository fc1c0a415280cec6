"""Process-wide settings that come from the environment: variable names and default locations.

Only names and defaults live here; values are read when a command asks for them, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_DB = "UPGRADER_DB"
ENV_CLUSTER = "UPGRADER_CLUSTER"

APP_NAME = "upgrader"
DB_FILENAME = "state.db"


def data_dir() -> Path:
    """The user's data directory for upgrader (XDG: ``$XDG_DATA_HOME/upgrader`` or ``~/.local/share``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / APP_NAME


def default_db_url() -> str:
    """The SQLAlchemy URL of the default state database: a SQLite file in the user's data directory."""
    return f"sqlite:///{data_dir() / DB_FILENAME}"
