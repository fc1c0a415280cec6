"""Live facts and verified snapshots against the lab."""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.e2e.conftest import Labs, state, wait_for
from upgrader import cli
from upgrader.cluster import live_facts, session
from upgrader.core import config
from upgrader.core.rules import facts as facts_mod
from upgrader.etcd import kv, snapshot
from upgrader.lab import control, http, manifests, topology
from upgrader.snapshots import tiers
from upgrader.state import store

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[topology.Lab]:
    made = Labs(tmp_path_factory.mktemp("facts"))
    try:
        from upgrader.core.versions import Version
        from upgrader.lab import create

        created = create.create(
            made.base / "facts", version=Version.parse("1.31.13"), control_planes=3, workers=2, cgroup_v1=("w-2",)
        )
        made.labs.append(created)
        control.up(created.dir, timeout=60)
        made.remember(created)
        yield created
    finally:
        made.stop_all()


@pytest.fixture
def cfg(lab: topology.Lab) -> config.ClusterConfig:
    return config.load(lab.dir / "cluster.yaml")


@pytest.fixture
def cluster(cfg: config.ClusterConfig) -> Iterator[session.ClusterSession]:
    with session.ClusterSession.open(cfg) as opened:
        yield opened


@pytest.fixture
def state_db(tmp_path: Path) -> Iterator[store.Store]:
    opened = store.Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    opened.close()


def test_facts_match_the_lab(cluster: session.ClusterSession) -> None:
    collected = live_facts.collect(cluster)
    data = collected.as_dict()
    assert [(m["name"], m["apiserver"], m["emulated"], m["kubelet"], m["cgroup"]) for m in data["control_plane"]] == [
        (f"cp-{i}", "1.31.13", "1.31", "1.31.13", "v2") for i in (1, 2, 3)
    ]
    assert [(n["name"], n["kubelet"], n["cgroup"], n["container_runtime"]) for n in data["nodes"]] == [
        ("w-1", "1.31.13", "v2", "containerd://2.1.4"),
        ("w-2", "1.31.13", "v1", "containerd://2.1.4"),
    ]
    assert data["etcd"]["version"].startswith("3.") and len(data["etcd"]["members"]) == 3
    assert data["warnings"] == []
    parsed = facts_mod.from_mapping(data)  # the planner's format, as is
    assert parsed.node("w-2").cgroup is facts_mod.Cgroup.V1


def test_apis_in_use_come_from_the_metric_and_from_stored_objects(
    lab: topology.Lab, cluster: session.ClusterSession
) -> None:
    client = http.Client(lab.kubeconfig, server=f"https://{lab.node('cp-2').ip}:{topology.APISERVER_PORT}")
    flowschema = {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1beta3",
        "kind": "FlowSchema",
        "metadata": {"name": "legacy-tenant"},
        "spec": {"priorityLevelConfiguration": {"name": "global"}},
    }
    reply = client.request("POST", "/apis/flowcontrol.apiserver.k8s.io/v1beta3/flowschemas", flowschema)
    assert reply.status == 201, reply.body
    apis = live_facts.collect(cluster, with_nodes=False).data["apis_in_use"]
    assert {
        "group": "flowcontrol.apiserver.k8s.io",
        "version": "v1beta3",
        "resource": "flowschemas",
        "source": "metric",
    } in apis
    assert {
        "group": "flowcontrol.apiserver.k8s.io",
        "version": "v1beta3",
        "resource": "flowschemas",
        "source": "stored",
        "count": 1,
    } in apis
    planned = runner.invoke(cli.app, ["plan", "-c", str(lab.dir / "cluster.yaml"), "--to", "1.32", "-o", "json"])
    assert planned.exit_code == 3, planned.output
    assert [b["code"] for b in json.loads(planned.stdout)["blockers"]] == ["API_REMOVED"]
    # Rewriting the object stores it at the storage version: a storage migration clears the stored finding.
    assert (
        client.request(
            "PATCH",
            "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/legacy-tenant",
            {"metadata": {"labels": {"migrated": "yes"}}},
            content_type="application/merge-patch+json",
        ).status
        == 200
    )
    apis = live_facts.collect(cluster, with_nodes=False).data["apis_in_use"]
    assert not [a for a in apis if a["source"] == "stored"]


