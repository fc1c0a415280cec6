"""Fixtures shared by every test: a realistic cluster directory and a state database on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import example_cluster, pgserver, s3server


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Path:
    """A directory holding a valid cluster.yaml and every file it names."""
    return example_cluster.write(tmp_path / "cluster").parent


@pytest.fixture
def cluster_yaml(cluster_dir: Path) -> Path:
    return cluster_dir / "cluster.yaml"


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture(autouse=True)
def private_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """upgrader's own state directory (Ansible's private run directories among others) per test, never
    the user's ``~/.local/share``."""
    home = tmp_path / "xdg-data"
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    return home / "upgrader"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[s3server.Server]:
    """One S3-compatible server (moto's, on loopback) for the session; each test makes its own bucket."""
    with s3server.running(tmp_path_factory.mktemp("s3") / "moto.log") as server:
        yield server


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS chain, through the environment, as an operator would set it."""
    for name, value in s3server.CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return s3server.CREDENTIALS


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pgserver.Server]:
    """One PostgreSQL server for the session (each test makes its own database), or a skip that says why."""
    if pgserver.binaries() is None:
        pytest.skip("PostgreSQL is not installed here (no initdb/postgres): the PostgreSQL variants are skipped")
    with pgserver.running() as server:
        yield server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (marked ``long``), the rest in their order: the workers then share the
    long ones at the start instead of one worker finishing the run alone with one of them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("long") else 1)
