"""``upgrader --help`` must not import the heavy libraries; only the commands that need them do."""

from __future__ import annotations

import json
import subprocess
import sys

# pydantic is not listed: Typer 0.29 imports it itself as soon as it coerces any option value.
HEAVY = (
    "kubernetes",
    "ansible_runner",
    "ansible",
    "sqlalchemy",
    "alembic",
    "etcd3",
    "grpc",
    "jinja2",
    "yaml",
    "rich",
)

PROBE = """
import json, sys
sys.argv = ["upgrader", *json.loads(sys.argv[1])]
try:
    from upgrader import cli
    cli.main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)
"""


def loaded_after(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(args))], capture_output=True, text=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_help_imports_no_heavy_library() -> None:
    for args in (["--help"], ["db", "--help"], ["lock", "status", "--help"], ["--version"]):
        assert not loaded_after(*args) & set(HEAVY), args


def test_a_command_that_needs_the_database_does_import_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The probe above is only meaningful if commands really load these lazily.
    assert "sqlalchemy" in loaded_after("db", "current", "--db", f"sqlite:///{tmp_path / 's.db'}")
