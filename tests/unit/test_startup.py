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


def test_no_command_has_string_annotations_for_typer_to_evaluate() -> None:
    """Typer reads every command's signature with ``get_type_hints`` to build ``--help``: a string
    annotation (``from __future__ import annotations`` in a command module) is compiled and evaluated
    each time, which cost about 10 ms of the 1.5x start-up budget (issue 20)."""
    import inspect

    import typer

    from upgrader import cli

    def callbacks(app: typer.Typer) -> list[object]:
        found: list[object] = [c.callback for c in app.registered_commands]
        found += [app.registered_callback.callback] if app.registered_callback else []
        for group in app.registered_groups:
            assert group.typer_instance is not None
            found += callbacks(group.typer_instance)
        return found

    functions: list[object] = [cli.root]
    for entry in cli.app.info.cls.entries.values():  # type: ignore[union-attr]
        target = entry.target()
        functions += callbacks(target) if isinstance(target, typer.Typer) else [target]
    functions = [f for f in functions if f is not None]
    assert len(functions) >= 30  # every command of every group
    quoted = {
        f"{getattr(f, '__module__', '?')}.{getattr(f, '__name__', '?')}": name
        for f in functions
        for name, value in inspect.get_annotations(inspect.unwrap(f)).items()  # type: ignore[arg-type]
        if isinstance(value, str)
    }
    assert not quoted, quoted


def test_the_root_help_lists_every_command_as_the_command_describes_itself() -> None:
    """The root lists commands from summaries kept beside their module names (so --help loads none):
    each summary must be the loaded command's own short help, and every command must be reachable."""
    from typer import _click
    from typer.core import TyperGroup
    from typer.main import get_command

    from upgrader import cli

    root = get_command(cli.app)
    assert isinstance(root, TyperGroup)
    with _click.Context(root, info_name="upgrader") as ctx:
        for name, entry in cli.app.info.cls.entries.items():  # type: ignore[union-attr]
            command = root.get_command(ctx, name)
            assert command is not None and command.name == name
            assert command.get_short_help_str(limit=500) == entry.summary, name
        assert root.get_command(ctx, "no-such-command") is None
