"""``upgrader rollback`` on the lab: both routes, the revision kept moving forward, a damaged snapshot passed
over, ``apply --on-failure rollback``, and a rollback killed with SIGKILL then resumed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Labs, wait_for
from tests.e2e.test_apply import Apply, invoke, kubelets, why
from tests.e2e.test_hardening import lab_config
from upgrader.core import config
from upgrader.etcd import kv
from upgrader.kube import cluster as kube
from upgrader.lab import faults, topology
from upgrader.state import records, store

pytestmark = pytest.mark.slow


def _configmap(lab: topology.Lab, name: str, *, create: bool = False) -> bool:
    """Creates a ConfigMap in ``default`` (with ``create``), else says whether it exists."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        if create:
            body = k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name), data={"written": "after the snapshot"})
            api.core.create_namespaced_config_map("default", body)
            return True
        try:
            api.core.read_namespaced_config_map(name, "default")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
    finally:
        api.close()


def _etcd(lab: topology.Lab) -> kv.KV:
    return kv.KV(kv.target(config.load(lab.dir / "cluster.yaml").etcd))


def _cluster_configuration(lab: topology.Lab) -> str:
    api = kube.Cluster.connect(lab.kubeconfig)
    try:
        return api.cluster_configuration() or ""
    finally:
        api.close()


# Where a test is about what comes after an apply (a rollback, a tier), its apply is one-step: a two-step hop
# runs kubeadm on every control-plane node twice and adds nothing to what such a test checks. The two-step
# path has tests of its own (the apply tests, the window rollback, --on-failure rollback, the hand-over).
ONE_STEP = ("--one-step",)


def _apply(
    cluster_yaml: str, db: tuple[str, str], target: str, *extra: str, plan_args: tuple[str, ...] = ()
) -> tuple[str, int, dict[str, object]]:
    made = invoke("plan", "-c", cluster_yaml, "--to", target, "--save", *db, "-o", "json", *plan_args)
    assert made.exit_code == 0, made.output
    plan_id = str(json.loads(made.stdout)["id"])
    applied = invoke("apply", plan_id, "-c", cluster_yaml, *db, "--yes", "-o", "json", *extra)
    return plan_id, applied.exit_code, json.loads(applied.stdout) if applied.stdout.strip() else {}


