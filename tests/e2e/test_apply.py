"""``upgrader apply`` on the lab: the same playbooks, Kubernetes client and etcd client a real cluster gets."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.e2e.conftest import Labs, wait_for
from upgrader import cli
from upgrader.kube import cluster as kube
from upgrader.lab import mirror, topology
from upgrader.state import records, store
from upgrader.versions import Version

pytestmark = pytest.mark.slow
cli_runner = CliRunner()


def invoke(*args: str) -> Result:
    return cli_runner.invoke(cli.app, list(args))


def kubelets(lab: topology.Lab) -> dict[str, str]:
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        return {n.name: n.kubelet for n in api.nodes()}
    finally:
        api.close()


def test_a_kubelet_reports_its_new_version_only_after_a_restart(shared_lab: topology.Lab) -> None:
    root = shared_lab.root("w-3")
    mirror.install(shared_lab.mirror_dir, Version.parse("1.30.14"), root, ("kubelet",))
    try:
        time.sleep(2.5)  # more than a heartbeat: the Node must still say what is running
        assert kubelets(shared_lab)["w-3"] == "v1.30.6"
        restart = subprocess.run([str(root / "usr" / "bin" / "systemctl"), "restart", "kubelet"], check=False)
        assert restart.returncode == 0
        wait_for(lambda: kubelets(shared_lab)["w-3"] == "v1.30.14", timeout=10, what="w-3 at v1.30.14")
    finally:
        mirror.install(shared_lab.mirror_dir, Version.parse("1.30.6"), root, ("kubelet",))
        subprocess.run([str(root / "usr" / "bin" / "systemctl"), "restart", "kubelet"], check=True)
    wait_for(lambda: kubelets(shared_lab)["w-3"] == "v1.30.6", timeout=10, what="w-3 back at v1.30.6")


def test_apply_upgrades_a_small_cluster_one_minor_with_a_two_step_hop(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("apply1", version="1.31.13", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    planned = invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", "--db", db_url, "-o", "json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    kinds = [s["kind"] for s in plan["steps"]]
    assert "emulation-commit" in kinds, kinds
    applied = invoke("apply", plan["id"], "-c", cluster_yaml, "--db", db_url, "--yes", "-o", "json")
    assert applied.exit_code == 0, applied.output
    summary = json.loads(applied.stdout)
    assert summary["status"] == "succeeded" and all(s["status"] == "succeeded" for s in summary["steps"])
    target = plan["target"]
    assert set(kubelets(lab).values()) == {f"v{target}"}
    with store.Store.open(db_url) as state:
        run = state.run(summary["run"])
        assert run.status is records.RunStatus.SUCCEEDED
        assert len([s for s in state.snapshots(lab.name) if s.known_good]) == kinds.count("snapshot")