def test_facts_json_feeds_plan(lab: topology.Lab, tmp_path: Path) -> None:
    collected = runner.invoke(cli.app, ["facts", "-c", str(lab.dir / "cluster.yaml"), "-o", "json"])
    assert collected.exit_code == 0, collected.output
    path = tmp_path / "facts.json"
    path.write_text(collected.stdout)
    planned = runner.invoke(cli.app, ["plan", "--facts", str(path), "--to", "1.33", "-o", "json"])
    body = json.loads(planned.stdout)
    assert body["target"] == "1.33.5" and "CGROUP_V1" not in [b["code"] for b in body["blockers"]]
    table = runner.invoke(cli.app, ["facts", "-c", str(lab.dir / "cluster.yaml")])
    assert "w-2   1.31.13  v1" in table.stdout


def test_facts_of_a_mid_hop_two_step_control_plane(labs: Labs) -> None:
    lab = labs.up("midhop", version="1.31.13", control_planes=2, workers=0)
    path = lab.manifests("cp-1") / "kube-apiserver.yaml"
    manifest = manifests.read(path)
    manifest["spec"]["containers"][0]["image"] = "registry.k8s.io/kube-apiserver:v1.32.9"
    manifest["spec"]["containers"][0]["command"].append("--emulated-version=1.31")
    manifests.write(path, manifest)
    cluster = session.ClusterSession.open(config.load(lab.dir / "cluster.yaml"))

    def moved() -> bool:
        # the process answers at 1.32.9 and its mirror pod (where a 1.32 apiserver's --emulated-version is
        # read: its /version does not say it) shows the new manifest
        control_plane = live_facts.collect(cluster, with_nodes=False).data["control_plane"]
        return control_plane[0]["apiserver"] == control_plane[0]["manifest_version"] == "1.32.9"

    with cluster:
        wait_for(moved, timeout=40, what="cp-1 at 1.32.9")
        data = live_facts.collect(cluster).as_dict()
    assert [(m["name"], m["apiserver"], m["emulated"]) for m in data["control_plane"]] == [
        ("cp-1", "1.32.9", "1.31"),
        ("cp-2", "1.31.13", "1.31"),
    ]
    planned = runner.invoke(cli.app, ["plan", "-c", str(lab.dir / "cluster.yaml"), "--to", "1.32", "-o", "json"])
    steps = [s for s in json.loads(planned.stdout)["steps"] if s["kind"] != "snapshot"]
    assert steps[0] == {
        "kind": "control-plane",
        "version": "1.32.9",
        "nodes": ["cp-2"],
        "emulated": "1.31",
        "etcd": steps[0]["etcd"],
        "reason": steps[0]["reason"],
    }
    assert steps[1]["kind"] == "emulation-commit"


