"""The rollback's decisions without a cluster: which snapshot (on real files in a real SQLite store), which
route, what the archive may put on a command line, and what verify allows of a kubelet."""

from __future__ import annotations

import base64
import dataclasses
import io
import shutil
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_snapshot_files import record, snapshot_file
from upgrader import errors
from upgrader.core.tier import Tier
from upgrader.core.versions import Minor, Version
from upgrader.engine.ports import Expected
from upgrader.etcd import snapshot as etcd_snapshot
from upgrader.snapshots import local as local_tier
from upgrader.state import records, store
from upgrader.usecases import verification
from upgrader.usecases.rollback import archive, choice, model

V = Version.parse


def facts(apiserver: str, emulated: str | None = None, kubelet: str | None = None) -> dict[str, Any]:
    minor = emulated or apiserver.rsplit(".", 1)[0]
    return {
        "control_plane": [
            {"name": n, "apiserver": apiserver, "emulated": minor, "kubelet": kubelet or apiserver}
            for n in ("cp-1", "cp-2")
        ],
        "nodes": [{"name": "w-1", "kubelet": kubelet or apiserver}],
    }


def etcd_manifest(name: str = "cp-1", data_dir: str = "/var/lib/etcd", image: str = "3.5.15-0") -> bytes:
    command = [
        "etcd",
        f"--name={name}",
        f"--data-dir={data_dir}",
        "--initial-advertise-peer-urls=https://10.0.0.1:2380",
        "--advertise-client-urls=https://10.0.0.1:2379",
    ]
    pod = {"spec": {"containers": [{"image": f"registry.k8s.io/etcd:{image}", "command": command}]}}
    return yaml.safe_dump(pod).encode()


def apiserver_manifest() -> bytes:
    command = ["kube-apiserver", "--advertise-address=10.0.0.1", "--secure-port=6443"]
    container = {"image": "x/kube-apiserver:v1.31.13", "command": command}
    return yaml.safe_dump({"spec": {"containers": [container]}}).encode()


def members(image: str = "3.5.15-0") -> dict[str, bytes]:
    out = {}
    for node in ("cp-1", "cp-2"):
        out[f"{node}/manifests/etcd.yaml"] = etcd_manifest(node, image=image)
        out[f"{node}/manifests/kube-apiserver.yaml"] = apiserver_manifest()
        out[f"{node}/manifests/kube-scheduler.yaml"] = b"scheduler"
    return out


def observed(apiservers: dict[str, tuple[str, str]], etcd: str | None = "3.5.15") -> model.Observed:
    return model.Observed(
        apiservers={n: (V(v), Minor.parse(e)) for n, (v, e) in apiservers.items()},
        kubelets={},
        revision=100,
        etcd_version=V(etcd) if etcd else None,
    )


SNAPSHOT_131 = dataclasses.replace(record("s", 0, True), facts=facts("1.31.13"))


def _choose(
    catalog: Catalog, wanted: str | None, minor: Minor | None
) -> tuple[records.SnapshotRecord, tuple[str, ...]]:
    """The rollback's choice over the local tier alone (no cluster to reach the others)."""
    return choice.choose(catalog.state, "c", wanted, minor, choice.verified_locally(catalog.state))


@pytest.mark.parametrize(
    ("now", "etcd", "expected", "why"),
    [
        ({"cp-1": ("1.32.9", "1.31"), "cp-2": ("1.31.13", "1.31")}, "3.5.15", model.Route.WINDOW, "never committed"),
        ({"cp-1": ("1.31.13", "1.31"), "cp-2": ("1.31.13", "1.31")}, "3.5.15", model.Route.WINDOW, "never committed"),
        ({"cp-1": ("1.32.9", "1.32"), "cp-2": ("1.32.9", "1.32")}, "3.5.15", model.Route.FULL_RESTORE, "committed"),
        ({"cp-1": ("1.32.9", "1.31")}, "3.5.15", model.Route.FULL_RESTORE, "not every apiserver answers (cp-2)"),
        ({"cp-1": ("1.33.5", "1.31"), "cp-2": ("1.31.13", "1.31")}, "3.5.15", model.Route.FULL_RESTORE, "more than"),
        ({"cp-1": ("1.32.9", "1.31"), "cp-2": ("1.32.9", "1.31")}, "3.6.4", model.Route.FULL_RESTORE, "another minor"),
    ],
)
def test_the_window_route_only_when_every_apiserver_still_emulates_the_snapshots_minor(
    now: dict[str, tuple[str, str]], etcd: str, expected: model.Route, why: str
) -> None:
    chosen, reason = choice.route(SNAPSHOT_131, observed(now, etcd), members())
    assert chosen is expected and why in reason, reason


