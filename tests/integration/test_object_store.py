"""The object-store tier against a real S3-compatible server on loopback (moto's, its own process):
sealed uploads, checked downloads, every fault named in one line, and the disaster path: a fresh
database importing a cluster's snapshots from the bucket."""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
from pathlib import Path

import pytest

from tests import s3server
from tests.unit.test_rollback import Catalog
from upgrader import errors
from upgrader.cluster import session
from upgrader.core import config
from upgrader.core.tier import Tier
from upgrader.objectstore import bucket as bucket_mod
from upgrader.objectstore import sealing
from upgrader.snapshots import local as local_tier
from upgrader.snapshots import remote, tiers
from upgrader.state import records, store

pytestmark = pytest.mark.usefixtures("s3_credentials")


def settings(server: s3server.Server, tmp_path: Path, **extra: object) -> config.ObjectStoreSettings:
    name = f"b-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    key = tmp_path / f"{name}.key"
    sealing.Key.generate(key)
    fields: dict[str, object] = {
        "bucket": name,
        "endpoint": server.endpoint,
        "region": "us-east-1",
        "prefix": "team/",
        "key_file": str(key),
    }
    return config.ObjectStoreSettings.model_validate({**fields, **extra})


@pytest.fixture
def catalog(tmp_path: Path, etcd_snapshot_file: Path) -> Catalog:
    (tmp_path / "controller").mkdir(mode=0o700)
    return Catalog(tmp_path / "controller", etcd_file=etcd_snapshot_file)


