"""``upgrader plan`` through the CLI: exit codes 0/3/2, the three output formats, save and show."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from upgrader import cli, errors

runner = CliRunner()

FACTS = {
    "control_plane": [
        {
            "name": "cp-1",
            "apiserver": "1.30.14",
            "kubelet": "1.30.14",
            "cgroup": "v2",
            "container_runtime": "containerd://2.1.4",
        }
    ],
    "nodes": [
        {"name": "w-1", "kubelet": "1.29.15", "cgroup": "v2", "container_runtime": "containerd://2.1.4"},
        {"name": "w-2", "kubelet": "1.28.15", "cgroup": "v2", "container_runtime": "containerd://2.1.4"},
    ],
    "etcd": {"version": "3.5.32"},
    "apis_in_use": [],
}


def run(*args: str) -> Result:
    return runner.invoke(cli.app, list(args))


@pytest.fixture
def facts_file(tmp_path: Path) -> Path:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(FACTS))
    return path


def blocked(facts_file: Path) -> Path:
    data = dict(
        FACTS, apis_in_use=[{"group": "flowcontrol.apiserver.k8s.io", "version": "v1beta3", "resource": "flowschemas"}]
    )
    facts_file.write_text(json.dumps(data))
    return facts_file


def test_executable_plan_exits_0_with_a_readable_table(facts_file: Path) -> None:
    result = run("plan", "--facts", str(facts_file), "--to", "1.33")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "-> 1.33.5" in out and "executable: yes" in out
    assert "emulation-commit" in out and "DRAINS: 5 (upgrading every node at every minor: 12, saved: 7)" in out


def test_json_output(facts_file: Path) -> None:
    result = run("plan", "--facts", str(facts_file), "--to", "1.33", "-o", "json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["target"] == "1.33.5" and body["executable"] is True and body["blockers"] == []
    assert body["summary"]["drains_per_node"] == {"cp-1": 1, "w-1": 2, "w-2": 2}


def test_markdown_output_for_change_reviews(facts_file: Path) -> None:
    result = run("plan", "--facts", str(facts_file), "--to", "1.33", "--output", "markdown")
    assert result.exit_code == 0
    assert result.stdout.startswith("## Upgrade plan `")
    assert "| # | kind | version | emulated | etcd | nodes | why |" in result.stdout


def test_blocked_plan_is_shown_and_exits_3(facts_file: Path) -> None:
    result = run("plan", "--facts", str(blocked(facts_file)), "--to", "1.33", "-o", "json")
    assert result.exit_code == 3
    body = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    assert body["executable"] is False and body["blockers"][0]["code"] == "API_REMOVED"
    assert "cannot be executed" in result.stderr


def test_refusal_exits_3_without_a_plan(facts_file: Path) -> None:
    result = run("plan", "--facts", str(facts_file), "--to", "1.29")
    assert result.exit_code == 3 and result.stdout == ""
    assert "upgrader: error: target 1.29.15 is older than the control plane" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "1.33.x"], "malformed target version"),
        (["--to", "1.33", "--max-unavailable", "0"], "--max-unavailable takes"),
        ([], "--to is required"),
    ],
)
def test_bad_input_exits_2(facts_file: Path, args: list[str], message: str) -> None:
    result = run("plan", "--facts", str(facts_file), *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_malformed_facts_file_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(dict(FACTS, nodes=[{"name": "w-1", "kubelet": "1.29"}])))
    result = run("plan", "--facts", str(path), "--to", "1.33")
    assert result.exit_code == 2
    assert f"{path}: facts: nodes[0].kubelet: malformed version '1.29'" in result.stderr
    path.write_text("{ not json")
    result = run("plan", "--facts", str(path), "--to", "1.33")
    assert result.exit_code == 2 and f"{path}:1: not valid JSON" in result.stderr


def test_plan_from_an_unreachable_cluster_is_one_line_and_exit_1(cluster_yaml: Path) -> None:
    result = run("plan", "-c", str(cluster_yaml), "--to", "1.33")  # its kubeconfig points at 127.0.0.1:9
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("upgrader: error: Kubernetes API: list nodes failed")
    assert "Traceback" not in result.output


def test_plan_needs_facts_or_a_cluster() -> None:
    result = run("plan", "--to", "1.33")
    assert result.exit_code == 2 and "-c cluster.yaml, or from a file with --facts FILE" in result.stderr


def test_cluster_config_supplies_defaults(facts_file: Path, cluster_yaml: Path) -> None:
    # the example config says max_unavailable 20% and two_step true
    result = run("plan", "--facts", str(facts_file), "-c", str(cluster_yaml), "--to", "1.33", "-o", "json")
    assert json.loads(result.stdout)["options"] == {"two_step": True, "max_unavailable": "20%"}


def test_plan_without_save_needs_no_database(facts_file: Path, tmp_path: Path) -> None:
    db = tmp_path / "never" / "state.db"
    result = run("plan", "--facts", str(facts_file), "--to", "1.33", "--db", f"sqlite:///{db}")
    assert result.exit_code == 0 and not db.parent.exists()


def test_save_and_show(facts_file: Path, db_url: str) -> None:
    saved = run("plan", "--facts", str(blocked(facts_file)), "--to", "1.33", "--save", "--db", db_url, "-o", "json")
    assert saved.exit_code == 3  # blocked plans are saved too, for the review
    plan_id = json.loads(saved.stdout)["id"]
    assert f"plan {plan_id} saved" in saved.stderr
    again = run("plan", "--facts", str(facts_file), "--to", "1.33", "--save", "--db", db_url)
    assert again.exit_code == 3 and "was already saved" in again.stderr
    shown = run("plan", "show", plan_id[:8], "--db", db_url, "-o", "json")
    assert shown.exit_code == 0, shown.output
    body = json.loads(shown.stdout)
    assert body["id"] == plan_id and body["blockers"][0]["code"] == "API_REMOVED" and body["saved_at"]
    table = run("plan", "show", plan_id, "--db", db_url)
    assert f"plan {plan_id}:" in table.stdout
    missing = run("plan", "show", "deadbeefdead", "--db", db_url)
    assert missing.exit_code == 1 and "no saved plan 'deadbeefdead'" in missing.stderr
    short = run("plan", "show", "abc", "--db", db_url)
    assert short.exit_code == 2 and "too short" in short.stderr


def test_save_records_only_the_normalised_facts_never_secrets(tmp_path: Path, db_url: str) -> None:
    from upgrader.state import store

    data = dict(
        FACTS,
        etcd={"version": "3.5.32", "members": [{"name": "cp-1"}]},
        warnings=["seen at collection"],
        token="eyJhbGciOiJSUzI1NiJ9.secret-token-value",
        kubeconfig={"users": [{"user": {"client-key-data": "TFMwdExTMUNSVWRKVGlCRlF5QlFVa2xXUVZSRklFdEZXUzB0"}}]},
    )
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(data))
    saved = run("plan", "--facts", str(path), "--to", "1.33", "--save", "--db", db_url, "-o", "json")
    plan_id = json.loads(saved.stdout)["id"]
    with store.Store.open(db_url) as state:
        recorded = state.plan(plan_id).facts
    assert recorded["etcd"] == {"version": "3.5.32"}
    assert "token" not in recorded and "kubeconfig" not in recorded and "warnings" not in recorded
    raw = (tmp_path / "state" / "state.db").read_bytes()
    assert b"secret-token-value" not in raw and b"TFMwdExTMUNSVWRKVGlC" not in raw


def test_a_failed_save_prints_one_json_document_and_no_plan(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps(FACTS))
    unrelated = tmp_path / "other.db"
    with sqlite3.connect(unrelated) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    result = run("plan", "--facts", str(path), "--to", "1.33", "--save", "--db", f"sqlite:///{unrelated}", "-o", "json")
    assert result.exit_code == 3
    document = json.loads(result.stdout)  # exactly one document: the error, not the plan and then the error
    assert document["ok"] is False and "not an upgrader state database" in document["error"]["message"]


def test_a_saved_plan_comes_back_as_typed_values_with_the_same_id(tmp_path: Path, db_url: str) -> None:
    from upgrader.core.planner import model
    from upgrader.state import store

    path = tmp_path / "facts.json"
    nodes = [dict(n, name=f"token-{i}") for i, n in enumerate(FACTS["nodes"])]  # node names that look secret
    path.write_text(json.dumps({**FACTS, "nodes": nodes}))
    saved = run("plan", "--facts", str(path), "--to", "1.33", "--save", "--db", db_url, "-o", "json")
    body = json.loads(saved.stdout)
    with store.Store.open(db_url) as state:
        stored = state.plan(body["id"])
    plan = model.Plan.from_dict(stored.body, stored.facts)
    assert plan.id == body["id"] and plan.as_dict() == body
    assert plan.steps[1].kind is model.StepKind.CONTROL_PLANE and plan.steps[1].version is not None
    tampered = dict(stored.body, target="1.34.1")
    with pytest.raises(errors.InputError, match="does not match its content"):
        model.Plan.from_dict(tampered, stored.facts)
