"""The state tests run on both databases upgrader supports: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgserver

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'state.db'}"
        return
    with request.getfixturevalue("pg_server").database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For what only a SQLite file has: its mode, its copy aside, another application's file."""
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture
def pg_url(pg_server: pgserver.Server) -> Iterator[str]:
    """For what only a database server shared between hosts has: one clock for all of them."""
    with pg_server.database() as url:
        yield url
