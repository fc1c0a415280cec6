"""Whatever bytes, YAML or JSON a careless or hostile user hands upgrader, it answers with exit 2 and
one line naming the problem: never a traceback, never another exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from tests.unit.test_plan_cli import FACTS
from upgrader import cli, errors
from upgrader.core.versions import Minor, Version, parse_target

cli_runner = CliRunner()
PROFILE = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def assert_one_line_input_error(result: Result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("upgrader: error: "), result.stderr
    assert all(line.startswith("  - ") for line in lines[1:]), result.stderr  # config problems, one a line


@PROFILE
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_as_cluster_yaml(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(content)
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["config", "check", "-c", str(path)]))


@PROFILE
@given(document=documents)
def test_arbitrary_yaml_as_cluster_yaml(tmp_path: Path, document: object) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(document))
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["config", "check", "-c", str(path)]))


def test_yaml_nested_past_the_parsers_limits(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["config", "check", "-c", str(path)]))


@PROFILE
@given(content=st.binary(max_size=300))
def test_arbitrary_bytes_as_a_facts_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "facts.json"
    path.write_bytes(content)
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", "1.33"]))


@PROFILE
@given(document=documents)
def test_arbitrary_json_as_a_facts_file(tmp_path: Path, document: object) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(document))
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", "1.33"]))


@PROFILE
@given(key=st.sampled_from(["cluster", "control_plane", "nodes", "etcd", "apis_in_use"]), value=documents)
def test_a_facts_file_with_one_field_replaced(tmp_path: Path, key: str, value: object) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({**FACTS, key: value}))
    result = cli_runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", "1.33"])
    if result.exit_code == 2:
        assert_one_line_input_error(result)
    else:  # an optional field replaced by nothing, say: still a plan (0) or a refused one (3)
        assert (result.exit_code in (0, 3) and result.exception is None) or isinstance(result.exception, SystemExit)


@PROFILE
@given(text=st.text(max_size=30))
def test_arbitrary_version_strings(text: str) -> None:
    for parse in (Version.parse, Minor.parse, parse_target):
        try:
            parse(text)
        except errors.InputError as exc:
            assert exc.exit_code == errors.ExitCode.USAGE and "\n" not in exc.message.strip()


@PROFILE
@given(target=st.text(max_size=30))
def test_arbitrary_targets_on_the_command_line(tmp_path: Path, target: str) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(FACTS))
    result = cli_runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", target])
    if result.exit_code == 2:
        assert_one_line_input_error(result)
    else:
        assert result.exit_code in (0, 3), result.output


@pytest.mark.parametrize("target", ["1.33\n1.34", "1.33.", "1..33", "-1.33", "1.33.0-rc.1", "１.３３"])
def test_near_miss_targets_are_input_errors(tmp_path: Path, target: str) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(FACTS))
    assert_one_line_input_error(cli_runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", target]))
