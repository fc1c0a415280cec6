"""playbooks/upgrade-etcd.yml, run by ansible-runner on a node root of its own: the version in the etcd
image tag changes and nothing else; a manifest it cannot change safely is left as it was."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from upgrader.executor import inventory, runner

MANIFEST = """apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - command:
    - etcd
    - --data-dir=/var/lib/etcd
    image: {image}
    imagePullPolicy: IfNotPresent
    name: etcd
"""


def _run(tmp_path: Path, manifest: str, version: str) -> tuple[runner.PlaybookResult, Path]:
    root = tmp_path / "cp-1"
    manifests = root / "etc" / "kubernetes" / "manifests"
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text(manifest)
    (manifests / "etcd.yaml").chmod(0o600)
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(
        f"[kube_control_plane]\ncp-1 node_root={root}\n[etcd:children]\nkube_control_plane\n"
        "[kube_node]\n[k8s_cluster:children]\nkube_control_plane\nkube_node\n"
        f"[all:vars]\nansible_connection=local\nansible_python_interpreter={sys.executable}\n"
    )
    request = runner.PlaybookRequest(
        playbook="upgrade-etcd.yml", inventory=inventory.load(hosts), extravars={"etcd_version": version}
    )
    return runner.run(request), manifests / "etcd.yaml"


@pytest.mark.parametrize(
    ("image", "after"),
    [
        ("registry.k8s.io/etcd:3.5.24-0", "registry.k8s.io/etcd:3.5.32-0"),  # kubeadm's form
        ('"registry.k8s.io/etcd:3.5.24-0"', '"registry.k8s.io/etcd:3.5.32-0"'),
        ("gcr.io/etcd-development/etcd:v3.5.24", "gcr.io/etcd-development/etcd:v3.5.32"),  # etcd's own
        ("mirror.example:5000/k8s/etcd:3.5.24-0", "mirror.example:5000/k8s/etcd:3.5.32-0"),  # a port, a path
    ],
)
def test_only_the_version_in_the_image_tag_changes(tmp_path: Path, image: str, after: str) -> None:
    result, manifest = _run(tmp_path, MANIFEST.format(image=image), "3.5.32")
    assert result.status is runner.Status.SUCCESSFUL, result.failures()
    assert manifest.read_text() == MANIFEST.format(image=after)
    assert manifest.stat().st_mode & 0o777 == 0o600
    kept = manifest.parents[3] / "var" / "lib" / "upgrader" / "etcd"
    assert (kept / "etcd.yaml.before").read_text() == MANIFEST.format(image=image)
    assert kept.stat().st_mode & 0o777 == 0o700
    again, _ = _run(tmp_path / "again", MANIFEST.format(image=after), "3.5.32")
    assert again.status is runner.Status.SUCCESSFUL and not any(t.changed for t in again.tasks)


def test_a_manifest_whose_image_is_not_etcd_is_left_as_it_was(tmp_path: Path) -> None:
    text = MANIFEST.format(image="registry.k8s.io/kube-apiserver:v1.33.5")
    result, manifest = _run(tmp_path, text, "3.5.32")
    assert result.status is runner.Status.FAILED
    assert "no single etcd image line" in " ".join(result.failures())
    assert manifest.read_text() == text
    assert list(manifest.parent.iterdir()) == [manifest]
