"""Snapshots in three tiers on the lab, against a real S3-compatible server: created in every tier, each
tier's copy tampered with in turn and named by ``snapshot verify``, the controller's copies and database
lost and imported back from the bucket, and a rollback that restores every etcd member from the copy on
its own disk, with nothing pushed during the outage."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from tests import s3server
from tests.e2e.conftest import Labs
from tests.e2e.test_apply import invoke, kubelets, why
from tests.e2e.test_hardening import lab_config
from tests.e2e.test_rollback import ONE_STEP, _apply
from upgrader.lab import topology
from upgrader.objectstore import sealing
from upgrader.state import store

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("s3_credentials")]


def _flip(path: Path, offset: int) -> bytes:
    """Flips one bit of ``path`` at ``offset``; returns the original bytes."""
    original = path.read_bytes()
    changed = bytearray(original)
    changed[offset] ^= 0x01
    path.write_bytes(bytes(changed))
    return original


def _tiered(lab: topology.Lab, tmp_path: Path, server: s3server.Server) -> tuple[Path, str]:
    bucket = f"snaps-{uuid.uuid4().hex[:8]}"
    server.create_bucket(bucket)
    key = tmp_path / "snapshots.key"
    sealing.Key.generate(key)
    path = lab_config(lab, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["snapshots"].update(
        tiers=["local", "peer", "s3"],
        require=["local", "peer"],
        s3={
            "bucket": bucket,
            "endpoint": server.endpoint,
            "region": "us-east-1",
            "prefix": "prod",
            "key_file": str(key),
        },
    )
    path.write_text(yaml.safe_dump(data))
    return path, bucket


def _copies(cluster_yaml: str, db: tuple[str, str], snapshot_id: str) -> dict[str, str]:
    shown = json.loads(invoke("snapshot", "show", snapshot_id, *db, "-o", "json").stdout)
    return {(f"{c['tier']}:{c['place']}" if c["place"] else c["tier"]): c["state"] for c in shown["copies"]}


@pytest.mark.long
def test_three_tiers_from_create_to_a_rollback_from_peer_copies_after_the_controller_is_lost(
    labs: Labs, tmp_path: Path, s3_server: s3server.Server
) -> None:
    lab = labs.up("tiers", version="1.30.6", control_planes=3, workers=1)
    path, bucket = _tiered(lab, tmp_path, s3_server)
    cluster_yaml = str(path)
    db = ("--db", f"sqlite:///{tmp_path / 'state.db'}")

    created = invoke("snapshot", "create", "-c", cluster_yaml, *db, "-o", "json")
    assert created.exit_code == 0, why(created)
    snapshot_id = json.loads(created.stdout)["id"]
    everywhere = {"local": "ok", "peer:cp-1": "ok", "peer:cp-2": "ok", "peer:cp-3": "ok", "s3": "ok"}
    assert _copies(cluster_yaml, db, snapshot_id) == everywhere
    for node in ("cp-1", "cp-2", "cp-3"):
        held = lab.root(node) / "var" / "lib" / "upgrader" / "snapshots"
        assert held.stat().st_mode & 0o777 == 0o700
        assert sorted(p.name for p in held.iterdir()) == [f"{snapshot_id}.db", f"{snapshot_id}.tar.gz"]
        assert {p.stat().st_mode & 0o777 for p in held.iterdir()} == {0o600}
    objects = sorted(o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert objects == [f"prod/{lab.name}/{snapshot_id}{s}" for s in (".db.sealed", ".json", ".tar.gz.sealed")]
    listed = invoke("snapshot", "list", "-c", cluster_yaml, *db)
    assert "local peer(3/3) s3" in listed.stdout, listed.output

    # Each tier's copy tampered with in turn: verify names it, and the snapshot stays known-good.
    local_db = Path(tmp_path / "snapshots" / f"{snapshot_id}.db")
    peer_db = lab.root("cp-2") / "var" / "lib" / "upgrader" / "snapshots" / f"{snapshot_id}.db"
    client = s3_server.client()
    sealed_key = f"prod/{lab.name}/{snapshot_id}.db.sealed"
    sealed = client.get_object(Bucket=bucket, Key=sealed_key)
    sealed_body, sealed_metadata = sealed["Body"].read(), sealed["Metadata"]
    for tier, expected in [
        ("local", "etcd database: "),
        ("peer", f"peer cp-2: cp-2: {snapshot_id}.db does not match its sha256"),
        ("s3", f"s3: s3 object {sealed_key} fails authentication"),
    ]:
        if tier == "local":
            _flip(local_db, 5000)
        elif tier == "peer":
            original = _flip(peer_db, 5000)
        else:
            tampered = bytearray(sealed_body)
            tampered[5000] ^= 0x01
            client.put_object(Bucket=bucket, Key=sealed_key, Body=bytes(tampered), Metadata=sealed_metadata)
        checked = invoke("snapshot", "verify", snapshot_id, "-c", cluster_yaml, *db, "--tier", tier)
        assert checked.exit_code == 1, why(checked)
        assert expected in checked.stderr and "still known-good" in checked.stderr, checked.output
        assert _copies(cluster_yaml, db, snapshot_id)[tier if tier != "peer" else "peer:cp-2"] == "bad"
        if tier == "local":  # repaired from the bucket: downloaded, unsealed, checked, then renamed
            pulled = invoke("snapshot", "pull", snapshot_id, "-c", cluster_yaml, *db, "--from", "s3")
            assert pulled.exit_code == 0, why(pulled)
        elif tier == "peer":
            peer_db.write_bytes(original)
        else:
            client.put_object(Bucket=bucket, Key=sealed_key, Body=sealed_body, Metadata=sealed_metadata)
    wrong_key = tmp_path / "wrong.key"
    sealing.Key.generate(wrong_key)
    data = yaml.safe_load(path.read_text())
    data["snapshots"]["s3"]["key_file"] = str(wrong_key)
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(data))
    stranger = invoke("snapshot", "verify", snapshot_id, "-c", str(tmp_path / "wrong.yaml"), *db, "--tier", "s3")
    assert stranger.exit_code == 1 and "encrypted with another key" in stranger.stderr, stranger.output
    again = invoke("snapshot", "verify", snapshot_id, "-c", cluster_yaml, *db, "-o", "json")
    assert again.exit_code == 0, why(again)
    assert _copies(cluster_yaml, db, snapshot_id) == everywhere

    # A tier that fails is named, and the other tiers and the record stay; a required one stops an apply
    # before it changes anything (on a database of its own here, so that its failed run stays apart).
    broken = yaml.safe_load(path.read_text())
    broken["snapshots"]["s3"]["bucket"] = "no-such-bucket-here"
    broken["snapshots"]["require"] = ["local", "s3"]
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    other = ("--db", f"sqlite:///{tmp_path / 'other.db'}")
    half = invoke("snapshot", "create", "-c", str(tmp_path / "broken.yaml"), *other, "-o", "json")
    assert half.exit_code == 1, why(half)
    assert "was taken, but s3 tier: s3://no-such-bucket-here" in half.stderr, half.output
    assert "the bucket does not exist" in half.stderr
    taken = json.loads(half.stdout)
    assert {c["tier"]: c["state"] for c in taken["copies"] if c["tier"] != "peer"} == {"local": "ok", "s3": "missing"}
    assert taken["known_good"] and set(taken["failed_tiers"]) == {"s3"}
    pushed = invoke("snapshot", "push", taken["id"], "-c", cluster_yaml, *other, "--to", "s3")
    assert pushed.exit_code == 0, why(pushed)  # the bucket fixed: the tier completed for the same snapshot
    assert _copies(cluster_yaml, other, taken["id"])["s3"] == "ok"
    _, code, stopped = _apply(str(tmp_path / "broken.yaml"), other, "1.31", plan_args=ONE_STEP)
    assert code == 1 and "lacks a required tier (snapshots.require): s3 tier" in json.dumps(stopped), stopped
    assert set(kubelets(lab).values()) == {"v1.30.6"}

    # A minor up; the apply's own snapshots go to every tier too.
    _, code, applied = _apply(cluster_yaml, db, "1.31", plan_args=ONE_STEP)
    assert code == 0, json.dumps(applied, indent=1)
    assert set(kubelets(lab).values()) == {"v1.31.13"}

    # The controller is lost: its snapshot files and its database. A fresh one imports from the bucket.
    shutil.rmtree(tmp_path / "snapshots")
    (tmp_path / "state.db").unlink()
    fresh = ("--db", f"sqlite:///{tmp_path / 'fresh.db'}")
    imported = invoke("snapshot", "import", "-c", cluster_yaml, *fresh, "--from", "s3", "-o", "json")
    assert imported.exit_code == 0, why(imported)
    found = [r["id"] for r in json.loads(imported.stdout)["imported"]]
    assert snapshot_id in found and len(found) >= 2, found

    # The local database copy goes too (the archive stays): every member restores from its own disk.
    (tmp_path / "snapshots" / f"{snapshot_id}.db").unlink()
    rolled = invoke("rollback", "-c", cluster_yaml, *fresh, "--to", snapshot_id, "--yes", "-o", "json")
    assert rolled.exit_code == 0, why(rolled)
    assert json.loads(rolled.stdout)["rollback"]["route"] == "full-restore"
    assert set(kubelets(lab).values()) == {"v1.30.6"}
    assert not (tmp_path / "snapshots" / f"{snapshot_id}.db").exists()  # nothing could have been pushed
    with store.Store.open(fresh[1]) as state:
        said = [e.message for e in state.events(cluster=lab.name, limit=5000) if e.kind == "snapshot-copy"]
        tasks = [e.data for e in state.events(cluster=lab.name, limit=5000) if e.kind == "ansible-task"]
    assert any("every control-plane node has a good copy" in m for m in said), said
    assert [t for t in tasks if t.get("task") == "upgrader: restore etcd"]  # the playbook's tasks are recorded,
    assert not [t for t in tasks if t.get("task") == "upgrader: push the snapshot"]  # and this one never ran
    for node in ("cp-1", "cp-2", "cp-3"):  # the peer copies stay after the rollback's clean-up
        assert (lab.root(node) / "var" / "lib" / "upgrader" / "snapshots" / f"{snapshot_id}.db").exists()
    proved = invoke("verify", "-c", cluster_yaml, *fresh, "--against", snapshot_id)
    assert proved.exit_code == 0, proved.output
