"""The planner, scenario by scenario: hops, two-step, starting states, refusals, batches, blockers."""

from __future__ import annotations

import re

import pytest

from tests.unit.plan_helpers import brief, make_facts, make_plan
from upgrader import errors
from upgrader.core.planner.model import StepKind
from upgrader.core.rules import catalog as catalog_mod
from upgrader.core.rules import facts as facts_mod
from upgrader.core.rules.findings import Code
from upgrader.core.versions import Version

CP3 = [("cp-1", "1.30.14", None, "1.30.14"), ("cp-2", "1.30.14", None, "1.30.14"), ("cp-3", "1.30.14", None, "1.30.14")]


def test_one_minor_without_emulation_is_one_step() -> None:
    # 1.31 binaries can only emulate 1.31, so the hop from 1.30 cannot be two-step.
    plan = make_plan(make_facts(CP3, [("w-1", "1.30.14")]), "1.31")
    assert brief(plan) == [
        "snap",
        "cp 1.31.13 cp-1,cp-2,cp-3",
        "nodes 1.31.13 cp-1",
        "nodes 1.31.13 cp-2",
        "nodes 1.31.13 cp-3",
        "nodes 1.31.13 w-1",
    ]
    assert plan.executable and str(plan.target) == "1.31.13"


def test_hops_to_1_32_and_later_are_two_step_by_default() -> None:
    plan = make_plan(make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.31.13")]), "1.33")
    assert brief(plan) == [
        "snap",
        "cp 1.32.9~1.31 cp-1",
        "snap",
        "commit 1.32 cp-1",
        "snap",
        "cp 1.33.5~1.32 cp-1",
        "snap",
        "commit 1.33 cp-1",
        "nodes 1.33.5 cp-1",
        "nodes 1.33.5 w-1",
    ]


def test_one_step_option_turns_two_step_off() -> None:
    plan = make_plan(make_facts([("cp-1", "1.31.13", None, "1.31.13")]), "1.33", two_step=False)
    assert brief(plan) == ["snap", "cp 1.32.9 cp-1", "snap", "cp 1.33.5 cp-1", "nodes 1.33.5 cp-1"]


def test_a_snapshot_precedes_every_control_plane_and_commit_step() -> None:
    plan = make_plan(make_facts(CP3, [("w-1", "1.28.15")]), "1.36")
    for i, step in enumerate(plan.steps):
        if step.kind in (StepKind.CONTROL_PLANE, StepKind.EMULATION_COMMIT):
            assert plan.steps[i - 1].kind is StepKind.SNAPSHOT, i


def test_nodes_skip_minors_and_move_only_when_forced() -> None:
    # 1.30 -> 1.36: the control plane takes six hops; a 1.30 kubelet must move before the apiserver
    # reaches 1.34 (N-3), and then goes as far as allowed (1.33), then to the target: two drains.
    plan = make_plan(make_facts(CP3, [("w-1", "1.30.14")]), "1.36")
    node_steps = [(str(s.version), s.nodes) for s in plan.steps if s.kind is StepKind.NODES and "w-1" in s.nodes]
    assert node_steps == [("1.33.5", ("w-1",)), ("1.36.0", ("w-1",))]
    assert plan.summary.drains_per_node == {"cp-1": 2, "cp-2": 2, "cp-3": 2, "w-1": 2}
    assert plan.summary.drains_every_minor == 4 * 6


def test_kubeadm_up_to_1_28_takes_no_kubelet_more_than_one_minor_behind() -> None:
    # The skew policy lets a kubelet lag a 1.27 apiserver by 2 and a 1.28 one by 3, but `kubeadm upgrade
    # apply` 1.27 and 1.28 refuses kubelets more than one minor older than the new version (unless
    # forced; upgrader never forces it); kubeadm 1.29 accepts three. So the 1.25 kubelet moves to 1.26
    # before the hop to 1.27, to 1.27 before the hop to 1.28, and then rides to 1.29 in one drain.
    plan = make_plan(make_facts([("cp-1", "1.26.15", None, "1.25.16")]), "1.29")
    assert brief(plan) == [
        "nodes 1.26.15 cp-1",
        "snap",
        "cp 1.27.16 cp-1",
        "nodes 1.27.16 cp-1",
        "snap",
        "cp 1.28.15 cp-1",
        "snap",
        "cp 1.29.15 cp-1",
        "nodes 1.29.15 cp-1",
    ]


def test_every_kubeadm_hop_of_a_1_26_plan_finds_its_kubelets_within_kubeadms_limit() -> None:
    catalog = catalog_mod.load()
    plan = make_plan(make_facts([("cp-1", "1.26.15", None, "1.26.15")], [("w-1", "1.26.15")]), "1.30")
    kubelets = {"cp-1": Version.parse("1.26.15"), "w-1": Version.parse("1.26.15")}
    for step in plan.steps:
        if step.kind is StepKind.CONTROL_PLANE and step.version is not None:
            limit = catalog.entry(step.version.minor_version).kubeadm_kubelet_max_older
            oldest = min(v.minor_version for v in kubelets.values())
            assert oldest.distance(step.version.minor_version) <= limit, (str(step.version), kubelets)
        elif step.kind is StepKind.NODES and step.version is not None:
            kubelets.update(dict.fromkeys(step.nodes, step.version))
    assert set(kubelets.values()) == {Version.parse("1.30.14")}


def test_patch_only_upgrade_is_one_control_plane_step_and_one_nodes_step() -> None:
    plan = make_plan(
        make_facts([("cp-1", "1.33.2", None, "1.33.2")], [("w-1", "1.33.2"), ("w-2", "1.33.0")]),
        "1.33.5",
        max_unavailable="100%",
    )
    assert brief(plan) == ["snap", "cp 1.33.5 cp-1", "nodes 1.33.5 cp-1", "nodes 1.33.5 w-1,w-2"]


def test_already_at_target_needs_nothing() -> None:
    plan = make_plan(make_facts([("cp-1", "1.33.5", None, "1.33.5")], [("w-1", "1.33.5")]), "1.33.5")
    assert plan.steps == () and plan.executable and plan.summary.drains == 0


def test_a_mid_hop_control_plane_finishes_its_hop_first() -> None:
    facts = make_facts(
        [
            ("cp-1", "1.31.13", None, "1.30.14"),
            ("cp-2", "1.30.14", None, "1.30.14"),
            ("cp-3", "1.30.14", None, "1.30.14"),
        ]
    )
    assert brief(make_plan(facts, "1.32"))[:2] == ["snap", "cp 1.31.13 cp-2,cp-3"]


def test_a_mid_hop_in_a_two_step_window_continues_the_window_then_commits() -> None:
    facts = make_facts([("cp-1", "1.33.5", "1.32", "1.32.9"), ("cp-2", "1.32.9", None, "1.32.9")])
    assert brief(make_plan(facts, "1.33", two_step=False)) == [
        "snap",
        "cp 1.33.5~1.32 cp-2",
        "snap",
        "commit 1.33 cp-1,cp-2",
        "nodes 1.33.5 cp-1",
        "nodes 1.33.5 cp-2",
    ]


def test_a_one_step_hop_caught_half_way_stays_one_step() -> None:
    facts = make_facts([("cp-1", "1.33.5", None, "1.32.9"), ("cp-2", "1.32.9", None, "1.32.9")])
    assert brief(make_plan(facts, "1.33"))[:2] == ["snap", "cp 1.33.5 cp-2"]


def test_a_two_step_window_commits_before_moving_on() -> None:
    facts = make_facts([("cp-1", "1.33.5", "1.32", "1.32.9")], [("w-1", "1.32.9")])
    assert brief(make_plan(facts, "1.34")) == [
        "snap",
        "commit 1.33 cp-1",
        "snap",
        "cp 1.34.1~1.33 cp-1",
        "snap",
        "commit 1.34 cp-1",
        "nodes 1.34.1 cp-1",
        "nodes 1.34.1 w-1",
    ]


def test_a_two_step_window_at_the_target_minor_keeps_emulating_through_a_patch_step() -> None:
    facts = make_facts([("cp-1", "1.33.2", "1.32", "1.32.9")])
    assert brief(make_plan(facts, "1.33")) == [
        "snap",
        "cp 1.33.5~1.32 cp-1",
        "snap",
        "commit 1.33 cp-1",
        "nodes 1.33.5 cp-1",
    ]


@pytest.mark.parametrize(
    ("control_plane", "workers", "to", "message"),
    [
        (CP3, [], "1.29", "target 1.29.15 is older than the control plane"),
        (CP3, [], "1.30.2", "target 1.30.2 is older than the control plane"),
        ([("cp-1", "1.30.2", None, "1.30.2")], [("w-1", "1.30.9")], "1.30.5", "older than the kubelet on w-1"),
        (CP3, [], "1.38", "1.38 is not in the rules catalog"),
        (CP3, [], "1.30.99", "not a release the rules catalog knows"),
        ([("cp-1", "1.24.17", None, "1.24.17")], [], "1.26", "1.24 is not in the rules catalog"),
    ],
    ids=["older-minor", "older-patch", "older-than-kubelet", "unknown-minor", "unknown-patch", "start-unknown"],
)
def test_refusals(control_plane: list, workers: list, to: str, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(errors.Refused, match=message) as caught:
        make_plan(make_facts(control_plane, workers), to)
    assert caught.value.exit_code == errors.ExitCode.REFUSED


def test_worker_batches_follow_max_unavailable_and_control_planes_go_one_by_one() -> None:
    workers = [(f"w-{i}", "1.33.2") for i in range(1, 11)]
    cp = [("cp-1", "1.33.5", None, "1.33.2"), ("cp-2", "1.33.5", None, "1.33.2")]
    by_count = make_plan(make_facts(cp, workers), "1.33.5", max_unavailable="4")
    assert [s.nodes for s in by_count.steps] == [
        ("cp-1",),
        ("cp-2",),
        ("w-1", "w-2", "w-3", "w-4"),
        ("w-5", "w-6", "w-7", "w-8"),
        ("w-9", "w-10"),
    ]
    assert [s.batch for s in by_count.steps] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    by_percent = make_plan(make_facts(cp, workers), "1.33.5", max_unavailable="30%")
    assert [len(s.nodes) for s in by_percent.steps] == [1, 1, 3, 3, 3, 1]
    assert len(make_plan(make_facts(cp, workers), "1.33.5", max_unavailable="1%").steps) == 12  # at least one


@pytest.mark.parametrize("value", ["0", "0%", "101%", "-1", "half", "2.5"])
def test_bad_max_unavailable(value: str) -> None:
    with pytest.raises(errors.InputError, match="--max-unavailable"):
        make_plan(make_facts(CP3), "1.31", max_unavailable=value)


def test_control_plane_steps_name_the_etcd_version_kubeadm_leaves() -> None:
    plan = make_plan(make_facts([("cp-1", "1.30.14", None, "1.30.14")], etcd="3.5.12"), "1.32")
    etcd = [str(s.etcd) for s in plan.steps if s.kind is StepKind.CONTROL_PLANE]
    assert etcd == ["3.5.24", "3.5.24"]


def test_blockers_do_not_stop_the_plan_from_being_shown() -> None:
    facts = make_facts(
        CP3,
        [("w-1", "1.30.14")],
        etcd="3.5.24",
        apis=[{"group": "flowcontrol.apiserver.k8s.io", "version": "v1beta3", "resource": "flowschemas"}],
        cgroup="v1",
        runtime="containerd://1.7.28",
    )
    plan = make_plan(facts, "1.36")
    codes = {b.code for b in plan.blockers}
    assert codes == {Code.API_REMOVED, Code.CGROUP_V1}  # etcd 3.5.24 gets an etcd step, not a blocker
    assert Code.RUNTIME_BELOW_RECOMMENDED in {w.code for w in plan.warnings}  # 1.36 still runs containerd 1.7
    assert not plan.executable and plan.steps


def test_a_cluster_already_outside_the_skew_policy_is_blocked() -> None:
    facts = make_facts([("cp-1", "1.31.13", None, "1.31.13")], [("w-1", "1.27.16"), ("w-2", "1.32.0")])
    codes = [b.code for b in make_plan(facts, "1.32").blockers]
    assert codes == [Code.SKEW_KUBELET_TOO_OLD, Code.KUBELET_NEWER_THAN_APISERVER]


def test_the_plan_id_is_a_content_hash() -> None:
    facts = make_facts(CP3, [("w-1", "1.29.15")])
    first, again = make_plan(facts, "1.32"), make_plan(facts, "1.32")
    assert first.id == again.id and len(first.id) == 16
    assert make_plan(facts, "1.32", two_step=False).id != first.id
    assert make_plan(facts, "1.33").id != first.id


def test_json_form_keeps_the_documented_keys() -> None:
    body = make_plan(make_facts(CP3, [("w-1", "1.29.15")]), "1.33").as_dict()
    assert {"id", "target", "blockers", "steps", "summary"} <= set(body)
    kinds = {s["kind"] for s in body["steps"]}
    assert kinds == {"snapshot", "control-plane", "emulation-commit", "nodes"}
    for step in body["steps"]:
        assert {"kind", "version", "nodes"} <= set(step)
        if step["kind"] in ("control-plane", "nodes"):
            assert step["version"].count(".") == 2 and step["nodes"]
    two_step = [s for s in body["steps"] if s["kind"] == "control-plane" and "emulated" in s]
    assert [s["emulated"] for s in two_step] == ["1.31", "1.32"]
    assert body["summary"]["drains"] < body["summary"]["drains_if_every_minor"]


def test_etcd_below_the_minimum_patch_gets_an_etcd_step_with_its_own_snapshot_before_the_hop() -> None:
    cp = [("cp-1", "1.33.5", None, "1.33.5"), ("cp-2", "1.33.5", None, "1.33.5")]
    plan = make_plan(make_facts(cp, etcd="3.5.24"), "1.35", two_step=False)
    assert plan.executable, plan.blockers
    assert brief(plan)[:4] == ["snap", "etcd 3.5.32 cp-1,cp-2", "snap", "cp 1.34.1 cp-1,cp-2"]
    etcd_step = plan.steps[1]
    assert "3.5.32" in etcd_step.reason and "1.34" in etcd_step.reason
    assert [str(s.etcd) for s in plan.steps if s.kind is StepKind.CONTROL_PLANE] == ["3.6.5", "3.6.6"]
    assert plan.summary.snapshots == 3
    # the plan's JSON says it, and reads back to the same plan
    assert plan.as_dict()["steps"][1] == {
        "kind": "etcd",
        "version": "3.5.32",
        "nodes": ["cp-1", "cp-2"],
        "reason": etcd_step.reason,
    }


def test_the_hop_to_1_37_takes_etcd_to_3_7_only_from_3_6_11() -> None:
    cp = [("cp-1", "1.36.0", None, "1.36.0")]
    plan = make_plan(make_facts(cp, etcd="3.6.8"), "1.37", two_step=False)
    assert plan.executable, plan.blockers
    assert brief(plan)[:4] == ["snap", "etcd 3.6.11 cp-1", "snap", "cp 1.37.0 cp-1"]
    assert str(next(s for s in plan.steps if s.kind is StepKind.CONTROL_PLANE).etcd) == "3.7.0"


def test_who_moves_etcd_is_in_the_plan_when_it_is_not_kubeadm() -> None:
    cp = [("cp-1", "1.33.5", None, "1.33.5")]
    kept = make_plan(make_facts(cp, etcd="3.5.24", etcd_setup={"image_tag": "3.5.24-0"}), "1.34", two_step=False)
    assert "etcd" not in " ".join(brief(kept)).split()  # no etcd step: kubeadm keeps the override
    hop = next(s for s in kept.steps if s.kind is StepKind.CONTROL_PLANE)
    assert (str(hop.etcd), hop.etcd_mover) == ("3.5.24", "kept by etcd.local.imageTag")
    assert Code.ETCD_IMAGE_TAG_OVERRIDE in {w.code for w in kept.warnings}
    older = [("cp-1", "1.32.9", None, "1.32.9")]  # to 1.33, where the catalog names no external etcd to run
    external = make_plan(make_facts(older, etcd="3.5.24", etcd_setup={"external": True}), "1.33", two_step=False)
    hop = next(s for s in external.steps if s.kind is StepKind.CONTROL_PLANE)
    assert hop.etcd_mover == "external: not kubeadm's" and external.executable
    default = make_plan(make_facts(cp, etcd="3.5.32"), "1.34", two_step=False)
    assert "etcd_mover" not in next(s for s in default.as_dict()["steps"] if s["kind"] == "control-plane")


def test_external_etcd_gets_etcd_steps_on_its_own_hosts_before_the_hop_that_needs_them() -> None:
    cp = [("cp-1", "1.33.5", None, "1.33.5")]
    hosts = [{"host": "etcd-1", "member": "etcd1"}, {"host": "etcd-2", "member": "etcd2"}]
    facts = make_facts(cp, etcd="3.5.24", etcd_setup={"external": True, "hosts": hosts})
    plan = make_plan(facts, "1.35", two_step=False)
    assert plan.executable, plan.blockers
    assert brief(plan) == [
        "snap",
        "etcd 3.5.33 etcd-1,etcd-2",  # Kubespray's etcd for 1.34
        "snap",
        "cp 1.34.1 cp-1",
        "snap",
        "etcd 3.6.14 etcd-1,etcd-2",  # and for 1.35: 3.5.33 is past 3.5's minimum patch for leaving it
        "snap",
        "cp 1.35.0 cp-1",
        "nodes 1.35.0 cp-1",
    ]
    assert "Kubespray" in plan.steps[1].reason and "kubeadm never moves external etcd" in plan.steps[1].reason
    assert facts.etcd_setup.member_of("etcd-2") == "etcd2" and facts.etcd_setup.member_of("cp-1") == "cp-1"
    assert (
        make_facts(cp, etcd="3.5.24", etcd_setup={"external": True, "hosts": hosts}).as_mapping()["etcd"]["hosts"]
        == hosts
    )  # the facts format keeps them, so a saved plan knows where its etcd steps run


@pytest.mark.parametrize(
    ("etcd", "message"),
    [
        ({"external": "yes"}, "etcd.external: expected true or false"),
        ({"external": True, "hosts": [{"host": "etcd 1", "member": "etcd1"}]}, "etcd.hosts[0].host"),
        ({"external": True, "hosts": [{"host": "e-1", "member": "m"}, {"host": "e-2", "member": "m"}]}, "twice"),
        ({"image_tag": "3.5.24 -0"}, "etcd.image_tag"),
        ({"v2_enabled": ["cp 1"]}, "etcd.v2_enabled[0]"),
    ],
)
def test_bad_etcd_setup_facts_name_the_key(etcd: dict[str, object], message: str) -> None:
    with pytest.raises(errors.InputError, match=re.escape(message)):
        make_facts([("cp-1", "1.33.5", None, "1.33.5")], etcd_setup=etcd)


def test_live_facts_read_how_etcd_runs_from_kubeadm_config_and_the_etcd_pods() -> None:
    from upgrader.cluster import live_facts
    from upgrader.kube.cluster import EtcdPod

    pods = [EtcdPod("cp-1", enable_v2=False), EtcdPod("cp-2", enable_v2=True)]
    stacked = (
        "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\netcd:\n  local:\n    dataDir: /var/lib/etcd\n"
    )
    assert live_facts._etcd_setup(stacked, pods) == {"v2_enabled": ["cp-2"]}
    tagged = stacked + "    imageTag: 3.5.32-0\n"
    assert live_facts._etcd_setup(tagged, pods[:1]) == {"image_tag": "3.5.32-0"}
    external = "kind: ClusterConfiguration\netcd:\n  external:\n    endpoints: [https://10.0.0.9:2379]\n"
    assert live_facts._etcd_setup(external, []) == {"external": True}
    assert live_facts._etcd_setup(None, []) == {}
    with pytest.raises(errors.OperationFailed, match="kubeadm-config: ClusterConfiguration is not YAML"):
        live_facts._etcd_setup("etcd: [unclosed", [])
    # what the live reading gives, the facts format takes
    data = {"control_plane": [{"name": "cp-1", "apiserver": "1.33.5", "kubelet": "1.33.5"}], "apis_in_use": []}
    parsed = facts_mod.from_mapping({**data, "etcd": {"version": "3.5.24", **live_facts._etcd_setup(tagged, pods)}})
    assert parsed.etcd_setup == facts_mod.EtcdSetup(image_tag="3.5.32-0", v2_enabled=("cp-2",))


def test_live_facts_name_each_external_etcd_host_s_member_and_warn_when_it_is_not_found() -> None:
    from pathlib import Path

    from upgrader.cluster import live_facts
    from upgrader.executor import inventory

    inv = inventory.Inventory(
        source=Path("hosts.ini"),
        groups={"etcd": ("etcd-a", "etcd-b", "etcd-c")},
        etcd_member_names={"etcd-a": "etcd1", "etcd-b": "etcd2"},
    )
    members = [{"name": "etcd1"}, {"name": "etcd2"}, {"name": "etcd3"}]
    warnings: list[str] = []
    hosts = live_facts._etcd_hosts(inv, members, warnings)
    assert hosts == [
        {"host": "etcd-a", "member": "etcd1"},
        {"host": "etcd-b", "member": "etcd2"},
        {"host": "etcd-c", "member": "etcd-c"},  # Kubespray would call it etcd3 by position: not guessed
    ]
    assert warnings == [
        "etcd host etcd-c: no etcd member is named etcd-c; set etcd_member_name for it in the inventory "
        "(an etcd step cannot find its member otherwise)"
    ]