@pytest.mark.long
def test_a_committed_minor_is_rolled_back_by_a_full_restore_with_the_revision_moving_forward(
    labs: Labs, tmp_path: Path
) -> None:
    lab = labs.up("full", version="1.30.6", control_planes=3, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    older = json.loads(invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json").stdout)["id"]
    _, code, applied = _apply(cluster_yaml, db, "1.31", plan_args=ONE_STEP)
    assert code == 0, json.dumps(applied, indent=1)
    assert set(kubelets(lab).values()) == {"v1.31.13"}
    listed = json.loads(invoke("snapshot", "list", "-c", cluster_yaml, *db, "-o", "json").stdout)
    taken = [s["id"] for s in listed["snapshots"]]
    newest = next(s for s in taken if s != older)  # the apply's own, at 1.30 before the hop
    _configmap(lab, "written-after-the-snapshot", create=True)

    # Bad input and refusals change nothing.
    unknown = invoke("rollback", "-c", cluster_yaml, *db, "--to", "nosuchsnapshot", "--yes")
    assert unknown.exit_code == 2 and "no snapshot 'nosuchsnapshot'" in unknown.stderr, unknown.output
    unasked = invoke("rollback", "-c", cluster_yaml, *db)  # no terminal and no --yes
    assert unasked.exit_code == 2 and "refusing without --yes" in unasked.stderr, unasked.output
    with store.Store.open(db[1]) as state, state.lock(lab.name, "apply 0123456789ab"):
        locked = invoke("rollback", "-c", cluster_yaml, *db, "--yes")
    assert locked.exit_code == 3 and "apply 0123456789ab" in locked.stderr, locked.output

    # A damaged snapshot is passed over, named; the next good one is used.
    with store.Store.open(db[1]) as state:
        damaged = Path(state.snapshot(newest).etcd_path)
    damaged.write_bytes(damaged.read_bytes()[:-100] + b"x" * 100)
    dry = invoke("rollback", "-c", cluster_yaml, *db, "--dry-run", "-o", "json")
    assert dry.exit_code == 0, why(dry)
    plan = json.loads(dry.stdout)
    assert plan["snapshot"] == older and plan["route"] == "full-restore", plan
    assert plan["passed_over"][0].startswith(f"{newest}: etcd database:"), plan
    assert plan["lost"]["revisions"] > 0 and "committed" in plan["why"]
    kinds = [s["kind"] for s in plan["steps"]]
    assert kinds[:5] == ["hold-control-plane", "hold-etcd", "restore-etcd", "start-etcd", "revision"], kinds
    assert any("w-1: drain, kubelet v1.31.13 -> v1.30.6" in a for s in plan["steps"] for a in s["actions"])
    assert json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["kind"] == "upgrade"

    # A gap over etcd.max_revision_gap is refused before anything changes, unless accepted.
    tight = yaml.safe_load(lab_config(lab, tmp_path).read_text())
    tight["etcd"]["max_revision_gap"] = 10
    (tmp_path / "tight.yaml").write_text(yaml.safe_dump(tight))
    over = invoke("rollback", "-c", str(tmp_path / "tight.yaml"), *db, "--dry-run")
    assert over.exit_code == 3 and "--allow-revision-regression" in over.stderr, over.output
    accepted = invoke("rollback", "-c", str(tmp_path / "tight.yaml"), *db, "--dry-run", "--allow-revision-regression")
    assert accepted.exit_code == 0, accepted.output

    # etcd's restore tool: the nodes have none of their own (etcd runs from an image); upgrader placed
    # its own with every snapshot. One node lost it: a dry run says so (exit 3, nothing placed, nothing
    # stopped); the rollback places it again before the outage.
    placed = lab.root("cp-2") / "var" / "lib" / "upgrader" / "bin"
    assert [p.name for p in placed.iterdir()] in (["etcdutl"], ["etcdctl"])
    assert not (lab.root("cp-2") / "usr" / "bin" / "etcdutl").exists()
    for tool in placed.iterdir():
        tool.unlink()
    blind = invoke("rollback", "-c", cluster_yaml, *db, "--dry-run")
    assert blind.exit_code == 3, blind.output
    assert "no working etcd restore tool" in blind.stderr and "on cp-2" in blind.stderr
    assert "nothing was stopped" in blind.stderr and not list(placed.iterdir())

    store_ = _etcd(lab)
    served = store_.revision()  # a watcher's last seen revision
    rolled = invoke("rollback", "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert rolled.exit_code == 0, why(rolled)
    body = json.loads(rolled.stdout)
    assert body["status"] == "succeeded" and body["kind"] == "rollback", body
    assert body["rollback"]["snapshot"] == older and body["rollback"]["route"] == "full-restore"
    assert {s["status"] for s in body["steps"]} == {"succeeded"}

    assert set(kubelets(lab).values()) == {"v1.30.6"}
    assert not _configmap(lab, "written-after-the-snapshot")  # written after the snapshot: gone
    assert len(store_.members()) == 3
    after = store_.revision()
    assert after > served, (after, served)  # no client sees the revision go backwards ...
    assert not store_.readable_at(served)  # ... and one resuming from before is told it is compacted
    store_.close()
    proved = invoke("verify", "-c", cluster_yaml, *db, "--against", older, "-o", "json")
    assert proved.exit_code == 0, proved.output
    restored = {c["check"]: c["detail"] for c in json.loads(proved.stdout)["checks"]}["etcd keys"]
    assert restored.startswith("all ") and "keys are there" in restored  # compared key by key, not counted
    assert invoke("verify", "-c", cluster_yaml, "--expect", "1.30.6").exit_code == 0
    for node in ("cp-1", "cp-2", "cp-3"):  # the old data directories went once the rollback was verified
        lib = lab.root(node) / "var" / "lib"
        assert sorted(p.name for p in lib.iterdir() if p.name.startswith("etcd")) == ["etcd"]
        assert not any((lib / "upgrader" / "snapshots").iterdir())
    with store.Store.open(db[1]) as state:
        run = state.run(body["id"])
        assert run.steps[4].detail["how"] == "no-op writes" and run.steps[4].detail["revision"] > served
        assert run.steps[7].detail["verified"] is True
        kinds_seen = {e.kind for e in state.events(cluster=lab.name, limit=2000) if e.run_id == run.id}
    assert {"rollback-started", "rollback-verified", "run-succeeded"} <= kinds_seen

    # The 1.31 snapshot the cluster no longer runs is newer than it: refused.
    upgraded = invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json")
    assert upgraded.exit_code == 0
    status = json.loads(invoke("status", "-c", cluster_yaml, *db, "-o", "json").stdout)
    assert status["run"]["kind"] == "rollback" and status["run"]["status"] == "succeeded"


def test_inside_a_two_step_window_the_rollback_loses_nothing(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("window", version="1.31.13", control_planes=1, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    _, code, paused = _apply(cluster_yaml, db, "1.32", "--pause-after", "emulation")
    assert code == 6, paused
    assert "emulated-version" in _cluster_configuration(lab)
    _configmap(lab, "written-in-the-window", create=True)

    dry = json.loads(invoke("rollback", "-c", cluster_yaml, *db, "--dry-run", "-o", "json").stdout)
    assert dry["route"] == "window" and dry["lost"] is None and dry["ends_run"] == paused["run"], dry
    rolled = invoke("rollback", "-c", cluster_yaml, *db, "--yes", "-o", "json")
    assert rolled.exit_code == 0, why(rolled)
    assert json.loads(rolled.stdout)["rollback"]["route"] == "window"

    assert _configmap(lab, "written-in-the-window")  # nothing written since the snapshot is lost
    assert invoke("verify", "-c", cluster_yaml, "--expect", "1.31.13").exit_code == 0
    configuration = _cluster_configuration(lab)
    assert "emulated-version" not in configuration and "kubernetesVersion: v1.31.13" in configuration
    with store.Store.open(db[1]) as state:
        ended = state.run(paused["run"])
    assert ended.status is records.RunStatus.ROLLED_BACK and "rolled back to snapshot" in (ended.stopped_reason or "")
    again = invoke("apply", "--resume", paused["run"], "-c", cluster_yaml, *db)
    assert again.exit_code == 3 and "rolled-back" in again.stderr


def test_apply_on_failure_rollback_exits_4_with_the_cluster_back_and_verified(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("onfailure", version="1.30.6", control_planes=3, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    # To 1.33, paused at safe points until the first hop (1.31) is done; then cp-2's kubeadm fails in the second.
    _, code, body = _apply(cluster_yaml, db, "1.33", "--pause-after", "hop")
    run_id = str(body["run"])
    for _ in range(3):
        assert code == 6, body
        following = next(s for s in body["steps"] if s["status"] != "succeeded")  # type: ignore[attr-defined]
        if following["kind"] == "snapshot" or str(following["version"]).startswith("1.32"):
            break
        paused = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "--pause-after", "hop", "-o", "json")
        code, body = paused.exit_code, json.loads(paused.stdout)
    faults.write(lab.run_dir, {"cp-2": {faults.Fault.KUBEADM_FAIL}})
    failed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "--on-failure", "rollback")
    faults.write(lab.run_dir, {})
    assert failed.exit_code == 4, why(failed)
    assert "lab fault kubeadm-fail" in failed.stderr and "verified" in failed.stderr
    api = kube.Cluster.connect(lab.kubeconfig)
    try:  # cp-1 had moved to 1.32 (emulating 1.31) before cp-2 failed: it went back
        assert {api.version(a.endpoint).git_version for a in api.apiservers()} == {"v1.31.13"}
    finally:
        api.close()
    with store.Store.open(db[1]) as state:
        runs = state.runs(lab.name)
        upgrade = state.run(run_id)
    rollback = next(r for r in runs if r.kind is records.RunKind.ROLLBACK)
    assert rollback.status is records.RunStatus.SUCCEEDED and upgrade.status is records.RunStatus.ROLLED_BACK
    snapshot = rollback.options["snapshot"]
    taken = [s.detail["snapshot"] for s in upgrade.steps if s.kind == "snapshot" and s.detail.get("snapshot")]
    assert snapshot == taken[-1]  # the last known-good snapshot: the one before the failed hop
    assert invoke("verify", "-c", cluster_yaml, *db, "--against", snapshot).exit_code == 0


@pytest.mark.long
def test_a_rollback_killed_mid_restore_resumes_and_completes(
    labs: Labs, tmp_path: Path, private_state_home: Path
) -> None:
    lab = labs.up("rbkill", version="1.30.6", control_planes=3, workers=1)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db_path = tmp_path / "state.db"
    db = ("--db", f"sqlite:///{db_path}")
    _, code, applied = _apply(cluster_yaml, db, "1.32", plan_args=ONE_STEP)  # nodes last: 1.30 kubelets until the end
    assert code == 0, json.dumps(applied, indent=1)
    # The default target: the snapshot before the last hop, control plane at 1.31 and kubelets at 1.30.
    # etcd.max_revision_gap is tiny and the regression accepted: the revision is left where the restore put
    # it, and every kubelet is restarted instead.
    tight = yaml.safe_load(lab_config(lab, tmp_path).read_text())
    tight["etcd"]["max_revision_gap"] = 10
    cluster_yaml = str(tmp_path / "tight.yaml")
    Path(cluster_yaml).write_text(yaml.safe_dump(tight))
    env = {**os.environ, "XDG_DATA_HOME": str(private_state_home.parent)}
    killed = Apply(["-c", cluster_yaml, *db, "--yes", "--allow-revision-regression"], env, command="rollback")
    data = lab.root("cp-1") / "var" / "lib"
    try:
        # Killed while etcd is down and the members are being restored: the worst moment.
        wait_for(lambda: any(p.name.startswith("etcd.") for p in data.iterdir()), timeout=120, what="a restore")
        killed.kill()
    finally:
        killed.stop()
    run_id = json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["id"]
    for node in ("cp-1", "cp-2", "cp-3"):  # no member is left without its old data directory
        lib = lab.root(node) / "var" / "lib"
        assert (lib / "etcd").is_dir() or any(p.name.startswith("etcd.before-") for p in lib.iterdir())
    fresh = invoke("rollback", "-c", cluster_yaml, *db, "--yes")
    assert fresh.exit_code == 3 and f"rollback --resume {run_id}" in fresh.stderr, fresh.output
    resumed = invoke(
        "rollback", "--resume", run_id, "-c", cluster_yaml, *db, "-o", "json", "--allow-revision-regression"
    )
    assert resumed.exit_code == 0, why(resumed)
    body = json.loads(resumed.stdout)
    assert body["status"] == "succeeded" and max(s["attempts"] for s in body["steps"]) >= 2
    # kubelets back to 1.30 under a 1.31 control plane: a worker's kubeadm at 1.31 does its part
    assert set(kubelets(lab).values()) == {"v1.30.6"}
    with store.Store.open(db[1]) as state:
        target = state.run(run_id).options["snapshot"]
        assert str(state.snapshot(target).facts["control_plane"][0]["apiserver"]) == "1.31.13"
        run = state.run(run_id)
        events = [e for e in state.events(cluster=lab.name, limit=3000) if e.run_id == run_id]
    assert run.steps[4].detail["how"] == "not moved (--allow-revision-regression)"
    assert any(e.kind == "revision-regression" for e in events)
    restarted = {e.data["host"] for e in events if e.data.get("playbook") == "rollback-restart-kubelets.yml"}
    assert restarted == {"cp-1", "cp-2", "cp-3", "w-1"}
    assert invoke("verify", "-c", cluster_yaml, *db, "--against", target).exit_code == 0
