"""External etcd on hosts of its own, as Kubespray installs it (a systemd unit and /etc/etcd.env, members
etcd1..etcd3): the plan says kubeadm never moves it, an upgrade leaves it alone, and a full-restore
rollback rebuilds every member on its own host from the same snapshot and is verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import Labs
from tests.e2e.test_apply import invoke, why
from upgrader.lab import topology

pytestmark = pytest.mark.slow


def test_external_etcd_upgrade_and_full_restore_on_its_own_hosts(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up(
        "external", version="1.32.9", control_planes=1, workers=0, etcd_nodes=3, layout=topology.Layout.KUBESPRAY
    )
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    facts = json.loads(invoke("facts", "-c", cluster_yaml, "-o", "json").stdout)
    assert facts["etcd"]["external"] is True
    assert sorted(m["name"] for m in facts["etcd"]["members"]) == ["etcd1", "etcd2", "etcd3"]

    made = invoke("plan", "-c", cluster_yaml, "--to", "1.33", "--one-step", "--save", *db, "-o", "json")
    assert made.exit_code == 0, why(made)
    plan = json.loads(made.stdout)
    assert not any(s["kind"] == "etcd" for s in plan["steps"])  # external etcd: kubeadm never moves it
    hop = next(s for s in plan["steps"] if s["kind"] == "control-plane")
    assert hop["etcd_mover"] == "external: not kubeadm's"
    # The hop only: its kubelets stay at 1.32, so neither the apply nor the rollback drains a node.
    applied = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "--pause-after", "hop")
    assert applied.exit_code == 6, why(applied)
    env_before = {n.name: (lab.root(n) / "etc" / "etcd.env").read_bytes() for n in lab.etcd_nodes}

    dry = invoke("rollback", "-c", cluster_yaml, *db, "--dry-run", "-o", "json")
    assert dry.exit_code == 0, why(dry)
    route = json.loads(dry.stdout)
    assert route["route"] == "full-restore"
    steps = {s["kind"]: s for s in route["steps"]}
    assert steps["restore-etcd"]["nodes"] == ["etcd-1", "etcd-2", "etcd-3"]
    assert "systemctl stop etcd" in " ".join(steps["hold-etcd"]["actions"])

    back = invoke("rollback", "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert back.exit_code == 0, why(back)
    verified = invoke("verify", "-c", cluster_yaml, *db, "--against", route["snapshot"])
    assert verified.exit_code == 0, why(verified)
    for node in lab.etcd_nodes:
        root = lab.root(node)
        assert (root / "etc" / "etcd.env").read_bytes() == env_before[node.name]  # the member keeps its name
        assert (root / "var" / "lib" / "etcd" / "member").is_dir()
        assert not list((root / "var" / "lib").glob("etcd.before-*")), "the old data is removed once verified"
    status = json.loads(invoke("lab", "status", str(lab.dir), "-o", "json").stdout)
    assert all(status["components"][n.name]["etcd.service"]["state"] == "active" for n in lab.etcd_nodes)