def test_a_snapshot_goes_up_sealed_and_comes_back_checked(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path
) -> None:
    s3 = settings(s3_server, tmp_path)
    tier = remote.Remote.open(s3, "c")
    record = catalog.add("1.30.6")
    where = remote.upload(tier, record)
    assert where == f"s3://{s3.bucket}/team/c/{record.id}"
    client = s3_server.client()
    listed = sorted(o["Key"] for o in client.list_objects_v2(Bucket=s3.bucket)["Contents"])
    assert listed == [f"team/c/{record.id}.db.sealed", f"team/c/{record.id}.json", f"team/c/{record.id}.tar.gz.sealed"]
    head = client.head_object(Bucket=s3.bucket, Key=f"team/c/{record.id}.db.sealed")
    assert head["Metadata"]["sha256"] == record.etcd_file_sha256
    assert head["Metadata"]["key-id"] == tier.key.fingerprint  # type: ignore[union-attr]
    plain = Path(record.etcd_path).read_bytes()
    sealed = client.get_object(Bucket=s3.bucket, Key=f"team/c/{record.id}.db.sealed")["Body"].read()
    assert plain[4096:4160] not in sealed  # nothing of the database in the clear

    assert remote.check(tier, record) == (records.CopyState.OK, None)
    pulled = {f"{record.id}.db": tmp_path / "back.db", f"{record.id}.tar.gz": tmp_path / "back.tar.gz"}
    remote.pull(tier, record, pulled)
    assert pulled[f"{record.id}.db"].read_bytes() == plain
    assert pulled[f"{record.id}.db"].stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_every_fault_is_one_line_naming_the_object_and_never_the_credentials(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = settings(s3_server, tmp_path)
    tier = remote.Remote.open(s3, "c")
    record = catalog.add("1.30.6")
    remote.upload(tier, record)
    client = s3_server.client()
    key = f"team/c/{record.id}.db.sealed"
    original = client.get_object(Bucket=s3.bucket, Key=key)
    body, metadata = original["Body"].read(), original["Metadata"]
    said: list[str] = []

    tampered = bytearray(body)
    tampered[len(tampered) // 2] ^= 0x01
    client.put_object(Bucket=s3.bucket, Key=key, Body=bytes(tampered), Metadata=metadata)
    state, detail = remote.check(tier, record)
    assert state is records.CopyState.BAD and f"s3 object {key} fails authentication" in str(detail)
    said.append(str(detail))
    with pytest.raises(sealing.Unsealable):
        remote.pull(tier, record, {f"{record.id}.db": tmp_path / "never.db"})
    assert not (tmp_path / "never.db").exists()

    other_key = tmp_path / "other.key"
    sealing.Key.generate(other_key)
    client.put_object(Bucket=s3.bucket, Key=key, Body=body, Metadata=metadata)
    stranger = remote.Remote.open(s3.model_copy(update={"key_file": other_key}), "c")
    state, detail = remote.check(stranger, record)
    assert state is records.CopyState.BAD and "encrypted with another key" in str(detail)
    said.append(str(detail))

    client.delete_object(Bucket=s3.bucket, Key=key)
    state, detail = remote.check(tier, record)
    assert state is records.CopyState.MISSING and f"{key} is missing" in str(detail)
    said.append(str(detail))

    for place, expected in [
        (bucket_mod.Place("no-such-bucket-here", s3_server.endpoint), "the bucket does not exist"),
        (bucket_mod.Place(s3.bucket, f"http://127.0.0.1:{s3server.free_port()}"), "the endpoint cannot be reached"),
    ]:
        with pytest.raises(bucket_mod.BucketError, match=expected) as caught:
            bucket_mod.Bucket(place).check()
        said.append(caught.value.message)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(bucket_mod.BucketError, match="no credentials in the AWS chain") as caught:
        bucket_mod.Bucket(bucket_mod.Place(s3.bucket, s3_server.endpoint)).check()
    said.append(caught.value.message)
    for line in said:
        assert "\n" not in line and s3server.CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in line, line
        assert s3server.CREDENTIALS["AWS_ACCESS_KEY_ID"] not in line, line


def test_credentials_in_cluster_yaml_are_refused() -> None:
    with pytest.raises(ValueError, match=r"credentials never go in cluster\.yaml"):
        config.ObjectStoreSettings.model_validate({"bucket": "abc", "secret_access_key": "x", "encrypt": False})
    with pytest.raises(ValueError, match="key_file is required while encrypt is true"):
        config.ObjectStoreSettings.model_validate({"bucket": "abc"})


def test_a_fresh_database_imports_the_clusters_snapshots_from_the_bucket(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, cluster_yaml: Path
) -> None:
    s3 = settings(s3_server, tmp_path)
    tier = remote.Remote.open(s3, "c")
    older, newer = catalog.add("1.30.6"), catalog.add("1.31.13")
    for record in (older, newer):
        remote.upload(tier, record)
    foreign = catalog.add("1.30.6", cluster="other")
    remote.upload(remote.Remote.open(s3, "other"), foreign)

    base = config.load(cluster_yaml)
    fresh_dir = tmp_path / "fresh-controller"
    cfg = base.model_copy(
        update={
            "name": "c",
            "snapshots": config.SnapshotSettings(dir=fresh_dir, tiers=[Tier.LOCAL, Tier.S3], s3=s3),
        }
    )
    with store.Store.open(f"sqlite:///{tmp_path / 'fresh.db'}") as state:
        result = tiers.import_from_s3(cfg, state)
        assert [r.id for r in result.imported] == [newer.id, older.id] and result.skipped == {}
        for record in result.imported:
            assert record.known_good and Path(record.etcd_path).parent == fresh_dir
            assert local_tier.check(record) == {"etcd database": "ok", "archive": "ok"}
            assert {c.tier: c.state for c in record.copies} == {
                Tier.LOCAL: records.CopyState.OK,
                Tier.S3: records.CopyState.OK,
            }
            original = older if record.id == older.id else newer
            assert (record.etcd_revision, record.facts, record.created_at) == (
                original.etcd_revision,
                original.facts,
                original.created_at,
            )
        assert fresh_dir.stat().st_mode & 0o777 == 0o700
        again = tiers.import_from_s3(cfg, state)
        assert again.imported == [] and set(again.skipped.values()) == {"already in this database"}
        with pytest.raises(errors.InputError, match="no snapshot nosuch"):
            tiers.import_from_s3(cfg, state, ["nosuch"])


def test_credentials_the_store_refuses_are_named_and_never_shown(tmp_path: Path) -> None:
    with s3server.running(tmp_path / "moto.log", authenticate=True) as strict:
        store = bucket_mod.Bucket(bucket_mod.Place("snaps", strict.endpoint, "us-east-1"))
        with pytest.raises(bucket_mod.BucketError, match="access denied") as denied:
            store.check()
        with pytest.raises(bucket_mod.BucketError, match="the credentials were refused") as refused:
            store.put("k", b"x")
    for caught in (denied, refused):
        line = caught.value.message
        assert s3server.CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in line and "AKIA" not in line, line


def test_prune_keeps_each_tiers_own_number_and_drops_a_snapshot_left_with_no_copy(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, cluster_yaml: Path
) -> None:
    s3 = settings(s3_server, tmp_path, keep=3)
    bucket = remote.Remote.open(s3, "c")
    made = [catalog.add("1.30.6") for _ in range(4)]  # oldest first
    for record in made:
        remote.upload(bucket, record)
        catalog.state.record_copy(
            dataclasses.replace(record.copies[0], tier=Tier.S3, location=bucket.location(record.id))
        )
    base = config.load(cluster_yaml)
    cfg = base.model_copy(
        update={
            "name": "c",
            "snapshots": config.SnapshotSettings(dir=catalog.dir, keep=2, tiers=[Tier.LOCAL, Tier.S3], s3=s3),
        }
    )
    doomed = tiers.prune_plan(cfg, catalog.state.snapshots("c"), None)
    assert sorted((d.tier.value, d.record.id) for d in doomed) == sorted(
        [("local", made[0].id), ("local", made[1].id), ("s3", made[0].id)]
    )

    def no_cluster() -> session.ClusterSession:
        raise AssertionError("no peer copy to delete: the cluster is not needed")

    tiers.prune(cfg, catalog.state, doomed, no_cluster)
    left = {s.id: sorted(c.tier.value for c in s.copies) for s in catalog.state.snapshots("c")}
    assert left == {made[1].id: ["s3"], made[2].id: ["local", "s3"], made[3].id: ["local", "s3"]}
    assert not Path(made[1].etcd_path).exists() and Path(made[2].etcd_path).exists()
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3.bucket)["Contents"]}
    assert not any(made[0].id in k for k in keys) and any(made[1].id in k for k in keys)


