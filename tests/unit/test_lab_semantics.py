"""The lab apiserver's selectors and the disruption controller's arithmetic, against the rules of
apimachinery's ``labels`` package and kube-controller-manager's ``disruption.go``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from upgrader.core.versions import Version
from upgrader.lab import disruption
from upgrader.lab.apiserver import labels

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", True),
        ("app==web,tier!=db", True),
        ("app in (web, api),tier", True),
        ("app notin (web)", False),
        ("!zone", True),
        ("tier in (db)", False),
        ("zone notin (a)", True),  # a missing key is not in any set
    ],
)
def test_a_query_selector_reads_equality_and_set_terms(selector: str, expected: bool) -> None:
    assert labels.query_matches({"app": "web", "tier": "front"}, selector) is expected


def test_a_selector_the_lab_cannot_read_is_refused_not_matched() -> None:
    with pytest.raises(labels.BadSelector):
        labels.query_matches({"app": "web"}, "app in web")


def test_match_expressions_select_like_label_selector_as_selector() -> None:
    expression = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}
    assert labels.object_matches(expression, {"app": "db"})
    assert not labels.object_matches(expression, {"app": "web"})  # it used to match every pod
    assert not labels.object_matches({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, {"app": "x"})
    assert labels.object_matches({}, {"app": "x"})  # policy/v1: an empty selector selects every pod
    assert not labels.object_matches(None, {"app": "x"})
    with pytest.raises(labels.BadSelector):
        labels.object_matches({"matchExpressions": [{"key": "a", "operator": "Like"}]}, {})


def _pod(name: str, *, ready: bool = True, owner: str | None = "db") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "demo", "labels": {"app": "db"}}
    if owner:
        meta["ownerReferences"] = [{"kind": "StatefulSet", "name": owner, "controller": True, "uid": "u"}]
    return {
        "metadata": meta,
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def _budget(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "db", "namespace": "demo", "generation": 2},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, **spec},
        "status": status or {},
    }


def scale(replicas: int | None) -> Any:
    return lambda namespace, kind, name: replicas


def test_max_unavailable_counts_the_controllers_replicas_not_the_pods_left() -> None:
    """With db-1 evicted and not yet back, one pod is left of two: the budget must allow nothing more
    (counting the pods left would have allowed a second eviction)."""
    state = disruption.status(_budget({"maxUnavailable": 1}), [_pod("db-0")], scale(2), NOW)
    assert (state["expectedPods"], state["desiredHealthy"], state["currentHealthy"]) == (2, 1, 1)
    assert state["disruptionsAllowed"] == 0 and state["observedGeneration"] == 2
    whole = disruption.status(_budget({"maxUnavailable": 1}), [_pod("db-0"), _pod("db-1")], scale(2), NOW)
    assert whole["disruptionsAllowed"] == 1


def test_a_pod_the_eviction_handler_announced_is_not_healthy_until_two_minutes_pass() -> None:
    announced = {"disruptedPods": {"db-1": disruption.stamp(NOW - timedelta(seconds=5))}}
    pods = [_pod("db-0"), _pod("db-1")]
    state = disruption.status(_budget({"maxUnavailable": 1}, announced), pods, scale(2), NOW)
    assert state["currentHealthy"] == 1 and state["disruptionsAllowed"] == 0
    assert state["disruptedPods"] == announced["disruptedPods"]
    later = disruption.status(_budget({"maxUnavailable": 1}, announced), pods, scale(2), NOW + timedelta(minutes=3))
    assert later["currentHealthy"] == 2 and "disruptedPods" not in later


def test_integer_min_available_counts_pods_and_a_missing_controller_fails_safe() -> None:
    pods = [_pod("a"), _pod("b"), _pod("c", ready=False)]
    state = disruption.status(_budget({"minAvailable": 2}), pods, scale(None), NOW)
    assert (state["expectedPods"], state["desiredHealthy"], state["disruptionsAllowed"]) == (3, 2, 0)
    lost = disruption.status(_budget({"minAvailable": "50%"}), [_pod("a")], scale(None), NOW)
    assert lost["disruptionsAllowed"] == 0 and "found no controllers" in lost["conditions"][0]["message"]


def test_a_statefulset_pod_recreated_under_the_announced_name_is_healthy_at_once() -> None:
    """db-1 evicted and recreated by its StatefulSet under the same name: the new pod is not the one
    announced (a real controller saw the old one terminating and dropped it)."""
    announced = {"disruptedPods": {"db-1": disruption.stamp(NOW - timedelta(seconds=5))}}
    again = _pod("db-1")
    again["metadata"]["creationTimestamp"] = disruption.stamp(NOW - timedelta(seconds=2))
    state = disruption.status(_budget({"maxUnavailable": 1}, announced), [_pod("db-0"), again], scale(2), NOW)
    assert state["currentHealthy"] == 2 and state["disruptionsAllowed"] == 1 and "disruptedPods" not in state


def test_the_lab_kubeadm_picks_etcd_as_kubeadm_does_and_honours_an_image_tag_override() -> None:
    """kubeadm's images.GetEtcdImageTag and staticpods.go: the release's etcd, never lower than the
    running one, unless the ClusterConfiguration sets etcd.local.imageTag, which wins at every upgrade."""
    from upgrader.lab import kubeadm as lab_kubeadm

    stacked: dict[str, object] = {"etcd": {"local": {"dataDir": "/var/lib/etcd"}}}
    assert lab_kubeadm.etcd_tag(stacked, "3.5.24-0", Version(3, 6, 5)) == "3.6.5-0"
    assert lab_kubeadm.etcd_tag(stacked, "3.5.32-0", Version(3, 5, 24)) is None  # never down
    assert lab_kubeadm.etcd_tag(stacked, "3.6.5-0", Version(3, 6, 5)) is None
    pinned: dict[str, object] = {"etcd": {"local": {"imageTag": "3.5.32-0"}}}
    assert lab_kubeadm.etcd_tag(pinned, "3.5.32-0", Version(3, 6, 5)) is None  # kept: the 3.6 move never comes
    assert lab_kubeadm.etcd_tag(pinned, "3.5.24-0", Version(3, 6, 5)) == "3.5.32-0"


# -- which etcd binary a member runs -----------------------------------------------------------------


def _lab_with(binaries: dict[str, str]) -> Any:
    from pathlib import Path

    from upgrader.lab import topology

    return topology.Lab(
        dir=Path("/nonexistent"),
        name="lab",
        version=Version.parse("1.33.5"),
        block="127.1.1",
        nodes=(),
        etcd_binary="default-etcd",
        python="python3",
        etcd_binaries=binaries,
    )


@pytest.mark.parametrize(
    ("tag", "binary"),
    [
        ("3.4.23-0", "etcd-3.4.23"),  # the tag's own version
        ("3.5.1-0", "etcd-3.5.1"),
        ("v3.5.1", "etcd-3.5.1"),  # etcd's own image tags start with v
        ("3.5.24-0", "etcd-3.5.1"),  # no 3.5.24: the newest older binary of the tag's minor
        ("3.6.5-0", "etcd-3.5.1"),  # no 3.6 at all: the newest older binary
        ("3.3.9-0", "etcd-3.4.23"),  # nothing older: the oldest
        ("latest", "etcd-3.4.23"),  # no version in the tag: the oldest
    ],
)
def test_a_member_runs_the_binary_of_its_tag_version_where_the_lab_has_one(tag: str, binary: str) -> None:
    from upgrader.lab import runtime

    lab = _lab_with({"3.4.23": "etcd-3.4.23", "3.5.1": "etcd-3.5.1"})
    assert runtime.etcd_binary(lab, tag) == binary


def test_a_lab_made_before_etcd_binaries_runs_its_one_binary_for_every_tag() -> None:
    from upgrader.lab import runtime

    assert runtime.etcd_binary(_lab_with({}), "3.4.23-0") == "default-etcd"


def test_the_lab_catalog_lowers_an_etcd_minimum_only_to_a_binary_the_lab_has() -> None:
    from upgrader.core.rules import catalog as catalog_mod
    from upgrader.lab import create

    shipped = catalog_mod.load()
    lab = catalog_mod.parse(create.lab_catalog([Version.parse(v) for v in ("3.4.23", "3.5.1", "3.5.30")]))
    assert lab.version == f"{shipped.version}+lab"
    minimums = {str(k): str(v) for k, v in lab.etcd_min_patch_before_next_minor.items()}
    assert minimums == {"3.5": "3.5.30", "3.6": "3.6.11"}  # no 3.6 binary: 3.6's minimum stays
    assert lab.minors == shipped.minors
    exact = catalog_mod.parse(create.lab_catalog([Version.parse("3.5.32"), Version.parse("3.5.30")]))
    assert str(exact.etcd_min_patch_before_next_minor[Version.parse("3.5.0").minor_version]) == "3.5.32"