def test_a_snapshot_round_trips_through_a_restore_test(
    lab: topology.Lab, cluster: session.ClusterSession, state_db: store.Store
) -> None:
    progress: list[int] = []
    created = tiers.create(cluster, state_db, label="before 1.32", progress=lambda done, total: progress.append(done))
    record = created.record
    assert created.health.ok and record.known_good and record.healthy
    assert progress and progress[-1] == record.etcd_size
    assert record.etcd_revision and record.key_count and len(record.members) == 3
    assert record.facts["control_plane"][0]["apiserver"] == "1.31.13"
    for path in (Path(record.etcd_path), Path(record.archive_path or "")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not list(Path(record.etcd_path).parent.glob("*.part"))
    verified = tiers.verify(state_db, record.id, restore_test=True)
    assert verified.ok, verified.checks
    assert set(verified.checks) == {"etcd database", "archive", "restore test"}
    import tarfile

    with tarfile.open(record.archive_path or "") as archive:
        names = archive.getnames()
    assert {
        "cp-1/manifests/kube-apiserver.yaml",
        "cp-3/versions.json",
        "cluster-configuration.yaml",
        "SHA256SUMS",
    } <= set(names)


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-trailer"])
def test_a_damaged_snapshot_fails_verification_and_loses_known_good(
    cluster: session.ClusterSession, state_db: store.Store, damage: str, tmp_path: Path
) -> None:
    record = tiers.create(cluster, state_db).record
    path = Path(record.etcd_path)
    data = bytearray(path.read_bytes())
    original = bytes(data)
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data = data[:-32]
    path.write_bytes(bytes(data))
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    result = runner.invoke(cli.app, ["snapshot", "verify", record.id, "--db", db_url])
    assert result.exit_code == 1 and "failed verification (etcd database: " in result.stderr, result.output
    assert "it is no longer known-good" in result.stderr
    assert not state_db.snapshot(record.id).known_good
    path.write_bytes(original)  # even repaired, it never becomes known-good again
    assert tiers.verify(state_db, record.id).ok
    assert not state_db.snapshot(record.id).known_good


def test_snapshot_cli_list_show_and_prune(lab: topology.Lab, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    cluster_yaml = str(lab.dir / "cluster.yaml")
    first = runner.invoke(cli.app, ["snapshot", "create", "-c", cluster_yaml, "--db", db_url, "-o", "json"])
    second = runner.invoke(cli.app, ["snapshot", "create", "-c", cluster_yaml, "--db", db_url])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    old = json.loads(first.stdout)["id"]
    assert "KNOWN-GOOD" in second.stdout
    listed = json.loads(runner.invoke(cli.app, ["snapshot", "list", "--db", db_url, "-o", "json"]).stdout)
    assert [s["id"] for s in listed["snapshots"]][1] == old
    shown = runner.invoke(cli.app, ["snapshot", "show", old, "--db", db_url])
    assert "known_good      True" in shown.stdout and "cp-1 1.31.13" in shown.stdout
    preview = runner.invoke(
        cli.app, ["snapshot", "prune", "-c", cluster_yaml, "--keep", "1", "--dry-run", "--db", db_url]
    )
    assert preview.exit_code == 0 and f"would delete {old}" in preview.stdout
    refused = runner.invoke(cli.app, ["snapshot", "prune", "-c", cluster_yaml, "--keep", "1", "--db", db_url])
    assert refused.exit_code == 2 and Path(json.loads(first.stdout)["etcd_path"]).exists()
    done = runner.invoke(cli.app, ["snapshot", "prune", "-c", cluster_yaml, "--keep", "1", "--yes", "--db", db_url])
    assert done.exit_code == 0, done.output
    assert not Path(json.loads(first.stdout)["etcd_path"]).exists()
    remaining = json.loads(runner.invoke(cli.app, ["snapshot", "list", "--db", db_url, "-o", "json"]).stdout)
    assert len(remaining["snapshots"]) == 1
    zero = runner.invoke(cli.app, ["snapshot", "prune", "-c", cluster_yaml, "--keep", "0", "--db", db_url])
    assert zero.exit_code == 2 and "never deleted" in zero.stderr


def _single_endpoint(lab: topology.Lab, tmp_path: Path, endpoint: str, *, ca: str = "pki/etcd/ca.crt") -> Path:
    data = yaml.safe_load((lab.dir / "cluster.yaml").read_text())
    data["etcd"]["endpoints"] = [endpoint]
    data["etcd"]["ca"] = str(lab.dir / ca)
    for key in ("cert", "key", "kubeconfig", "inventory"):
        value = data["etcd"][key] if key in ("cert", "key") else data[key]
        absolute = str(lab.dir / value)
        if key in ("cert", "key"):
            data["etcd"][key] = absolute
        else:
            data[key] = absolute
    data["snapshots"]["dir"] = str(tmp_path / "snapshots")
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_etcd_stopped_mid_stream_leaves_nothing_behind(labs: Labs, tmp_path: Path) -> None:
    lab = labs.up("midstream", control_planes=1, workers=0)
    cfg = config.load(_single_endpoint(lab, tmp_path, lab.etcd_endpoints()[0]))
    store_kv = kv.KV(kv.target(cfg.etcd))
    try:
        for i in range(40):  # about 4 MiB, so the stream takes many messages
            store_kv.put(f"/bulk/{i:04d}", os.urandom(100_000))
    finally:
        store_kv.close()
    pid = state(lab)["nodes"]["cp-1"]["etcd"]["pid"]  # type: ignore[index]

    killed: list[int] = []

    def kill_after_first_chunk(done: int, total: int | None) -> None:
        if done > 0 and pid and not killed:  # once: the stream may deliver more chunks before it notices
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))

    snapshots_dir = tmp_path / "snapshots"
    with store.Store.open(f"sqlite:///{tmp_path / 'state.db'}") as opened, session.ClusterSession.open(cfg) as cluster:
        with pytest.raises((kv.EtcdUnavailable, snapshot.SnapshotCorrupt)):
            tiers.create(cluster, opened, progress=kill_after_first_chunk)
        assert opened.snapshots() == []
    assert [p.name for p in snapshots_dir.iterdir()] == []


