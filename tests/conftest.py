"""Fixtures shared by every test: a realistic cluster directory and a state database on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import example_cluster


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