def test_a_snapshot_taken_mid_change_is_restored_in_full() -> None:
    mid = dataclasses.replace(SNAPSHOT_131, facts=facts("1.32.9", emulated="1.31"))
    chosen, reason = choice.route(mid, observed({"cp-1": ("1.32.9", "1.31"), "cp-2": ("1.32.9", "1.31")}), members())
    assert chosen is model.Route.FULL_RESTORE and "while the control plane was changing" in reason


class Catalog:
    """Snapshot records with real files (a stand-in bbolt file with its trailer, a real archive) in a real
    SQLite state database."""

    def __init__(self, tmp_path: Path, etcd_file: Path | None = None) -> None:
        self.dir = tmp_path
        self.state = store.Store.open(f"sqlite:///{tmp_path / 'state.db'}")
        self.minutes = 0
        self.etcd_file = etcd_file  # a real etcd snapshot to copy, where a stand-in will not do

    def add(self, version: str, *, cluster: str = "c", good: bool = True) -> records.SnapshotRecord:
        self.minutes += 1
        name = f"{cluster}-20261201T{self.minutes // 60:02d}{self.minutes % 60:02d}00Z-{self.minutes:04x}"
        if self.etcd_file is not None:
            db = self.dir / f"{name}.db"
            shutil.copyfile(self.etcd_file, db)
        else:
            db = snapshot_file(self.dir / f"{name}.db")
        tar = self.dir / f"{name}.tar.gz"
        sha = local_tier._archive(members(), tar)
        revision, keys = 10, 5
        if self.etcd_file is not None:
            from upgrader.etcd import tools

            status = tools.status(db)
            revision, keys = status.revision, status.keys
        record = records.SnapshotRecord(
            id=records.SnapshotId(name),
            cluster=cluster,
            created_at=datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=self.minutes),
            label=None,
            etcd_revision=revision,
            key_count=keys,
            members=[],
            etcd_path=str(db),
            etcd_size=db.stat().st_size,
            etcd_sha256=etcd_snapshot.check_file(db),
            archive_path=str(tar),
            archive_sha256=sha,
            facts=facts(version),
            healthy=good,
            known_good=good,
            verified_at=None,
            etcd_file_sha256=etcd_snapshot.file_sha256(db),
            copies=(records.CopyRecord.now(name, Tier.LOCAL, str(db), records.CopyState.OK),),
        )
        self.state.add_snapshot(record)
        return self.state.snapshot(name)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    made = Catalog(tmp_path)
    made.state.ensure_cluster("c")
    made.state.ensure_cluster("other")
    return made


def test_the_newest_good_snapshot_at_an_older_minor_and_a_damaged_one_passed_over_for_good(catalog: Catalog) -> None:
    oldest = catalog.add("1.30.6")
    older = catalog.add("1.30.6")
    catalog.add("1.31.13")  # the cluster's own minor: no rollback to it by default
    catalog.add("1.30.6", good=False)  # newer, but never known-good
    damaged = Path(older.etcd_path)
    damaged.write_bytes(damaged.read_bytes()[:-5] + b"xxxxx")
    chosen, passed = choice.choose(
        catalog.state, "c", None, Minor.parse("1.31"), choice.verified_locally(catalog.state)
    )
    assert chosen.id == oldest.id
    assert len(passed) == 1 and passed[0].startswith(f"{older.id}: etcd database:")
    assert not catalog.state.snapshot(older.id).known_good  # failed once: never used again
    with pytest.raises(
        errors.Refused, match=r"no known-good snapshot of cluster c at a minor older than 1.30.*its snapshot with --to"
    ):
        _choose(catalog, None, Minor.parse("1.30"))


