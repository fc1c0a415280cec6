"""Nodes as SREs run them (issue 18): Kubespray's layout, with binaries in its bin_dir and its own
kubelet unit, upgraded through the inventory's ``bin_dir``; a bin_dir that disagrees with the unit is
refused before anything changes; kubeadm patches are kept across a hop, and refused when unnamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.e2e.conftest import Labs
from upgrader import cli
from upgrader.kube import cluster as kube
from upgrader.lab import mirror, topology

cli_runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return cli_runner.invoke(cli.app, list(args))


def kubelets(lab: topology.Lab) -> dict[str, str]:
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        return {n.name: n.kubelet for n in api.nodes()}
    finally:
        api.close()


def test_a_kubespray_laid_out_cluster_upgrades_through_its_bin_dir(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("kubespray", version="1.31.13", control_planes=1, workers=1, layout=topology.Layout.KUBESPRAY)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    root = lab.root("w-1")
    assert (root / "etc" / "systemd" / "system" / "kubelet.service").is_file()
    assert not (root / "usr" / "bin" / "kubelet").exists()  # nothing where the packages would put it

    # The inventory's bin_dir is what the unit runs; cluster.yaml says nothing of it (default /usr/bin).
    # An inventory without it: upgrader would install into /usr/bin while systemd runs /usr/local/bin.
    inventory = lab.dir / "inventory" / "hosts.ini"
    wrong = lab.dir / "inventory" / "no-bin-dir.ini"
    wrong.write_text(inventory.read_text().replace("bin_dir=/usr/local/bin\n", ""))
    wrong_yaml = lab.dir / "wrong.yaml"
    wrong_yaml.write_text(Path(cluster_yaml).read_text().replace("inventory/hosts.ini", "inventory/no-bin-dir.ini"))
    for args in (["facts"], ["plan", "--to", "1.32", *db]):
        refused = invoke(*args, "-c", str(wrong_yaml))
        assert refused.exit_code == 2, refused.output
        assert "the kubelet unit runs /usr/local/bin/kubelet, but upgrader would install the kubelet into /usr/bin" in (
            refused.stderr
        )
        assert "set packages.bin_dir (or the inventory's bin_dir) to /usr/local/bin" in refused.stderr

    # kubeadm patches on cp-1 (kubeadm init --patches left them there): unnamed, every upgrade would drop
    # them, so nothing starts; named, every kubeadm upgrade command gets --patches and they survive the hop.
    patches = lab.root("cp-1") / "etc" / "kubernetes" / "patches"
    patches.mkdir(parents=True)
    (patches / "kube-apiserver+merge.yaml").write_text("metadata:\n  annotations:\n    example.com/patched: kept\n")
    unnamed = invoke("plan", "-c", cluster_yaml, "--to", "1.32", *db)
    assert unnamed.exit_code == 2, unnamed.output
    assert "cp-1 has kubeadm patches in /etc/kubernetes/patches (1 files) that upgrade.kubeadm_patches" in (
        unnamed.stderr
    )
    config = yaml.safe_load(Path(cluster_yaml).read_text())
    config["upgrade"]["kubeadm_patches"] = "/etc/kubernetes/no-such-patches"
    Path(cluster_yaml).write_text(yaml.safe_dump(config))
    missing = invoke("plan", "-c", cluster_yaml, "--to", "1.32", *db)
    assert missing.exit_code == 2 and "which cp-1 does not have; nothing was changed" in missing.stderr
    config["upgrade"]["kubeadm_patches"] = "/etc/kubernetes/patches"
    Path(cluster_yaml).write_text(yaml.safe_dump(config))

    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)
    dry = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--dry-run")
    assert dry.exit_code == 0 and "kubeadm upgrade apply v1.32" in dry.stdout
    assert "--yes --patches /etc/kubernetes/patches" in dry.stdout
    done = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert done.exit_code == 0, done.output
    assert set(kubelets(lab).values()) == {f"v{plan['target']}"}
    apiserver = yaml.safe_load((lab.manifests("cp-1") / "kube-apiserver.yaml").read_text())
    assert apiserver["metadata"]["annotations"]["example.com/patched"] == "kept"
    assert apiserver["spec"]["containers"][0]["image"].endswith(f":v{plan['target']}")
    for node in ("cp-1", "w-1"):  # installed where the unit runs it, and nowhere else
        installed = lab.root(node) / "usr" / "local" / "bin" / "kubelet"
        assert str(mirror.installed_version(installed)) == plan["target"]
        assert not (lab.root(node) / "usr" / "bin" / "kubelet").exists()


def _ssh_ready() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "the lab's SSH mode adds its users: run the tests as root"
    if not Path("/usr/sbin/sshd").is_file() or shutil.which("sudo") is None:
        return "openssh-server and sudo are not installed (bootstrap.sh test installs them)"
    return None


@pytest.mark.skipif(_ssh_ready() is not None, reason=str(_ssh_ready()))
def test_over_ssh_as_a_user_that_becomes_root_an_upgrade_and_a_rollback(labs: Labs, tmp_path: Path) -> None:
    """Every node behind a real sshd on its own address, reached as upgrader-lab with host-key checking on,
    becoming root with sudo: as most inventories log in."""
    lab = labs.up("overssh", version="1.31.13", control_planes=1, workers=1, ssh=True)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    assert yaml.safe_load(Path(cluster_yaml).read_text())["ansible"]["become"] is True

    # A login user that may not become root, and one that may but is not told to: one line each, nothing run.
    inventory = lab.dir / "inventory" / "hosts.ini"
    (lab.dir / "inventory" / "nosudo.ini").write_text(
        inventory.read_text().replace("ansible_user=upgrader-lab\n", "ansible_user=upgrader-lab-nosudo\n")
    )
    nosudo = lab.dir / "nosudo.yaml"
    nosudo.write_text(Path(cluster_yaml).read_text().replace("inventory/hosts.ini", "inventory/nosudo.ini"))
    refused = invoke("plan", "-c", str(nosudo), "--to", "1.32", *db)
    assert refused.exit_code == 1, refused.output
    assert "Missing sudo password" in refused.stderr and "need root there" in refused.stderr
    unbecome = yaml.safe_load(Path(cluster_yaml).read_text())
    unbecome["ansible"]["become"] = False
    (lab.dir / "plain.yaml").write_text(yaml.safe_dump(unbecome))
    checked = invoke("config", "check", "-c", str(lab.dir / "plain.yaml"), "-o", "json")
    assert any("nothing becomes root" in w for w in json.loads(checked.stdout)["warnings"])
    plain = invoke("plan", "-c", str(lab.dir / "plain.yaml"), "--to", "1.32", *db)
    assert plain.exit_code == 2 and "not root, and kubeadm refuses a non-root user" in plain.stderr, plain.output

    before = json.loads(invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json").stdout)["id"]
    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json").stdout)
    done = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert done.exit_code == 0, done.output
    assert set(kubelets(lab).values()) == {f"v{plan['target']}"}
    rolled = invoke("rollback", "-c", cluster_yaml, *db, "--to", before, "--yes", "-o", "json")
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout)["rollback"]["route"] == "full-restore"
    assert set(kubelets(lab).values()) == {"v1.31.13"}
    placed = lab.root("cp-1") / "var" / "lib" / "upgrader" / "bin"
    assert [p.stat().st_uid for p in placed.iterdir()] == [0]  # written as root, through sudo
