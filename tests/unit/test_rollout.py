"""How a two-step hop edits the kubeadm ClusterConfiguration: by its apiVersion, never by its shape."""

from __future__ import annotations

import pytest
import yaml

from upgrader import errors
from upgrader.cluster import rollout
from upgrader.core.versions import Minor

V1BETA3 = "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.30.6\n"
V1BETA4 = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: v1.31.13\n"


def test_a_v1beta3_document_without_extra_args_gets_a_map() -> None:
    """v1beta3's extraArgs is a map; a document with none was taken for v1beta4 and given a list."""
    edited = yaml.safe_load(rollout.with_emulation(V1BETA3, Minor(1, 30)))
    for component in rollout.COMPONENTS:
        assert edited[component]["extraArgs"] == {"emulated-version": "1.30"}
    back = yaml.safe_load(rollout.with_emulation(yaml.safe_dump(edited), None))
    assert all(not back[c].get("extraArgs") for c in rollout.COMPONENTS)


def test_v1beta4_takes_a_list_and_keeps_other_flags() -> None:
    text = V1BETA4 + "apiServer:\n  extraArgs:\n  - name: audit-log-maxage\n    value: '30'\n"
    edited = yaml.safe_load(rollout.with_emulation(text, Minor(1, 31)))
    assert edited["apiServer"]["extraArgs"] == [
        {"name": "audit-log-maxage", "value": "30"},
        {"name": "emulated-version", "value": "1.31"},
    ]
    assert edited["scheduler"]["extraArgs"] == [{"name": "emulated-version", "value": "1.31"}]
    assert rollout.with_emulation(V1BETA4, None) == V1BETA4  # nothing to change: the text as it was


def test_an_unknown_api_version_is_refused_not_guessed() -> None:
    with pytest.raises(errors.OperationFailed, match=r"'kubeadm\.k8s\.io/v1beta2'; upgrader edits"):
        rollout.with_emulation(V1BETA3.replace("v1beta3", "v1beta2"), Minor(1, 30))
