"""CLI conventions through Typer's CliRunner: exit codes, one-line errors, JSON output, no tracebacks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import upgrader
from upgrader import cli
from upgrader.state import db, schema

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(cli.app, list(args), env=env)


def assert_clean_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("upgrader: error: ") and message in first, result.stderr


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"upgrader {upgrader.__version__}"


def test_help_lists_the_exit_codes_and_groups() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for word in ("config", "db", "lock", "3 refused for safety", "5 needs a human"):
        assert word in result.stdout


def test_unknown_option_is_a_usage_error() -> None:
    assert run("db", "current", "--frobnicate").exit_code == 2


def test_config_check_ok(cluster_yaml: Path) -> None:
    result = run("config", "check", "-c", str(cluster_yaml))
    assert result.exit_code == 0, result.output
    assert "ok, cluster prod-eu1" in result.stdout
    assert "kube_control_plane: cp-1, cp-2, cp-3" in result.stdout
    assert "etcd: cp-1, cp-2, cp-3" in result.stdout  # children groups are flattened
    assert "kube_node: w-1, w-2" in result.stdout


def test_config_check_json_has_no_secrets(cluster_yaml: Path) -> None:
    result = run("config", "check", "-c", str(cluster_yaml), "--output", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["cluster"]["name"] == "prod-eu1"
    assert report["groups"]["kube_node"] == ["w-1", "w-2"]
    assert "hunter2" not in result.stdout and "not-a-real-token" not in result.stdout


def test_config_check_from_environment_variable(cluster_yaml: Path) -> None:
    result = run("config", "check", env={"UPGRADER_CLUSTER": str(cluster_yaml)})
    assert result.exit_code == 0, result.output


def test_config_check_lists_every_problem_and_exits_2(cluster_yaml: Path) -> None:
    cluster_yaml.write_text(cluster_yaml.read_text().replace("name: prod-eu1", "name: Prod\nbogus: 1"))
    result = run("config", "check", "-c", str(cluster_yaml))
    assert_clean_error(result, 2, "2 problems in the cluster config")
    assert f"  - {cluster_yaml}:1: name: cluster name 'Prod'" in result.stderr
    assert f"  - {cluster_yaml}:2: bogus: unknown key" in result.stderr


def test_config_check_errors_are_json_on_stdout_with_output_json(cluster_yaml: Path) -> None:
    cluster_yaml.write_text("name: [unclosed\n")
    result = run("config", "check", "-c", str(cluster_yaml), "-o", "json")
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["ok"] is False and payload["error"]["exit_code"] == 2
    assert "not valid YAML" in payload["error"]["message"]


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    assert_clean_error(run("config", "check", "-c", str(tmp_path / "x.yaml")), 2, "cluster config not found")


@pytest.mark.parametrize(
    ("inventory", "message"),
    [
        ("[kube_control_plane]\ncp-1\n[kube_node]\nw-1\n", "group 'etcd' is missing or has no hosts"),
        (
            "[kube_control_plane]\ncp-1\n[etcd]\ncp-1\n[kube_node]\nWorker_1\n",
            "host 'worker_1' is not a valid",
        ),
    ],
    ids=["missing-group", "bad-host-name"],
)
def test_inventory_problems(cluster_yaml: Path, inventory: str, message: str) -> None:
    (cluster_yaml.parent / "inventory" / "hosts.ini").write_text(inventory)
    result = run("config", "check", "-c", str(cluster_yaml))
    assert_clean_error(result, 2, "in the inventory")
    assert message in result.stderr.lower()


def test_unparseable_inventory(cluster_yaml: Path) -> None:
    (cluster_yaml.parent / "inventory" / "hosts.ini").write_text("[kube_node\nw-1\n")
    assert_clean_error(run("config", "check", "-c", str(cluster_yaml)), 2, "Ansible cannot parse this inventory")


def test_db_commands_on_a_fresh_database(db_url: str) -> None:
    current = run("db", "current", "--db", db_url, "-o", "json")
    assert current.exit_code == 0 and json.loads(current.stdout)["exists"] is False
    assert_clean_error(run("db", "check", "--db", db_url), 1, "run `upgrader db upgrade`")
    upgraded = run("db", "upgrade", "--db", db_url)
    assert upgraded.exit_code == 0 and f"-> {schema.head()}" in upgraded.stdout
    assert run("db", "check", "--db", db_url).exit_code == 0
    assert "nothing to do" in run("db", "upgrade", "--db", db_url).stdout


def test_commands_refuse_an_outdated_schema_with_exit_3(db_url: str) -> None:
    engine = db.create(db.resolve_url(db_url))
    schema.upgrade(engine, backup=False)
    schema.downgrade(engine, "0001")
    engine.dispose()
    result = run("lock", "status", "--db", db_url)
    assert_clean_error(result, 3, "run `upgrader db upgrade`")
    upgraded = run("db", "upgrade", "--db", db_url)
    assert upgraded.exit_code == 0 and "saved at" in upgraded.stdout
    assert run("lock", "status", "--db", db_url).exit_code == 0


def test_bad_database_url_exits_2_and_hides_the_password() -> None:
    assert_clean_error(run("db", "current", "--db", "not a url"), 2, "not a database URL")
    result = run("db", "current", "--db", "mysql://ops:s3cret@db.example/upgrader")
    assert_clean_error(result, 2, "unsupported database URL")
    assert "s3cret" not in result.output


def test_lock_flags_conflict(cluster_yaml: Path, db_url: str) -> None:
    result = run("lock", "status", "-c", str(cluster_yaml), "--name", "x", "--db", db_url)
    assert_clean_error(result, 2, "either -c/--cluster or --name")


def test_lock_break_needs_a_cluster(db_url: str) -> None:
    assert_clean_error(run("lock", "break", "--db", db_url), 2, "name the cluster")


def test_lock_break_of_an_unlocked_cluster(cluster_yaml: Path, db_url: str) -> None:
    assert_clean_error(run("lock", "break", "-c", str(cluster_yaml), "--db", db_url, "--yes"), 1, "not locked")


def test_lock_break_with_piped_stdin_needs_yes(db_url: str) -> None:
    from upgrader.state import lease

    engine = db.open_engine(db_url)
    lease.acquire(engine, cluster="c", command="upgrader apply")
    engine.dispose()
    # CliRunner's stdin is not a TTY, so a prompt is never shown: --yes is required.
    result = runner.invoke(cli.app, ["lock", "break", "--name", "c", "--db", db_url], input="y\n")
    assert_clean_error(result, 2, "refusing without --yes")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--window", "2 days"), "--window takes a duration like 90s, 30m or 2h, not '2 days'"),
        (("--drain-timeout", "-5s"), "--drain-timeout takes a duration like 90s, 30m or 2h, not '-5s'"),
        (("--window", "1h", "--window-end", "2026-12-02T05:00Z"), "give --window-end or --window, not both"),
        (("--window-end", "tomorrow"), "--window-end takes an ISO 8601 time like 2026-12-02T05:00Z, not 'tomorrow'"),
    ],
)
def test_apply_refuses_bad_durations_and_times_before_anything(
    cluster_yaml: Path, flags: tuple[str, ...], message: str
) -> None:
    result = run("apply", "0123456789ab", "-c", str(cluster_yaml), *flags)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_snapshot_tiers_in_the_config_are_checked_and_credentials_refused(cluster_yaml: Path) -> None:
    text = cluster_yaml.read_text()
    cluster_yaml.write_text(
        text.replace(
            "snapshots:\n",
            "snapshots:\n  tiers: [local, s3]\n  require: [local, peer]\n"
            "  s3:\n    bucket: Not_A_Bucket\n    aws_secret_access_key: hunter2hunter2\n",
        )
    )
    result = run("config", "check", "-c", str(cluster_yaml))
    assert result.exit_code == 2, result.output
    assert "credentials never go in cluster.yaml" in result.stderr
    assert "hunter2hunter2" not in result.output
    cluster_yaml.write_text(text.replace("snapshots:\n", "snapshots:\n  tiers: [local, s3]\n  require: [peer]\n"))
    result = run("config", "check", "-c", str(cluster_yaml))
    assert result.exit_code == 2 and "require names tiers that are not in tiers: peer" in result.stderr, result.output


def test_snapshot_verify_refuses_a_bad_tier_and_needs_the_config_for_peer_and_s3(db_url: str) -> None:
    assert_clean_error(run("snapshot", "verify", "x", "--db", db_url, "--tier", "tape"), 2, "no tier 'tape'")
    assert_clean_error(
        run("snapshot", "verify", "x", "--db", db_url, "--tier", "peer"), 2, "needs the cluster's config"
    )


def test_snapshot_keygen_writes_a_private_key_once(tmp_path: Path) -> None:
    key = tmp_path / "snap.key"
    made = run("snapshot", "keygen", str(key))
    assert made.exit_code == 0 and "key id" in made.stdout, made.output
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_text().strip()) == 64
    assert_clean_error(run("snapshot", "keygen", str(key)), 3, "never overwritten")


def test_a_postgresql_url_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as on a machine where the extra is not installed
    result = run("db", "current", "--db", "postgresql://ops:s3cret@db.example/upgrader")
    assert_clean_error(result, 2, "needs the PostgreSQL driver psycopg: pip install 'upgrader[postgres]'")
    assert "s3cret" not in result.output


def test_the_database_url_can_come_from_a_private_file(tmp_path: Path) -> None:
    url_file = tmp_path / "db.url"
    url_file.write_text(f"sqlite:///{tmp_path / 'state.db'}\n")
    url_file.chmod(0o600)
    assert run("db", "upgrade", "--db", f"@{url_file}").exit_code == 0
    current = run("db", "current", "--db", f"@{url_file}", "-o", "json")
    assert current.exit_code == 0 and json.loads(current.stdout)["up_to_date"] is True, current.output
    url_file.chmod(0o644)
    assert_clean_error(run("db", "current", "--db", f"@{url_file}"), 2, "readable by others: chmod 600 it")
    secret = tmp_path / "pg.url"
    secret.write_text("mysql://ops:s3cret@db.example/upgrader\n")
    secret.chmod(0o600)
    result = run("db", "current", "--db", f"@{secret}")
    assert_clean_error(result, 2, "unsupported database URL")
    assert "s3cret" not in result.output
    assert_clean_error(run("db", "current", "--db", f"@{tmp_path / 'absent'}"), 2, "cannot read the database URL")
