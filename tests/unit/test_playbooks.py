"""What reaches Ansible for the upgrade playbooks: rendered package variables per method, checked node
limits, and every playbook accepted by ansible-playbook itself (the apt and dnf paths cannot run here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from upgrader import errors
from upgrader.core import config
from upgrader.core.versions import Version
from upgrader.executor import inventory, rendering
from upgrader.support import bundled


def settings(method: str, mirror: str | None = None) -> config.PackageSettings:
    return config.PackageSettings(method=config.PackageMethod(method), mirror=mirror)


def test_apt_gets_the_per_minor_pkgs_k8s_io_repository() -> None:
    out = rendering.package_vars(settings("apt"), Version.parse("1.32.9"))
    assert out == {
        "package_method": "apt",
        "version": "1.32.9",
        "minor": "1.32",
        "apt_repository_url": "https://pkgs.k8s.io/core:/stable:/v1.32/deb/",
        # each minor's repository has its own signing key, fetched again with every repository change
        "apt_key_url": "https://pkgs.k8s.io/core:/stable:/v1.32/deb/Release.key",
    }


def test_dnf_gets_the_per_minor_rpm_repository_and_a_mirror_replaces_the_host() -> None:
    out = rendering.package_vars(settings("dnf", "https://mirror.internal/k8s/"), Version.parse("1.31.13"))
    assert out["dnf_repository_url"] == "https://mirror.internal/k8s/core:/stable:/v1.31/rpm/"


def test_binary_downloads_from_the_mirror() -> None:
    out = rendering.package_vars(settings("binary", "http://127.0.0.1:8080"), Version.parse("1.33.5"))
    assert out == {"package_method": "binary", "version": "1.33.5", "minor": "1.33", "mirror": "http://127.0.0.1:8080"}


@pytest.mark.parametrize("name", ["all", "cp-1,cp-2", "../x", "w-1:&web", ""])
def test_a_limit_is_only_ever_node_names(name: str) -> None:
    with pytest.raises(errors.InputError):
        rendering.node_limit(name)


@pytest.mark.parametrize("playbook", sorted(p.name for p in bundled.playbooks_dir().glob("*.yml")))
def test_every_playbook_passes_ansible_syntax_check(playbook: str, cluster_yaml: Path) -> None:
    tool = inventory.tool("ansible-playbook")
    done = subprocess.run(
        [tool, "--syntax-check", "-i", str(cluster_yaml.parent / "inventory" / "hosts.ini"), playbook],
        cwd=bundled.playbooks_dir(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("method", ["apt", "dnf", "binary"])
def test_rollback_node_hands_every_package_variable_to_the_package_tasks(method: str) -> None:
    """rollback-node.yml passes the package variables of two versions by name: one it forgets is undefined
    there (the apt path's key URL was, and only a real apt run on the lab showed it)."""
    import yaml

    play = yaml.safe_load((bundled.playbooks_dir() / "rollback-node.yml").read_text())[0]
    includes = [t for t in play["tasks"] if t.get("ansible.builtin.include_tasks") == "tasks/packages.yml"]
    variables = rendering.package_vars(settings(method, "http://127.0.0.1:8080"), Version.parse("1.32.9"))
    assert len(includes) == 2
    for task in includes:
        assert set(variables) <= set(task["vars"]), set(variables) - set(task["vars"])