def test_a_failed_multipart_upload_is_aborted_leaving_no_object_and_no_parts(
    s3_server: s3server.Server, tmp_path: Path
) -> None:
    s3 = settings(s3_server, tmp_path)
    store = bucket_mod.Bucket(bucket_mod.Place(s3.bucket, s3_server.endpoint, "us-east-1"))
    path = tmp_path / "big"
    path.write_bytes(os.urandom(5 * bucket_mod.PART))

    with sealing.Upload(path, None, bucket_mod.PART // sealing.CHUNK) as upload:

        def part(number: int) -> io.RawIOBase:
            if number == 3:  # as when the file changes under the upload
                raise errors.OperationFailed(f"{path} changed while it was being uploaded")
            return upload.part(number)

        with pytest.raises(errors.OperationFailed, match="changed while it was being uploaded"):
            store.upload("k", len(upload.parts), part, {}, concurrency=2)
    client = s3_server.client()
    assert store.metadata("k") is None
    assert not client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads")


def _fresh(cluster_yaml: Path, tmp_path: Path, s3: config.ObjectStoreSettings) -> config.ClusterConfig:
    directory = tmp_path / "fresh-controller"
    return config.load(cluster_yaml).model_copy(
        update={
            "name": "c",
            "snapshots": config.SnapshotSettings(dir=directory, tiers=[Tier.LOCAL, Tier.S3], s3=s3),
        }
    )


def test_import_trusts_no_id_path_or_field_the_bucket_gives(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, cluster_yaml: Path
) -> None:
    """Issue 17: an ``evil.json`` whose id was a path made import delete and overwrite files outside the
    snapshot directory; a description edited (revision, cluster, time) was imported as known-good."""
    import json

    s3 = settings(s3_server, tmp_path)
    tier = remote.Remote.open(s3, "c")
    good = catalog.add("1.30.6")
    remote.upload(tier, good)
    client = s3_server.client()
    described = json.loads(client.get_object(Bucket=s3.bucket, Key=f"team/c/{good.id}.json")["Body"].read())
    victims = tmp_path / "victims"
    victims.mkdir(mode=0o755)
    (victims / "app.db").write_bytes(b"another application's data")
    hostile_ids = {
        "evil": str(victims / "app"),  # an absolute path
        "c-20261201T000000Z-dead": "../../victims/app",  # a valid key, but the body names a path
    }
    for key, claimed in hostile_ids.items():
        body = {**described, "snapshot": {**described["snapshot"], "id": claimed}}
        client.put_object(Bucket=s3.bucket, Key=f"team/c/{key}.json", Body=json.dumps(body).encode())
    forged = "c-20261202T000000Z-beef"  # an edited copy of a real description: newer, a huge revision
    edited = {**described, "snapshot": {**described["snapshot"], "id": forged, "etcd_revision": 99_999_999}}
    client.put_object(Bucket=s3.bucket, Key=f"team/c/{forged}.json", Body=json.dumps(edited).encode())
    for suffix in (".db.sealed", ".tar.gz.sealed"):
        client.copy_object(
            Bucket=s3.bucket,
            CopySource={"Bucket": s3.bucket, "Key": f"team/c/{good.id}{suffix}"},
            Key=f"team/c/{forged}{suffix}",
        )
    cfg = _fresh(cluster_yaml, tmp_path, s3)
    with store.Store.open(f"sqlite:///{tmp_path / 'fresh.db'}") as state:
        result = tiers.import_from_s3(cfg, state)
        assert [r.id for r in result.imported] == [good.id]
        assert "not a snapshot id upgrader gives cluster c" in result.skipped["evil"]
        assert "describes snapshot '../../victims/app'" in result.skipped["c-20261201T000000Z-dead"]
        assert "does not authenticate with this key" in result.skipped[forged]
        assert [s.id for s in state.snapshots("c")] == [good.id]
    assert (victims / "app.db").read_bytes() == b"another application's data"
    assert sorted(p.name for p in victims.iterdir()) == ["app.db"] and victims.stat().st_mode & 0o777 == 0o755


def test_an_unsealed_bucket_is_refused_over_http_and_its_import_is_never_known_good(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, cluster_yaml: Path
) -> None:
    """Nothing authenticates an unencrypted bucket's descriptions: the revision comes from the file, and
    the snapshot is not known-good until it is checked on this side."""
    import json

    s3 = settings(s3_server, tmp_path, encrypt=False, key_file=None)
    tier = remote.Remote.open(s3, "c")
    good = catalog.add("1.30.6")
    remote.upload(tier, good)
    client = s3_server.client()
    described = json.loads(client.get_object(Bucket=s3.bucket, Key=f"team/c/{good.id}.json")["Body"].read())
    described["snapshot"]["etcd_revision"] = 99_999_999
    client.put_object(Bucket=s3.bucket, Key=f"team/c/{good.id}.json", Body=json.dumps(described).encode())
    cfg = _fresh(cluster_yaml, tmp_path, s3)
    with store.Store.open(f"sqlite:///{tmp_path / 'fresh.db'}") as state:
        with pytest.raises(session.InsecureTransport, match=r"unencrypted .* over plain http"):
            tiers.import_from_s3(cfg, state)
        result = tiers.import_from_s3(cfg, state, insecure=True)
    [imported] = result.imported
    assert imported.etcd_revision == good.etcd_revision != 99_999_999  # read from the file
    assert imported.known_good is False


def test_import_never_replaces_a_file_it_did_not_write(
    s3_server: s3server.Server, catalog: Catalog, tmp_path: Path, cluster_yaml: Path
) -> None:
    s3 = settings(s3_server, tmp_path)
    good = catalog.add("1.30.6")
    remote.upload(remote.Remote.open(s3, "c"), good)
    cfg = _fresh(cluster_yaml, tmp_path, s3)
    cfg.snapshots.dir.mkdir(mode=0o700)
    theirs = cfg.snapshots.dir / f"{good.id}.db"  # another database's copy in a shared directory
    theirs.write_bytes(b"theirs")
    with store.Store.open(f"sqlite:///{tmp_path / 'fresh.db'}") as state:
        result = tiers.import_from_s3(cfg, state)
    assert result.imported == [] and "exists already" in result.skipped[good.id]
    assert theirs.read_bytes() == b"theirs"
    assert not (cfg.snapshots.dir / f"{good.id}.tar.gz").exists()
