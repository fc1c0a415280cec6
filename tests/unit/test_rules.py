"""Each rule, table-driven: skew on a state, removed APIs, cgroup v1, container runtime, etcd path."""

from __future__ import annotations

import pytest

from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import checks, skew
from upgrader.core.rules import facts as facts_mod
from upgrader.core.rules.findings import Code, Severity
from upgrader.core.versions import Minor, Version

CATALOG = catalog_mod.load()


def v(text: str) -> Version:
    return Version.parse(text)


def state(apiservers: dict[str, str], kubelets: dict[str, str], emulated: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    binaries = {n: v(x) for n, x in apiservers.items()}
    emu = {n: Minor.parse(e) for n, e in (emulated or {}).items()}
    return skew.ClusterState(
        apiservers=binaries,
        emulated={n: emu.get(n, b.minor_version) for n, b in binaries.items()},
        kubelets={n: v(x) for n, x in kubelets.items()},
    )


@pytest.mark.parametrize(
    ("apiservers", "kubelets", "emulated", "codes"),
    [
        ({"a": "1.30.1", "b": "1.31.0"}, {"w": "1.30.1"}, None, []),
        ({"a": "1.30.1", "b": "1.32.0"}, {"w": "1.30.1"}, None, [Code.SKEW_APISERVERS]),
        ({"a": "1.31.0"}, {"w": "1.28.0"}, None, []),  # N-3 from 1.28
        ({"a": "1.31.0"}, {"w": "1.27.9"}, None, [Code.SKEW_KUBELET_TOO_OLD]),
        ({"a": "1.27.0"}, {"w": "1.26.0"}, None, []),  # the policy allows N-2 before 1.28; kubeadm 1.27 N-1
        ({"a": "1.27.0"}, {"w": "1.25.9"}, None, [Code.SKEW_KUBELET_TOO_OLD]),
        ({"a": "1.28.0"}, {"w": "1.26.9"}, None, [Code.SKEW_KUBELET_TOO_OLD]),  # kubeadm 1.28: N-1 still
        ({"a": "1.29.0"}, {"w": "1.26.9"}, None, []),  # kubeadm 1.29: N-3
        ({"a": "1.30.1", "b": "1.31.0"}, {"w": "1.31.0"}, None, [Code.KUBELET_NEWER_THAN_APISERVER]),
        ({"a": "1.30.1"}, {"w": "1.30.9"}, None, []),  # a newer patch is not a newer minor
        ({"a": "1.33.0"}, {"w": "1.33.0"}, {"a": "1.32"}, [Code.KUBELET_NEWER_THAN_EMULATED]),
        ({"a": "1.33.0"}, {"w": "1.32.0"}, {"a": "1.32"}, []),
        (
            {"a": "1.35.0"},
            {"w": "1.32.0"},
            {"a": "1.31"},
            [Code.EMULATION_OUT_OF_RANGE, Code.KUBELET_NEWER_THAN_EMULATED],
        ),
        ({"a": "1.36.0"}, {"w": "1.33.0"}, None, []),  # counted from binaries: 1.33 is N-3
        ({"a": "1.36.0"}, {"w": "1.33.0"}, {"a": "1.35"}, []),
    ],
    ids=[
        "ha-within-one",
        "ha-two-apart",
        "n-3",
        "n-4",
        "kubeadm-n-1-at-1.27",
        "kubeadm-n-2-refused-at-1.27",
        "kubeadm-n-2-refused-at-1.28",
        "kubeadm-n-3-at-1.29",
        "kubelet-newer",
        "patch-newer-ok",
        "newer-than-emulated",
        "at-emulated",
        "emulation-too-far",
        "n-3-1.36",
        "emulating",
    ],
)
def test_skew(
    apiservers: dict[str, str], kubelets: dict[str, str], emulated: dict[str, str] | None, codes: list[Code]
) -> None:
    found = skew.violations(state(apiservers, kubelets, emulated), CATALOG)
    assert [f.code for f in found] == codes
    assert all(f.severity is Severity.BLOCKER and f.remedy for f in found)


def facts(**over: object) -> facts_mod.Facts:
    data: dict[str, object] = {
        "control_plane": [
            {
                "name": "cp-1",
                "apiserver": "1.30.6",
                "kubelet": "1.30.6",
                "cgroup": "v2",
                "container_runtime": "containerd://2.1.4",
            }
        ],
        "nodes": [{"name": "w-1", "kubelet": "1.30.6", "cgroup": "v2", "container_runtime": "containerd://2.1.4"}],
        "etcd": {"version": "3.5.32"},
        "apis_in_use": [],
    }
    data.update(over)
    return facts_mod.from_mapping(data)


@pytest.mark.parametrize(
    ("api", "after", "target", "removed_in"),
    [
        (("flowcontrol.apiserver.k8s.io", "v1beta3"), "1.30", "1.33", "1.32"),
        (("flowcontrol.apiserver.k8s.io", "v1beta3"), "1.30", "1.31", None),  # not crossed yet
        (("flowcontrol.apiserver.k8s.io", "v1beta3"), "1.32", "1.34", None),  # already past
        (("batch", "v1beta1"), "1.24", "1.25", "1.25"),
        (("batch", "v1"), "1.24", "1.36", None),
        (("storagemigration.k8s.io", "v1alpha1"), "1.34", "1.35", "1.35"),
    ],
)
def test_removed_apis(api: tuple[str, str], after: str, target: str, removed_in: str | None) -> None:
    used = facts(apis_in_use=[{"group": api[0], "version": api[1], "resource": "things"}])
    found = checks.removed_apis(used, after=Minor.parse(after), target=Minor.parse(target), catalog=CATALOG)
    if removed_in is None:
        assert found == []
    else:
        (finding,) = found
        assert finding.code is Code.API_REMOVED and finding.as_dict()["removed_in"] == removed_in
        assert finding.resources == (f"{api[0]}/{api[1]} things",)


@pytest.mark.parametrize(("target", "blocked"), [("1.34", False), ("1.35", True), ("1.36", True)])
def test_cgroup_v1(target: str, blocked: bool) -> None:
    nodes = [{"name": "w-1", "kubelet": "1.30.6", "cgroup": "v1", "container_runtime": "containerd://2.1.4"}]
    found = checks.cgroup_v1(facts(nodes=nodes), target=Minor.parse(target), catalog=CATALOG)
    assert [f.code for f in found if f.severity is Severity.BLOCKER] == ([Code.CGROUP_V1] if blocked else [])
    if blocked:
        assert found[0].nodes == ("w-1",) and "failCgroupV1: false" in found[0].remedy


@pytest.mark.parametrize(
    ("runtime", "target", "codes"),
    [
        ("containerd://1.6.14", "1.26", [Code.RUNTIME_BELOW_MINIMUM]),  # CRI v1 needs 1.6.15+
        ("containerd://1.5.13", "1.26", [Code.RUNTIME_BELOW_MINIMUM]),
        ("containerd://1.6.15", "1.26", []),
        ("containerd://1.7.22", "1.33", [Code.RUNTIME_BELOW_RECOMMENDED]),
        ("containerd://1.7.28", "1.35", []),
        # 1.36 still runs containerd 1.x (kubernetes PRs 136846, 139121: the fallback goes in 1.38), with a warning
        ("containerd://1.7.28", "1.36", [Code.RUNTIME_BELOW_RECOMMENDED]),
        ("containerd://1.6.14", "1.36", [Code.RUNTIME_BELOW_MINIMUM]),  # CRI v1 still needs 1.6.15+
        ("containerd://2.0.6", "1.36", [Code.RUNTIME_BELOW_RECOMMENDED]),
        ("containerd://2.3.1", "1.36", []),
        ("cri-o://1.33.0", "1.33", [Code.RUNTIME_UNKNOWN]),
        ("containerd://1.4.0", "1.25", []),  # the catalog has no minimum for 1.25
    ],
)
def test_container_runtime(runtime: str, target: str, codes: list[Code]) -> None:
    nodes = [{"name": "w-1", "kubelet": "1.25.0", "cgroup": "v2", "container_runtime": runtime}]
    control_plane = [{"name": "cp-1", "apiserver": "1.25.0", "kubelet": "1.25.0", "container_runtime": runtime}]
    found = checks.container_runtime(
        facts(nodes=nodes, control_plane=control_plane), target=Minor.parse(target), catalog=CATALOG
    )
    assert [f.code for f in found] == codes
    assert all(f.nodes == ("cp-1", "w-1") for f in found)


@pytest.mark.parametrize(
    ("start", "hops", "after", "before", "codes"),
    [
        ("3.5.12", ["1.31", "1.32"], ["3.5.24", "3.5.24"], {}, []),
        ("3.5.30", ["1.31"], ["3.5.30"], {}, []),  # kubeadm never downgrades etcd
        # 3.5.32+ before 3.6 (etcd's upgrade guide): an etcd step before the 1.34 hop, not a blocker
        ("3.5.24", ["1.34"], ["3.6.5"], {0: ["3.5.32"]}, []),
        ("3.5.24", ["1.33", "1.34", "1.35"], ["3.5.24", "3.6.5", "3.6.6"], {1: ["3.5.32"]}, []),
        ("3.5.32", ["1.34"], ["3.6.5"], {}, []),
        # one minor at a time: into 3.5 at its minimum patch for leaving it, then kubeadm's 3.6
        ("3.4.23", ["1.34"], ["3.6.5"], {0: ["3.5.32"]}, []),
        # 3.6.11 before 3.7; no 3.4 landing patch is known, so 3.3 cannot reach 3.5 (a blocker)
        ("3.3.27", ["1.34"], ["3.6.5"], {}, [Code.ETCD_SKIPS_MINOR]),
        (None, ["1.31"], [None], {}, [Code.ETCD_VERSION_UNKNOWN]),
        (None, [], [], {}, []),
    ],
)
def test_etcd_route(
    start: str | None, hops: list[str], after: list[str | None], before: dict[int, list[str]], codes: list[Code]
) -> None:
    route = checks.etcd_route(
        v(start) if start else None, [Minor.parse(h) for h in hops], CATALOG, facts_mod.EtcdSetup()
    )
    assert [str(x) if x else None for x in route.after] == after
    assert {k: [str(x) for x in xs] for k, xs in route.before.items()} == before
    assert [f.code for f in route.findings] == codes
    assert route.mover is checks.EtcdMover.KUBEADM


def test_an_image_tag_override_keeps_etcd_where_it_is_at_every_hop() -> None:
    """kubeadm's images.GetEtcdImageTag: etcd.local.imageTag replaces kubeadm's version at every hop."""
    setup = facts_mod.EtcdSetup(image_tag="3.5.24-0")
    route = checks.etcd_route(v("3.5.24"), [Minor(1, 34), Minor(1, 35)], CATALOG, setup)
    assert [str(x) for x in route.after] == ["3.5.24", "3.5.24"] and not route.before
    assert route.mover is checks.EtcdMover.KEPT_BY_IMAGE_TAG
    assert [(f.code, f.severity) for f in route.findings] == [(Code.ETCD_IMAGE_TAG_OVERRIDE, Severity.WARNING)]


HOSTS = (("etcd-1", "etcd1"), ("etcd-2", "etcd2"), ("etcd-3", "etcd3"))


@pytest.mark.parametrize(
    ("start", "hops", "after", "before"),
    [
        # no floor known below 1.34: kubeadm never moves external etcd, and neither does upgrader
        ("3.5.12", ["1.32", "1.33"], ["3.5.12", "3.5.12"], {}),
        # Kubespray's etcd for 1.34 is the newest 3.5 (3.5.33), for 1.35 the newest 3.6 (3.6.14)
        ("3.5.12", ["1.34"], ["3.5.33"], {0: ["3.5.33"]}),
        ("3.5.12", ["1.33", "1.34", "1.35"], ["3.5.12", "3.5.33", "3.6.14"], {1: ["3.5.33"], 2: ["3.6.14"]}),
        # straight to 1.35's 3.6 from below 3.5's minimum patch: through 3.5.32 first (etcd's gate)
        ("3.5.12", ["1.35"], ["3.6.14"], {0: ["3.5.32", "3.6.14"]}),
        ("3.6.20", ["1.35", "1.36"], ["3.6.20", "3.6.20"], {}),  # never down
    ],
)
def test_external_etcd_moves_on_its_hosts_where_kubespray_would_run_a_newer_one(
    start: str, hops: list[str], after: list[str], before: dict[int, list[str]]
) -> None:
    setup = facts_mod.EtcdSetup(external=True, hosts=HOSTS)
    route = checks.etcd_route(v(start), [Minor.parse(h) for h in hops], CATALOG, setup)
    assert [str(x) for x in route.after] == after
    assert {k: [str(x) for x in xs] for k, xs in route.before.items()} == before
    assert not route.findings and route.mover is checks.EtcdMover.EXTERNAL


def test_external_etcd_the_plan_cannot_move_stays_with_a_warning_as_kubeadm_would_run_the_hop() -> None:
    no_hosts = checks.etcd_route(v("3.5.12"), [Minor(1, 34)], CATALOG, facts_mod.EtcdSetup(external=True))
    assert [(f.code, f.severity) for f in no_hosts.findings] == [(Code.ETCD_HOSTS_UNKNOWN, Severity.WARNING)]
    assert [str(x) for x in no_hosts.after] == ["3.5.12"] and not no_hosts.before
    unknown = checks.etcd_route(None, [Minor(1, 34)], CATALOG, facts_mod.EtcdSetup(external=True, hosts=HOSTS))
    assert [(f.code, f.severity) for f in unknown.findings] == [(Code.ETCD_VERSION_UNKNOWN, Severity.WARNING)]
    assert "3.5.33" in unknown.findings[0].message and not unknown.before
    staying = checks.etcd_route(None, [Minor(1, 33)], CATALOG, facts_mod.EtcdSetup(external=True))
    assert not staying.findings  # nothing should move, so the version does not matter
    skipping = checks.etcd_route(v("3.3.27"), [Minor(1, 34)], CATALOG, facts_mod.EtcdSetup(external=True, hosts=HOSTS))
    assert [(f.code, f.severity) for f in skipping.findings] == [(Code.ETCD_SKIPS_MINOR, Severity.BLOCKER)]


def test_enable_v2_blocks_the_move_to_3_6_naming_the_members() -> None:
    setup = facts_mod.EtcdSetup(v2_enabled=("cp-2",))
    route = checks.etcd_route(v("3.5.32"), [Minor(1, 33), Minor(1, 34)], CATALOG, setup)
    assert [f.code for f in route.findings] == [Code.ETCD_V2_ENABLED]
    assert route.findings[0].nodes == ("cp-2",) and "etcdutl check v2store" in route.findings[0].remedy
    staying = checks.etcd_route(v("3.5.32"), [Minor(1, 33)], CATALOG, setup)
    assert not staying.findings  # no move to 3.6, nothing to check yet


def test_containerd_1x_at_1_36_is_told_that_1_38_removes_what_it_needs() -> None:
    nodes = [{"name": "w-1", "kubelet": "1.35.0", "cgroup": "v2", "container_runtime": "containerd://1.7.28"}]
    found = checks.container_runtime(facts(nodes=nodes), target=Minor(1, 36), catalog=CATALOG)
    by_node = {f.nodes: f for f in found}
    assert by_node[("w-1",)].code is Code.RUNTIME_BELOW_RECOMMENDED and "1.38" in by_node[("w-1",)].remedy
    assert "1.38" not in by_node[("cp-1",)].remedy  # containerd 2.1.4: only below the recommendation
