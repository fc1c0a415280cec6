"""Offline checks: the snapshot trailer, the archive sums, stored-object versions, metrics, prune's rule."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from upgrader import errors
from upgrader.cluster import live_facts
from upgrader.etcd import snapshot
from upgrader.snapshots import local as local_tier
from upgrader.state import records


def snapshot_file(path: Path, pages: int = 3) -> Path:
    """A stand-in bbolt file (whole 4 KiB pages) with etcd's sha256 trailer."""
    data = os.urandom(4096 * pages)
    path.write_bytes(data + hashlib.sha256(data).digest())
    return path


def test_a_good_file_passes(tmp_path: Path) -> None:
    snapshot.check_file(snapshot_file(tmp_path / "s.db"))


@pytest.mark.parametrize("damage", ["flip", "truncate", "no-trailer", "trailer-byte", "empty", "missing"])
def test_damage_is_caught(tmp_path: Path, damage: str) -> None:
    path = snapshot_file(tmp_path / "s.db")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[5000] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "no-trailer":
        data = data[:-32]
    elif damage == "trailer-byte":
        data[-1] ^= 0xFF
    elif damage == "empty":
        data = bytearray()
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotCorrupt):
        snapshot.check_file(path)


def test_archive_sums(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    digest = local_tier._archive({"cp-1/manifests/etcd.yaml": b"etcd", "facts.json": b"{}"}, archive)
    assert digest == snapshot.file_sha256(archive) and archive.stat().st_mode & 0o777 == 0o600
    local_tier.check_archive(archive)
    broken = bytearray(archive.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    archive.write_bytes(bytes(broken))
    with pytest.raises(snapshot.SnapshotCorrupt):
        local_tier.check_archive(archive)


def _field(number: int, payload: bytes) -> bytes:
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            b'{"apiVersion":"flowcontrol.apiserver.k8s.io/v1beta3","kind":"FlowSchema"}',
            "flowcontrol.apiserver.k8s.io/v1beta3",
        ),
        (
            b"k8s\x00" + _field(1, _field(1, b"batch/v1beta1") + _field(2, b"CronJob")) + _field(2, b"\x0a\x00"),
            "batch/v1beta1",
        ),
        (b"k8s\x00" + _field(2, b"raw first"), None),
        (b"\x00\x01binary", None),
        (b"k8s\x00\x0a\xff", None),  # a length that runs off the end
    ],
    ids=["json", "protobuf", "no-typemeta", "unknown", "truncated"],
)
def test_stored_api_version(value: bytes, expected: str | None) -> None:
    assert live_facts.stored_api_version(value) == expected


def test_deprecated_apis_from_metrics() -> None:
    text = (
        "# HELP apiserver_requested_deprecated_apis ...\n"
        'apiserver_requested_deprecated_apis{group="flowcontrol.apiserver.k8s.io",removed_release="1.32",'
        'resource="flowschemas",subresource="",version="v1beta3"} 1\n'
        'apiserver_requested_deprecated_apis{group="batch",removed_release="1.25",resource="cronjobs",'
        'subresource="",version="v1beta1"} 0\n'
        "apiserver_request_total 5\n"
    )
    assert live_facts.deprecated_from_metrics(text) == {("flowcontrol.apiserver.k8s.io", "v1beta3", "flowschemas")}


def record(name: str, minutes: int, good: bool) -> records.SnapshotRecord:
    return records.SnapshotRecord(
        id=records.SnapshotId(name),
        cluster="c",
        created_at=datetime(2026, 11, 22, tzinfo=UTC) + timedelta(minutes=minutes),
        label=None,
        etcd_revision=1,
        key_count=1,
        members=[],
        etcd_path="x",
        etcd_size=1,
        etcd_sha256="x",
        archive_path=None,
        archive_sha256=None,
        facts={},
        healthy=good,
        known_good=good,
        verified_at=None,
    )


def test_prune_keeps_the_newest_known_good_ones() -> None:
    found = [
        record("g4", 40, True),
        record("b3", 30, False),
        record("g2", 20, True),
        record("g1", 10, True),
        record("b0", 0, False),
    ]
    assert [s.id for s in local_tier.prune_candidates(found, keep=2)] == ["b3", "g1", "b0"]
    assert [s.id for s in local_tier.prune_candidates(found, keep=0)] == ["b3", "g2", "g1", "b0"]  # never the newest
    newer_bad = [record("b9", 90, False), record("g1", 10, True)]
    assert local_tier.prune_candidates(newer_bad, keep=1) == []  # newer than every known-good one: kept
    assert local_tier.prune_candidates([record("b1", 1, False)], keep=1) == []  # nothing known-good: keep all


def _printed(manifests: dict[str, bytes], *, kubelet: str = "Kubernetes v1.31.13") -> str:
    """What snapshot-fetch.yml prints for one node (as its shell builds it: tar, gzip, base64)."""
    import base64
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in manifests.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f"kubelet={kubelet}\r\nkubeadm=v1.31.13\r\nmanifests={encoded}\r\n"  # raw over ssh -tt ends lines \r\n


def test_a_node_state_becomes_archive_members_under_the_node_name() -> None:
    members = local_tier._node_state("cp-2", _printed({"kube-apiserver.yaml": b"a", "etcd.yaml": b"e"}))
    assert members["cp-2/manifests/kube-apiserver.yaml"] == b"a"
    assert members["cp-2/manifests/etcd.yaml"] == b"e"
    assert json.loads(members["cp-2/versions.json"]) == {"kubelet": "Kubernetes v1.31.13", "kubeadm": "v1.31.13"}


@pytest.mark.parametrize(
    ("printed", "message"),
    [
        (_printed({"etcd.yaml": b"e"}), "no kube-apiserver manifest was fetched from cp-2"),
        ("kubelet=Kubernetes v1.31.13\nmanifests=not base64!\n", "cp-2: the manifests it sent are not a readable"),
        ("kubelet=Kubernetes v1.31.13\nmanifests=aGVsbG8=\n", "cp-2: the manifests it sent are not a readable"),
        ("", "cp-2: the manifests it sent are not a readable archive"),
    ],
)
def test_a_bad_node_state_is_refused_naming_the_node(printed: str, message: str) -> None:
    with pytest.raises(errors.ExecutorError, match=message):
        local_tier._node_state("cp-2", printed)


def test_only_plain_manifest_names_are_taken_from_a_node() -> None:
    members = local_tier._node_state(
        "cp-1", _printed({"kube-apiserver.yaml": b"a", "../../escape.yaml": b"x", "notes.txt": b"n"})
    )
    assert sorted(members) == ["cp-1/manifests/escape.yaml", "cp-1/manifests/kube-apiserver.yaml", "cp-1/versions.json"]
