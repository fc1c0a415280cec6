"""``upgrader lab`` commands through the CLI: what they write, and their errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from upgrader import cli
from upgrader.lab import manifests, topology

runner = CliRunner()


def test_create_writes_a_lab_that_config_check_accepts(tmp_path: Path) -> None:
    created = runner.invoke(cli.app, ["lab", "create", str(tmp_path / "lab"), "--workers", "2", "-o", "json"])
    assert created.exit_code == 0, created.output
    info = json.loads(created.stdout)
    assert [n["name"] for n in info["nodes"]] == ["cp-1", "cp-2", "cp-3", "w-1", "w-2"]
    lab = topology.load(tmp_path / "lab")
    apiserver = manifests.read(lab.manifests("cp-2") / "kube-apiserver.yaml")
    assert apiserver["spec"]["containers"][0]["image"] == "registry.k8s.io/kube-apiserver:v1.30.6"
    assert "--etcd-servers=https://127.0.0.1:2379" in apiserver["spec"]["containers"][0]["command"]
    etcd = manifests.read(lab.manifests("cp-2") / "etcd.yaml")
    assert {"name": "etcd-data", "hostPath": {"path": "/var/lib/etcd", "type": "DirectoryOrCreate"}} in etcd["spec"][
        "volumes"
    ]
    assert (lab.root("w-1") / "usr" / "bin" / "kubelet").is_file()
    assert not (lab.root("w-1") / "etc" / "kubernetes" / "manifests" / "etcd.yaml").exists()
    key = lab.root("cp-1") / "etc" / "kubernetes" / "pki" / "etcd" / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    inventory = (lab.dir / "inventory" / "hosts.ini").read_text()
    assert f"node_root={lab.root('cp-1')}" in inventory and "ansible_connection=local" in inventory
    checked = runner.invoke(cli.app, ["config", "check", "-c", str(lab.dir / "cluster.yaml")])
    assert checked.exit_code == 0, checked.output
    status = runner.invoke(cli.app, ["lab", "status", str(lab.dir)])
    assert status.exit_code == 0 and f"lab {lab.name} is down" in status.stdout


def test_create_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "precious").write_text("keep me")
    result = runner.invoke(cli.app, ["lab", "create", str(tmp_path / "lab")])
    assert result.exit_code == 3 and "exists and is not empty" in result.stderr
    assert (tmp_path / "lab" / "precious").read_text() == "keep me"


def test_create_bad_input(tmp_path: Path) -> None:
    bad = runner.invoke(cli.app, ["lab", "create", str(tmp_path / "a"), "--version", "1.30"])
    assert bad.exit_code == 2 and "malformed version" in bad.stderr
    unknown = runner.invoke(cli.app, ["lab", "create", str(tmp_path / "b"), "--version", "1.30.99"])
    assert unknown.exit_code == 2 and "not a release the rules catalog knows" in unknown.stderr
    too_many = runner.invoke(cli.app, ["lab", "create", str(tmp_path / "c"), "--control-planes", "10"])
    assert too_many.exit_code == 2 and "--control-planes must be 1 to 9" in too_many.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_commands_on_something_that_is_not_a_lab(tmp_path: Path) -> None:
    result = runner.invoke(cli.app, ["lab", "status", str(tmp_path)])
    assert result.exit_code == 2 and "is not a lab (no lab.json)" in result.stderr


def test_fault_names_are_checked_and_faults_recorded(tmp_path: Path) -> None:
    runner.invoke(cli.app, ["lab", "create", str(tmp_path / "lab"), "--control-planes", "1", "--workers", "1"])
    unknown = runner.invoke(cli.app, ["lab", "fault", str(tmp_path / "lab"), "meltdown"])
    assert unknown.exit_code == 2 and "unknown fault 'meltdown'" in unknown.stderr
    no_node = runner.invoke(cli.app, ["lab", "fault", str(tmp_path / "lab"), "slow", "--node", "cp-9"])
    assert no_node.exit_code == 2 and "no node 'cp-9'" in no_node.stderr
    done = runner.invoke(cli.app, ["lab", "fault", str(tmp_path / "lab"), "slow", "--node", "w-1"])
    assert done.exit_code == 0 and "w-1: slow" in done.stdout
    cleared = runner.invoke(cli.app, ["lab", "fault", str(tmp_path / "lab"), "--node", "w-1", "--clear"])
    assert cleared.exit_code == 0 and "active faults: none" in cleared.stdout


def test_destroy_needs_yes_without_a_terminal(tmp_path: Path) -> None:
    runner.invoke(cli.app, ["lab", "create", str(tmp_path / "lab"), "--control-planes", "1", "--workers", "0"])
    refused = runner.invoke(cli.app, ["lab", "destroy", str(tmp_path / "lab")])
    assert refused.exit_code == 2 and (tmp_path / "lab").exists()
    done = runner.invoke(cli.app, ["lab", "destroy", str(tmp_path / "lab"), "--yes"])
    assert done.exit_code == 0 and not (tmp_path / "lab").exists()