def test_a_named_snapshot_is_refused_unless_it_is_this_clusters_known_good_not_newer_and_intact(
    catalog: Catalog,
) -> None:
    good = catalog.add("1.30.6")
    newer = catalog.add("1.32.9")
    foreign = catalog.add("1.30.6", cluster="other")
    bad = catalog.add("1.30.6", good=False)
    assert _choose(catalog, good.id, Minor.parse("1.31"))[0].id == good.id
    with pytest.raises(errors.InputError, match="no snapshot 'nosuch'"):
        _choose(catalog, "nosuch", None)
    with pytest.raises(errors.Refused, match="newer than the cluster"):
        _choose(catalog, newer.id, Minor.parse("1.31"))
    with pytest.raises(errors.Refused, match="belongs to cluster other"):
        _choose(catalog, foreign.id, None)
    with pytest.raises(errors.Refused, match="is not known-good"):
        _choose(catalog, bad.id, None)
    Path(good.archive_path or "").write_bytes(b"tampered")
    with pytest.raises(errors.Refused, match=r"fails verification \(archive:"):
        _choose(catalog, good.id, None)


def test_the_archive_gives_each_members_restore_flags_and_refuses_what_could_reach_a_shell() -> None:
    found = archive.etcd_members(members())
    assert found["cp-2"] == {
        "member": "cp-2",
        "peer_urls": "https://10.0.0.1:2380",
        "data_dir": "/var/lib/etcd",
        "client_urls": "https://10.0.0.1:2379",
    }
    for bad in ("/var/lib/etcd;rm -rf /", "/var/lib/../../etc", "relative/etcd"):
        broken = {**members(), "cp-1/manifests/etcd.yaml": etcd_manifest(data_dir=bad)}
        with pytest.raises(errors.Refused, match="cp-1 has a name, URL or path upgrader refuses"):
            archive.etcd_members(broken)
    with pytest.raises(errors.Refused, match="neither an etcd manifest for cp-2"):
        archive.etcd_members({k: v for k, v in members().items() if k != "cp-2/manifests/etcd.yaml"})


KUBESPRAY_ENV = """# Environment file for etcd v3.5.30
ETCD_DATA_DIR=/var/lib/etcd
ETCD_ADVERTISE_CLIENT_URLS=https://10.0.1.{n}:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.1.{n}:2380
ETCD_NAME="etcd{n}"
ETCD_INITIAL_CLUSTER=etcd1=https://10.0.1.1:2380,etcd2=https://10.0.1.2:2380
"""


def test_etcd_run_as_a_service_is_restored_from_each_hosts_etcd_env() -> None:
    """Kubespray's etcd_deployment_type: host: the members are the etcd hosts, named in /etc/etcd.env."""
    archived = {
        **{k: v for k, v in members().items() if not k.endswith("etcd.yaml")},
        "etcd-1/etcd.env": KUBESPRAY_ENV.format(n=1).encode(),
        "etcd-2/etcd.env": KUBESPRAY_ENV.format(n=2).encode(),
    }
    assert archive.etcd_as_service(archived) and not archive.etcd_as_service(members())
    found = archive.etcd_members(archived)
    assert sorted(found) == ["etcd-1", "etcd-2"]
    assert found["etcd-2"] == {
        "member": "etcd2",
        "peer_urls": "https://10.0.1.2:2380",
        "data_dir": "/var/lib/etcd",
        "client_urls": "https://10.0.1.2:2379",
    }
    hostile = {**archived, "etcd-1/etcd.env": KUBESPRAY_ENV.format(n=1).replace("etcd1", "etcd1;reboot").encode()}
    with pytest.raises(errors.Refused, match=r"/etc/etcd\.env for etcd-1 has a name, URL or path upgrader refuses"):
        archive.etcd_members(hostile)


