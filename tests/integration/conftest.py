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


@pytest.fixture(scope="session")
def etcd_snapshot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real etcd snapshot (one member, a few keys written), for what reads a file with etcd's own tool."""
    from tests.integration.etcd_cluster import EtcdCluster
    from upgrader.etcd import snapshot

    base = tmp_path_factory.mktemp("etcd-snapshot")
    cluster = EtcdCluster(base / "cluster", members=1)
    store = cluster.start()
    try:
        for index in range(20):
            store.put(f"/registry/configmaps/demo/c{index}", b"x" * 100)
        snapshot.save(store, base / "snapshot.db")
    finally:
        store.close()
        cluster.stop()
    return base / "snapshot.db"