def test_unreachable_etcd_and_a_wrong_ca_are_clear_errors(lab: topology.Lab, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'state.db'}"
    unreachable = _single_endpoint(lab, tmp_path, "https://127.0.0.1:9")
    result = runner.invoke(cli.app, ["snapshot", "create", "-c", str(unreachable), "--db", db_url])
    assert result.exit_code == 1 and "etcd" in result.stderr and "Traceback" not in result.output
    wrong_ca = _single_endpoint(lab, tmp_path, lab.etcd_endpoints()[0], ca="pki/ca.crt")  # the cluster CA, not etcd's
    result = runner.invoke(cli.app, ["snapshot", "create", "-c", str(wrong_ca), "--db", db_url])
    assert result.exit_code == 1 and "etcd" in result.stderr
    assert not any((tmp_path / "snapshots").iterdir())
    assert json.loads(runner.invoke(cli.app, ["snapshot", "list", "--db", db_url, "-o", "json"]).stdout) == {
        "snapshots": [],
        "orphans": [],
    }


def test_facts_read_stored_objects_against_the_catalog_given(
    lab: topology.Lab, cluster: session.ClusterSession, tmp_path: Path
) -> None:
    from upgrader.core.rules import catalog as catalog_mod

    data = json.loads(catalog_mod.CATALOG_FILE.read_text())
    # An invented removal: core/v1 namespaces stop being served in 1.33. Only this catalog says so.
    data["minors"]["1.33"]["removed_apis"].append(
        {"group": "", "version": "v1", "resources": ["namespaces"], "use_instead": "nothing (a test catalog)"}
    )
    custom = tmp_path / "catalog.json"
    custom.write_text(json.dumps(data))
    stored = [a for a in live_facts.collect(cluster, with_nodes=False).data["apis_in_use"] if a["source"] == "stored"]
    assert not [a for a in stored if a["resource"] == "namespaces"]
    apis = live_facts.collect(cluster, with_nodes=False, catalog=catalog_mod.load(custom)).data["apis_in_use"]
    assert {k: v for k, v in next(a for a in apis if a["resource"] == "namespaces").items() if k != "count"} == {
        "group": "",
        "version": "v1",
        "resource": "namespaces",
        "source": "stored",
    }
    planned = runner.invoke(
        cli.app, ["plan", "-c", str(lab.dir / "cluster.yaml"), "--to", "1.33", "--catalog", str(custom), "-o", "json"]
    )
    assert planned.exit_code == 3, planned.output
    assert "API_REMOVED" in [b["code"] for b in json.loads(planned.stdout)["blockers"]]


def test_plan_from_a_live_cluster_shows_what_did_not_agree(lab: topology.Lab, tmp_path: Path) -> None:
    cluster_yaml = _single_endpoint(lab, tmp_path, lab.etcd_endpoints()[0])
    data = yaml.safe_load(cluster_yaml.read_text())
    data["etcd"]["endpoints"].append("https://127.0.0.1:9")  # a member that does not answer
    cluster_yaml.write_text(yaml.safe_dump(data))
    planned = runner.invoke(cli.app, ["plan", "-c", str(cluster_yaml), "--to", "1.32", "-o", "json"])
    assert planned.exit_code in (0, 3), planned.output
    assert "upgrader: warning: etcd at https://127.0.0.1:9" in planned.stderr
    json.loads(planned.stdout)  # the warnings stay on stderr: stdout is one JSON document