def test_a_nodes_manifests_travel_as_plain_names_only_the_ones_asked_for() -> None:
    packed = archive.manifest_tar(members(), "cp-2", ("etcd",))
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(packed))) as tar:
        assert [(m.name, m.mode) for m in tar.getmembers()] == [("etcd.yaml", 0o600)]
        extracted = tar.extractfile("etcd.yaml")
        assert extracted is not None and extracted.read() == etcd_manifest("cp-2")
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(archive.manifest_tar(members(), "cp-1", None)))) as tar:
        assert sorted(m.name for m in tar.getmembers()) == ["etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml"]


def test_verify_allows_a_kubelet_newer_than_the_snapshots_only_up_to_its_control_plane() -> None:
    then = Expected(
        apiservers={"cp-1": (V("1.32.9"), Minor.parse("1.32"))},
        kubelets={"cp-1": V("1.30.6"), "w-1": V("1.30.6"), "w-2": V("1.30.6")},
    )
    wanted, notes = verification._kubelets(then, {"cp-1": V("1.30.6"), "w-1": V("1.32.9"), "w-2": V("1.33.5")})
    assert wanted == {"cp-1": V("1.30.6"), "w-1": V("1.32.9"), "w-2": V("1.30.6")}  # w-2 must go back
    assert [n.detail.split(" ")[0] for n in notes] == ["w-1"]
    installed = verification._installed({"cp-1": V("1.31.13"), "w-1": None, "w-2": V("1.30.6")}, wanted)
    assert [c.detail for c in installed if not c.ok] == [
        "cp-1 has kubelet v1.31.13 installed, not v1.30.6",
        "w-1: `kubelet --version` gave no answer",
    ]
    assert [c.ok for c in verification._installed(dict(wanted), wanted)] == [True]


def test_a_full_restore_with_etcd_silent_is_refused_before_the_outage() -> None:
    """Issue 17: with etcd down, a rollback stopped the apiservers, then failed on "the highest revision
    served cannot be read": what the restore needs is now read before anything stops."""
    from upgrader.usecases.rollback import service

    serving = {"cp-1": (V("1.31.13"), Minor(1, 31))}
    silent = model.Observed(apiservers=serving, kubelets={}, revision=None, etcd_version=None)
    with pytest.raises(errors.Refused, match=r"etcd does not answer, .* nothing was changed"):
        service.refuse_blind_restore(model.Route.FULL_RESTORE, silent, model.Options())
    service.refuse_blind_restore(model.Route.FULL_RESTORE, silent, model.Options(allow_revision_regression=True))
    service.refuse_blind_restore(model.Route.WINDOW, silent, model.Options())  # no revision to move
    answering = dataclasses.replace(silent, revision=351)
    service.refuse_blind_restore(model.Route.FULL_RESTORE, answering, model.Options())


def test_a_snapshot_whose_facts_do_not_parse_is_named_not_a_key_error() -> None:
    """A snapshot's facts are parsed once where a use case reads them; a record whose facts are broken
    (an older format, a hand-edited row) is one line naming the snapshot and the key, not a traceback."""
    good = local_tier.facts_of(SNAPSHOT_131)
    assert {m.apiserver for m in good.control_plane} == {Version.parse("1.31.13")}
    member = {"name": "cp-1", "kubelet": "1.31.13", "apiserver": "1.31"}  # a malformed version
    broken = dataclasses.replace(SNAPSHOT_131, facts={"control_plane": [member]})
    with pytest.raises(errors.InputError, match=r"^snapshot s: its facts cannot be read: .*apiserver"):
        local_tier.facts_of(broken)
    with pytest.raises(errors.InputError, match="snapshot s: its facts cannot be read"):
        model.snapshot_version(dataclasses.replace(SNAPSHOT_131, facts={}))
