"""The built wheel carries the migrations and playbooks, and works from a fresh virtual environment."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("upgrader-*.whl")
    return built


def test_wheel_ships_migrations_and_playbooks(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    playbooks = {p.relative_to(ROOT).as_posix() for p in (ROOT / "playbooks").rglob("*") if p.is_file()}
    assert migrations and playbooks
    for name in migrations | playbooks:
        assert f"upgrader/_bundled/{name}" in names, name


def test_installed_wheel_migrates_a_database_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", str(wheel)], check=True, capture_output=True)
    upgrader = env_dir / "bin" / "upgrader"
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    work = tmp_path / "elsewhere"  # run away from the checkout so nothing resolves to the source tree
    work.mkdir()

    done = subprocess.run([upgrader, "db", "upgrade", "--db", db_url], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "schema none -> " in done.stdout

    check = subprocess.run([upgrader, "db", "check", "--db", db_url], cwd=work, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr

    where = subprocess.run(
        [
            python,
            "-c",
            "from upgrader.support import bundled; print(bundled.migrations_dir()); print(bundled.playbooks_dir())",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(Path(p).is_relative_to(env_dir) for p in where), where
