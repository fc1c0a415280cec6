"""Nodes as SREs run them (issue 18): Kubespray's layout, with binaries in its bin_dir and its own
kubelet unit, upgraded through the inventory's ``bin_dir``; a bin_dir that disagrees with the unit is
refused before anything changes; kubeadm patches are kept across a hop, and refused when unnamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.e2e.conftest import Labs
from tests.e2e.test_apply import kubelets
from tests.e2e.test_rollback import ONE_STEP
from upgrader import cli
from upgrader.lab import aptrepo, mirror, topology

cli_runner = CliRunner()


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return cli_runner.invoke(cli.app, list(args))


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

    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json", *ONE_STEP).stdout)
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


def _another_key(tmp_path: Path) -> str:
    import subprocess

    home = tmp_path / "other-gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home)]
    try:
        subprocess.run(
            [*gpg, "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key", "x <x@invalid>", "ed25519"],
            check=True,
            capture_output=True,
        )
        return subprocess.run([*gpg, "--armor", "--export"], check=True, capture_output=True, text=True).stdout
    finally:
        aptrepo.stop_agent(home)


def _ssh_ready() -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "the lab's SSH mode adds its users: run the tests as root"
    if not Path("/usr/sbin/sshd").is_file() or shutil.which("sudo") is None or shutil.which("gpg") is None:
        return "openssh-server, sudo or gnupg is not installed (bootstrap.sh test installs them)"
    if shutil.which("dpkg-deb") is None or (
        not Path("/usr/lib/python3/dist-packages/apt_pkg.pyi").exists()
        and (not list(Path("/usr/lib/python3/dist-packages").glob("apt_pkg*.so")))
    ):
        return "dpkg-deb or python3-apt is not installed (bootstrap.sh test installs them)"
    return None


def _packages(lab: topology.Lab, node: str) -> dict[str, str]:
    """What the node's own dpkg database says: package -> "version selection"."""
    import subprocess

    from upgrader.lab import aptrepo

    env = {**os.environ, **aptrepo.environment(lab.root(node))}
    listed = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", "kubeadm", "kubelet", "kubectl"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    held = subprocess.run(["dpkg", "--get-selections"], env=env, capture_output=True, text=True, check=True).stdout
    selection = dict(line.split() for line in held.splitlines())
    return {name: f"{version} {selection[name]}" for name, version in (line.split() for line in listed if line)}


@pytest.mark.long
@pytest.mark.skipif(_ssh_ready() is not None, reason=str(_ssh_ready()))
def test_over_ssh_with_sudo_and_real_apt_an_upgrade_and_a_rollback(labs: Labs, tmp_path: Path) -> None:
    """Every node behind a real sshd on its own address, reached as upgrader-lab with host-key checking on,
    becoming root with sudo, as most inventories log in; packages from the lab's signed pkgs.k8s.io-shaped
    repositories through the real apt-get, dpkg and python-apt on each node's own dpkg database."""
    lab = labs.up("overssh", version="1.31.13", control_planes=1, workers=1, ssh=True, packages="apt")
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

    assert _packages(lab, "w-1") == dict.fromkeys(("kubeadm", "kubectl", "kubelet"), "1.31.13-1.1 hold")
    before = json.loads(invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json").stdout)["id"]
    plan = json.loads(invoke("plan", "-c", cluster_yaml, "--to", "1.32", "--save", *db, "-o", "json", *ONE_STEP).stdout)

    # The v1.32 repository's published key is not the one that signed it: apt refuses, the step fails
    # naming the node and the cause, and nothing is installed; with the right key the run resumes.
    published = lab.mirror_dir / "core:" / "stable:" / "v1.32" / "deb" / "Release.key"
    right_key = published.read_text()
    published.write_text(_another_key(tmp_path))
    failed = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert failed.exit_code == 1, failed.output
    assert "cp-1: upgrader: apt install at v1.32.9" in failed.stderr, failed.stderr
    assert "GPG error: " in failed.stderr and "/core:/stable:/v1.32/deb" in failed.stderr
    assert _packages(lab, "cp-1") == dict.fromkeys(("kubeadm", "kubectl", "kubelet"), "1.31.13-1.1 hold")
    published.write_text(right_key)
    done = invoke("apply", "--resume", json.loads(failed.stdout)["run"], "-c", cluster_yaml, *db, "-o", "json")
    assert done.exit_code == 0, done.output
    assert set(kubelets(lab).values()) == {f"v{plan['target']}"}
    for node in ("cp-1", "w-1"):  # installed at the pinned version and held again
        assert _packages(lab, node) == dict.fromkeys(("kubeadm", "kubectl", "kubelet"), "1.32.9-1.1 hold")
    rolled = invoke("rollback", "-c", cluster_yaml, *db, "--to", before, "--yes", "-o", "json")
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout)["rollback"]["route"] == "full-restore"
    assert set(kubelets(lab).values()) == {"v1.31.13"}
    assert _packages(lab, "w-1") == {
        "kubeadm": "1.31.13-1.1 hold",  # a worker's kubeadm goes to the restored control plane's version
        "kubectl": "1.31.13-1.1 hold",
        "kubelet": "1.31.13-1.1 hold",
    }
    placed = lab.root("cp-1") / "var" / "lib" / "upgrader" / "bin"
    assert [p.stat().st_uid for p in placed.iterdir()] == [0]  # written as root, through sudo
