"""External etcd on hosts of its own, as Kubespray installs it (a systemd unit and /etc/etcd.env, members
etcd1..etcd3 named by the inventory's etcd_member_name): kubeadm never moves it, so upgrader does, where
the catalog says the hop needs a newer one: an etcd step replaces each host's binary with the release
from the lab's mirror (checked against its SHA256SUMS) and restarts the unit, one member at a time. A
full-restore rollback then rebuilds every member on its own host from the same snapshot and is verified.

The members start on Debian's etcd 3.5.16; the catalog's etcd for 1.34 on etcd hosts is Kubespray's
3.5.33, which the lab's catalog lowers to its newest 3.5 binary (3.5.30), as it does 3.5's minimum."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Labs
from tests.e2e.test_apply import invoke, why
from upgrader.core.versions import Version
from upgrader.lab import create, topology

pytestmark = pytest.mark.slow

OLD, NEW = "3.5.16", "3.5.30"


def _binary_version(lab: topology.Lab, node: topology.LabNode) -> str:
    binary = lab.root(node) / lab.layout.bin_dir.lstrip("/") / "etcd"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[0].removeprefix("etcd Version: ")


@pytest.mark.skipif(
    not {Version.parse(OLD), Version.parse(NEW)} <= set(create.find_etcds()),
    reason="needs Debian's etcd 3.5.16 and 3.5.30 (./bootstrap.sh unpacks them)",
)
@pytest.mark.long
def test_external_etcd_step_on_its_hosts_then_a_full_restore_on_them(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up(
        "external",
        version="1.33.5",
        control_planes=1,
        workers=0,
        etcd_nodes=3,
        layout=topology.Layout.KUBESPRAY,
        etcd_version=OLD,
    )
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    facts = json.loads(invoke("facts", "-c", cluster_yaml, "-o", "json").stdout)
    assert facts["etcd"]["external"] is True and facts["etcd"]["version"] == OLD
    assert facts["etcd"]["hosts"] == [{"host": f"etcd-{i}", "member": f"etcd{i}"} for i in (1, 2, 3)]

    catalog = str(lab.dir / create.LAB_CATALOG)
    made = invoke(
        "plan", "-c", cluster_yaml, "--to", "1.34", "--one-step", "--catalog", catalog, "--save", *db, "-o", "json"
    )
    assert made.exit_code == 0, why(made)
    plan = json.loads(made.stdout)
    etcd_step = next(s for s in plan["steps"] if s["kind"] == "etcd")
    assert (etcd_step["version"], etcd_step["nodes"]) == (NEW, ["etcd-1", "etcd-2", "etcd-3"])
    assert "Kubespray" in etcd_step["reason"]
    hop = next(s for s in plan["steps"] if s["kind"] == "control-plane")
    assert (hop["etcd_mover"], hop["etcd"]) == ("external: not kubeadm's", NEW)
    dry = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--dry-run")
    assert dry.exit_code == 0, why(dry)
    assert f"etcd-1: upgrade-etcd-service.yml etcd_version={NEW}" in dry.stdout
    assert f"{lab.mirror_url}/etcd" in dry.stdout and "member etcd1" in dry.stdout

    # The etcd step and the hop: the cluster's kubelet stays at 1.33, so neither side drains a node.
    applied = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "--pause-after", "hop")
    assert applied.exit_code == 6, why(applied)
    for node in lab.etcd_nodes:
        assert _binary_version(lab, node) == NEW
        kept = lab.root(node) / "var" / "lib" / "upgrader" / "etcd"
        assert (kept.stat().st_mode & 0o777) == 0o700 and (kept / f"etcd-{OLD}").is_file()  # for a put-back
        assert not list(kept.glob("*.tar.gz")), "the downloaded release is removed once unpacked"
    assert json.loads(invoke("facts", "-c", cluster_yaml, "-o", "json").stdout)["etcd"]["version"] == NEW
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
