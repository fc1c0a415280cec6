"""The facts format: the documented example parses; each malformation is named, exit 2."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from upgrader import errors
from upgrader.core.rules import facts as facts_mod
from upgrader.core.versions import Minor, Version

EXAMPLE: dict[str, Any] = {
    "control_plane": [{"name": "cp-1", "apiserver": "1.30.6", "emulated": "1.30", "kubelet": "1.30.6"}],
    "nodes": [{"name": "w-1", "kubelet": "1.29.3", "cgroup": "v2", "container_runtime": "containerd://1.7.22"}],
    "etcd": {"version": "3.5.12"},
    "apis_in_use": [{"group": "flowcontrol.apiserver.k8s.io", "version": "v1beta3", "resource": "flowschemas"}],
}


def test_the_documented_example_parses() -> None:
    facts = facts_mod.from_mapping(EXAMPLE)
    assert facts.control_plane[0].apiserver == Version(1, 30, 6)
    assert facts.control_plane[0].emulated == Minor(1, 30)
    assert [(n.name, n.control_plane) for n in facts.nodes] == [("cp-1", True), ("w-1", False)]
    worker = facts.node("w-1")
    assert worker.cgroup is facts_mod.Cgroup.V2
    assert worker.runtime is not None and worker.runtime.name == "containerd"
    assert worker.runtime.version == Version(1, 7, 22)
    assert facts.etcd == Version(3, 5, 12)
    assert facts.apis_in_use[0].group_version == "flowcontrol.apiserver.k8s.io/v1beta3"


def test_missing_emulated_means_the_apiservers_own_minor() -> None:
    data = copy.deepcopy(EXAMPLE)
    del data["control_plane"][0]["emulated"]
    assert facts_mod.from_mapping(data).control_plane[0].emulated == Minor(1, 30)


def test_round_trip_through_the_normalised_form() -> None:
    facts = facts_mod.from_mapping(EXAMPLE)
    assert facts_mod.from_mapping(facts.as_mapping()) == facts


def edit(path: str, value: object) -> dict[str, Any]:
    data = copy.deepcopy(EXAMPLE)
    *parents, last = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is KeyError:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (edit("control_plane.0.apiserver", "1.30"), "control_plane[0].apiserver: malformed version '1.30'"),
        (edit("nodes.0.kubelet", "v1.29.x"), "nodes[0].kubelet: malformed version"),
        (edit("nodes.0.kubelet", KeyError), "nodes[0].kubelet: required key is missing"),
        (edit("control_plane", []), "at least one control-plane node"),
        (edit("control_plane", KeyError), "control_plane: required key is missing"),
        (edit("control_plane.0.emulated", "1.31"), "emulated version 1.31 is newer than the apiserver binary"),
        (edit("control_plane.0.emulated", "1.30.1"), "control_plane[0].emulated: malformed emulated version"),
        (edit("nodes.0.name", "W_1"), "nodes[0].name: invalid node name 'W_1'"),
        (edit("nodes.0.name", "--limit=all"), "invalid node name"),
        (edit("nodes.0.name", "cp-1"), "node 'cp-1' is listed twice"),
        (edit("nodes.0.cgroup", "v3"), "nodes[0].cgroup: expected 'v1' or 'v2'"),
        (edit("etcd.version", "3.5"), "etcd.version: malformed version"),
        (edit("apis_in_use.0.version", KeyError), "apis_in_use[0].version: required key is missing"),
        (edit("nodes", {"w-1": {}}), "nodes: expected a list"),
        (["not", "an", "object"], "expected an object"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_malformed_facts(data: Any, message: str) -> None:
    with pytest.raises(errors.InputError) as caught:
        facts_mod.from_mapping(data)
    assert message in str(caught.value)
    assert caught.value.exit_code == errors.ExitCode.USAGE


@pytest.mark.parametrize(
    ("raw", "name", "version"),
    [
        ("containerd://1.7.22", "containerd", "1.7.22"),
        ("containerd://v2.1.0-rc.1", "containerd", "2.1.0"),
        ("cri-o://1.30.2", "cri-o", "1.30.2"),
        ("docker://weird", None, None),
    ],
)
def test_runtime_parsing(raw: str, name: str | None, version: str | None) -> None:
    runtime = facts_mod.Runtime.parse(raw)
    assert runtime.name == name
    assert (str(runtime.version) if runtime.version else None) == version
