"""``upgrader verify`` on the lab: the gates on their own, and the cluster against a snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from typer.testing import CliRunner, Result

from tests.e2e.test_hardening import lab_config
from upgrader import cli
from upgrader.lab import topology

pytestmark = pytest.mark.slow
cli_runner = CliRunner()


def invoke(*args: str) -> Result:
    return cli_runner.invoke(cli.app, list(args))


def test_verify_checks_the_gates_a_version_and_a_snapshot_naming_what_differs(
    shared_lab: topology.Lab, tmp_path: Path
) -> None:
    cluster_yaml = str(lab_config(shared_lab, tmp_path))
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")

    healthy = invoke("verify", "-c", cluster_yaml, "-o", "json")
    assert healthy.exit_code == 0, healthy.output
    assert json.loads(healthy.stdout)["ok"] is True

    wrong = invoke("verify", "-c", cluster_yaml, "--expect", "1.31.13", "-o", "json")
    assert wrong.exit_code == 1, wrong.output
    failed = [c["detail"] for c in json.loads(wrong.stdout)["checks"] if not c["ok"]]
    assert any("the apiserver on cp-2 serves v1.30.6 emulating 1.30, the plan expects v1.31.13" in d for d in failed)
    assert any("node w-3 runs kubelet v1.30.6, the plan expects v1.31.13" in d for d in failed)
    assert "does not match v1.31.13" in wrong.stderr

    core = k8s.CoreV1Api(k8s_config.new_client_from_config(str(shared_lab.kubeconfig)))
    kept = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="kept-by-the-snapshot"), data={"a": "b"})
    core.create_namespaced_config_map("default", kept)
    created = invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json")
    assert created.exit_code == 0, created.output
    snapshot_id = json.loads(created.stdout)["id"]
    same = invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, *db, "-o", "json")
    assert same.exit_code == 0, same.output
    checks = {c["check"]: c for c in json.loads(same.stdout)["checks"]}
    assert checks["manifest"]["detail"] == "12 manifests match the snapshot's"  # 4 per control-plane node
    assert checks["etcd members"]["ok"] and checks["etcd revision"]["ok"]
    assert checks["etcd keys"]["detail"].startswith("all ") and "keys are there" in checks["etcd keys"]["detail"]

    # Issue 19, item 4: a key the snapshot had and the cluster lost is named (it used to set a key count
    # beside the snapshot's count of revisions, a line that could not fail).
    core.delete_namespaced_config_map("kept-by-the-snapshot", "default")
    try:
        lost = invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, *db, "-o", "json")
    finally:
        core.create_namespaced_config_map("default", kept)
    assert lost.exit_code == 1, lost.output
    keys = {c["check"]: c for c in json.loads(lost.stdout)["checks"]}["etcd keys"]
    assert not keys["ok"] and "1 of the snapshot's" in keys["detail"]
    assert "/registry/configmaps/default/kept-by-the-snapshot" in keys["detail"]
    assert invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, *db).exit_code == 0  # back: passes

    # a manifest changed on one node: named, file and node
    manifest = shared_lab.root("cp-2") / "etc" / "kubernetes" / "manifests" / "kube-scheduler.yaml"
    original = manifest.read_bytes()
    manifest.write_bytes(original + b"# edited by hand\n")
    try:
        edited = invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, *db)
    finally:
        manifest.write_bytes(original)
    assert edited.exit_code == 1, edited.output
    assert "cp-2/manifests/kube-scheduler.yaml differs from the snapshot's" in edited.stdout
    assert "FAILED" in edited.stdout and "does not match snapshot" in edited.stderr

    # a damaged snapshot is no reference; an unknown one is bad input
    archive = Path(json.loads(invoke("snapshot", "show", snapshot_id, *db, "-o", "json").stdout)["archive_path"])
    archive.write_bytes(archive.read_bytes() + b"tampered")
    damaged = invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, *db)
    assert damaged.exit_code == 3 and "fails its own verification (archive:" in damaged.stderr, damaged.output
    unknown = invoke("verify", "-c", cluster_yaml, "--against", "nosuchsnapshot", *db)
    assert unknown.exit_code == 2 and "no snapshot 'nosuchsnapshot'" in unknown.stderr, unknown.output
    both = invoke("verify", "-c", cluster_yaml, "--against", snapshot_id, "--expect", "1.30.6", *db)
    assert both.exit_code == 2 and "not both" in both.stderr
